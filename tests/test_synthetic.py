"""synthetic dataset: byte-identical regeneration, soft mattes, counts, manifest, caching, categories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets import load_dataset
from benchmark.datasets.common import DatasetError
from benchmark.datasets.manifest import load_manifest
from benchmark.datasets.synthetic import FAMILIES, load_synthetic

SMALL = {"size": (64, 96)}


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_ds(tmp_path_factory):
    return load_synthetic(root=tmp_path_factory.mktemp("syn") / "default")


def test_two_generations_are_byte_identical(tmp_path, default_ds):
    again = load_synthetic(root=tmp_path / "b")
    a, b = files(default_ds.root), files(again.root)
    assert a.keys() == b.keys() and len(a) > 16
    assert all(a[k] == b[k] for k in a)
    assert again.fingerprint == default_ds.fingerprint


def test_seed_changes_the_pixels(tmp_path):
    a = load_synthetic(root=tmp_path / "a", seed=0, **SMALL)
    b = load_synthetic(root=tmp_path / "b", seed=1, **SMALL)
    sa, sb = a.samples["blob_00"], b.samples["blob_00"]
    assert sa.image_path.read_bytes() != sb.image_path.read_bytes()


def test_counts_ids_and_groups(default_ds):
    assert default_ds.name == "synthetic"
    assert list(default_ds.groups) == list(FAMILIES)
    assert len(default_ds.samples) == 16
    for key, group in default_ds.groups.items():
        assert group.sample_ids == tuple(f"{key}_{j:02d}" for j in range(4))
        assert group.meta["type"] == "category"


def test_more_groups_than_families_and_sizes(tmp_path):
    ds = load_synthetic(root=tmp_path / "x", num_groups=6, images_per_group=3, size=[40, 52])
    assert list(ds.groups) == [*FAMILIES, "blob_1", "ring_1"]
    assert len(ds.samples) == 18
    with Image.open(ds.samples["ring_1_02"].image_path) as im:
        assert im.size == (52, 40) and im.mode == "RGB"


def test_images_and_mattes(default_ds):
    soft_total = 0.0
    for s in default_ds.samples.values():
        img = np.asarray(Image.open(s.image_path))
        alpha = np.asarray(Image.open(s.alpha_path))
        assert img.shape == (192, 256, 3) and img.dtype == np.uint8
        assert alpha.shape == (192, 256) and alpha.dtype == np.uint8
        assert (alpha == 0).any() and (alpha > 127).any(), s.id  # background and a maskable foreground
        soft_total += ((alpha > 0) & (alpha < 255)).mean()
    assert soft_total / len(default_ds.samples) > 0.01  # soft edges, hair and glass are not binary
    glass = np.asarray(Image.open(default_ds.samples["glass_00"].alpha_path))
    assert ((glass > 50) & (glass < 200)).mean() > 0.02  # genuinely semi-transparent body


def test_half_the_samples_have_trimaps(default_ds):
    with_trimap = [s for s in default_ds.samples.values() if s.trimap_path is not None]
    assert len(with_trimap) == len(default_ds.samples) // 2
    for s in with_trimap:
        t = np.asarray(Image.open(s.trimap_path))
        assert set(np.unique(t)) <= {0, 128, 255} and (t == 128).any()


def test_manifest_is_valid_and_loadable(default_ds):
    doc = json.loads((default_ds.root / "manifest.json").read_text())
    assert doc["format"] == "icmbench-dataset" and doc["version"] == 1 and doc["name"] == "synthetic"
    for entry in doc["samples"]:
        assert not Path(entry["image"]).is_absolute()
        for key in ("image", "alpha", "trimap"):
            assert entry[key] is None or (default_ds.root / entry[key]).is_file()
    assert set(doc["groups"]) == set(FAMILIES)
    again = load_manifest(root=default_ds.root)
    assert again.fingerprint == default_ds.fingerprint


def test_existing_complete_folder_is_reused(tmp_path):
    ds = load_synthetic(root=tmp_path / "r", **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in ds.root.rglob("*.png")}
    again = load_synthetic(root=tmp_path / "r", **SMALL)
    assert {p: p.stat().st_mtime_ns for p in again.root.rglob("*.png")} == stamp


def test_incomplete_or_stale_folder_is_regenerated(tmp_path):
    ds = load_synthetic(root=tmp_path / "r", **SMALL)
    before = ds.samples["blob_00"].image_path.read_bytes()
    ds.samples["leaf_01"].alpha_path.unlink()
    again = load_synthetic(root=tmp_path / "r", **SMALL)
    assert again.samples["leaf_01"].alpha_path.is_file()
    other = load_synthetic(root=tmp_path / "r", seed=5, **SMALL)  # other params: rewritten in place
    assert other.samples["blob_00"].image_path.read_bytes() != before
    doc = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert doc["meta"]["generator"]["seed"] == 5


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        load_synthetic(root=foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_default_root_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICMBENCH_CACHE", str(tmp_path / "cache"))
    ds = load_dataset("synthetic", **SMALL)
    assert ds.root.parent == tmp_path / "cache" and ds.root.name.startswith("synthetic-")
    other = load_synthetic(seed=3, **SMALL)
    assert other.root != ds.root
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary folders left behind


def test_groups_share_a_look(default_ds):
    """Foreground colour is closer within a group than across groups (what makes it in-context)."""
    means = {}
    for s in default_ds.samples.values():
        img = np.asarray(Image.open(s.image_path)).astype(float)
        alpha = np.asarray(Image.open(s.alpha_path))
        means[s.id] = img[alpha == 255].mean(0) if (alpha == 255).sum() > 20 else img[alpha > 127].mean(0)
    within, across = [], []
    ids = list(means)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            d = np.linalg.norm(means[a] - means[b])
            (within if default_ds.samples[a].group == default_ds.samples[b].group else across).append(d)
    assert np.mean(within) < 0.5 * np.mean(across)


def test_bad_parameters(tmp_path):
    with pytest.raises(DatasetError):
        load_synthetic(root=tmp_path / "z", num_groups=0)
    with pytest.raises(DatasetError):
        load_synthetic(root=tmp_path / "z", size=(8, 8))
