"""``folders``: a tree of group folders (RM-1K style) into a manifest v2.

Reads exactly the layouts of the benchmark's ``folder`` dataset (:mod:`benchmark.datasets.folder`, one
sub-folder of ``--root`` per group, layouts may differ between groups)::

    <group>/image/<id>.*  + <group>/alpha/<id>.*  (+ <group>/trimap/<id>.*)
    <group>/<id>.jpg      + <group>/<id>_alpha.png (+ <group>/<id>_trimap.png)

Sample ids are ``<group>/<id>``; files keep their paths relative to ``--root``, so the output folder is also
a ``folder`` dataset. Every group gets ``--type`` (default ``category``); category groups are their own class.
Images without a matte, and files that resolve outside the root, are reported and left out.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from benchmark.datasets.common import DatasetError
from benchmark.datasets.folder import load_folder
from benchmark.datasets.manifest import GROUP_TYPES
from benchmark.types import Sample
from data_tools.build import DatasetBuilder, check_rel, created_by, default_workers, parallel_map
from data_tools.icm57 import report


def _rel(path: Path | None, root: Path) -> str | None:
    return None if path is None else check_rel(path.relative_to(root).as_posix())


def _place(builder: DatasetBuilder, sample: Sample, root: Path, group_type: str, licence: str, split: str,
           source: str) -> None:
    rels = {k: _rel(p, root) for k, p in (("image", sample.image_path), ("alpha", sample.alpha_path),
                                          ("trimap", sample.trimap_path))}
    for key, path in (("image", sample.image_path), ("alpha", sample.alpha_path), ("trimap", sample.trimap_path)):
        if path is not None:
            builder.place(path, rels[key])  # type: ignore[arg-type]
    builder.add_sample(sample.id, sample.group, image=rels["image"], alpha=rels["alpha"],  # type: ignore[arg-type]
                       trimap=rels["trimap"], class_name=sample.group if group_type == "category" else None,
                       source=source, licence=licence, split=split)


def convert(root: Path, out: Path, *, group_type: str = "category", name: str | None = None, source: str = "",
            licence: str = "", split: str = "test", workers: int = 0) -> tuple[Path, list[str]]:
    """Build the manifest v2 of a folder tree under ``out``; returns (manifest, problems)."""
    if group_type not in GROUP_TYPES:
        raise DatasetError(f"--type must be one of {GROUP_TYPES}, got {group_type!r}")
    root = Path(root).expanduser()
    if Path(out).resolve().is_relative_to(root.resolve()):
        raise DatasetError(f"the output folder {out} lies inside --root {root}: it would be read as a group folder")
    with warnings.catch_warnings():  # left-out files are reported below, one line each
        warnings.simplefilter("ignore")
        dataset = load_folder(root, on_missing="skip")
    root = dataset.root
    problems = [p["error"] for p in dataset.meta.get("problems", [])]
    builder = DatasetBuilder(out, name or root.resolve().name, created_by=created_by("folders"),
                             meta={"converted_from": "folders"})
    for key in dataset.groups:
        builder.add_group(key, type=group_type, class_name=key if group_type == "category" else None)
    parallel_map(lambda s: _place(builder, s, root, group_type, licence, split, source or name or root.name),
                 list(dataset.samples.values()), workers, desc="placing")
    return builder.write(workers), problems


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Options of ``folders``."""
    parser.add_argument("--root", type=Path, required=True, help="folder with one sub-folder per group")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder (manifest.json and files)")
    parser.add_argument("--type", choices=GROUP_TYPES, default="category",
                        help="group type of every group (default: category; the group name is its class)")
    parser.add_argument("--name", default=None, help="dataset name (default: the root folder's name)")
    parser.add_argument("--source", default="", help="source recorded for every sample (default: the name)")
    parser.add_argument("--licence", default="", help="licence recorded for every sample")
    parser.add_argument("--split", default="test", help="split recorded for every sample (default: test)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="threads (default: the usable CPUs)")


def run(args: argparse.Namespace) -> int:
    """Run ``folders``."""
    target, problems = convert(args.root, args.out, group_type=args.type, name=args.name, source=args.source,
                               licence=args.licence, split=args.split, workers=args.workers)
    print(f"wrote {target}")
    return report(args.command, problems)
