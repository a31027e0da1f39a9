"""``dreambooth``: the official Dreambooth subjects plus a folder of mattes into a manifest v2.

Input (google/dreambooth ``dataset/``)::

    --images DIR:  <subject>/NN.jpg ...  and  prompts_and_classes.txt
    --alphas DIR:  <subject>/NN.png      (the mattes, same relative paths, .png)

``prompts_and_classes.txt`` starts with a ``Classes`` section: a ``subject_name,class`` header, then one
``subject,class`` line per subject, up to the first blank line; the prompt sections after it are ignored.

A sample belongs to one group, so each manifest holds one level (``--level``, one output folder per level):

- ``instance`` (default): one ``instance`` group per subject (``dog2``), class = its Dreambooth class; the
  manifest's ``meta["categories"]`` lists which subjects share a class.
- ``category``: one ``category`` group per class shared by at least ``--min-subjects`` (default 2) subjects that
  have mattes (``dog``: dog, dog2, ...); the group's ``meta["members"]`` lists those subjects. Classes with fewer
  are left out of this level (they are instance groups) and listed in ``meta["left_out_classes"]``.

Sample ids are ``<subject>/<NN>`` at both levels, so results of the two levels can be joined. Images without a
matte (or whose matte's size differs) go to ``worklist.csv`` in the output (``subject,image,reason``) instead of
the manifest; a subject without any matte is reported. Problems (exit 1): a subject folder missing from the
classes section, a matte without an image.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmark.datasets.common import DatasetError, index_by_stem, require_dir
from benchmark.io import atomic_write_text
from benchmark.safe_names import file_name
from data_tools.build import DatasetBuilder, created_by, default_workers, image_size, parallel_map
from data_tools.icm57 import report

CLASSES_FILE = "prompts_and_classes.txt"
CLASSES_HEADER = "subject_name,class"
WORKLIST = "worklist.csv"
WORKLIST_COLUMNS = ("subject", "image", "reason")
LEVELS = ("instance", "category")
DEFAULT_LICENCE = "Dreambooth dataset: Unsplash licence or the authors' permission (references_and_licenses.txt)"


@dataclass(frozen=True)
class _Item:
    subject: str
    stem: str
    image: Path
    alpha: Path


def read_classes(path: Path) -> dict[str, str]:
    """subject → class from the ``Classes`` section of ``prompts_and_classes.txt``."""
    if not path.is_file():
        raise DatasetError(f"Dreambooth classes file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    try:
        start = lines.index("Classes") + 1
    except ValueError:
        raise DatasetError(f"{path}: no 'Classes' section line") from None
    while start < len(lines) and not lines[start]:
        start += 1
    if start >= len(lines) or lines[start].replace(" ", "") != CLASSES_HEADER:
        raise DatasetError(f"{path}: the 'Classes' section must start with the header '{CLASSES_HEADER}'")
    classes: dict[str, str] = {}
    for number, line in enumerate(lines[start + 1:], start + 2):
        if not line:
            break
        subject, sep, klass = (part.strip() for part in line.partition(","))
        if not sep or not subject or not klass or "," in klass:
            raise DatasetError(f"{path} line {number}: expected 'subject_name,class', got {line!r}")
        if classes.get(subject, klass) != klass:
            raise DatasetError(f"{path} line {number}: subject '{subject}' listed with two classes")
        classes[subject] = klass
    if not classes:
        raise DatasetError(f"{path}: the 'Classes' section lists no subject")
    return classes


def _subjects(images: Path, out: Path) -> list[Path]:
    if Path(out).resolve().is_relative_to(images.resolve()):
        raise DatasetError(f"the output folder {out} lies inside --images {images}: it would be read as a subject")
    return sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))


def collect(images: Path, alphas: Path, classes: Mapping[str, str], out: Path
            ) -> tuple[list[_Item], list[tuple[str, str, str]], list[str], list[str]]:
    """(matted samples, worklist rows, problems, notes) of the Dreambooth folders."""
    items, worklist, problems, notes = [], [], [], []
    for folder in _subjects(images, out):
        subject = folder.name
        if subject not in classes:
            problems.append(f"{folder}: subject '{subject}' is not in the Classes section of {CLASSES_FILE}; left out")
            continue
        pictures = index_by_stem(folder)
        mattes = index_by_stem(alphas / subject, (".png",))
        problems += [f"{p}: matte without an image {subject}/{stem}.* in {images}"
                     for stem, p in sorted(mattes.items()) if stem not in pictures]
        if pictures and not any(stem in mattes for stem in pictures):
            notes.append(f"subject '{subject}' has no mattes in {alphas / subject}: its {len(pictures)} image(s) "
                         f"are in {WORKLIST}")
        for stem, path in sorted(pictures.items()):
            rel = f"{subject}/{path.name}"
            if stem not in mattes:
                worklist.append((subject, rel, "subject without mattes" if not mattes else "no matte"))
            elif image_size(mattes[stem]) != image_size(path):
                (w, h), (iw, ih) = image_size(mattes[stem]), image_size(path)
                worklist.append((subject, rel, f"matte is {w}x{h}, image is {iw}x{ih}"))
            else:
                items.append(_Item(subject, stem, path, mattes[stem]))
    notes += [f"subject '{s}' of {CLASSES_FILE} has no folder in {images}"
              for s in sorted(set(classes) - {p.name for p in _subjects(images, out)})]
    return items, worklist, problems, notes


def worklist_csv(rows: list[tuple[str, str, str]]) -> str:
    """The worklist as CSV text (header ``subject,image,reason``, rows sorted)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(WORKLIST_COLUMNS)
    writer.writerows(sorted(rows))
    return buf.getvalue()


def _groups(items: list[_Item], classes: Mapping[str, str], level: str, min_subjects: int
            ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(subject → group key of its samples, class → subjects with mattes); left-out subjects get no key."""
    members: dict[str, list[str]] = {}
    for subject in sorted({i.subject for i in items}):
        members.setdefault(classes[subject], []).append(subject)
    if level == "instance":
        return {s: s for subs in members.values() for s in subs}, members
    return {s: k for k, subs in members.items() if len(subs) >= min_subjects for s in subs}, members


def _place(builder: DatasetBuilder, item: _Item, group: str, klass: str, licence: str, split: str) -> None:
    folder = file_name(item.subject)
    image = builder.place(item.image, f"image/{folder}/{file_name(item.stem, item.image.suffix)}")
    alpha = builder.place(item.alpha, f"alpha/{folder}/{file_name(item.stem, '.png')}")
    builder.add_sample(f"{item.subject}/{item.stem}", group, image=image, alpha=alpha, class_name=klass,
                       source="Dreambooth", licence=licence, split=split, meta={"subject": item.subject})


def convert(images: Path, alphas: Path, out: Path, *, level: str = "instance", min_subjects: int = 2,
            classes_path: Path | None = None, name: str | None = None, licence: str = DEFAULT_LICENCE,
            split: str = "test", workers: int = 0) -> tuple[Path, list[str], list[str]]:
    """Build the manifest v2 of one level under ``out`` and its ``worklist.csv``; returns (manifest, problems,
    notes)."""
    if level not in LEVELS:
        raise DatasetError(f"--level must be one of {LEVELS}, got {level!r}")
    images, alphas = require_dir(Path(images), "Dreambooth images"), require_dir(Path(alphas), "mattes")
    classes = read_classes(classes_path or images / CLASSES_FILE)
    items, worklist, problems, notes = collect(images, alphas, classes, out)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / WORKLIST, worklist_csv(worklist))
    if not items:
        raise DatasetError(f"{alphas}: no Dreambooth image has a matte ({len(worklist)} listed in {out / WORKLIST})")
    key_of, members = _groups(items, classes, level, min_subjects)
    left_out = sorted(k for k, subs in members.items() if level == "category" and len(subs) < min_subjects)
    meta = {"converted_from": "dreambooth", "level": level, "categories": members, "worklist": len(worklist)}
    if level == "category":
        meta |= {"min_subjects": min_subjects, "left_out_classes": left_out}
        notes += [f"class '{k}' has {len(members[k])} subject(s) with mattes (< --min-subjects {min_subjects}); "
                  "left out of the category level" for k in left_out]
    builder = DatasetBuilder(out, name or f"dreambooth-{level}", created_by=created_by("dreambooth"), meta=meta)
    for key in sorted(set(key_of.values())):
        if level == "instance":
            builder.add_group(key, type="instance", class_name=classes[key], meta={"subject": key})
        else:
            builder.add_group(key, type="category", class_name=key, meta={"members": members[key]})
    kept = [i for i in items if i.subject in key_of]
    if not kept:
        raise DatasetError(f"no class has {min_subjects} or more subjects with mattes: the category level is empty")
    parallel_map(lambda i: _place(builder, i, key_of[i.subject], classes[i.subject], licence, split), kept, workers,
                 desc="placing")
    return builder.write(workers), problems, notes


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Options of ``dreambooth``."""
    parser.add_argument("--images", type=Path, required=True,
                        help=f"Dreambooth dataset folder: <subject>/NN.jpg and {CLASSES_FILE}")
    parser.add_argument("--alphas", type=Path, required=True, help="mattes: <subject>/NN.png")
    parser.add_argument("--out", type=Path, required=True,
                        help=f"output dataset folder (manifest.json, files and {WORKLIST})")
    parser.add_argument("--level", choices=LEVELS, default="instance",
                        help="instance: a group per subject (default); category: a group per shared class")
    parser.add_argument("--min-subjects", type=int, default=2,
                        help="category level: subjects with mattes a class needs to form a group (default 2)")
    parser.add_argument("--classes", type=Path, default=None, help=f"classes file (default: IMAGES/{CLASSES_FILE})")
    parser.add_argument("--name", default=None, help="dataset name (default: dreambooth-LEVEL)")
    parser.add_argument("--licence", default=DEFAULT_LICENCE, help="licence recorded for every sample")
    parser.add_argument("--split", default="test", help="split recorded for every sample (default: test)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="threads (default: the usable CPUs)")


def run(args: argparse.Namespace) -> int:
    """Run ``dreambooth``."""
    if args.min_subjects < 1:
        raise DatasetError(f"--min-subjects must be at least 1, got {args.min_subjects}")
    target, problems, notes = convert(args.images, args.alphas, args.out, level=args.level,
                                      min_subjects=args.min_subjects, classes_path=args.classes, name=args.name,
                                      licence=args.licence, split=args.split, workers=args.workers)
    print(f"wrote {target} and {Path(args.out) / WORKLIST}")
    for line in notes:
        print(f"data_tools {args.command}: note: {line}", file=sys.stderr)
    return report(args.command, problems)
