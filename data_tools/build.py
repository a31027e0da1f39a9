"""Write a dataset folder and its manifest v2 (:mod:`benchmark.datasets.manifest`) reproducibly.

Converters place (copy) or generate files under an output folder, register samples and groups, and call
:meth:`DatasetBuilder.write`, which hashes every file, checks the grouping and writes ``manifest.json`` in
canonical JSON: two builds from the same inputs are byte-identical, and re-running a build skips files that
are already in place (same size and sha256), so an interrupted build resumes.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from benchmark.datasets.manifest import GROUP_TYPES, MANIFEST_NAME, canonical_json
from benchmark.io import atomic_write_bytes, atomic_write_text
from benchmark.progress import progress
from metrics.io import new_file_mode

Image.MAX_IMAGE_PIXELS = 400_000_000

#: zlib level of :func:`png_bytes` (fixed, so the same array always gives the same bytes).
PNG_COMPRESS_LEVEL = 6
_CHUNK = 1 << 20

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest: its path (relative, posix), checksum, byte size and pixel size."""

    path: str
    sha256: str
    bytes: int
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1-MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header (images and mattes alike); ValueError if it is no image."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc


def check_rel(rel: str) -> str:
    """``rel`` as a normalised relative posix path that cannot leave its root; ValueError otherwise.

    Refused: empty paths, absolute paths, ``\\``, ``.``/``..``/empty components, NUL and control characters.
    Build names from ids with :func:`benchmark.safe_names.file_name` (or :func:`rel_path`)."""
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"invalid relative path {rel!r}")
    if "\\" in rel or any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise ValueError(f"invalid relative path {rel!r}: backslash or control character")
    p = PurePosixPath(rel)
    if p.is_absolute() or rel.startswith("/"):
        raise ValueError(f"path {rel!r} is absolute; manifest paths are relative to the dataset root")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"path {rel!r} has an empty, '.' or '..' component (it must stay inside the root)")
    return rel


def rel_path(folder: str, identifier: str, suffix: str) -> str:
    """``folder/<safe file name of identifier><suffix>``: a safe place for a sample's file."""
    from benchmark.safe_names import file_name

    return check_rel(f"{folder}/{file_name(identifier, suffix)}")


def file_entry(root: Path, rel: str) -> FileEntry:
    """Hash ``root/rel`` and read its pixel size (image or matte); ValueError if it is missing or undecodable."""
    rel = check_rel(rel)
    path = Path(root) / rel
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    width, height = image_size(path)
    return FileEntry(rel, sha256_file(path), path.stat().st_size, width, height)


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of a uint8 H×W (or H×W×3/4) array, deterministic (fixed level, no metadata)."""
    a = np.asarray(array)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * np.uint8(255)
    if a.dtype != np.uint8:
        raise ValueError(f"png_bytes expects uint8 or bool, got {a.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int = 0, desc: str = "") -> list[R]:
    """``[fn(x) for x in items]`` in order, on a thread pool when ``workers > 1``, with :func:`progress`."""
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(progress(pool.map(fn, items), total=len(items), desc=desc))
    return [fn(x) for x in progress(items, total=len(items), desc=desc)]


def default_workers() -> int:
    """The CPUs this process may use (affinity), for hashing and decoding threads."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def created_by(command: str) -> str:
    """The manifest's ``created_by`` value for a data_tools command (no paths: builds stay byte-identical)."""
    return f"python -m data_tools {command}"


@dataclass
class _SampleSpec:
    sid: str
    group: str
    image: str
    alpha: str | None
    trimap: str | None
    class_name: str | None
    source: str
    licence: str
    split: str
    meta: dict[str, Any]


@dataclass
class _GroupSpec:
    key: str
    type: str
    class_name: str | None
    references: tuple[str, ...]
    prompt_seed: int
    meta: dict[str, Any]


class DatasetBuilder:
    """Collects files, samples and groups under ``out`` and writes ``out/manifest.json`` (manifest v2).

    Thread-safe: converters may call :meth:`place`, :meth:`write_bytes` and :meth:`add_sample` from threads.
    """

    def __init__(self, out: Path, name: str, *, created_by: str, meta: Mapping[str, Any] | None = None) -> None:
        self.out = Path(out)
        self.name = str(name)
        self.created_by = str(created_by)
        self.meta: dict[str, Any] = dict(meta or {})
        self._samples: dict[str, _SampleSpec] = {}
        self._groups: dict[str, _GroupSpec] = {}
        self._known: dict[str, tuple[str, int]] = {}  # rel -> (sha256, bytes) of files this builder placed
        self._lock = threading.Lock()
        self.placed = 0   # files copied or written
        self.skipped = 0  # files already in place (resumed)

    # -- files -------------------------------------------------------------------------------------------
    def _target(self, rel: str) -> Path:
        rel = check_rel(rel)
        target = self.out / rel
        base = self.out.resolve()
        if not Path(os.path.realpath(target)).is_relative_to(base):
            raise ValueError(f"path {rel!r} resolves outside the output folder {self.out} (a symlink?)")
        return target

    def _unchanged(self, target: Path, size: int, digest: str) -> bool:
        try:
            return target.is_file() and target.stat().st_size == size and sha256_file(target) == digest
        except OSError:
            return False

    def _remember(self, rel: str, digest: str, size: int, wrote: bool) -> None:
        with self._lock:
            self._known[rel] = (digest, size)
            if wrote:
                self.placed += 1
            else:
                self.skipped += 1

    def place(self, src: Path, rel: str) -> str:
        """Copy ``src`` to ``out/rel`` atomically unless an identical file is already there; returns ``rel``."""
        src = Path(src)
        target = self._target(rel)
        if not src.is_file():
            raise ValueError(f"{src}: source file not found")
        size, digest = src.stat().st_size, sha256_file(src)
        wrote = not self._unchanged(target, size, digest)
        if wrote:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as dst, open(src, "rb") as fh:
                    os.fchmod(dst.fileno(), new_file_mode())
                    shutil.copyfileobj(fh, dst, _CHUNK)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self._remember(rel, digest, size, wrote)
        return rel

    def write_bytes(self, data: bytes, rel: str) -> str:
        """Write ``data`` to ``out/rel`` atomically unless an identical file is already there; returns ``rel``."""
        target = self._target(rel)
        digest = hashlib.sha256(data).hexdigest()
        wrote = not self._unchanged(target, len(data), digest)
        if wrote:
            atomic_write_bytes(target, data)
        self._remember(rel, digest, len(data), wrote)
        return rel

    # -- samples and groups ------------------------------------------------------------------------------
    def add_sample(self, sid: str, group: str, *, image: str, alpha: str | None, trimap: str | None = None,
                   class_name: str | None = None, source: str = "", licence: str = "", split: str = "test",
                   meta: Mapping[str, Any] | None = None) -> None:
        """Register a sample whose files (paths relative to ``out``) are placed; duplicate id → ValueError."""
        if not sid or not isinstance(sid, str):
            raise ValueError(f"invalid sample id {sid!r}")
        if not group or not isinstance(group, str):
            raise ValueError(f"sample {sid!r}: invalid group key {group!r}")
        spec = _SampleSpec(sid, group, check_rel(image), None if alpha is None else check_rel(alpha),
                           None if trimap is None else check_rel(trimap), class_name, str(source), str(licence),
                           str(split), dict(meta or {}))
        with self._lock:
            if sid in self._samples:
                raise ValueError(f"duplicate sample id {sid!r}")
            self._samples[sid] = spec

    def add_group(self, key: str, *, type: str, class_name: str | None = None, references: Sequence[str] = (),
                  prompt_seed: int = 0, meta: Mapping[str, Any] | None = None) -> None:
        """Register a group (``type`` ``instance`` or ``category``); duplicate key → ValueError."""
        if not key or not isinstance(key, str):
            raise ValueError(f"invalid group key {key!r}")
        if type not in GROUP_TYPES:
            raise ValueError(f"group {key!r}: type must be one of {GROUP_TYPES}, got {type!r}")
        if isinstance(references, str):
            raise ValueError(f"group {key!r}: references must be a list of sample ids, not a string")
        spec = _GroupSpec(key, type, class_name, tuple(str(r) for r in references), int(prompt_seed), dict(meta or {}))
        with self._lock:
            if key in self._groups:
                raise ValueError(f"duplicate group key {key!r}")
            self._groups[key] = spec

    @property
    def sample_ids(self) -> list[str]:
        return list(self._samples)

    def digest(self, rel: str) -> tuple[str, int]:
        """(sha256, bytes) of a file this builder placed or wrote (KeyError for any other)."""
        with self._lock:
            return self._known[rel]

    # -- manifest ----------------------------------------------------------------------------------------
    def _check(self) -> None:
        members: dict[str, set[str]] = {}
        for s in self._samples.values():
            if s.group not in self._groups:
                raise ValueError(f"sample {s.sid!r} names group {s.group!r}, which was not added (add_group)")
            members.setdefault(s.group, set()).add(s.sid)
        for g in self._groups.values():
            if g.key not in members:
                raise ValueError(f"group {g.key!r} has no samples")
            missing = [r for r in g.references if r not in members[g.key]]
            if missing:
                raise ValueError(f"group {g.key!r}: references {missing} are not samples of this group")
            if len(set(g.references)) != len(g.references):
                raise ValueError(f"group {g.key!r}: duplicate references {list(g.references)}")
        if not self._samples:
            raise ValueError(f"{self.name}: no samples")

    def _entry(self, rel: str) -> FileEntry:
        known = self._known.get(rel)
        path = self.out / rel
        if known is not None and path.is_file() and path.stat().st_size == known[1]:
            width, height = image_size(path)  # already hashed when placed: read the header only
            return FileEntry(rel, known[0], known[1], width, height)
        return file_entry(self.out, rel)

    def document(self, workers: int = 0) -> dict[str, Any]:
        """The manifest v2 document (files hashed, grouping checked)."""
        self._check()
        rels = sorted({r for s in self._samples.values() for r in (s.image, s.alpha, s.trimap) if r is not None})
        entries = dict(zip(rels, parallel_map(self._entry, rels, workers, desc="hashing"), strict=True))
        samples = []
        for s in sorted(self._samples.values(), key=lambda s: (s.group, s.sid)):
            group_class = self._groups[s.group].class_name
            samples.append({
                "id": s.sid, "group": s.group, "class": s.class_name if s.class_name is not None else group_class,
                "source": s.source, "licence": s.licence, "split": s.split,
                "image": entries[s.image].to_json(),
                "alpha": None if s.alpha is None else entries[s.alpha].to_json(),
                "trimap": None if s.trimap is None else entries[s.trimap].to_json(),
                "meta": s.meta,
            })
        groups = {g.key: {"type": g.type, "class": g.class_name, "references": list(g.references),
                          "prompt_seed": g.prompt_seed, "meta": g.meta} for g in self._groups.values()}
        from benchmark.datasets.manifest import FORMAT, VERSION_2

        return {"format": FORMAT, "version": VERSION_2, "name": self.name, "created_by": self.created_by,
                "meta": self.meta, "groups": groups, "samples": samples}

    def write(self, workers: int = 0) -> Path:
        """Hash every file, check the grouping, write ``out/manifest.json`` canonically; returns its path."""
        doc = self.document(workers)
        target = self.out / MANIFEST_NAME
        atomic_write_text(target, canonical_json(doc))
        return target


__all__ = [
    "DatasetBuilder", "FileEntry", "check_rel", "created_by", "default_workers", "file_entry", "image_size",
    "parallel_map", "png_bytes", "rel_path", "sha256_file",
]
