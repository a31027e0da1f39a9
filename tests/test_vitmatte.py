"""ViTMatte engine and method on a tiny random-weight model (tests/tiny_hf.py; nothing is downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from methods._hub import WeightsNotFound
from methods.base import MethodError, Target
from methods.pseudo_trimap import trimap_levels
from methods.vitmatte import IMAGENET_MEAN, IMAGENET_STD, VitMatte, VitMatteMethod, original_padded_size
from tests.conftest import make_folder_dataset, soft_disc
from tests.runner_helpers import read_rows
from tests.test_runner import run
from tests.tiny_hf import tiny_vitmatte

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_vitmatte(tmp_path_factory.mktemp("vitmatte") / "model")


def sample(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of a soft disc over noise and its 0/128/255 trimap."""
    rng = np.random.default_rng(seed)
    alpha = soft_disc(h, w, h / 2, w / 2, min(h, w) / 3, ramp=4.0)
    image = (alpha[..., None] * 220 + rng.integers(0, 35, (h, w, 3))).astype(np.uint8)
    trimap = np.where(alpha >= 1, 255, np.where(alpha <= 0, 0, 128)).astype(np.uint8)
    return image, trimap


@pytest.mark.parametrize("normalization", ["processor", "imagenet"])
@pytest.mark.parametrize("size", [(40, 56), (64, 64), (33, 95)])
def test_alpha_is_cropped_to_the_image_and_in_range(folder, normalization, size):
    engine = VitMatte(str(folder), device="cpu", normalization=normalization)
    image, trimap = sample(*size)
    x = engine.inputs(image, trimap)
    assert x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0 and x.shape[2:] >= size
    assert not x[:, :, size[0]:].any() and not x[:, :, :, size[1]:].any()  # zero padding bottom/right only
    alpha = engine.matte(image, trimap)
    assert alpha.shape == size and alpha.dtype == np.float32
    assert np.isfinite(alpha).all() and alpha.min() >= 0 and alpha.max() <= 1
    with torch.inference_mode():
        full = engine.model(pixel_values=torch.from_numpy(x)).alphas[0, 0].numpy()
    np.testing.assert_array_equal(alpha, full[: size[0], : size[1]])  # the crop of the padded output
    assert alpha.std() > 1e-3  # the tiny model is not a constant (tests/tiny_hf.py)


def test_original_padding_rule_grows_a_divisible_side_when_the_other_is_not():
    assert original_padded_size(64, 64) == (64, 64)
    assert original_padded_size(40, 56) == (64, 64)
    assert original_padded_size(64, 56) == (96, 64)  # hustvl/ViTMatte preprocess_inputs, peers.md §5


@pytest.mark.parametrize("normalization", ["processor", "imagenet"])
def test_grey_trimap_levels_are_quantised_to_0_half_1(folder, normalization):
    engine = VitMatte(str(folder), device="cpu", normalization=normalization)
    image, _ = sample(40, 56)
    greys = np.tile(np.array([0, 50, 84, 85, 100, 128, 169, 170, 200, 255], np.uint8), (40, 6))[:, :56]
    x = engine.inputs(image, greys)
    np.testing.assert_array_equal(x[0, 3, :40, :56], trimap_levels(greys))
    assert set(np.unique(x[0, 3, :40, :56])) == {0.0, 0.5, 1.0}  # 128 → exactly 0.5, not 128/255
    canonical = np.select([greys >= 170, greys < 85], [255, 0], 128).astype(np.uint8)
    np.testing.assert_array_equal(engine.matte(image, greys), engine.matte(image, canonical))


def test_normalisations_follow_their_sources_and_differ(folder):
    image, trimap = sample(40, 56)
    proc = VitMatte(str(folder), device="cpu", normalization="processor")
    orig = VitMatte(str(folder), device="cpu", normalization="imagenet")
    rgb = image.astype(np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(proc.inputs(image, trimap)[0, :3, :40, :56], (rgb - 0.5) / 0.5, atol=1e-6)
    mean, std = np.float32(IMAGENET_MEAN)[:, None, None], np.float32(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(orig.inputs(image, trimap)[0, :3, :40, :56], (rgb - mean) / std, atol=1e-6)
    a, b = proc.matte(image, trimap), orig.matte(image, trimap)
    for alpha in (a, b):
        assert alpha.min() >= 0 and alpha.max() <= 1
    assert np.abs(a - b).max() > 1e-3


def test_processor_defaults_when_the_folder_has_no_preprocessor_config(folder, tmp_path):
    bare = tiny_vitmatte(tmp_path / "bare", processor=False)
    assert not (bare / "preprocessor_config.json").exists()
    engine = VitMatte(str(bare), device="cpu")
    assert list(engine.processor.image_mean) == [0.5] * 3 and list(engine.processor.image_std) == [0.5] * 3
    image, trimap = sample(40, 56)
    np.testing.assert_array_equal(engine.matte(image, trimap), VitMatte(str(folder), device="cpu").matte(image, trimap))


def test_deterministic(folder):
    engine = VitMatte(str(folder), device="cpu")
    image, trimap = sample(48, 40)
    np.testing.assert_array_equal(engine.matte(image, trimap), engine.matte(image, trimap))


def test_fingerprint_is_content_based(folder, tmp_path):
    fp = VitMatte(str(folder), device="cpu").fingerprint()
    assert fp and fp == VitMatte(str(folder), device="cpu").fingerprint()
    moved = shutil.copytree(folder, tmp_path / "elsewhere")
    assert VitMatte(str(moved), device="cpu").fingerprint() == fp  # location-independent
    assert VitMatte(str(folder), device="cpu", normalization="imagenet").fingerprint() != fp
    other = tiny_vitmatte(tmp_path / "other", seed=1)
    assert VitMatte(str(other), device="cpu").fingerprint() != fp  # other weights


def test_missing_folder_and_config_are_named(tmp_path):
    with pytest.raises(WeightsNotFound, match="not a folder"):
        VitMatte(str(tmp_path / "nowhere"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFound, match=r"expected file config\.json at .*empty/config\.json"):
        VitMatteMethod(model_path=tmp_path / "empty", device="cpu")


def test_bad_settings_are_refused(folder):
    with pytest.raises(ValueError, match="normalization"):
        VitMatte(str(folder), device="cpu", normalization="zscore")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        VitMatte(str(folder), device="cpu", dtype="fp16")
    engine = VitMatte(str(folder), device="cpu")
    image, trimap = sample(40, 56)
    with pytest.raises(ValueError, match="trimap must be"):
        engine.matte(image, trimap[:30])


def test_method_requires_a_matching_trimap(folder):
    method = VitMatteMethod(model_path=folder, device="cpu")
    assert method.info.guidance == "trimap" and method.info.runtime_params == {"model_path", "device"}
    method.prepare([])
    image, trimap = sample(40, 56)
    ok, missing, shape, mask = method.predict([Target("a", image, trimap), Target("b", image),
                                              Target("c", image, trimap[:20]), Target("d", image, trimap > 0)])
    assert isinstance(ok, np.ndarray) and ok.shape == (40, 56)
    assert isinstance(missing, MethodError) and "no trimap" in str(missing)
    assert isinstance(shape, MethodError) and "(20, 56)" in str(shape)
    assert isinstance(mask, MethodError) and "boolean" in str(mask)
    assert method.fingerprint() == VitMatte(str(folder), device="cpu").fingerprint()
    method.close()


def test_end_to_end_through_the_runner(folder, tmp_path):
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=2, size=(40, 56))
    overrides = ("method=vitmatte", f"method.model_path={folder}", "method.device=cpu",
                 "dataset=folder", f"dataset.root={data}", "runner.rounds=1")
    stats = run(tmp_path / "out", *overrides)
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert stats.errors == 0, [r["error"] for r in rows if r["error"]]
    assert len(rows) == 2 * 1 * 1 * 2  # groups × rounds × targets × regions
    assert all(r["guidance"] == "trimap" and float(r["SAD"]) >= 0 and r["method_hash"] for r in rows)
