"""AIM-500 layout (``original/``, ``mask/``, ``trimap/``) plus a grouping file.

AIM-500 itself has no groups; the grouping file says which images belong together:

- a JSON ``{stem: {"class", "sub_class", "HalfOrFull", ...}}`` (the ICM schema, as the
  official pre-release notebook wrote it for AIM-500), or ``{stem: "group"}``;
- or a CSV with columns ``image`` (or ``id``) and ``group``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from benchmark.datasets.common import DatasetError, Problems, build_dataset, index_by_stem, require_dir
from benchmark.datasets.icm57 import icm_group_key
from benchmark.types import Dataset, Sample


def read_grouping(path: Path) -> dict[str, str]:
    """stem → group key from a JSON or CSV grouping file."""
    if not path.is_file():
        raise DatasetError(f"grouping file not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "group" not in rows[0] or not ({"image", "id"} & set(rows[0])):
            raise DatasetError(f"{path}: CSV needs columns 'image' (or 'id') and 'group'")
        col = "image" if "image" in rows[0] else "id"
        return {Path(r[col]).stem: r["group"] for r in rows}
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON grouping file ({exc})") from exc
    if not isinstance(table, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return {Path(k).stem: (v if isinstance(v, str) else icm_group_key(v)) for k, v in table.items()}


def load_aim500(root: str | os.PathLike, groups: str | os.PathLike, name: str = "aim500",
                on_missing: str = "skip", allow_outside_root: bool = False) -> Dataset:
    """Load AIM-500 (or any folder in its layout) grouped by ``groups``."""
    root = require_dir(Path(root).expanduser(), "dataset root")
    grouping = read_grouping(Path(groups).expanduser())
    images = index_by_stem(require_dir(root / "original", "original"))
    alphas = index_by_stem(require_dir(root / "mask", "mask"))
    trimaps = index_by_stem(root / "trimap")
    samples, problems = [], Problems(on_missing)
    for stem, group in grouping.items():
        if stem not in images or stem not in alphas:
            problems.report(stem, group, f"{groups}: '{stem}' has no file in original/ and mask/ under {root}")
            continue
        samples.append(Sample(id=stem, group=group, image_path=images[stem], alpha_path=alphas[stem],
                              trimap_path=trimaps.get(stem)))
    problems.warn(name)
    if not samples:
        raise DatasetError(f"{root}: no grouped image has an image and a mask")
    return build_dataset(name, root, samples, meta={"problems": list(problems)}, allow_outside_root=allow_outside_root)
