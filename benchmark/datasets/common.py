"""Helpers shared by the dataset loaders: stem lookup, fingerprints, layout errors."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark.types import Dataset, Group, Sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """The dataset's layout or grouping file is wrong; the message names the file or key."""


def index_by_stem(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> dict[str, Path]:
    """Map file stem → path for the image files in ``folder`` (empty if the folder is absent).

    Two files with the same stem (``a.jpg`` and ``a.png``) are ambiguous and raise.
    """
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    exts = {e.lower() for e in extensions}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in exts:
            if path.stem in out:
                raise DatasetError(f"two files share the stem '{path.stem}': {out[path.stem]} and {path}")
            out[path.stem] = path
    return out


def fingerprint(name: str, samples: Mapping[str, Sample], groups: Mapping[str, Group], root: Path,
                checksums: Mapping[str, Sequence[str | None]] | None = None) -> str:
    """Hash of the manifest content (ids, groups, relative paths) and every file's size, or, when
    ``checksums`` (sample id → sha256 of image, alpha, trimap; manifest v2) is given, every file's sha256."""

    def rel(p: Path | None, digest: str | None = None) -> list[Any] | None:
        if p is None:
            return None
        try:
            r = str(p.relative_to(root))
        except ValueError:
            r = str(p)
        if checksums is not None:
            return [r, digest]
        return [r, p.stat().st_size if p.exists() else -1]

    def files(s: Sample) -> list[list[Any] | None]:
        digests = tuple(checksums.get(s.id, ())) if checksums is not None else ()
        digests = digests + (None,) * (3 - len(digests))
        return [rel(p, d) for p, d in zip((s.image_path, s.alpha_path, s.trimap_path), digests, strict=True)]

    payload = {
        "name": name,
        "samples": [
            [s.id, s.group, *files(s)]
            for s in sorted(samples.values(), key=lambda s: s.id)
        ],
        "groups": {k: list(g.sample_ids) for k, g in sorted(groups.items())},
    }
    designated = {k: g.meta["references"] for k, g in sorted(groups.items()) if g.meta.get("references")}
    if designated:  # the fixed protocol's references are part of what the numbers mean
        payload["references"] = designated
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def outside_root(sample: Sample, root: Path) -> str | None:
    """The first file of ``sample`` that resolves (symlinks followed) outside ``root``, or None."""
    base = root.resolve()
    for p in (sample.image_path, sample.alpha_path, sample.trimap_path):
        if p is not None and not Path(os.path.realpath(p)).is_relative_to(base):
            return str(p)
    return None


def contain(name: str, root: Path, samples: list[Sample], problems: list[dict[str, str]]) -> list[Sample]:
    """The samples whose files all lie inside ``root``; the others are reported in ``problems``
    (never opened), with one warning."""
    kept: list[Sample] = []
    for s in samples:
        bad = outside_root(s, root)
        if bad is None:
            kept.append(s)
        else:
            problems.append({"sample": s.id, "group": s.group,
                             "error": f"{bad} lies outside the dataset root {root} (a '..', absolute path or "
                                      "symlink); not read. Set dataset.allow_outside_root=true to allow it"})
    if len(kept) < len(samples):
        warnings.warn(f"{name}: {len(samples) - len(kept)} sample(s) point outside {root} and were left out",
                      stacklevel=3)
    return kept


def build_dataset(name: str, root: Path, samples: list[Sample],
                  group_meta: Mapping[str, Mapping[str, Any]] | None = None,
                  meta: Mapping[str, Any] | None = None, allow_outside_root: bool = False,
                  checksums: Mapping[str, Sequence[str | None]] | None = None) -> Dataset:
    """Assemble a :class:`Dataset` from samples (group order = first appearance, ids kept in order).

    ``checksums`` (manifest v2: sample id → sha256 of image, alpha, trimap) make the fingerprint hash the
    stored checksums instead of file sizes. Unless ``allow_outside_root``, samples with a file that
    resolves outside ``root`` are left out and listed in ``meta["problems"]`` (so they become error
    rows, and nothing outside is read)."""
    meta = dict(meta or {})
    if not allow_outside_root:
        problems = list(meta.get("problems", []))
        samples = contain(name, root, samples, problems)
        if problems:
            meta["problems"] = problems
        if not samples:
            raise DatasetError(f"{name}: no sample has its files inside the dataset root {root}")
    by_id: dict[str, Sample] = {}
    members: dict[str, list[str]] = {}
    for s in samples:
        if s.id in by_id:
            raise DatasetError(f"{name}: duplicate sample id '{s.id}'")
        by_id[s.id] = s
        members.setdefault(s.group, []).append(s.id)
    group_meta = group_meta or {}
    groups = {k: Group(k, tuple(ids), dict(group_meta.get(k, {}))) for k, ids in members.items()}
    return Dataset(name=name, root=root, samples=by_id, groups=groups,
                   fingerprint=fingerprint(name, by_id, groups, root, checksums), meta=meta)


class Problems(list):
    """Entries a loader had to leave out: raise at once (``on_missing="error"``) or collect them
    for ``dataset.meta["problems"]`` (the runner turns them into error rows) with one warning."""

    def __init__(self, on_missing: str) -> None:
        super().__init__()
        if on_missing not in ("skip", "error"):
            raise DatasetError(f"on_missing must be 'skip' or 'error', got '{on_missing}'")
        self.on_missing = on_missing

    def report(self, sample: str, group: str, message: str) -> None:
        if self.on_missing == "error":
            raise DatasetError(message)
        self.append({"sample": sample, "group": group, "error": message})

    def warn(self, name: str) -> None:
        if self:
            warnings.warn(f"{name}: {len(self)} entries without files were skipped (first: {self[0]['error']})",
                          stacklevel=3)


def require_dir(path: Path, what: str) -> Path:
    """``path`` as a directory, or a clear error naming it."""
    if not path.is_dir():
        raise DatasetError(f"{what} folder not found: {path}")
    return path
