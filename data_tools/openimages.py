"""Open Images instance masks aggregated by class into category groups (``python -m data_tools openimages``).

Inputs are the official files: ``*-annotations-object-segmentation.csv`` (one row per instance mask),
``class-descriptions-boxable.csv`` (``LabelName,DisplayName``, no header), the mask PNGs (extracted into
folders, or read straight from the sixteen ``*-masks-<hex>.zip`` shards, where the first hex digit of a
MaskPath names its shard) and a folder of ``<ImageID>.jpg`` images.

One sample is one (image, class) pair: the union of that class's instance masks in that image (each mask
resized to the image with nearest neighbour), kept when its area fraction is at least ``--min-area``;
instances below ``--min-iou`` (PredictedIoU) are left out of the union. Samples are grouped by class (a
``category`` group per display name) and each group is capped at ``--max-per-group``.

Memory stays bounded whatever the CSV's length (the training CSV has about 2.7 million rows): the CSV is
streamed once, and per class only the ``cap + spare`` (image, class) keys of lowest *priority* are kept
(bottom-k sampling), where a key's priority is a 128-bit hash of ``(seed, ImageID, LabelName)``. The sample is
therefore the same whatever the order of the rows, and a key's rows need not be adjacent: a key enters the
kept set only while its priority is below the class's current threshold, and the threshold only falls, so a
key that leaves never returns and every kept key holds all its rows. Only the kept keys' masks are read
(zip central directories are scanned for just those names, never loaded whole). Keys are then decoded in
priority order until each group has ``cap`` samples that pass the area filter; a group that runs out of kept
keys first is refilled by another pass over the CSV for keys above the last priority examined, so the result is
exactly "the ``cap`` lowest-priority keys among those that pass every filter".
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import heapq
import io
import os
import re
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
from PIL import Image

from benchmark.safe_names import file_name
from data_tools.build import DatasetBuilder, created_by, default_workers, png_bytes, rel_path

REQUIRED_COLUMNS = ("MaskPath", "ImageID", "LabelName", "PredictedIoU")
SHARD_RE = re.compile(r"-masks-([0-9a-f])\.zip$", re.IGNORECASE)
SOURCE = "openimages"
LICENCE = "annotations CC BY 4.0 (Google LLC); images listed as CC BY 2.0 (see the Open Images image licences)"
PROGRESS_EVERY = 1 << 16
DEFAULT_CAP = 100


class InputError(ValueError):
    """The input files or arguments are unusable (exit status 2)."""


class MaskError(ValueError):
    """One mask could not be read (missing, corrupt zip member or undecodable PNG)."""


# --------------------------------------------------------------------------------------------- reporting
@dataclass
class Report:
    """Problems reported on stderr (one line each) and their count; the count decides exit status 1."""

    problems: int = 0
    stream: TextIO | None = None  # None: sys.stderr at the time of the call

    def __call__(self, message: str) -> None:
        self.problems += 1
        print(f"openimages: {message}", file=self.stream or sys.stderr)


# --------------------------------------------------------------------------------------------- classes
def read_classes(path: Path) -> dict[str, str]:
    """LabelName → DisplayName from ``class-descriptions-boxable.csv`` (no header; a header row is ignored)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except OSError as exc:
        raise InputError(f"{path}: cannot read the class descriptions ({exc})") from exc
    out: dict[str, str] = {}
    for i, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0] or not row[1].strip():
            raise InputError(f"{path}:{i}: expected 'LabelName,DisplayName', got {row!r}")
        if i == 1 and (row[0], row[1]) == ("LabelName", "DisplayName"):
            continue
        out[row[0]] = row[1].strip()
    if not out:
        raise InputError(f"{path}: no classes")
    return out


def select_classes(classes: Mapping[str, str], only: Sequence[str] | None) -> dict[str, str]:
    """The classes to build: all, or those named in ``only`` (display names or LabelNames)."""
    if not only:
        return unique_names(classes)
    by_name = {v: k for k, v in classes.items()}
    chosen: dict[str, str] = {}
    for name in only:
        label = name if name in classes else by_name.get(name)
        if label is None:
            raise InputError(f"--classes-only: unknown class {name!r} (not a DisplayName or LabelName)")
        chosen[label] = classes[label]
    return unique_names(chosen)


def unique_names(classes: Mapping[str, str]) -> dict[str, str]:
    """Display names made unique (``Name (LabelName)`` for a name two labels share): they key the groups."""
    counts: dict[str, int] = {}
    for name in classes.values():
        counts[name] = counts.get(name, 0) + 1
    return {lab: name if counts[name] == 1 else f"{name} ({lab})" for lab, name in classes.items()}


# --------------------------------------------------------------------------------------------- sampling
def priority(seed: int, image_id: str, label: str) -> int:
    """The key's sampling priority: a 128-bit hash, so samples do not depend on row order and never tie."""
    digest = hashlib.blake2b(f"{seed}\0{image_id}\0{label}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big")


@dataclass
class Candidate:
    """One (image, class) key kept while streaming: its priority and its instance rows (CSV line, MaskPath)."""

    priority: int
    image_id: str
    label: str
    rows: list[tuple[int, str]]


class Reservoir:
    """The ``capacity`` keys of one class with the lowest priority above ``floor`` (bottom-k sampling).

    ``capacity=None`` keeps every key. ``truncated`` says whether some key was left out (so a later pass
    may find more)."""

    def __init__(self, label: str, seed: int, capacity: int | None, floor: int = -1) -> None:
        self.label, self.seed, self.capacity, self.floor = label, seed, capacity, floor
        self.kept: dict[str, Candidate] = {}
        self._heap: list[tuple[int, str]] = []  # (-priority, image_id): the largest priority on top
        self.truncated = False

    def offer(self, line: int, image_id: str, mask: str) -> None:
        """Add one instance row: appended to a kept key, or its key enters if its priority is low enough."""
        cand = self.kept.get(image_id)
        if cand is not None:
            cand.rows.append((line, mask))
            return
        p = priority(self.seed, image_id, self.label)
        if p <= self.floor:
            return
        if self.capacity is not None and len(self._heap) >= self.capacity:
            self.truncated = True
            if p >= -self._heap[0][0]:
                return
            _, evicted = heapq.heapreplace(self._heap, (-p, image_id))
            del self.kept[evicted]
        else:
            heapq.heappush(self._heap, (-p, image_id))
        self.kept[image_id] = Candidate(p, image_id, self.label, [(line, mask)])

    def ordered(self) -> list[Candidate]:
        """The kept keys, lowest priority first."""
        return sorted(self.kept.values(), key=lambda c: c.priority)


# --------------------------------------------------------------------------------------------- CSV
@dataclass
class ScanStats:
    """Counts of one pass over the annotation CSV."""

    rows: int = 0
    seconds: float = 0.0
    low_iou: int = 0
    other_class: int = 0


def _columns(header: Sequence[str] | None, path: Path) -> tuple[int, ...]:
    if header is None:
        raise InputError(f"{path}: empty annotation CSV")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; header is {list(header)}")
    return tuple(header.index(c) for c in REQUIRED_COLUMNS)


def _tick(rows: int, label: str) -> None:
    if sys.stderr.isatty():
        print(f"\r{label}: {rows:,} rows read", end="", file=sys.stderr, flush=True)


def scan(path: Path, reservoirs: Mapping[str, Reservoir], known: Mapping[str, str], min_iou: float,
         report: Report | None, label: str = "scan") -> ScanStats:
    """Stream the annotation CSV once, offering each instance row that passes ``min_iou`` to its class.

    ``known`` holds every class of the descriptions file; rows of a class not in it (or with an unreadable
    PredictedIoU, or too few fields) are reported when ``report`` is given (the first pass) and skipped."""
    t0 = time.perf_counter()
    try:
        with open(path, newline="", encoding="utf-8-sig", buffering=1 << 20) as fh:
            stats = _scan_rows(csv.reader(fh), path, reservoirs, known, min_iou, report, label)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the annotations ({exc})") from exc
    if sys.stderr.isatty():
        print(file=sys.stderr)
    stats.seconds = time.perf_counter() - t0
    return stats


def _scan_rows(reader: Any, path: Path, reservoirs: Mapping[str, Reservoir],
               known: Mapping[str, str], min_iou: float, report: Report | None, label: str) -> ScanStats:
    """The row loop of :func:`scan` (``reader`` is a ``csv.reader``: rows and ``line_num``)."""
    stats = ScanStats()
    unknown: set[str] = set()
    i_mask, i_image, i_label, i_iou = _columns(next(reader, None), path)
    width = max(i_mask, i_image, i_label, i_iou) + 1
    for row in reader:
        stats.rows += 1
        if not stats.rows % PROGRESS_EVERY:
            _tick(stats.rows, label)
        if len(row) < width or not row[i_mask] or not row[i_image]:
            if report is not None and row:
                report(f"{path}:{reader.line_num}: malformed row {row!r}; skipped")
            continue
        res = reservoirs.get(row[i_label])
        if res is None:
            stats.other_class += 1
            if report is not None and row[i_label] not in known and row[i_label] not in unknown:
                unknown.add(row[i_label])
                report(f"{path}:{reader.line_num}: class {row[i_label]!r} is not in the class descriptions; "
                       "its rows are skipped")
            continue
        if min_iou > 0.0:
            try:
                iou = float(row[i_iou]) if row[i_iou] else -1.0
            except ValueError:
                if report is not None:
                    report(f"{path}:{reader.line_num}: PredictedIoU {row[i_iou]!r} is not a number; skipped")
                continue
            if iou < min_iou:
                stats.low_iou += 1
                continue
        res.offer(reader.line_num, row[i_image], row[i_mask])
    return stats


# --------------------------------------------------------------------------------------------- zip shards
@dataclass(frozen=True)
class ZipMember:
    """Where one member's bytes lie in a zip file (from its central directory entry)."""

    zip_path: Path
    offset: int
    compressed: int
    size: int
    method: int
    crc: int
    flags: int


_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CDIR = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


def central_directory(fh: BinaryIO) -> tuple[int, int]:
    """(offset, entry count) of a zip file's central directory, zip64 included."""
    size = fh.seek(0, 2)
    tail_len = min(size, _EOCD.size + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        raise InputError("not a zip file (no end of central directory)")
    _, _, _, _, count, _, offset, _ = _EOCD.unpack_from(tail, at)
    loc = at - _EOCD64_LOCATOR.size
    if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        _, _, eocd64_at, _ = _EOCD64_LOCATOR.unpack_from(tail, loc)
        fh.seek(eocd64_at)
        rec = fh.read(_EOCD64.size)
        if len(rec) == _EOCD64.size and rec[:4] == b"PK\x06\x06":
            _, _, _, _, _, _, _, count, _, offset = _EOCD64.unpack(rec)
    return offset, count


def _zip64_extra(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Apply a zip64 extra field (id 1) to the 32-bit sizes and offset that overflowed."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 1:
            values = [v[0] for v in struct.iter_unpack("<Q", body[:len(body) // 8 * 8])]
            if size == 0xFFFFFFFF and values:
                size = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
        pos += 4 + length
    return size, compressed, offset


def index_zip(zip_path: Path, wanted: set[str]) -> dict[str, ZipMember]:
    """The members of ``zip_path`` whose base name is in ``wanted``, read from a streamed central directory.

    Only wanted entries are kept, so memory does not grow with the shard's size (a ``zipfile.ZipFile`` would
    hold an object per member: hundreds of thousands per real shard)."""
    found: dict[str, ZipMember] = {}
    with open(zip_path, "rb", buffering=1 << 20) as fh:
        offset, count = central_directory(fh)
        fh.seek(offset)
        for _ in range(count):
            head = fh.read(_CDIR.size)
            if len(head) < _CDIR.size or head[:4] != b"PK\x01\x02":
                raise InputError("corrupt central directory")
            (_, _, _, flags, method, _, _, crc, compressed, size, n_name, n_extra, n_comment, _, _, _,
             local) = _CDIR.unpack(head)
            raw = fh.read(n_name)
            tail = fh.read(n_extra + n_comment)
            name = raw.decode("utf-8" if flags & 0x800 else "cp437")
            base = name.rsplit("/", 1)[-1]
            if base in wanted and base not in found:
                size, compressed, local = _zip64_extra(tail[:n_extra], size, compressed, local)
                found[base] = ZipMember(zip_path, local, compressed, size, method, crc, flags)
    return found


def read_member(member: ZipMember) -> bytes:
    """The uncompressed bytes of one zip member (stored or deflated), CRC-checked; MaskError otherwise."""
    if member.flags & 0x1:
        raise MaskError("encrypted zip member")
    with open(member.zip_path, "rb") as fh:
        fh.seek(member.offset)
        head = fh.read(_LOCAL.size)
        if len(head) < _LOCAL.size or head[:4] != b"PK\x03\x04":
            raise MaskError("corrupt zip member (bad local header)")
        n_name, n_extra = _LOCAL.unpack(head)[9:11]
        fh.seek(n_name + n_extra, 1)
        data = fh.read(member.compressed)
    if len(data) < member.compressed:
        raise MaskError("truncated zip member")
    try:
        if member.method == 0:
            out = data
        elif member.method == 8:
            out = zlib.decompress(data, -15)
        else:
            raise MaskError(f"unsupported zip compression method {member.method}")
    except zlib.error as exc:
        raise MaskError(f"corrupt zip member ({exc})") from exc
    if zlib.crc32(out) != member.crc or len(out) != member.size:
        raise MaskError("corrupt zip member (CRC or size mismatch)")
    return out


# --------------------------------------------------------------------------------------------- masks
def _folder_parts(folder: Path) -> tuple[list[Path], list[Path]]:
    """The sub-folders and ``.zip`` files of ``folder``, sorted; one streamed listing (``os.scandir`` types
    entries without a stat each, which matters for a folder of millions of extracted masks)."""
    subdirs, zips = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_dir():
                subdirs.append(folder / entry.name)
            elif entry.name.lower().endswith(".zip") and entry.is_file():
                zips.append(folder / entry.name)
    return sorted(subdirs), sorted(zips)


class MaskStore:
    """Finds mask PNGs by MaskPath in folders (``DIR/<MaskPath>``, or one sub-folder down) and zip shards.

    A zip named ``*-masks-<hex>.zip`` is searched only for MaskPaths starting with that digit; other zips for
    every name. Folders are searched first; zips found inside a ``--masks`` folder count as shards too."""

    def __init__(self, sources: Sequence[Path], report: Report) -> None:
        self.dirs: list[Path] = []
        self.zips: list[Path] = []
        for src in sources:
            if src.is_dir():
                subdirs, zips = _folder_parts(src)
                self.dirs.extend([src, *subdirs])
                self.zips.extend(zips)
            elif src.is_file() and src.suffix.lower() == ".zip":
                self.zips.append(src)
            else:
                raise InputError(f"--masks {src}: neither a folder nor a .zip file")
        self.members: dict[str, ZipMember] = {}
        self.report = report
        self._bad_zips: set[Path] = set()

    def _shard_digit(self, zip_path: Path) -> str | None:
        m = SHARD_RE.search(zip_path.name)
        return m.group(1).lower() if m else None

    def index(self, names: Iterable[str]) -> None:
        """Locate ``names`` inside the zips (only those names are remembered); folder files are found on read."""
        wanted = {n for n in names if n not in self.members}
        for zip_path in self.zips:
            digit = self._shard_digit(zip_path)
            mine = wanted if digit is None else {n for n in wanted if n[:1].lower() == digit}
            if not mine or zip_path in self._bad_zips:
                continue
            try:
                found = index_zip(zip_path, mine)
            except (OSError, InputError, UnicodeDecodeError, struct.error) as exc:
                self._bad_zips.add(zip_path)
                self.report(f"{zip_path}: unreadable zip ({exc}); its masks count as missing")
                continue
            for name, member in found.items():
                self.members.setdefault(name, member)
            wanted -= found.keys()

    def read(self, name: str) -> bytes:
        """The PNG bytes of mask ``name``; MaskError if it is nowhere or unreadable."""
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise MaskError("not a plain file name")
        for d in self.dirs:
            p = d / name
            if p.is_file():
                try:
                    return p.read_bytes()
                except OSError as exc:
                    raise MaskError(f"{p}: {exc}") from exc
        member = self.members.get(name)
        if member is None:
            raise MaskError("not found in the --masks folders or zips")
        return read_member(member)

    def forget(self, names: Iterable[str]) -> None:
        """Drop located members once their samples are decided (keeps the index bounded across passes)."""
        for n in names:
            self.members.pop(n, None)


def decode_mask(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A boolean H×W mask (foreground = non-zero) from PNG bytes, resized to ``size`` (W, H) by nearest."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("1", "L"):
                im = im.convert("L")
            if im.size != size:
                im = im.resize(size, Image.Resampling.NEAREST)
            return np.asarray(im) > 0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MaskError(f"not a decodable PNG ({exc})") from exc


# --------------------------------------------------------------------------------------------- samples
@dataclass
class Outcome:
    """What became of one candidate: written (``ok``), ``small`` (below --min-area) or ``error``."""

    status: str
    area: float = 0.0
    errors: list[str] = field(default_factory=list)
    sid: str = ""
    image: str = ""
    alpha: str = ""


@dataclass(frozen=True)
class Settings:
    """What a candidate's processing needs to know."""

    csv_path: Path
    images: Path
    min_area: float
    classes: Mapping[str, str]


def union_matte(cand: Candidate, size: tuple[int, int], store: MaskStore, csv_path: Path
                ) -> tuple[np.ndarray, list[str]]:
    """The union of the candidate's instance masks at ``size``, and one message per unreadable row."""
    union = np.zeros((size[1], size[0]), dtype=bool)
    errors: list[str] = []
    for line, mask in sorted(cand.rows):
        try:
            union |= decode_mask(store.read(mask), size)
        except MaskError as exc:
            errors.append(f"{csv_path}:{line}: mask {mask}: {exc}")
    return union, errors


def process(cand: Candidate, settings: Settings, store: MaskStore, builder: DatasetBuilder) -> Outcome:
    """Build one sample: union its masks at the image's size, apply --min-area, write the matte and image.

    A missing image or any unreadable mask skips the whole sample (a matte missing an annotated instance
    would mark that object as background)."""
    src = settings.images / f"{cand.image_id}.jpg"
    try:
        with Image.open(src) as im:
            size = (int(im.size[0]), int(im.size[1]))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = "missing" if not src.exists() else f"unreadable ({exc})"
        line = min(line for line, _ in cand.rows)
        return Outcome("error", errors=[f"{settings.csv_path}:{line}: image {src} {reason}"])
    union, errors = union_matte(cand, size, store, settings.csv_path)
    if errors:
        return Outcome("error", errors=errors)
    area = float(union.mean())
    if area <= 0.0 or area < settings.min_area:
        return Outcome("small", area=area)
    display = settings.classes[cand.label]
    alpha = builder.write_bytes(png_bytes(union), rel_path(f"alpha/{file_name(display)}", cand.image_id, ".png"))
    image = builder.place(src, rel_path("image", cand.image_id, ".jpg"))
    return Outcome("ok", area=area, sid=f"{display}/{cand.image_id}", image=image, alpha=alpha)


# --------------------------------------------------------------------------------------------- selection
@dataclass
class ClassState:
    """Per class: kept candidates not yet examined, samples accepted, the last priority examined."""

    pending: list[Candidate]
    truncated: bool
    accepted: int = 0
    floor: int = -1


def spare(need: int) -> int:
    """Extra keys kept per class beyond those still needed, for the ones --min-area or errors reject."""
    return max(need // 2, 8)


def _capacity(cap: int | None, need: int) -> int | None:
    return None if cap is None else need + spare(need)


def next_batch(state: Mapping[str, ClassState], cap: int | None) -> list[Candidate]:
    """For every class, its next ``cap - accepted`` pending candidates in priority order."""
    batch: list[Candidate] = []
    for label in sorted(state):
        st = state[label]
        need = len(st.pending) if cap is None else cap - st.accepted
        take, st.pending = st.pending[:need], st.pending[need:]
        batch.extend(take)
        if take:
            st.floor = take[-1].priority
    return batch


def refill(state: Mapping[str, ClassState], cap: int | None, scan_again: Callable[[dict[str, Reservoir]], None],
           seed: int) -> bool:
    """Another CSV pass for the classes still short whose earlier pass left keys out; False if none."""
    if cap is None:
        return False
    short = {lab: st for lab, st in state.items() if st.accepted < cap and not st.pending and st.truncated}
    if not short:
        return False
    reservoirs = {lab: Reservoir(lab, seed, _capacity(cap, cap - st.accepted), st.floor) for lab, st in short.items()}
    scan_again(reservoirs)
    for lab, res in reservoirs.items():
        st = short[lab]
        st.pending = [c for c in res.ordered() if c.priority > st.floor]  # never an examined key again
        st.truncated = res.truncated and bool(st.pending)  # a pass that finds nothing new ends the class
    return True


# --------------------------------------------------------------------------------------------- command
@dataclass
class Summary:
    """The end-of-run numbers printed on stderr."""

    rows: int = 0
    scan_seconds: float = 0.0
    passes: int = 0
    kept: int = 0
    images: int = 0
    groups: int = 0
    small: int = 0
    low_iou: int = 0

    def line(self, skipped: int) -> str:
        rate = self.rows / self.scan_seconds if self.scan_seconds > 0 else float("inf")
        return (f"openimages: {self.rows:,} rows in {self.scan_seconds:.1f} s ({rate:,.0f} rows/s, first pass); "
                f"{self.passes} pass(es); kept {self.kept:,} samples ({self.images:,} images) "
                f"in {self.groups:,} groups; "
                f"{self.low_iou:,} instances below --min-iou, {self.small:,} samples below --min-area; "
                f"{skipped:,} skipped")


def add_arguments(parser: argparse.ArgumentParser, command: str = "openimages") -> None:
    """The ``openimages`` command's options."""
    parser.add_argument("--annotations", type=Path, required=True,
                        help="*-annotations-object-segmentation.csv (MaskPath,ImageID,LabelName,...,PredictedIoU)")
    parser.add_argument("--classes", type=Path, required=True,
                        help="class-descriptions-boxable.csv (LabelName,DisplayName; no header)")
    parser.add_argument("--masks", type=Path, nargs="+", required=True, metavar="DIR_OR_ZIP",
                        help="folders of mask PNGs and/or *-masks-<hex>.zip shards (or folders holding them)")
    parser.add_argument("--images", type=Path, required=True, help="folder of <ImageID>.jpg")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    parser.add_argument("--min-area", type=float, default=0.0,
                        help="smallest foreground fraction of a class's union matte (default 0: any non-empty)")
    parser.add_argument("--min-iou", type=float, default=0.0,
                        help="smallest PredictedIoU of an instance mask taken into the union (default 0)")
    parser.add_argument("--max-per-group", type=int, default=DEFAULT_CAP,
                        help=f"samples per class group (default {DEFAULT_CAP}; 0: all, memory then grows with rows)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (also the groups' prompt seed)")
    parser.add_argument("--workers", type=int, default=0, help="decoding threads (default: the usable CPUs)")
    parser.add_argument("--classes-only", nargs="+", metavar="NAME",
                        help="build only these classes (DisplayName or LabelName)")
    parser.add_argument("--split", default=None,
                        help="manifest split (default: train/validation/test from the CSV's name, else train)")


def infer_split(path: Path) -> str:
    """``train``, ``validation`` or ``test`` from the annotation file's name prefix; ``train`` otherwise."""
    head = path.name.split("-", 1)[0].lower()
    return head if head in ("train", "validation", "test") else "train"


def check_args(args: argparse.Namespace) -> None:
    """InputError for unusable numbers or paths."""
    if not 0.0 <= args.min_area <= 1.0:
        raise InputError(f"--min-area must lie in [0, 1], got {args.min_area}")
    if args.max_per_group < 0:
        raise InputError(f"--max-per-group must be >= 0, got {args.max_per_group}")
    if not args.annotations.is_file():
        raise InputError(f"--annotations {args.annotations}: file not found")
    if not args.images.is_dir():
        raise InputError(f"--images {args.images}: folder not found")


def build(args: argparse.Namespace, report: Report) -> Summary:
    """The whole command: scan, select, decode and write; returns the summary (InputError on bad input)."""
    check_args(args)
    known = read_classes(args.classes)
    classes = select_classes(known, args.classes_only)
    store = MaskStore(args.masks, report)
    cap = args.max_per_group or None
    workers = args.workers if args.workers > 0 else default_workers()
    settings = Settings(args.annotations, args.images, args.min_area, classes)
    summary = Summary()

    def scan_pass(reservoirs: dict[str, Reservoir], first: bool = False) -> None:
        summary.passes += 1
        stats = scan(args.annotations, reservoirs, known, args.min_iou, report if first else None,
                     label=f"pass {summary.passes}")
        if first:
            summary.rows, summary.scan_seconds, summary.low_iou = stats.rows, stats.seconds, stats.low_iou
        store.index(m for r in reservoirs.values() for c in r.kept.values() for _, m in c.rows)

    first = {lab: Reservoir(lab, args.seed, _capacity(cap, cap or 0)) for lab in classes}
    scan_pass(first, first=True)
    state = {lab: ClassState(res.ordered(), res.truncated) for lab, res in first.items()}
    del first
    builder = DatasetBuilder(args.out, "openimages", created_by=created_by("openimages"),
                             meta={"source": SOURCE, "annotations": args.annotations.name, "seed": args.seed,
                                   "min_area": args.min_area, "min_iou": args.min_iou,
                                   "max_per_group": args.max_per_group})
    split = args.split or infer_split(args.annotations)
    groups: set[str] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while True:
            batch = next_batch(state, cap)
            if not batch:
                if refill(state, cap, scan_pass, args.seed):
                    continue
                break
            for cand, out in zip(batch, pool.map(lambda c: process(c, settings, store, builder), batch),
                                 strict=True):
                store.forget(m for _, m in cand.rows)
                record(cand, out, state, builder, settings, groups, split, summary, report, args.seed)
    summary.kept, summary.groups = len(builder.sample_ids), len(groups)
    summary.images = len({sid.rsplit("/", 1)[-1] for sid in builder.sample_ids})
    if summary.kept:
        builder.write(workers)
    return summary


def record(cand: Candidate, out: Outcome, state: Mapping[str, ClassState], builder: DatasetBuilder,
           settings: Settings, groups: set[str], split: str, summary: Summary, report: Report, seed: int) -> None:
    """Register an accepted sample (and its group on first use), or report why it was skipped."""
    if out.status == "error":
        for message in out.errors:
            report(f"{message}; sample {cand.image_id} / {settings.classes[cand.label]} skipped")
        return
    if out.status == "small":
        summary.small += 1
        return
    display = settings.classes[cand.label]
    if display not in groups:
        groups.add(display)
        builder.add_group(display, type="category", class_name=display, prompt_seed=seed,
                          meta={"label": cand.label})
    builder.add_sample(out.sid, display, image=out.image, alpha=out.alpha, class_name=display, source=SOURCE,
                       licence=LICENCE, split=split,
                       meta={"image_id": cand.image_id, "label": cand.label, "area": round(out.area, 6),
                             "masks": sorted(m for _, m in cand.rows)})
    state[cand.label].accepted += 1


def run(args: argparse.Namespace) -> int:
    """Run the command: 0 ok, 1 some rows, masks or images reported and skipped, 2 bad input."""
    report = Report()
    try:
        summary = build(args, report)
    except InputError as exc:
        print(f"openimages: {exc}", file=sys.stderr)
        return 2
    print(summary.line(report.problems), file=sys.stderr)
    if not summary.kept:
        print("openimages: no sample passed the filters; no manifest written", file=sys.stderr)
        return 2
    return 1 if report.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m data_tools.openimages``)."""
    parser = argparse.ArgumentParser(prog="python -m data_tools openimages", description=__doc__.split("\n")[0])
    add_arguments(parser, "openimages")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
