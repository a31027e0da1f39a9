"""Grouped matting datasets, built by name from :data:`DATASETS`.

Each entry is a loader function ``(**config) -> Dataset``; loaders only list files and
check the layout (no pixels decoded), so loading even ICM-57 takes milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.registry import Registry
from benchmark.types import Dataset

DATASETS: Registry = Registry("dataset")
DATASETS.register("icm57", "benchmark.datasets.icm57:load_icm57")
DATASETS.register("folder", "benchmark.datasets.folder:load_folder")
DATASETS.register("aim500", "benchmark.datasets.aim500:load_aim500")
DATASETS.register("manifest", "benchmark.datasets.manifest:load_manifest")
DATASETS.register("synthetic", "benchmark.datasets.synthetic:load_synthetic")
DATASETS.register("video", "benchmark.datasets.video:load_video")


def load_dataset(name: str, **config: Any) -> Dataset:
    """Load the dataset registered as ``name`` with its config (root, groups file, …)."""
    return DATASETS.get(name)(**config)


#: Dataset config keys that hold paths (across the registered loaders).
PATH_KEYS = ("root", "groups", "path", "reference_alpha", "cache")


def absolute_paths(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with its path values made absolute (from the current folder, ``~`` expanded), so a
    run folder's ``run.json`` can be read from anywhere."""
    out = dict(config)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = os.path.abspath(Path(out[key]).expanduser())
    return out
