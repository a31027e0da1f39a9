"""``icm57-import`` and ``icm57-export``: the official ICM-57 layout to and from a manifest v2.

Official layout (``../shared/docs/official-iconmatting.md`` §1.1)::

    image/<name>.jpg   alpha/<name>.png   trimap/<name>.png   ICM57.json

``ICM57.json`` maps each name to ``{"dataset_name", "class", "sub_class", "HalfOrFull", "TransparentOrOpaque"}``
and the official group key is ``class-sub_class-HalfOrFull`` (:func:`benchmark.datasets.icm57.icm_group_key`).

Import: one group per key. Its type is the entry's ``type`` field when it says ``instance`` or ``category`` (an
extension some derived files, e.g. icm58-dev, carry), otherwise ``instance`` if ``sub_class`` is not null and
``category`` if it is; every member of a group must agree. The whole entry is kept verbatim in the sample's
``meta["icm57"]`` (plus ``HalfOrFull`` and ``TransparentOrOpaque`` at the top of ``meta``), so export restores it.

Export: samples imported from ICM-57 get their entry back as it was (round trip: same JSON); other samples get
the schema's keys only, from the manifest (class, sub_class = the group key for instance groups and null for
category groups, ``HalfOrFull`` and ``TransparentOrOpaque`` from the sample's meta, else ``HalfOrFull`` from the
matte by the official notebook's rule and null). Images must already be JPEG (the official loader hard-codes
``.jpg`` and re-encoding changes pixels): others are refused unless ``--reencode`` or ``--keep-extension``.
Missing trimaps (the official loader crashes without one) are derived with the benchmark's own rule.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmark.datasets.common import DatasetError
from benchmark.datasets.icm57 import icm_group_key, load_icm57
from benchmark.datasets.manifest import GROUP_TYPES, MANIFEST_NAME, canonical_json, load_manifest
from benchmark.io import atomic_write_text, quantize_alpha, read_alpha, read_image, read_trimap
from benchmark.safe_names import file_name
from benchmark.trimaps import DEFAULT_RADIUS_FRACTION
from benchmark.types import Dataset, Group, Sample
from data_tools.build import DatasetBuilder, created_by, default_workers, parallel_map, png_bytes, rel_path

#: Keys of an official ``ICM57.json`` entry (``instance_area_ratio`` is optional and kept when present).
SCHEMA_KEYS = ("dataset_name", "class", "sub_class", "HalfOrFull", "TransparentOrOpaque")
OPTIONAL_KEYS = ("instance_area_ratio",)
GROUPS_FILE = "ICM57.json"
JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


# -- shared rules --------------------------------------------------------------------------------------------
def half_or_full(alpha: np.ndarray) -> str:
    """The official notebook's ``check_full_or_half``: ``full`` if the matte (0..255) summed over the four
    borders (corners twice) is below ``(h + w) * 2 / 200``, else ``half`` (the object touches the frame)."""
    a = alpha if alpha.dtype == np.uint8 else quantize_alpha(alpha)
    h, w = a.shape
    total = int(a[0, :].sum(dtype=np.int64) + a[h - 1, :].sum(dtype=np.int64)
                + a[:, 0].sum(dtype=np.int64) + a[:, w - 1].sum(dtype=np.int64))
    return "full" if total < (h + w) * 2 / 200 else "half"


def default_radius_fraction() -> float:
    """``runner.trimap_radius_fraction`` of ``conf/runner/default.yaml`` (what the benchmark derives with)."""
    spec = importlib.util.find_spec("conf")
    if spec is None or spec.origin is None:
        return DEFAULT_RADIUS_FRACTION
    path = Path(spec.origin).parent / "runner" / "default.yaml"
    try:
        from omegaconf import OmegaConf

        return float(OmegaConf.load(path)["trimap_radius_fraction"])
    except Exception:  # no omegaconf or an unreadable file: the documented default
        return DEFAULT_RADIUS_FRACTION


def report(command: str, problems: Sequence[str]) -> int:
    """Print one line per problem on stderr; 1 if there were any, else 0."""
    for line in problems:
        print(f"data_tools {command}: {line}", file=sys.stderr)
    return 1 if problems else 0


def group_type(key: str, entries: Sequence[tuple[str, Mapping[str, Any]]], where: Path) -> str:
    """The group type of ``key`` from its members' entries (see the module docstring)."""
    types = {}
    for stem, info in entries:
        declared = info.get("type")
        types[stem] = declared if declared in GROUP_TYPES else \
            ("instance" if info.get("sub_class") is not None else "category")
    if len(set(types.values())) > 1:
        detail = ", ".join(f"{stem}: {t}" for stem, t in sorted(types.items()))
        raise DatasetError(f"{where}: the members of group '{key}' disagree on the group type ({detail})")
    return next(iter(types.values()))


# -- import --------------------------------------------------------------------------------------------------
def _place_icm_sample(builder: DatasetBuilder, sample: Sample, source: str, licence: str, split: str) -> None:
    info = dict(sample.meta)
    files = {}
    for folder, path in (("image", sample.image_path), ("alpha", sample.alpha_path), ("trimap", sample.trimap_path)):
        files[folder] = None if path is None else builder.place(path, rel_path(folder, sample.id, path.suffix))
    klass = info.get("class")
    meta = {"icm57": info, "HalfOrFull": info.get("HalfOrFull"), "TransparentOrOpaque": info.get("TransparentOrOpaque")}
    builder.add_sample(sample.id, sample.group, image=files["image"], alpha=files["alpha"], trimap=files["trimap"],
                       class_name=None if klass is None else str(klass), source=str(info.get("source") or source),
                       licence=licence, split=split, meta=meta)


def import_icm57(root: Path, out: Path, groups: Path | None = None, *, name: str | None = None, source: str = "ICM-57",
                 licence: str = "", split: str = "test", workers: int = 0) -> tuple[Path, list[str]]:
    """Convert an ICM-57-layout folder into a manifest v2 under ``out``; returns (manifest, problems)."""
    with warnings.catch_warnings():  # entries left out are reported below, one line each
        warnings.simplefilter("ignore")
        dataset = load_icm57(root, groups, name=name or "icm57", on_missing="skip")
    groups_path = Path(dataset.meta["groups_file"])
    problems = [p["error"] for p in dataset.meta.get("problems", [])]
    builder = DatasetBuilder(out, name or groups_path.stem, created_by=created_by("icm57-import"),
                             meta={"converted_from": "icm57", "groups_file": groups_path.name})
    for key, group in dataset.groups.items():
        members = [(sid, dataset.samples[sid].meta) for sid in group.sample_ids]
        info = members[0][1]
        klass = info.get("class")
        builder.add_group(key, type=group_type(key, members, groups_path),
                          class_name=None if klass is None else str(klass),
                          meta={"sub_class": info.get("sub_class"), "HalfOrFull": info.get("HalfOrFull")})
    parallel_map(lambda s: _place_icm_sample(builder, s, source, licence, split), list(dataset.samples.values()),
                 workers, desc="placing")
    return builder.write(workers), problems


# -- export --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportOptions:
    """How ``icm57-export`` treats what the official layout cannot hold as it is."""

    reencode: bool = False           # non-JPEG images → JPEG (pixels change)
    keep_extension: bool = False     # non-JPEG images copied with their own extension (not official-readable)
    quality: int = 95
    derive_trimaps: bool = True
    radius_fraction: float = DEFAULT_RADIUS_FRACTION
    normalise_mattes: bool = False   # rewrite mattes the official loader would misread as 8-bit grey PNGs
    keep_groups: bool = False        # one HalfOrFull per group (its majority) so the official key keeps the grouping
    dataset_name: str = "ICM57"
    schema_only: bool = False        # drop keys outside the schema from imported entries


def _magic(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(magic)) == magic


def _official_reads_same(path: Path) -> bool:
    """True if ``path`` is a PNG that the official loader (``cv2.imread(p, cv2.IMREAD_GRAYSCALE)``) reads as the
    same 8-bit matte as the benchmark (an RGBA file whose alpha channel holds the matte, for one, it does not)."""
    if not _magic(path, PNG_MAGIC):
        return False
    with Image.open(path) as im:
        if im.mode == "L":
            return True
    import cv2

    official = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return official is not None and np.array_equal(official, _alpha8(path))


def _jpeg_bytes(path: Path, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(read_image(path)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _alpha8(path: Path) -> np.ndarray:
    a = read_alpha(path)
    return a if a.dtype == np.uint8 else quantize_alpha(a)


def _check_images(dataset: Dataset, opts: ExportOptions) -> None:
    """Refuse non-JPEG images (and unlabelled samples) before anything is written."""
    bad = sorted(str(s.image_path) for s in dataset.samples.values() if not _magic(s.image_path, JPEG_MAGIC))
    if bad and not (opts.reencode or opts.keep_extension):
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DatasetError(f"{len(bad)} image(s) are not JPEG: {shown}. The official loader reads only "
                           "image/<name>.jpg and re-encoding changes pixels: pass --reencode to convert them "
                           f"(JPEG quality {opts.quality}) or --keep-extension to copy them unchanged "
                           "(then not readable by the official code)")
    unlabelled = sorted(s.id for s in dataset.samples.values() if s.alpha_path is None)
    if unlabelled:
        raise DatasetError(f"samples without a matte cannot be exported to the ICM-57 layout: {unlabelled[:5]}")


def _export_files(files: DatasetBuilder, sample: Sample, name: str, opts: ExportOptions) -> dict[str, Any]:
    """Write one sample's image, matte and trimap; returns what was done (for the entry and the summary)."""
    done: dict[str, Any] = {"name": name}
    if _magic(sample.image_path, JPEG_MAGIC):
        files.place(sample.image_path, f"image/{name}.jpg")
    elif opts.reencode:
        files.write_bytes(_jpeg_bytes(sample.image_path, opts.quality), f"image/{name}.jpg")
        done["reencoded"] = True
    else:
        files.place(sample.image_path, f"image/{name}{sample.image_path.suffix.lower()}")
        done["kept_extension"] = True
    if not opts.normalise_mattes and _magic(sample.alpha_path, PNG_MAGIC):
        files.place(sample.alpha_path, f"alpha/{name}.png")
        done["odd_matte"] = not _official_reads_same(sample.alpha_path)
    elif _official_reads_same(sample.alpha_path):
        files.place(sample.alpha_path, f"alpha/{name}.png")
    else:
        files.write_bytes(png_bytes(_alpha8(sample.alpha_path)), f"alpha/{name}.png")
        done["normalised_matte"] = True
    if sample.trimap_path is not None:
        if _magic(sample.trimap_path, PNG_MAGIC):
            files.place(sample.trimap_path, f"trimap/{name}.png")
        else:
            files.write_bytes(png_bytes(read_trimap(sample.trimap_path)), f"trimap/{name}.png")
    elif opts.derive_trimaps:
        from benchmark.scoring import trimap_for

        # from the matte as the benchmark decodes it (uint8, or float for 16-bit), so both derive the same trimap
        trimap, how = trimap_for(read_alpha(sample.alpha_path), None, opts.radius_fraction)
        files.write_bytes(png_bytes(trimap), f"trimap/{name}.png")
        done["derived_trimap"] = how
    if "HalfOrFull" not in sample.meta and "icm57" not in sample.meta:
        done["HalfOrFull"] = half_or_full(_alpha8(sample.alpha_path))
    return done


def _entry(sample: Sample, group: Group, half: str, opts: ExportOptions) -> dict[str, Any]:
    """The ``ICM57.json`` entry of ``sample`` (see the module docstring)."""
    stored = sample.meta.get("icm57")
    if isinstance(stored, Mapping):
        if opts.schema_only:
            return {k: stored.get(k) for k in SCHEMA_KEYS} | {k: stored[k] for k in OPTIONAL_KEYS if k in stored}
        return dict(stored)
    gmeta = group.meta
    klass = gmeta.get("class") or sample.meta.get("class") or group.key
    sub = gmeta["sub_class"] if "sub_class" in gmeta else (group.key if gmeta.get("type") == "instance" else None)
    return {"dataset_name": opts.dataset_name, "class": klass, "sub_class": sub, "HalfOrFull": half,
            "TransparentOrOpaque": sample.meta.get("TransparentOrOpaque")}


def _halves(dataset: Dataset, done: Mapping[str, Mapping[str, Any]], keep_groups: bool) -> dict[str, str]:
    """HalfOrFull per sample id: stored, else computed; with ``keep_groups`` the group's majority."""
    halves = {sid: str(s.meta.get("HalfOrFull") or done[sid].get("HalfOrFull")) for sid, s in dataset.samples.items()
              if "icm57" not in s.meta}
    if keep_groups:
        for group in dataset.groups.values():
            counts = Counter(halves[sid] for sid in group.sample_ids if sid in halves)
            if counts:
                major = "half" if counts["half"] >= counts["full"] else "full"
                halves.update({sid: major for sid in group.sample_ids if sid in halves})
    return halves


def grouping_changes(dataset: Dataset, table: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]) -> list[str]:
    """Lines describing where the official key ``class-sub_class-HalfOrFull`` regroups the manifest's groups."""
    official: dict[str, set[str]] = {}
    for sid, name in names.items():
        official.setdefault(icm_group_key(table[name]), set()).add(dataset.samples[sid].group)
    lines = [f"official group '{k}' merges manifest groups {sorted(v)}" for k, v in sorted(official.items())
             if len(v) > 1]
    splits: dict[str, set[str]] = {}
    for sid, name in names.items():
        splits.setdefault(dataset.samples[sid].group, set()).add(icm_group_key(table[name]))
    lines += [f"manifest group '{g}' splits into official groups {sorted(v)}" for g, v in sorted(splits.items())
              if len(v) > 1]
    return lines


def export_icm57(manifest: Path, out: Path, opts: ExportOptions, workers: int = 0) -> tuple[Path, dict[str, Any]]:
    """Write the official layout of the dataset at ``manifest`` under ``out``; returns (ICM57.json, summary)."""
    path = manifest / MANIFEST_NAME if manifest.is_dir() else manifest
    dataset = load_manifest(path=path)
    _check_images(dataset, opts)
    names = {sid: file_name(sid) for sid in dataset.samples}
    files = DatasetBuilder(out, dataset.name, created_by=created_by("icm57-export"))
    samples = list(dataset.samples.values())
    results = parallel_map(lambda s: _export_files(files, s, names[s.id], opts), samples, workers, desc="exporting")
    done = {s.id: r for s, r in zip(samples, results, strict=True)}
    halves = _halves(dataset, done, opts.keep_groups)
    table = {names[s.id]: _entry(s, dataset.groups[s.group], halves.get(s.id, ""), opts) for s in samples}
    target = out / GROUPS_FILE
    atomic_write_text(target, canonical_json(table))
    summary = {
        "samples": len(samples), "groups": len({icm_group_key(e) for e in table.values()}),
        "reencoded": sorted(r["name"] for r in results if r.get("reencoded")),
        "kept_extension": sorted(r["name"] for r in results if r.get("kept_extension")),
        "derived_trimaps": sorted(r["name"] for r in results if r.get("derived_trimap")),
        "normalised_mattes": sorted(r["name"] for r in results if r.get("normalised_matte")),
        "odd_mattes": sorted(r["name"] for r in results if r.get("odd_matte")),
        "regrouped": grouping_changes(dataset, table, names),
        "problems": [p["error"] for p in dataset.meta.get("problems", [])],
    }
    return target, summary


def _print_export(summary: Mapping[str, Any], target: Path, opts: ExportOptions) -> None:
    print(f"wrote {target}: {summary['samples']} samples in {summary['groups']} official groups")
    if summary["derived_trimaps"]:
        print(f"  {len(summary['derived_trimaps'])} trimap(s) derived (benchmark rule, radius fraction "
              f"{opts.radius_fraction}): {', '.join(summary['derived_trimaps'][:10])}")
    if summary["reencoded"]:
        print(f"  {len(summary['reencoded'])} image(s) re-encoded as JPEG (pixels changed): "
              f"{', '.join(summary['reencoded'][:10])}")
    if summary["normalised_mattes"]:
        print(f"  {len(summary['normalised_mattes'])} matte(s) rewritten as 8-bit grey PNGs: "
              f"{', '.join(summary['normalised_mattes'][:10])}")
    if summary["kept_extension"]:
        print(f"  warning: {len(summary['kept_extension'])} image(s) kept their extension; the official loader "
              f"reads only .jpg: {', '.join(summary['kept_extension'][:10])}", file=sys.stderr)
    if summary["odd_mattes"]:
        print(f"  warning: the official loader (cv2.IMREAD_GRAYSCALE) misreads {len(summary['odd_mattes'])} "
              f"matte(s); --normalise-mattes rewrites them as 8-bit grey PNGs: "
              f"{', '.join(summary['odd_mattes'][:10])}", file=sys.stderr)
    for line in summary["regrouped"]:
        print(f"  warning: {line} (--keep-groups uses one HalfOrFull per group)", file=sys.stderr)


# -- command line --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Options of ``icm57-import`` or ``icm57-export``."""
    parser.add_argument("--workers", type=int, default=default_workers(), help="threads (default: the usable CPUs)")
    if command == "icm57-import":
        parser.add_argument("--root", type=Path, required=True, help="folder with image/, alpha/ and optional trimap/")
        parser.add_argument("--groups", type=Path, default=None,
                            help="grouping JSON (default: ROOT/ICM57.json, or the only *.json in ROOT)")
        parser.add_argument("--out", type=Path, required=True, help="output dataset folder (manifest.json and files)")
        parser.add_argument("--name", default=None, help="dataset name (default: the grouping file's stem)")
        parser.add_argument("--source", default="ICM-57", help="source of entries without a 'source' field")
        parser.add_argument("--licence", default="", help="licence recorded for every sample")
        parser.add_argument("--split", default="test", help="split recorded for every sample (default: test)")
        return
    parser.add_argument("manifest", type=Path, help="manifest.json (or its folder)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: image/, alpha/, trimap/ and ICM57.json (for the official code: "
                             "datasets/ICM57/ with ICM57.json also in datasets/)")
    parser.add_argument("--reencode", action="store_true", help="convert non-JPEG images to JPEG (pixels change)")
    parser.add_argument("--keep-extension", action="store_true",
                        help="copy non-JPEG images unchanged with their own extension (not official-readable)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of --reencode (default 95, 4:4:4)")
    parser.add_argument("--derive-trimaps", action=argparse.BooleanOptionalAction, default=True,
                        help="derive missing trimaps with the benchmark's rule (default: on)")
    parser.add_argument("--radius-fraction", type=float, default=None,
                        help="erosion radius of derived trimaps, fraction of the long side "
                             "(default: runner.trimap_radius_fraction of conf/runner/default.yaml)")
    parser.add_argument("--normalise-mattes", action="store_true",
                        help="rewrite the mattes that the official loader would misread (e.g. a matte in the alpha "
                             "channel of an RGBA PNG) as 8-bit grey PNGs")
    parser.add_argument("--keep-groups", action="store_true",
                        help="one HalfOrFull per group (its majority), so the official key keeps the manifest's groups")
    parser.add_argument("--dataset-name", default="ICM57", help="dataset_name of entries not imported from ICM-57")
    parser.add_argument("--schema-only", action="store_true",
                        help="write only the schema's keys, also for entries imported with extra keys")


def run(args: argparse.Namespace) -> int:
    """Run ``icm57-import`` or ``icm57-export``."""
    if args.command == "icm57-import":
        target, problems = import_icm57(args.root, args.out, args.groups, name=args.name, source=args.source,
                                        licence=args.licence, split=args.split, workers=args.workers)
        print(f"wrote {target}")
        return report(args.command, problems)
    if args.reencode and args.keep_extension:
        raise DatasetError("--reencode and --keep-extension exclude each other")
    fraction = default_radius_fraction() if args.radius_fraction is None else args.radius_fraction
    if not 0 < fraction < 1:
        raise DatasetError(f"--radius-fraction must lie in (0, 1), got {fraction}")
    opts = ExportOptions(reencode=args.reencode, keep_extension=args.keep_extension, quality=args.quality,
                         derive_trimaps=args.derive_trimaps, radius_fraction=fraction,
                         normalise_mattes=args.normalise_mattes, keep_groups=args.keep_groups,
                         dataset_name=args.dataset_name, schema_only=args.schema_only)
    target, summary = export_icm57(args.manifest, args.out, opts, args.workers)
    _print_export(summary, target, opts)
    return report(args.command, summary["problems"])
