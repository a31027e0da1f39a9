"""``validate MANIFEST``: check a dataset against its manifest, one line per problem.

Checked: paths stay inside the root, files exist, sha256 and byte sizes match (v2), images and mattes
decode with the benchmark's rules (:mod:`metrics.io`), pixel sizes agree with each other and with the
manifest, trimaps hold only 0/128/255, ids are unique, groups exist and have samples, designated references
belong to their group, and no image is stored twice (same sha256). Groups of one and empty mattes are
warnings (they do not fail the check unless ``--strict``). Exit 0 clean, 1 problems found, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.datasets.manifest import GROUP_TYPES, VERSION_2
from benchmark.io import ImageDecodeError, read_alpha, read_image, read_trimap
from data_tools.build import default_workers, parallel_map, sha256_file
from data_tools.records import FileRef, Manifest, Record, inside, read_manifest
from metrics.io import AlphaDecodeError

TRIMAP_VALUES = (0, 128, 255)


@dataclass(frozen=True)
class Problem:
    """One finding: where (a file path or a manifest location), what, and whether it fails the check."""

    where: str
    message: str
    warning: bool = False

    def line(self) -> str:
        return f"{self.where}: {'warning: ' if self.warning else ''}{self.message}"


@dataclass
class _Checked:
    problems: list[Problem]
    image_sha: str | None  # actual sha256 of the image file, for duplicate detection


def _clean(exc: Exception, path: Path) -> str:
    """The decoder's message without the path it repeats (the line already starts with it)."""
    return str(exc).replace(f"{path}: ", "").replace(f" {path}", "").strip()


def _decode(ref: FileRef, path: Path) -> np.ndarray:
    if ref.field == "image":
        return read_image(path)
    return read_alpha(path) if ref.field == "alpha" else read_trimap(path)


def _check_file(m: Manifest, ref: FileRef, problems: list[Problem]) -> tuple[np.ndarray | None, str | None]:
    """Decoded pixels (or None) and actual sha256 of one file; its problems are appended."""
    path = m.root / ref.rel
    where = str(path)
    if not inside(m.root, ref.rel):
        problems.append(Problem(where, f"{ref.field} lies outside the dataset root {m.root} (not read)"))
        return None, None
    if not path.is_file():
        problems.append(Problem(where, f"{ref.field} file not found"))
        return None, None
    size = path.stat().st_size
    digest = sha256_file(path)
    if m.version == VERSION_2:
        missing = [k for k in ("sha256", "bytes", "width", "height") if getattr(ref, k) is None]
        if missing:
            problems.append(Problem(where, f"manifest entry lacks {', '.join(missing)}"))
        if ref.bytes is not None and ref.bytes != size:
            problems.append(Problem(where, f"byte size {size} differs from the manifest's {ref.bytes} (file changed)"))
        elif ref.sha256 is not None and ref.sha256 != digest:
            problems.append(Problem(where, f"sha256 mismatch: file {digest[:16]}…, manifest {ref.sha256[:16]}…"))
    try:
        pixels = _decode(ref, path)
    except (AlphaDecodeError, ImageDecodeError) as exc:
        kind = "image" if ref.field == "image" else ref.field
        problems.append(Problem(where, f"{kind} does not decode: {_clean(exc, path)}"))
        return None, digest
    h, w = pixels.shape[:2]
    if m.version == VERSION_2 and ref.width is not None and ref.height is not None \
            and (ref.width, ref.height) != (w, h):
        problems.append(Problem(where, f"pixel size {w}×{h} differs from the manifest's {ref.width}×{ref.height}"))
    return pixels, digest


def check_record(m: Manifest, rec: Record) -> _Checked:
    """Every per-sample check of one record (files, decoding, sizes, trimap values)."""
    problems: list[Problem] = []
    decoded: dict[str, np.ndarray] = {}
    image_sha = None
    for name, ref in rec.files.items():
        pixels, digest = _check_file(m, ref, problems)
        if name == "image":
            image_sha = digest
        if pixels is not None:
            decoded[name] = pixels
    image = decoded.get("image")
    for name in ("alpha", "trimap"):
        arr = decoded.get(name)
        if arr is None:
            continue
        where = str(m.root / rec.files[name].rel)
        if image is not None and arr.shape[:2] != image.shape[:2]:
            problems.append(Problem(where, f"{name} is {arr.shape[1]}×{arr.shape[0]}, "
                                           f"its image is {image.shape[1]}×{image.shape[0]}"))
        elif name == "trimap" and "alpha" in decoded and arr.shape != decoded["alpha"].shape:
            problems.append(Problem(where, "trimap and matte sizes differ"))
        if name == "trimap":
            bad = np.setdiff1d(np.unique(arr), TRIMAP_VALUES)
            if bad.size:
                shown = ", ".join(str(int(v)) for v in bad[:5]) + (", …" if bad.size > 5 else "")
                problems.append(Problem(where, f"trimap holds values other than 0/128/255 ({bad.size}: {shown})"))
        elif not np.any(arr > 0):
            problems.append(Problem(where, "matte is empty (alpha > 0 nowhere): no prompt can be drawn on it",
                                    warning=True))
    return _Checked(problems, image_sha)


def check_groups(m: Manifest) -> list[Problem]:
    """Ids, entry fields, group table, references and groups of one."""
    where = str(m.path)
    out: list[Problem] = []
    first: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    for rec in m.records:
        loc = f"{where} samples[{rec.index}]"
        out.extend(Problem(loc, e) for e in rec.errors)
        if not rec.sid:
            continue
        if rec.sid in first:
            out.append(Problem(loc, f"duplicate sample id '{rec.sid}' (first at samples[{first[rec.sid]}])"))
            continue
        first[rec.sid] = rec.index
        if rec.group:
            members.setdefault(rec.group, []).append(rec.sid)
            if m.version == VERSION_2 and rec.group not in m.groups:
                out.append(Problem(loc, f"group '{rec.group}' of sample '{rec.sid}' is not in 'groups'"))
    for key, g in m.groups.items():
        loc = f"{where} groups[{key}]"
        if key not in members:
            out.append(Problem(loc, "group has no samples"))
            continue
        if m.version == VERSION_2:
            if g.get("type") not in GROUP_TYPES:
                out.append(Problem(loc, f"type must be one of {list(GROUP_TYPES)}, got {g.get('type')!r}"))
            if not isinstance(g.get("prompt_seed", 0), int):
                out.append(Problem(loc, f"prompt_seed must be an integer, got {g.get('prompt_seed')!r}"))
        refs = g.get("references") or []
        if not isinstance(refs, list):
            out.append(Problem(loc, f"references must be a list of sample ids, got {refs!r}"))
            refs = []
        for r in refs:
            if r not in members[key]:
                out.append(Problem(loc, f"reference '{r}' is not a sample of this group"))
    for key, ids in members.items():
        if len(ids) == 1:
            out.append(Problem(f"{where} groups[{key}]", f"group of one sample ('{ids[0]}'): no target besides "
                                                         "its reference (the runner skips it by default)",
                               warning=True))
    return out


def duplicates(m: Manifest, checked: Sequence[_Checked]) -> list[Problem]:
    """One line per image file whose bytes equal another file's (one file shared by several samples, as an
    Open Images photo matted for two classes, is not a duplicate)."""
    seen: dict[str, str] = {}
    out: list[Problem] = []
    for rec, c in zip(m.records, checked, strict=True):
        if c.image_sha is None or "image" not in rec.files:
            continue
        path = str(m.root / rec.files["image"].rel)
        if seen.get(c.image_sha) == path:
            continue
        if c.image_sha in seen:
            out.append(Problem(path, f"same image as {seen[c.image_sha]} (sha256 {c.image_sha[:16]}…)"))
        else:
            seen[c.image_sha] = path
    return out


def validate(manifest: str | Path, workers: int = 0) -> list[Problem]:
    """All problems of the dataset described by ``manifest`` (a file or its folder)."""
    m = read_manifest(manifest)
    checked = parallel_map(lambda r: check_record(m, r), m.records, workers or default_workers(), desc="validate")
    problems = [p for c in checked for p in c.problems]
    return problems + duplicates(m, checked) + check_groups(m)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("manifest", help="manifest.json (v1 or v2), or the folder holding it")
    parser.add_argument("--strict", action="store_true", help="warnings (groups of one, empty mattes) also fail")
    parser.add_argument("--workers", type=int, default=0, help="threads (default: the CPUs this process may use)")
    parser.epilog = "Example: python -m data_tools validate data/mine/manifest.json"


def run(args: argparse.Namespace) -> int:
    problems = validate(args.manifest, args.workers)
    for p in problems:
        print(p.line())
    errors = sum(not p.warning for p in problems)
    warnings = len(problems) - errors
    print(f"{args.manifest}: {errors} problem(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors or (args.strict and warnings) else 0
