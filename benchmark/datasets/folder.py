"""A plain folder of groups: one sub-folder per group.

Two layouts per group folder are accepted (mixing them across groups is fine):

- ``<root>/<group>/image/<id>.*`` with ``<group>/alpha/<id>.*`` and optional ``<group>/trimap/<id>.*``;
- paired names in the group folder itself: ``<id>.jpg`` + ``<id>_alpha.png`` (+ ``<id>_trimap.png``).

Sample ids are ``<group>/<id>`` so equal file names in different groups never collide.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.datasets.common import DatasetError, Problems, build_dataset, index_by_stem, require_dir
from benchmark.types import Dataset, Sample

ALPHA_SUFFIX, TRIMAP_SUFFIX = "_alpha", "_trimap"


def load_folder(root: str | os.PathLike, name: str = "folder", on_missing: str = "skip",
                allow_outside_root: bool = False) -> Dataset:
    """Load a folder with one sub-folder per group (see the module docstring)."""
    root = require_dir(Path(root).expanduser(), "dataset root")
    group_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not group_dirs:
        raise DatasetError(f"{root}: no group sub-folders")
    samples: list[Sample] = []
    problems = Problems(on_missing)
    for gdir in group_dirs:
        if (gdir / "image").is_dir():
            images = index_by_stem(gdir / "image")
            alphas = index_by_stem(require_dir(gdir / "alpha", "alpha"))
            trimaps = index_by_stem(gdir / "trimap")
        else:
            files = index_by_stem(gdir)
            alphas = {s[: -len(ALPHA_SUFFIX)]: p for s, p in files.items() if s.endswith(ALPHA_SUFFIX)}
            trimaps = {s[: -len(TRIMAP_SUFFIX)]: p for s, p in files.items() if s.endswith(TRIMAP_SUFFIX)}
            images = {s: p for s, p in files.items()
                      if not s.endswith(ALPHA_SUFFIX) and not s.endswith(TRIMAP_SUFFIX)}
        for stem, image in images.items():
            sid = f"{gdir.name}/{stem}"
            if stem not in alphas:
                problems.report(sid, gdir.name, f"{image}: no matte found for it in {gdir}")
                continue
            samples.append(Sample(id=sid, group=gdir.name, image_path=image, alpha_path=alphas[stem],
                                  trimap_path=trimaps.get(stem)))
    problems.warn(name)
    if not samples:
        raise DatasetError(f"{root}: no image with a matte in any group folder")
    return build_dataset(name, root, samples, meta={"problems": list(problems)}, allow_outside_root=allow_outside_root)
