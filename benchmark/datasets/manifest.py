"""The project's own dataset manifest (``manifest.json``), shared with :mod:`data_tools`.

Version 1 (paths relative to the manifest's folder; still read)::

    {"format": "icmbench-dataset", "version": 1, "name": "...",
     "samples": [{"id": "...", "group": "...", "image": "image/x.jpg",
                  "alpha": "alpha/x.png", "trimap": "trimap/x.png" | null, "meta": {...}}],
     "groups": {"<group key>": {...group metadata...}}}

Version 2 (written by :class:`data_tools.build.DatasetBuilder`; documented field by field in
``data_tools/README.md``) adds a checksum, byte size and pixel size for every file, and class, source,
licence, split, group type, designated references and prompt seed::

    {"format": "icmbench-dataset", "version": 2, "name": "...", "created_by": "python -m data_tools ...",
     "meta": {}, "groups": {"<key>": {"type": "instance" | "category", "class": "dog",
                                      "references": ["<sample id>"], "prompt_seed": 0, "meta": {}}},
     "samples": [{"id": "...", "group": "<key>", "class": "dog", "source": "...", "licence": "...",
                  "split": "test", "image": {"path": "image/x.jpg", "sha256": "...", "bytes": 123,
                  "width": 640, "height": 480}, "alpha": {...} | null, "trimap": {...} | null, "meta": {}}]}

Both load into the same value types: a v2 sample's class/source/licence/split go into ``Sample.meta``,
a v2 group's type/class/references/prompt_seed into ``Group.meta``, and the dataset fingerprint hashes
the stored sha256s (v1: file sizes).
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
VERSION_2 = 2
SUPPORTED_VERSIONS = (VERSION, VERSION_2)
GROUP_TYPES = ("instance", "category")
#: Sample fields of v2 copied into ``Sample.meta`` (and group fields into ``Group.meta``).
SAMPLE_FIELDS = ("class", "source", "licence", "split")
GROUP_FIELDS = ("type", "class", "references", "prompt_seed")
FILE_FIELDS = ("image", "alpha", "trimap")


def canonical_json(doc: Mapping[str, Any]) -> str:
    """The one serialisation of a manifest: sorted keys, one-space indent, UTF-8, final newline."""
    return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def read_document(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed manifest at ``path`` with its format and version checked (DatasetError otherwise)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DatasetError(f"{path}: 'format' must be '{FORMAT}', got {got!r}")
    if doc.get("version") not in SUPPORTED_VERSIONS:
        raise DatasetError(f"{path}: unsupported manifest version {doc.get('version')!r}")
    return doc


def file_field(entry: Mapping[str, Any], field: str, version: int, where: str) -> tuple[str | None, dict | None]:
    """(relative path, v2 file record or None) of a sample's ``image``/``alpha``/``trimap`` field."""
    value = entry.get(field)
    if value is None:
        return None, None
    if version == VERSION:
        if not isinstance(value, str):
            raise DatasetError(f"{where} ({field}): expected a path string, got {type(value).__name__}")
        return value, None
    if not isinstance(value, Mapping) or not isinstance(value.get("path"), str):
        raise DatasetError(f"{where} ({field}): expected {{'path', 'sha256', 'bytes', 'width', 'height'}}")
    return value["path"], dict(value)


def load_manifest(root: str | os.PathLike | None = None, path: str | os.PathLike | None = None,
                  name: str | None = None, check_files: bool = True,
                  allow_outside_root: bool = False) -> Dataset:
    """Load a dataset described by ``<root>/manifest.json`` (or an explicit manifest ``path``), v1 or v2."""
    if path is None:
        if root is None:
            raise DatasetError("manifest dataset: give dataset.root=DIR or dataset.path=FILE")
        path = Path(root) / MANIFEST_NAME
    path = Path(path).expanduser()
    doc = read_document(path)
    version = int(doc["version"])
    base = path.parent
    samples: list[Sample] = []
    checksums: dict[str, tuple[str | None, ...]] = {}
    for i, entry in enumerate(doc.get("samples", [])):
        where = f"{path} samples[{i}]"
        try:
            sid, group = str(entry["id"]), str(entry["group"])
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: missing field {exc}") from exc
        files: dict[str, Path | None] = {}
        digests: list[str | None] = []
        for field in FILE_FIELDS:
            rel, record = file_field(entry, field, version, where)
            if rel is None and field == "image":
                raise DatasetError(f"{where}: missing field 'image'")
            p = None if rel is None else base / rel
            if p is not None and check_files and not p.is_file():
                raise DatasetError(f"{where} ({field}): file not found: {p}")
            files[field] = p
            digests.append(None if record is None else str(record.get("sha256")))
        meta = dict(entry.get("meta") or {})
        if version == VERSION_2:
            meta.update({k: entry.get(k) for k in SAMPLE_FIELDS})
            checksums[sid] = tuple(digests)
        samples.append(Sample(id=sid, group=group, image_path=files["image"],  # type: ignore[arg-type]
                              alpha_path=files["alpha"], trimap_path=files["trimap"], meta=meta))
    if not samples:
        raise DatasetError(f"{path}: no samples")
    groups = doc.get("groups", {}) or {}
    if not isinstance(groups, Mapping):
        raise DatasetError(f"{path}: 'groups' must be an object")
    if version == VERSION_2:
        groups = {k: {**dict(g.get("meta") or {}), **{f: g.get(f) for f in GROUP_FIELDS}} for k, g in groups.items()}
    meta = dict(doc.get("meta", {}))
    return build_dataset(name or str(doc.get("name", base.name)), base, samples, group_meta=groups, meta=meta,
                         allow_outside_root=allow_outside_root, checksums=checksums if version == VERSION_2 else None)


def manifest_document(name: str, samples: Sequence[Sample], root: Path,
                      groups: Mapping[str, Mapping[str, Any]] | None = None,
                      meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The v1 JSON document describing ``samples`` (paths made relative to ``root``)."""

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
    """Write a v1 ``<root>/manifest.json`` atomically and return its path (v2: :mod:`data_tools.build`)."""
    root = Path(root)
    doc = manifest_document(name, samples, root, groups, meta)
    target = root / MANIFEST_NAME
    atomic_write_text(target, json.dumps(doc, indent=2) + "\n")
    return target
