"""Hand-made cases with known answers, API contracts and bad inputs of the metric functions."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metrics import METRIC_NAMES, conn, evaluate, grad, mse, numba_available, sad

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="numba not installed")),
]


def _soft(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    a = np.clip((h / 3 - r) / 6 + 0.5, 0, 1)
    noise = np.random.default_rng(seed).normal(0, 0.03, (h, w))
    return np.rint(np.clip(a + noise, 0, 1) * 255).astype(np.uint8)


def _tie_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two 6-pixel triangles split by a background diagonal (4-connectivity keeps them apart).

    The upper triangle A comes first in row-major order, the lower triangle B first in
    column-major order. A: pred 255, gt 230 (passes 0.9, not 1.0); B: 255 in both.
    """
    r, c = np.mgrid[:4, :4]
    upper, lower = c > r, c < r
    pred = np.where(upper | lower, 255, 0).astype(np.uint8)
    gt = np.where(upper, 230, pred).astype(np.uint8)
    return pred, gt


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", ["dim", "icm"])
def test_perfect_prediction_scores_zero(protocol, backend):
    a = _soft()
    tri = np.where(a == 0, 0, np.where(a == 255, 255, 128)).astype(np.uint8)
    for x in (a, a / 255.0):
        res = evaluate(x, x, tri, protocol=protocol, backend=backend)
        assert res == {"whole": dict.fromkeys(METRIC_NAMES, 0.0), "unknown": dict.fromkeys(METRIC_NAMES, 0.0)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_sad_mse_symmetric_and_hand_computed(backend):
    p = np.array([[0, 255], [10, 20]], np.uint8)
    g = np.array([[255, 255], [0, 30]], np.uint8)
    region = np.array([[True, False], [True, False]])
    assert sad(p, g, backend=backend) == sad(g, p, backend=backend) == pytest.approx(275 / 255 / 1000, rel=1e-15)
    assert mse(p, g, backend=backend) == mse(g, p, backend=backend)
    assert mse(p, g, backend=backend) == pytest.approx((255**2 + 100 + 100) / 255**2 / 4, rel=1e-15)
    assert sad(p, g, region, backend=backend) == pytest.approx(265 / 255 / 1000, rel=1e-15)
    assert mse(p, g, region, backend=backend) == pytest.approx((255**2 + 100) / 255**2 / 2, rel=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_invariant_to_positive_affine_rescaling(backend):
    p = _soft(seed=1) / 255.0
    g = _soft(seed=2) / 255.0
    ref = grad(p, g, backend=backend)
    assert ref > 0
    for a, b in ((0.5, 0.25), (0.1, 0.9), (0.02, 0.0)):
        assert grad(a * p + b, g, backend=backend) == pytest.approx(ref, rel=1e-9)
    # the icm protocol divides by 255 instead, so a low-contrast prediction changes it
    low = 0.1 * p + 0.45
    assert grad(low, g, protocol="icm", backend=backend) != pytest.approx(grad(p, g, protocol="icm"), rel=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_of_constant_matte_is_zero_gradient(backend):
    g = _soft()
    for value in (0, 1, 128, 255):
        const = np.full_like(g, value)
        assert grad(const, g, backend=backend) == pytest.approx(grad(np.zeros_like(g), g), rel=1e-12)
        assert grad(const, np.full_like(g, 7), backend=backend) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_conn_column_major_tie(backend):
    pred, gt = _tie_pair()
    # dim: the column-major first component B wins every tie, A drops at l = 0 and adds 25/255 per pixel
    assert conn(pred, gt, backend=backend) == pytest.approx(6 * 25 / 255 / 1000, rel=1e-15)
    # transposed, the roles swap: A is now column-major first, wins at 0.1..0.9, and everything cancels
    assert conn(pred.T.copy(), gt.T.copy(), backend=backend) == 0.0
    # icm: row-major ties (A wins), and at 1.0 the background outnumbers B: A keeps l = 1
    assert conn(pred, gt, protocol="icm", backend=backend) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_conn_icm_background_wins_size_ties(backend):
    """icm: argmax(bincount) includes label 0, so a background as large as the component wins."""
    pred = np.array([[255, 255, 0, 0]], np.uint8)
    gt = np.array([[230, 230, 0, 0]], np.uint8)
    # Ω_1 = background, so both foreground pixels drop at l = 0: |(1 − 1) − (1 − 230/255)| = 25/255 each
    assert conn(pred, gt, protocol="icm", backend=backend) == pytest.approx(2 * 25 / 255 / 1000, rel=1e-6)
    # dim: the component is Ω_1..Ω_9 (l = 0.9) and both φ stay 1
    assert conn(pred, gt, backend=backend) == 0.0
    # one more background pixel would not change icm; one fewer makes the component win
    assert conn(pred[:, :3], gt[:, :3], protocol="icm", backend=backend) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_conn_threshold_153_passes_06(backend):
    """153/255 is exactly 0.6: it passes t_6, so the pixel's round-down level reaches 0.6."""
    gt = np.full((3, 3), 255, np.uint8)
    pred = np.full((3, 3), 153, np.uint8)
    # B_1..B_6 = everything (one component), B_7 = ∅: l = 0.6, d_pred = 0 → φ_pred = 1,
    # d_gt = 0.4 → φ_gt = 0.6: 0.4 per pixel
    assert conn(pred, gt, backend=backend) == pytest.approx(9 * 0.4 / 1000, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", ["dim", "icm"])
def test_empty_region(protocol, backend):
    p, g = _soft(seed=3), _soft(seed=4)
    res = evaluate(p, g, np.zeros(p.shape, np.uint8), protocol=protocol, backend=backend)["unknown"]
    assert res["SAD"] == res["Grad"] == res["Conn"] == 0.0
    if protocol == "dim":
        assert math.isnan(res["MSE"])
        assert math.isnan(mse(p, g, np.zeros(p.shape, bool), backend=backend))
    else:
        assert res["MSE"] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_128_is_unknown(backend):
    p, g = _soft(seed=5), _soft(seed=6)
    tri = np.full(p.shape, 127, np.uint8)
    tri[::2] = 129
    assert evaluate(p, g, tri, backend=backend)["unknown"]["SAD"] == 0.0
    tri[5, 7] = 128
    assert evaluate(p, g, tri, backend=backend)["unknown"]["SAD"] == pytest.approx(
        abs(int(p[5, 7]) - int(g[5, 7])) / 255 / 1000)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", ["dim", "icm"])
def test_single_metrics_match_evaluate(protocol, backend):
    p, g = _soft(seed=7), _soft(seed=8)
    tri = np.where(np.random.default_rng(0).random(p.shape) < 0.4, 128, 0).astype(np.uint8)
    res = evaluate(p, g, tri, protocol=protocol, backend=backend)
    for name, fn in zip(METRIC_NAMES, (sad, mse, grad, conn), strict=True):
        assert fn(p, g, protocol=protocol, backend=backend) == res["whole"][name]
        assert fn(p, g, tri == 128, protocol=protocol, backend=backend) == res["unknown"][name]
    assert set(evaluate(p, g, protocol=protocol, backend=backend)) == {"whole"}


@pytest.mark.parametrize("protocol", ["dim", "icm"])
def test_float_input_matches_uint8(protocol):
    p, g = _soft(seed=9), _soft(seed=10)
    a = evaluate(p, g, protocol=protocol)["whole"]
    for dtype, rel in ((np.float64, 1e-12), (np.float32, 1e-6)):
        b = evaluate((p / 255.0).astype(dtype), (g / 255.0).astype(dtype), protocol=protocol)["whole"]
        for k in METRIC_NAMES:
            assert b[k] == pytest.approx(a[k], rel=rel, abs=1e-15), (dtype, k)


def test_mixed_uint8_and_float_inputs():
    p, g = _soft(seed=11), _soft(seed=12)
    assert evaluate(p, g / 255.0)["whole"] == pytest.approx(evaluate(p, g)["whole"], rel=1e-12)


@pytest.mark.parametrize(
    ("pred", "gt", "exc", "match"),
    [
        (np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), ValueError, "shapes differ"),
        (np.zeros((4, 4), np.int64), np.zeros((4, 4), np.uint8), TypeError, "dtype int64"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8), TypeError, "dtype bool"),
        (np.full((4, 4), 1.5), np.zeros((4, 4)), ValueError, r"\[0, 1\]"),
        (np.full((4, 4), -0.1), np.zeros((4, 4)), ValueError, r"\[0, 1\]"),
        (np.full((4, 4), np.nan), np.zeros((4, 4)), ValueError, "NaN"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), ValueError, "2-D"),
        (np.zeros(4, np.uint8), np.zeros(4, np.uint8), ValueError, "2-D"),
    ],
)
def test_bad_mattes(pred, gt, exc, match):
    with pytest.raises(exc, match=match):
        evaluate(pred, gt)
    with pytest.raises(exc, match=match):
        evaluate(gt, pred) if pred.shape == gt.shape else sad(gt, pred)


def test_bad_trimap_region_protocol_backend():
    a = np.zeros((4, 4), np.uint8)
    with pytest.raises(TypeError, match="trimap"):
        evaluate(a, a, np.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="trimap shape"):
        evaluate(a, a, np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="trimap must be a 2-D"):
        evaluate(a, a, np.zeros((4, 4, 1), np.uint8))
    with pytest.raises(TypeError, match="boolean"):
        sad(a, a, np.ones((4, 4), np.uint8))
    with pytest.raises(ValueError, match="region shape"):
        conn(a, a, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="protocol"):
        evaluate(a, a, protocol="matlab")
    with pytest.raises(ValueError, match="backend"):
        grad(a, a, backend="cuda")


def test_import_and_evaluate_without_numba_or_torch():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, metrics\n"
        "assert not metrics.numba_available()\n"
        "a = np.arange(64, dtype=np.uint8).reshape(8, 8); b = a[::-1].copy()\n"
        "r = metrics.evaluate(a, b, np.full((8, 8), 128, np.uint8))\n"
        "assert r['whole']['Conn'] > 0 and r['whole'] == r['unknown'], r\n"
        "try:\n    metrics.evaluate(a, b, backend='numba')\nexcept RuntimeError:\n    pass\n"
        "else:\n    raise AssertionError('numba backend should be refused')\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_one_compiled_kernel_per_input_type():
    """Small and large mattes, constant and not, reach every kernel with one array layout:
    each extra signature would be a second compilation (seconds) in every fresh process."""
    from metrics import _numba

    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (150, 300), dtype=np.uint8)
    for p in (np.zeros((8, 8), np.uint8), big, np.full((70, 140), 9, np.uint8)):
        g = np.ascontiguousarray(p[::-1])
        for protocol in ("dim", "icm"):
            evaluate(p, g, np.full(p.shape, 128, np.uint8), protocol=protocol)
    import numba

    for name in ("grad_tile_sums", "diff_row_sums_u8", "conn_row_sums_int", "conn_row_sums_table", "_scan_runs"):
        for sig in getattr(_numba, name).signatures:  # every array argument C-contiguous
            layouts = [a.layout for a in sig if isinstance(a, numba.types.Array)]
            assert set(layouts) == {"C"}, (name, sig)
