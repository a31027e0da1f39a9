"""Command line: score prediction folders (CSV) or one prediction (text or JSON).

Folder mode pairs files by stem (``pred/a.png`` ↔ ``gt/a.png``, extensions may differ),
writes one CSV row per image and region, prints per-region means and exits 1 if any image
failed (the error is recorded in that image's row). The CSV is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from metrics._inputs import BACKENDS, PROTOCOLS
from metrics.functional import METRIC_NAMES, evaluate
from metrics.io import AlphaDecodeError, new_file_mode, read_alpha, read_trimap

#: File suffixes considered images in folder mode (case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".webp"})
CSV_COLUMNS = ("image", "region", *METRIC_NAMES, "error")

_DESCRIPTION = """\
Compute SAD, MSE, Grad and Conn of alpha mattes (units: SAD/1000, MSE raw, Grad/1000,
Conn/1000; values read as 0..1). The unknown region is trimap == 128 exactly.

Folder mode:  python -m metrics --pred-dir P --gt-dir G [--trimap-dir T] --out results.csv
  Files are paired by stem (extensions may differ). One CSV row per image and region
  (columns image,region,SAD,MSE,Grad,Conn,error; region 'unknown' only with --trimap-dir).
  A missing partner file, an unreadable or ambiguous matte or a size mismatch is recorded
  in that image's 'error' column; the run goes on and exits with status 1 at the end.
  Per-region means over the successful rows are printed (NaN MSE values are skipped).

Single mode:  python -m metrics --pred FILE --gt FILE [--trimap FILE] [--format json]
  Prints a table, or with --format json the result dict (a NaN MSE, empty region, is null).

Matte decoding: 8-bit grey as is; 16-bit grey /257 when every value is a multiple of 257,
else /65535 (float); RGB with equal channels: one channel; RGBA whose A is constant: the
(equal-channel) RGB; RGBA whose RGB is constant: A; anything else is refused as ambiguous.

Protocols: 'dim' (default) reproduces the MATLAB reference of Deep Image Matting exactly;
'icm' reproduces the official In-Context Matting Python functions (Grad /255 instead of
min-max normalisation, Conn's largest component may be the background, MSE +1e-8).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also documents the command in ``--help``)."""
    ap = argparse.ArgumentParser(prog="python -m metrics", description=_DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred-dir", type=Path, help="folder of predicted mattes (folder mode)")
    ap.add_argument("--gt-dir", type=Path, help="folder of ground-truth mattes (folder mode)")
    ap.add_argument("--trimap-dir", type=Path, help="folder of trimaps; adds the 'unknown' region")
    ap.add_argument("--out", type=Path, help="CSV file to write (folder mode, required there)")
    ap.add_argument("--pred", type=Path, help="one predicted matte (single mode)")
    ap.add_argument("--gt", type=Path, help="its ground-truth matte (single mode)")
    ap.add_argument("--trimap", type=Path, help="its trimap (single mode, optional)")
    ap.add_argument("--format", choices=("text", "json"), default="text",
                    help="single mode output: a table (default) or the result dict as JSON")
    ap.add_argument("--protocol", choices=PROTOCOLS, default="dim",
                    help="'dim' (MATLAB reference, default) or 'icm' (official ICM code)")
    ap.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="implementation: numba kernels when installed ('auto'), or force one")
    return ap


def _images_by_stem(folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Image files of ``folder`` by stem, plus an error per stem that has several files."""
    found: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(f.stem, []).append(f)
    files = {s: fs[0] for s, fs in found.items() if len(fs) == 1}
    dupes = {s: f"several files for '{s}' in {folder}: " + ", ".join(f.name for f in fs)
             for s, fs in found.items() if len(fs) > 1}
    return files, dupes


def _fmt(x: float) -> str:
    return "NaN" if math.isnan(x) else repr(float(x))


def _score_one(pred: Path, gt: Path, trimap: Path | None, protocol: str,
               backend: str) -> dict[str, dict[str, float]]:
    p = read_alpha(pred)
    g = read_alpha(gt)
    if p.shape != g.shape:
        raise AlphaDecodeError(f"{pred}: size {p.shape[::-1]} differs from ground truth {gt} {g.shape[::-1]}")
    t = None
    if trimap is not None:
        t = read_trimap(trimap)
        if t.shape != g.shape:
            raise AlphaDecodeError(f"{trimap}: size {t.shape[::-1]} differs from ground truth {gt} "
                                   f"{g.shape[::-1]}")
    return evaluate(p, g, t, protocol=protocol, backend=backend)


def folder_rows(pred_dir: Path, gt_dir: Path, trimap_dir: Path | None, protocol: str = "dim",
                backend: str = "auto") -> Iterator[dict[str, str]]:
    """CSV rows (as strings) for every stem found in ``pred_dir`` or ``gt_dir``, in stem order."""
    preds, pred_dupes = _images_by_stem(pred_dir)
    gts, gt_dupes = _images_by_stem(gt_dir)
    tris, tri_dupes = _images_by_stem(trimap_dir) if trimap_dir is not None else ({}, {})
    regions = ("whole", "unknown") if trimap_dir is not None else ("whole",)
    for stem in sorted(set(preds) | set(gts) | set(pred_dupes) | set(gt_dupes)):
        error = pred_dupes.get(stem) or gt_dupes.get(stem)
        if error is None and stem not in preds:
            error = f"missing prediction for '{stem}' in {pred_dir} (ground truth: {gts[stem]})"
        elif error is None and stem not in gts:
            error = f"missing ground truth for '{stem}' in {gt_dir} (prediction: {preds[stem]})"
        if error is not None:
            for region in regions:
                yield {"image": stem, "region": region, "error": error}
            continue
        tri_error = None
        if trimap_dir is not None:
            tri_error = tri_dupes.get(stem)
            if tri_error is None and stem not in tris:
                tri_error = f"missing trimap for '{stem}' in {trimap_dir}"
        try:
            res = _score_one(preds[stem], gts[stem], tris.get(stem) if tri_error is None else None,
                             protocol, backend)
        except (AlphaDecodeError, ValueError, TypeError) as e:
            for region in regions:
                yield {"image": stem, "region": region, "error": str(e)}
            continue
        yield {"image": stem, "region": "whole", **{k: _fmt(v) for k, v in res["whole"].items()}, "error": ""}
        if trimap_dir is not None:
            if tri_error is not None:
                yield {"image": stem, "region": "unknown", "error": tri_error}
            else:
                yield {"image": stem, "region": "unknown",
                       **{k: _fmt(v) for k, v in res["unknown"].items()}, "error": ""}


def write_csv_atomic(path: Path, rows: Iterator[dict[str, str]]) -> list[dict[str, str]]:
    """Write rows to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    written: list[dict[str, str]] = []
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), new_file_mode())  # what open() would give, not mkstemp's 0o600
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, restval="")
            w.writeheader()
            for row in rows:
                w.writerow(row)
                written.append(row)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def _summary(rows: Sequence[dict[str, str]]) -> str:
    lines = [f"{'region':<8} {'n':>5} " + " ".join(f"{k:>12}" for k in METRIC_NAMES)]
    for region in ("whole", "unknown"):
        ok = [r for r in rows if r["region"] == region and not r.get("error")]
        if not ok:
            continue
        means = []
        for k in METRIC_NAMES:
            vals = np.array([float(r[k]) for r in ok])
            vals = vals[~np.isnan(vals)]
            means.append(f"{vals.mean():>12.6g}" if vals.size else f"{'NaN':>12}")
        lines.append(f"{region:<8} {len(ok):>5} " + " ".join(means))
    return "\n".join(lines)


def _run_folder(args: argparse.Namespace) -> int:
    for d in (args.pred_dir, args.gt_dir, args.trimap_dir):
        if d is not None and not d.is_dir():
            print(f"error: not a folder: {d}", file=sys.stderr)
            return 2
    rows = write_csv_atomic(args.out, folder_rows(args.pred_dir, args.gt_dir, args.trimap_dir,
                                                  args.protocol, args.backend))
    print(f"means ({args.protocol} protocol), written to {args.out}:")
    print(_summary(rows))
    failed = sorted({r["image"] for r in rows if r.get("error")})
    if failed:
        print(f"{len(failed)} image(s) with errors: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run_single(args: argparse.Namespace) -> int:
    try:
        res = _score_one(args.pred, args.gt, args.trimap, args.protocol, args.backend)
    except (AlphaDecodeError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.format == "json":
        clean = {r: {k: (None if math.isnan(v) else v) for k, v in vals.items()} for r, vals in res.items()}
        print(json.dumps(clean, indent=2))
    else:
        print(f"{'region':<8} " + " ".join(f"{k:>14}" for k in METRIC_NAMES))
        for region, vals in res.items():
            print(f"{region:<8} " + " ".join(f"{vals[k]:>14.8g}" for k in METRIC_NAMES))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m metrics``; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(argv)
    folder = args.pred_dir is not None or args.gt_dir is not None
    single = args.pred is not None or args.gt is not None
    if folder == single:
        ap.error("give either --pred-dir/--gt-dir/--out (folder mode) or --pred/--gt (single mode)")
    if folder:
        if args.pred_dir is None or args.gt_dir is None or args.out is None:
            ap.error("folder mode needs --pred-dir, --gt-dir and --out")
        if args.trimap is not None:
            ap.error("--trimap belongs to single mode; use --trimap-dir in folder mode")
        return _run_folder(args)
    if args.pred is None or args.gt is None:
        ap.error("single mode needs --pred and --gt")
    if args.trimap_dir is not None or args.out is not None:
        ap.error("--trimap-dir/--out belong to folder mode")
    return _run_single(args)
