"""trimap_matting: shapes, exact known regions, quality on a soft edge, degenerate trimaps, errors."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.trimaps import derive_trimap
from methods import build_method
from methods.base import MethodError, Target
from methods.trimap_matting import TrimapMattingMethod


def composite(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, float alpha): a soft-edged disc of one colour over a smooth colour gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    r = 0.3 * min(h, w)
    alpha = np.clip((r - np.hypot(yy - h / 2, xx - w / 2)) / max(1.5, 0.02 * min(h, w)) + 0.5, 0, 1)
    fg = np.array([220.0, 60.0, 40.0])
    bg = np.stack([40 + 80 * xx / w, 90 + 60 * yy / h, 160 + 0 * xx], -1)
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg + rng.normal(0, 2, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), alpha


def predict(method: TrimapMattingMethod, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    method.prepare([])
    (out,) = method.predict([Target("t", image, trimap)])
    return out


@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (300, 410)])
def test_output_contract_and_known_regions(shape):
    image, alpha = composite(*shape)
    trimap = derive_trimap(alpha, radius=2)
    out = predict(TrimapMattingMethod(long_side=128), image, trimap)
    assert out.shape == shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert (out[trimap == 255] == 1.0).all()
    assert (out[trimap == 0] == 0.0).all()
    unknown = trimap == 128
    assert unknown.any() and 0 < out[unknown].mean() < 1


@pytest.mark.parametrize("solver", ["cf", "lbdm", "knn"])
def test_each_solver_recovers_a_soft_edge(solver):
    image, alpha = composite(60, 80)
    trimap = derive_trimap(alpha, radius=3)
    out = predict(TrimapMattingMethod(solver=solver), image, trimap)
    unknown = trimap == 128
    err = np.abs(out - alpha)[unknown].mean()
    baseline = np.abs(0.5 - alpha)[unknown].mean()  # a solver that ignores the image
    assert err < 0.5 * baseline, (solver, err, baseline)


def test_working_resolution_path_keeps_full_resolution_detail():
    image, alpha = composite(600, 900)
    trimap = derive_trimap(alpha, radius=4)  # a thin band: 4 px at full size, ~1 px at working size
    out = predict(TrimapMattingMethod(long_side=200), image, trimap)
    assert out.shape == (600, 900)
    assert (out[trimap == 255] == 1.0).all() and (out[trimap == 0] == 0.0).all()
    unknown = trimap == 128
    assert np.abs(out - alpha)[unknown].mean() < 0.5 * np.abs(0.5 - alpha)[unknown].mean()


def test_deterministic():
    image, alpha = composite(45, 61, seed=3)
    trimap = derive_trimap(alpha, radius=3)
    a = predict(TrimapMattingMethod(), image, trimap)
    b = predict(TrimapMattingMethod(), image, trimap)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("fill", "expected"),
    [
        ({"all": 255}, 1.0),  # no unknown: the trimap is the answer
        ({"all": 0}, 0.0),
        ({"all": 128}, 0.5),  # nothing known: no information
        ({"all": 128, "corner": 0}, 0.0),  # no foreground anywhere: every constraint is 0
        ({"all": 128, "corner": 255}, 1.0),
    ],
)
def test_degenerate_trimaps(fill, expected):
    image, _ = composite(31, 29)
    trimap = np.full((31, 29), fill["all"], np.uint8)
    if "corner" in fill:
        trimap[:5, :5] = fill["corner"]
    out = predict(TrimapMattingMethod(), image, trimap)
    assert out.shape == (31, 29) and out.dtype == np.float32
    unknown = trimap == 128
    target = np.where(trimap == 255, 1.0, np.where(trimap == 0, 0.0, expected))
    assert np.array_equal(out[~unknown], target[~unknown])
    assert np.allclose(out[unknown], expected)


def test_binary_trimap_is_returned_as_alpha():
    image, alpha = composite(40, 50)
    trimap = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    out = predict(TrimapMattingMethod(), image, trimap)
    assert np.array_equal(out, trimap.astype(np.float32) / 255)


def test_errors():
    image, _ = composite(20, 30)
    m = TrimapMattingMethod()
    m.prepare([])
    with pytest.raises(MethodError, match="no trimap"):
        m.predict([Target("t", image, None)])
    with pytest.raises(MethodError, match="shape"):
        m.predict([Target("t", image, np.zeros((10, 10), np.uint8))])
    with pytest.raises(ValueError, match="solver"):
        TrimapMattingMethod(solver="nope")


def test_registry_and_info():
    m = build_method("trimap_matting", solver="cf", long_side=256)
    assert m.info.name == "trimap_matting" and m.info.guidance == "trimap"
