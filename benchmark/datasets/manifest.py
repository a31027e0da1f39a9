"""The project's own dataset manifest (``manifest.json``), shared with :mod:`data_tools`.

Format (paths relative to the manifest's folder)::

    {"format": "icmbench-dataset", "version": 1, "name": "...",
     "samples": [{"id": "...", "group": "...", "image": "image/x.jpg",
                  "alpha": "alpha/x.png", "trimap": "trimap/x.png" | null, "meta": {...}}],
     "groups": {"<group key>": {...group metadata...}}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark.datasets.common import DatasetError, build_dataset
from benchmark.io import atomic_write_text
from benchmark.types import Dataset, Sample

MANIFEST_NAME = "manifest.json"
FORMAT, VERSION = "icmbench-dataset", 1


def load_manifest(root: str | os.PathLike | None = None, path: str | os.PathLike | None = None,
                  name: str | None = None, check_files: bool = True,
                  allow_outside_root: bool = False) -> Dataset:
    """Load a dataset described by ``<root>/manifest.json`` (or an explicit manifest ``path``)."""
    if path is None:
        if root is None:
            raise DatasetError("manifest dataset: give dataset.root=DIR or dataset.path=FILE")
        path = Path(root) / MANIFEST_NAME
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON manifest ({exc})") from exc
    if doc.get("format") != FORMAT:
        raise DatasetError(f"{path}: 'format' must be '{FORMAT}', got {doc.get('format')!r}")
    if doc.get("version") != VERSION:
        raise DatasetError(f"{path}: unsupported manifest version {doc.get('version')!r}")
    base = path.parent
    samples: list[Sample] = []
    for i, entry in enumerate(doc.get("samples", [])):
        where = f"{path} samples[{i}]"
        try:
            sid, group, image = str(entry["id"]), str(entry["group"]), entry["image"]
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: missing field {exc}") from exc

        def resolve(rel: str | None, field: str, *, _where: str = where) -> Path | None:
            if rel is None:
                return None
            p = base / rel
            if check_files and not p.is_file():
                raise DatasetError(f"{_where} ({field}): file not found: {p}")
            return p

        samples.append(Sample(
            id=sid, group=group,
            image_path=resolve(image, "image"),  # type: ignore[arg-type]
            alpha_path=resolve(entry.get("alpha"), "alpha"),
            trimap_path=resolve(entry.get("trimap"), "trimap"),
            meta=dict(entry.get("meta", {})),
        ))
    if not samples:
        raise DatasetError(f"{path}: no samples")
    return build_dataset(name or str(doc.get("name", base.name)), base, samples,
                         group_meta=doc.get("groups", {}), meta=dict(doc.get("meta", {})),
                         allow_outside_root=allow_outside_root)


def manifest_document(name: str, samples: Sequence[Sample], root: Path,
                      groups: Mapping[str, Mapping[str, Any]] | None = None,
                      meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document describing ``samples`` (paths made relative to ``root``)."""

    def rel(p: Path | None) -> str | None:
        return None if p is None else Path(os.path.relpath(p, root)).as_posix()

    return {
        "format": FORMAT, "version": VERSION, "name": name, "meta": dict(meta or {}),
        "samples": [
            {"id": s.id, "group": s.group, "image": rel(s.image_path), "alpha": rel(s.alpha_path),
             "trimap": rel(s.trimap_path), "meta": dict(s.meta)}
            for s in samples
        ],
        "groups": {k: dict(v) for k, v in (groups or {}).items()},
    }


def write_manifest(root: str | os.PathLike, name: str, samples: Sequence[Sample],
                   groups: Mapping[str, Mapping[str, Any]] | None = None,
                   meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``<root>/manifest.json`` atomically and return its path."""
    root = Path(root)
    doc = manifest_document(name, samples, root, groups, meta)
    target = root / MANIFEST_NAME
    atomic_write_text(target, json.dumps(doc, indent=2) + "\n")
    return target
