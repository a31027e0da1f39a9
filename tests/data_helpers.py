"""Manifest v2 copies of test datasets, built with :class:`data_tools.build.DatasetBuilder`."""

from __future__ import annotations

from pathlib import Path

from benchmark.types import Dataset
from data_tools.build import DatasetBuilder, created_by

ICM58_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "icm58-dev"


def icm58_dev() -> Dataset:
    from benchmark.datasets.icm57 import load_icm57

    return load_icm57(root=ICM58_DEV, groups=ICM58_DEV / "icm58-dev.json", name="icm58-dev")


def build_v2(ds: Dataset, out: Path, name: str | None = None, workers: int = 2) -> Path:
    """Copy ``ds`` under ``out`` (image/, alpha/, trimap/ keep their file names) and write manifest v2."""
    b = DatasetBuilder(out, name or ds.name, created_by=created_by("test"), meta={"from": "tests"})
    for key, g in ds.groups.items():
        first = ds.samples[g.sample_ids[0]].meta
        gtype = g.meta.get("type", first.get("type"))
        b.add_group(key, type=gtype if gtype in ("instance", "category") else "category",
                    class_name=g.meta.get("class", first.get("class")), references=g.meta.get("references") or ())
    for s in ds.samples.values():
        image = b.place(s.image_path, f"image/{s.image_path.name}")
        alpha = None if s.alpha_path is None else b.place(s.alpha_path, f"alpha/{s.alpha_path.name}")
        trimap = None if s.trimap_path is None else b.place(s.trimap_path, f"trimap/{s.trimap_path.name}")
        b.add_sample(s.id, s.group, image=image, alpha=alpha, trimap=trimap, source=str(s.meta.get("source", "")),
                     licence="unclear (alphamatting.com)")
    return b.write(workers)
