"""ICM-57 in its official layout: ``image/``, ``alpha/``, optional ``trimap/`` and a grouping JSON.

The grouping JSON maps an image stem to ``{"class", "sub_class", "HalfOrFull", ...}``; the
group key is built exactly as the official code does:
``str(class) + "-" + str(sub_class) + "-" + str(HalfOrFull)`` (a JSON null becomes ``None``).
Unlike the official loader, image and matte extensions may differ and trimaps are optional.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

from benchmark.datasets.common import DatasetError, Problems, build_dataset, index_by_stem, require_dir
from benchmark.types import Dataset, Sample

log = logging.getLogger("benchmark")
OFFICIAL_GROUPS = 57  # class-sub_class-HalfOrFull keys of the official ICM57.json


def icm_group_key(info: dict) -> str:
    """The official group key ``class-sub_class-HalfOrFull``."""
    try:
        return f"{info['class']}-{info['sub_class']}-{info['HalfOrFull']}"
    except KeyError as exc:
        raise DatasetError(f"grouping entry lacks {exc}: {info}") from exc


def load_icm57(root: str | os.PathLike, groups: str | os.PathLike | None = None,
               name: str = "icm57", on_missing: str = "skip", allow_outside_root: bool = False) -> Dataset:
    """Load an ICM-57-style folder.

    ``groups`` defaults to ``<root>/ICM57.json`` (the official name) or the only ``*.json`` in
    ``root``. ``on_missing``: ``"skip"`` drops entries whose image or matte is missing and
    lists them in ``dataset.meta["problems"]`` (reported as error rows by the runner);
    ``"error"`` raises at once.
    """
    root = require_dir(Path(root).expanduser(), "dataset root")
    groups_path = _find_groups_file(root, groups)
    try:
        table = json.loads(groups_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{groups_path}: not a readable grouping JSON ({exc})") from exc
    if not isinstance(table, dict) or not table:
        raise DatasetError(f"{groups_path}: expected a non-empty object {{image stem: info}}")
    images = index_by_stem(require_dir(root / "image", "image"))
    alphas = index_by_stem(require_dir(root / "alpha", "alpha"))
    trimaps = index_by_stem(root / "trimap")
    samples, problems = [], Problems(on_missing)
    for stem, info in table.items():
        if not isinstance(info, dict):
            raise DatasetError(f"{groups_path}: entry '{stem}' is not an object")
        key = icm_group_key(info)
        missing = [f"{folder}/{stem}.*" for folder, idx in (("image", images), ("alpha", alphas))
                   if stem not in idx]
        if missing:
            files = " or ".join(missing)
            problems.report(stem, key, f"{groups_path.name}: key '{stem}' has no file {files} under {root}")
            continue
        samples.append(Sample(id=stem, group=key, image_path=images[stem], alpha_path=alphas[stem],
                              trimap_path=trimaps.get(stem), meta=dict(info)))
    problems.warn(name)
    if not samples:
        raise DatasetError(f"{groups_path}: none of its {len(table)} entries has an image and a matte in {root}")
    dataset = build_dataset(name, root, samples, meta={"groups_file": str(groups_path), "problems": list(problems)},
                            allow_outside_root=allow_outside_root)
    _report_groups(dataset, groups_path)
    return dataset


def _report_groups(dataset: Dataset, groups_path: Path) -> None:
    """Say how many groups the grouping formed; the official ``ICM57.json`` must give 57."""
    n = len(dataset.groups)
    log.info("%s: %d images in %d groups (grouping %s)", dataset.name, len(dataset.samples), n, groups_path)
    if groups_path.name == "ICM57.json" and n != OFFICIAL_GROUPS:
        warnings.warn(f"{groups_path}: the grouping forms {n} groups, the paper's ICM-57 has {OFFICIAL_GROUPS} "
                      "(missing files, or another version of the file)", stacklevel=3)


def _find_groups_file(root: Path, groups: str | os.PathLike | None) -> Path:
    if groups is not None:
        p = Path(groups).expanduser()
        if not p.is_file():
            raise DatasetError(f"grouping JSON not found: {p}")
        return p
    official = root / "ICM57.json"
    if official.is_file():
        return official
    candidates = sorted(root.glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    raise DatasetError(f"no grouping JSON given (dataset.groups=FILE) and none unique in {root}: "
                       f"{[c.name for c in candidates]}")
