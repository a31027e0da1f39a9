"""Public metric functions: ``evaluate`` and the four single metrics.

Units follow the reference driver (``evaluate.m``): SAD/1000, MSE raw, Grad/1000, Conn/1000,
with pixel values read as 0..1 (uint8 / 255). Empty region: SAD = Grad = Conn = 0 and
MSE = NaN under ``dim`` (0/0, no ε); MSE = 0 under ``icm`` (its ``+1e-8`` denominator).

``backend`` picks the implementation: ``"auto"`` (numba kernels when numba is installed),
``"numba"`` or ``"numpy"`` (pure numpy/scipy). Both give the same values.
"""

from __future__ import annotations

import math

import numpy as np

from metrics._inputs import Pair, check_backend, make_pair, region_mask, unknown_mask
from metrics.connectivity import conn_sums
from metrics.gradient import grad_sums
from metrics.sad_mse import diff_sums

#: Metric names in reporting order.
METRIC_NAMES: tuple[str, ...] = ("SAD", "MSE", "Grad", "Conn")
#: Region names of :func:`evaluate`.
REGIONS: tuple[str, ...] = ("whole", "unknown")

_Sums = tuple[float, float]


def _mse_value(sq: float, count: int, protocol: str) -> float:
    if protocol == "icm":
        return sq / 65025.0 / (count + 1e-8)
    return sq / 65025.0 / count if count else math.nan


def _scores(pair: Pair, mask: np.ndarray | None, backend: str,
            names: tuple[str, ...]) -> tuple[dict[str, float], dict[str, float]]:
    """Scores over the whole image and over ``mask`` (empty dict without mask), computed once."""
    n_whole = pair.pred.size
    n_mask = int(np.count_nonzero(mask)) if mask is not None else 0
    whole: dict[str, float] = {}
    masked: dict[str, float] = {}
    if "SAD" in names or "MSE" in names:
        (a_w, a_m), (s_w, s_m) = diff_sums(pair, mask, backend)
        if "SAD" in names:
            whole["SAD"], masked["SAD"] = a_w / 255.0 / 1000.0, a_m / 255.0 / 1000.0
        if "MSE" in names:
            whole["MSE"] = _mse_value(s_w, n_whole, pair.protocol)
            masked["MSE"] = _mse_value(s_m, n_mask, pair.protocol)
    if "Grad" in names:
        g_w, g_m = grad_sums(pair, mask, backend)
        whole["Grad"], masked["Grad"] = g_w / 1000.0, g_m / 1000.0
    if "Conn" in names:
        c_w, c_m = conn_sums(pair, mask, backend)
        whole["Conn"], masked["Conn"] = c_w / 1000.0, c_m / 1000.0
    order = [k for k in METRIC_NAMES if k in names]
    whole = {k: whole[k] for k in order}
    masked = {k: masked[k] for k in order} if mask is not None else {}
    return whole, masked


def evaluate(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None = None, *,
             protocol: str = "dim", backend: str = "auto") -> dict[str, dict[str, float]]:
    """All four metrics: ``{"whole": {...}, "unknown": {...}}``.

    ``pred``/``gt``: 2-D uint8 (0..255) or float in [0, 1], same shape. ``trimap``: integer
    array; its unknown region is ``trimap == 128`` exactly, and the ``"unknown"`` entry is
    present only when a trimap is given. Expensive per-pixel maps (gradient amplitudes,
    Conn levels) are computed once and reduced over both regions.
    """
    check_backend(backend)
    pair = make_pair(pred, gt, protocol)
    mask = None if trimap is None else unknown_mask(trimap, pair.pred.shape)
    whole, unknown = _scores(pair, mask, backend, METRIC_NAMES)
    return {"whole": whole, "unknown": unknown} if mask is not None else {"whole": whole}


def _single(name: str, pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None,
            protocol: str, backend: str) -> float:
    check_backend(backend)
    pair = make_pair(pred, gt, protocol)
    mask = region_mask(region, pair.pred.shape)
    whole, masked = _scores(pair, mask, backend, (name,))
    return masked[name] if mask is not None else whole[name]


def sad(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None, *,
        protocol: str = "dim", backend: str = "auto") -> float:
    """SAD = Σ_R |pred − gt| / 255 / 1000 over a boolean ``region`` (None: whole image).

    Empty region: 0.
    """
    return _single("SAD", pred, gt, region, protocol, backend)


def mse(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None, *,
        protocol: str = "dim", backend: str = "auto") -> float:
    """MSE = Σ_R ((pred − gt)/255)² / |R| (raw, not scaled) over ``region`` (None: whole image).

    Empty region: NaN under ``dim``; 0 under ``icm`` (denominator |R| + 1e-8).
    """
    return _single("MSE", pred, gt, region, protocol, backend)


def grad(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None, *,
         protocol: str = "dim", backend: str = "auto") -> float:
    """Grad = Σ_R (amp_pred − amp_gt)² / 1000 over ``region`` (None: whole image).

    Amplitudes of the 9×9 derivative-of-Gaussian filter (σ = 1.4, replicate borders) on the
    full mattes; ``dim`` min–max normalises each matte first (mat2gray), ``icm`` divides by
    255. Gradients at the region's edge use pixels outside it. Empty region: 0.
    """
    return _single("Grad", pred, gt, region, protocol, backend)


def conn(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None, *,
         protocol: str = "dim", backend: str = "auto") -> float:
    """Conn = Σ_R |φ_pred − φ_gt| / 1000 over ``region`` (None: whole image).

    Thresholds 0.1 … 1.0, 4-connected largest components, θ = 0.15; :mod:`metrics.connectivity`
    gives the ``dim`` vs ``icm`` component and threshold rules. Empty region: 0.
    """
    return _single("Conn", pred, gt, region, protocol, backend)
