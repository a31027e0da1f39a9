"""``stats MANIFEST [--format json|text]``: group sizes, resolutions, foreground and unknown-band fractions.

Per image: foreground fraction = share of pixels with alpha > 0, unknown fraction = share with
0 < alpha < 1 (the soft band). A group's (and the total's) fractions are means over its images, each
image counting once whatever its size. Resolutions come from the file headers (no full decode);
fractions decode each matte with the benchmark's rules. Samples without a matte have no fractions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_tools.build import default_workers, image_size, parallel_map
from data_tools.records import Manifest, Record, inside, read_manifest
from metrics.io import AlphaDecodeError, read_alpha


@dataclass(frozen=True)
class _One:
    width: int | None
    height: int | None
    fg: float | None
    unknown: float | None
    error: str | None = None


def _measure(m: Manifest, rec: Record) -> _One:
    image = rec.files.get("image")
    width = height = None
    try:
        if image is not None and inside(m.root, image.rel):
            width, height = image_size(m.root / image.rel)
    except ValueError as exc:
        return _One(None, None, None, None, str(exc))
    alpha = rec.files.get("alpha")
    if alpha is None or not inside(m.root, alpha.rel):
        return _One(width, height, None, None)
    try:
        a = read_alpha(m.root / alpha.rel)
    except AlphaDecodeError as exc:
        return _One(width, height, None, None, str(exc))
    top = 255 if a.dtype == np.uint8 else 1.0
    return _One(width, height, float(np.mean(a > 0)), float(np.mean((a > 0) & (a < top))))


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {"min": float(arr.min()), "max": float(arr.max()), "mean": float(arr.mean()),
            "median": float(np.median(arr))}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _resolution(ones: Sequence[_One]) -> dict[str, Any]:
    sized = [o for o in ones if o.width is not None and o.height is not None]
    return {"width": _summary([o.width for o in sized]), "height": _summary([o.height for o in sized]),
            "megapixels": _summary([o.width * o.height / 1e6 for o in sized])}


def _block(ones: Sequence[_One]) -> dict[str, Any]:
    return {"n_samples": len(ones), "resolution": _resolution(ones),
            "foreground_fraction": _mean([o.fg for o in ones]), "unknown_fraction": _mean([o.unknown for o in ones])}


def compute_stats(manifest: str, workers: int = 0) -> dict[str, Any]:
    """``{"groups": [{"id", "type", "class", "n_samples", "resolution", ...}], "total": {...}, "errors": [...]}``."""
    m = read_manifest(manifest)
    ones = parallel_map(lambda r: _measure(m, r), m.records, workers or default_workers(), desc="stats")
    by_group: dict[str, list[tuple[Record, _One]]] = {}
    for rec, one in zip(m.records, ones, strict=True):
        by_group.setdefault(rec.group, []).append((rec, one))
    groups = []
    for key in sorted(by_group):
        members = by_group[key]
        meta = m.groups.get(key, {})
        classes = sorted({r.cls for r, _ in members if r.cls})
        groups.append({"id": key, "type": meta.get("type"), "class": meta.get("class", classes[0] if classes else None),
                       **_block([o for _, o in members])})
    sizes = [g["n_samples"] for g in groups]
    total = {**_block(ones), "n_groups": len(groups), "group_size": _summary(sizes),
             "groups_of_one": sum(1 for n in sizes if n == 1),
             "types": {t: sum(1 for g in groups if g["type"] == t) for t in sorted({str(g["type"]) for g in groups})}}
    errors = [f"{m.root / r.files['image'].rel if 'image' in r.files else r.sid}: {o.error}"
              for r, o in zip(m.records, ones, strict=True) if o.error]
    return {"name": m.name, "manifest_version": m.version, "groups": groups, "total": total, "errors": errors}


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.0f}"


def text_report(stats: dict[str, Any]) -> str:
    """A fixed-width table: one line per group, then the total."""
    lines = [f"{'group':<32} {'type':<9} {'class':<14} {'n':>4} {'width':>11} {'height':>11} {'fg':>7} {'unknown':>8}"]

    def row(name: str, kind: str, cls: str, b: dict[str, Any]) -> str:
        w, h = b["resolution"]["width"], b["resolution"]["height"]
        wr = f"{_fmt(w and w['min'])}-{_fmt(w and w['max'])}" if w else "-"
        hr = f"{_fmt(h and h['min'])}-{_fmt(h and h['max'])}" if h else "-"
        return (f"{name[:32]:<32} {kind[:9]:<9} {cls[:14]:<14} {b['n_samples']:>4} {wr:>11} {hr:>11} "
                f"{_fmt(b['foreground_fraction'], True):>7} {_fmt(b['unknown_fraction'], True):>8}")

    for g in stats["groups"]:
        lines.append(row(g["id"], str(g["type"] or "-"), str(g["class"] or "-"), g))
    t = stats["total"]
    lines.append(row(f"total ({t['n_groups']} groups)", "", "", t))
    if t["groups_of_one"]:
        lines.append(f"groups of one: {t['groups_of_one']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("manifest", help="manifest.json (v1 or v2), or the folder holding it")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument("--workers", type=int, default=0, help="threads (default: the CPUs this process may use)")
    parser.epilog = "Example: python -m data_tools stats data/mine/manifest.json --format json > stats.json"


def run(args: argparse.Namespace) -> int:
    stats = compute_stats(args.manifest, args.workers)
    if args.format == "json":
        print(json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False))
    else:
        print(text_report(stats))
    for e in stats["errors"]:
        print(e, file=sys.stderr)
    return 1 if stats["errors"] else 0
