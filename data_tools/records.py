"""A manifest (v1 or v2) read as plain records, tolerant of bad entries, for ``validate`` and ``stats``.

The benchmark's loader (:func:`benchmark.datasets.manifest.load_manifest`) stops at the first bad entry;
these tools must instead see every entry and report each problem, so they read the document themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.datasets.manifest import FILE_FIELDS, MANIFEST_NAME, VERSION_2, read_document


@dataclass(frozen=True)
class FileRef:
    """One file field of a sample: relative path and, in v2, the stored checksum, byte and pixel size."""

    field: str
    rel: str
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class Record:
    """One sample entry: where it is in the manifest, its id, group and files."""

    index: int
    sid: str
    group: str
    files: dict[str, FileRef] = field(default_factory=dict)
    cls: str | None = None
    errors: list[str] = field(default_factory=list)  # entry-level problems (missing fields, bad types)


@dataclass
class Manifest:
    """The parsed manifest: its path, root folder, version, records and group table."""

    path: Path
    root: Path
    version: int
    name: str
    records: list[Record]
    groups: dict[str, dict[str, Any]]
    doc: dict[str, Any]


def manifest_path(arg: str | os.PathLike) -> Path:
    """A manifest file, or a folder holding ``manifest.json``."""
    p = Path(arg).expanduser()
    return p / MANIFEST_NAME if p.is_dir() else p


def _ref(field_name: str, value: Any, version: int) -> FileRef | str:
    """The FileRef of a file field, or a problem message."""
    if version != VERSION_2:
        return FileRef(field_name, value) if isinstance(value, str) and value else f"{field_name}: not a path string"
    if not isinstance(value, Mapping) or not isinstance(value.get("path"), str) or not value["path"]:
        return f"{field_name}: expected an object with 'path', 'sha256', 'bytes', 'width', 'height'"

    def num(key: str) -> int | None:
        v = value.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    sha = value.get("sha256")
    return FileRef(field_name, value["path"], sha if isinstance(sha, str) else None, num("bytes"), num("width"),
                   num("height"))


def read_manifest(arg: str | os.PathLike) -> Manifest:
    """Parse a manifest into records; DatasetError (bad input) only if it is no manifest at all."""
    path = manifest_path(arg)
    doc = read_document(path)
    version = int(doc["version"])
    records: list[Record] = []
    samples = doc.get("samples", [])
    if not isinstance(samples, list):
        samples = []
    for i, entry in enumerate(samples):
        if not isinstance(entry, Mapping):
            records.append(Record(i, "", "", errors=["sample entry is not an object"]))
            continue
        rec = Record(i, str(entry.get("id", "")), str(entry.get("group", "")),
                     cls=entry.get("class") if isinstance(entry.get("class"), str) else None)
        for key in ("id", "group"):
            if not entry.get(key):
                rec.errors.append(f"missing field '{key}'")
        for name in FILE_FIELDS:
            value = entry.get(name)
            if value is None:
                if name == "image":
                    rec.errors.append("missing field 'image'")
                elif version == VERSION_2 and name not in entry:
                    rec.errors.append(f"missing field '{name}' (v2 writes null when there is none)")
                continue
            ref = _ref(name, value, version)
            if isinstance(ref, str):
                rec.errors.append(ref)
            else:
                rec.files[name] = ref
        records.append(rec)
    groups = doc.get("groups", {})
    groups = {str(k): dict(v) if isinstance(v, Mapping) else {} for k, v in groups.items()} \
        if isinstance(groups, Mapping) else {}
    return Manifest(path, path.parent, version, str(doc.get("name", path.parent.name)), records, groups, doc)


def inside(root: Path, rel: str) -> bool:
    """Whether ``root/rel`` (symlinks followed) stays inside ``root``; absolute paths never do."""
    if os.path.isabs(rel) or "\\" in rel:
        return False
    return Path(os.path.realpath(root / rel)).is_relative_to(root.resolve())
