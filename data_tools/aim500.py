"""``aim500``: AIM-500 regrouped into category groups (manifest v2).

AIM-500 layout (``../shared/docs/peers.md`` §7)::

    original/<name>.jpg   mask/<name>.png (the alpha mattes)   trimap/<name>.png   usr/ (unused)
    aim_category_type.json   {"<name>": {"type": "SO" | "STM" | "NS", "category": "animal"}}

One ``category`` group per category (``--group-by official``: one per ``category-None-HalfOrFull``, the key the
official pre-release notebook gives AIM-500). As in that notebook, each sample's meta keeps ``TransparentOrOpaque``
(= the AIM type) and ``HalfOrFull`` (from the matte used), so ``icm57-export`` writes the notebook's entries.

``--edited DIR`` holds edited mattes (``<name>.png``, same size as the image) that replace ``mask/<name>.png``; such
a sample records ``meta["matte"] = "edited"`` (others ``"original"``) and gets no trimap, since AIM's trimap was
drawn for the original matte (the benchmark derives one from the edited matte).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.datasets.common import IMAGE_EXTENSIONS, DatasetError, index_by_stem, require_dir
from benchmark.io import read_alpha
from data_tools.build import DatasetBuilder, created_by, default_workers, image_size, parallel_map, rel_path
from data_tools.icm57 import half_or_full, report

LABELS_FILE = "aim_category_type.json"
AIM_TYPES = ("SO", "STM", "NS")
DEFAULT_LICENCE = "AIM-500 release agreement (research use; accepted before download)"


@dataclass(frozen=True)
class Label:
    """One entry of ``aim_category_type.json``."""

    category: str
    type: str


@dataclass(frozen=True)
class _Item:
    stem: str
    label: Label
    image: Path
    alpha: Path
    trimap: Path | None
    edited: bool


def read_labels(path: Path) -> dict[str, Label]:
    """stem → :class:`Label`; DatasetError naming the file and key on a malformed entry."""
    if not path.is_file():
        raise DatasetError(f"AIM-500 labels file not found: {path}")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON labels file ({exc})") from exc
    if not isinstance(table, dict) or not table:
        raise DatasetError(f"{path}: expected a non-empty object {{name: {{'type', 'category'}}}}")
    labels: dict[str, Label] = {}
    for key, entry in table.items():
        if not isinstance(entry, Mapping):
            raise DatasetError(f"{path}: entry '{key}' is not an object")
        category, kind = entry.get("category"), entry.get("type")
        if not isinstance(category, str) or not category.strip():
            raise DatasetError(f"{path}: entry '{key}' has no 'category' string (got {category!r})")
        if kind not in AIM_TYPES:
            raise DatasetError(f"{path}: entry '{key}' has type {kind!r}, expected one of {AIM_TYPES}")
        stem = Path(key).stem if Path(key).suffix.lower() in IMAGE_EXTENSIONS else key
        labels[stem] = Label(category, kind)
    return labels


def _edited_mattes(folder: Path | None, problems: list[str]) -> dict[str, Path]:
    if folder is None:
        return {}
    found = index_by_stem(require_dir(folder, "edited mattes"))
    problems += [f"{p}: edited mattes must be .png files; ignored"
                 for p in found.values() if p.suffix.lower() != ".png"]
    return {stem: p for stem, p in found.items() if p.suffix.lower() == ".png"}


def collect(root: Path, labels: Mapping[str, Label], edited_dir: Path | None) -> tuple[list[_Item], list[str], int]:
    """The labelled samples with their files, the problems, and how many images have no label."""
    images = index_by_stem(require_dir(root / "original", "original"))
    alphas = index_by_stem(require_dir(root / "mask", "mask"))
    trimaps = index_by_stem(root / "trimap")
    problems: list[str] = []
    edited = _edited_mattes(edited_dir, problems)
    problems += [f"{p}: edited matte for '{stem}', which is not a labelled AIM-500 image; ignored"
                 for stem, p in sorted(edited.items()) if stem not in labels or stem not in images]
    items = []
    for stem, label in sorted(labels.items()):
        missing = [f"{folder}/{stem}.*" for folder, idx in (("original", images), ("mask", alphas)) if stem not in idx]
        if missing and not (stem in images and stem in edited):
            problems.append(f"{LABELS_FILE}: '{stem}' has no file {' or '.join(missing)} under {root}; left out")
            continue
        if stem in edited and image_size(edited[stem]) != image_size(images[stem]):
            (w, h), (iw, ih) = image_size(edited[stem]), image_size(images[stem])
            problems.append(f"{edited[stem]}: edited matte is {w}×{h}, its image {images[stem]} is {iw}×{ih}; left out")
            continue
        items.append(_Item(stem, label, images[stem], edited.get(stem, alphas.get(stem)),
                           None if stem in edited else trimaps.get(stem), stem in edited))
    return items, problems, len(set(images) - set(labels))


def _group_key(item: _Item, half: str, group_by: str) -> str:
    return item.label.category if group_by == "category" else f"{item.label.category}-None-{half}"


def _place(builder: DatasetBuilder, item: _Item, half: str, group_by: str, licence: str, split: str) -> None:
    image = builder.place(item.image, rel_path("image", item.stem, item.image.suffix))
    alpha = builder.place(item.alpha, rel_path("alpha", item.stem, ".png"))
    trimap = None if item.trimap is None else builder.place(item.trimap, rel_path("trimap", item.stem, ".png"))
    meta: dict[str, Any] = {"TransparentOrOpaque": item.label.type, "HalfOrFull": half,
                            "matte": "edited" if item.edited else "original"}
    builder.add_sample(item.stem, _group_key(item, half, group_by), image=image, alpha=alpha, trimap=trimap,
                       class_name=item.label.category, source="AIM-500", licence=licence, split=split, meta=meta)


def convert(root: Path, out: Path, *, labels_path: Path | None = None, edited: Path | None = None,
            group_by: str = "category", name: str = "aim500", licence: str = DEFAULT_LICENCE, split: str = "test",
            workers: int = 0) -> tuple[Path, list[str], int]:
    """Build the manifest v2 of AIM-500 under ``out``; returns (manifest, problems, unlabelled image count)."""
    root = require_dir(Path(root), "AIM-500 root")
    labels = read_labels(labels_path or root / LABELS_FILE)
    items, problems, unlabelled = collect(root, labels, edited)
    if not items:
        raise DatasetError(f"{root}: no labelled image has a file in original/ and a matte in mask/")
    halves = parallel_map(lambda i: half_or_full(read_alpha(i.alpha)), items, workers, desc="reading mattes")
    meta = {"converted_from": "aim500", "group_by": group_by, "edited": sorted(i.stem for i in items if i.edited)}
    builder = DatasetBuilder(out, name, created_by=created_by("aim500"), meta=meta)
    groups = {_group_key(i, h, group_by): i.label.category for i, h in zip(items, halves, strict=True)}
    for key in sorted(groups):
        builder.add_group(key, type="category", class_name=groups[key])
    pairs = list(zip(items, halves, strict=True))
    parallel_map(lambda ih: _place(builder, ih[0], ih[1], group_by, licence, split), pairs, workers, desc="placing")
    return builder.write(workers), problems, unlabelled


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Options of ``aim500``."""
    parser.add_argument("--root", type=Path, required=True, help="AIM-500 folder (original/, mask/, trimap/)")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder (manifest.json and files)")
    parser.add_argument("--edited", type=Path, default=None,
                        help="folder of edited mattes <name>.png that replace mask/<name>.png")
    parser.add_argument("--labels", type=Path, default=None, help=f"labels file (default: ROOT/{LABELS_FILE})")
    parser.add_argument("--group-by", choices=("category", "official"), default="category",
                        help="category: one group per category (default); official: category-None-HalfOrFull")
    parser.add_argument("--name", default="aim500", help="dataset name (default: aim500)")
    parser.add_argument("--licence", default=DEFAULT_LICENCE, help="licence recorded for every sample")
    parser.add_argument("--split", default="test", help="split recorded for every sample (default: test)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="threads (default: the usable CPUs)")


def run(args: argparse.Namespace) -> int:
    """Run ``aim500``."""
    target, problems, unlabelled = convert(args.root, args.out, labels_path=args.labels, edited=args.edited,
                                           group_by=args.group_by, name=args.name, licence=args.licence,
                                           split=args.split, workers=args.workers)
    print(f"wrote {target}")
    if unlabelled:
        print(f"  {unlabelled} image(s) in original/ have no entry in the labels file and were left out")
    return report(args.command, problems)
