"""Grad: squared difference of derivative-of-Gaussian gradient amplitudes.

``amp = sqrt(gx² + gy²)`` with the reference's 9×9 L2-normalised kernel (σ = 1.4), true
convolution with replicate borders. The amplitude is taken on the raw 0..255 values and
multiplied by the matte's scale, which equals filtering the rescaled matte because the
filter is linear and its taps sum to zero:

- ``dim`` (``mat2gray``): scale ``1/(max − min)`` per matte; a constant matte has gradient 0;
- ``icm`` (official Python code): scale ``1/255``.

Both paths give raw sums; callers divide by 1000.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from metrics import _backend
from metrics._inputs import Pair
from metrics._kernel import full_factors, half_factors
from metrics._reduce import fsum_rows, region_sums

#: Tile size of the compiled kernel (rows, columns).
TILE = (64, 128)


def matte_scale(x: np.ndarray, protocol: str) -> float:
    """Factor from 0..255 values to the values the protocol differentiates."""
    if protocol == "icm":
        return 1.0 / 255.0
    if x.size == 0:
        return 0.0
    lo, hi = float(np.min(x)), float(np.max(x))
    return 0.0 if hi <= lo else 1.0 / (hi - lo)


def amplitude(x: np.ndarray, scale: float) -> np.ndarray:
    """Gradient amplitude of a 0..255 matte times ``scale`` (numpy/scipy, float64)."""
    g, dg = full_factors()
    g0 = g / np.sqrt(np.sum(g * g))
    g1 = dg / np.sqrt(np.sum(dg * dg))
    xf = np.asarray(x, dtype=np.float64)
    gx = ndimage.correlate1d(ndimage.correlate1d(xf, g1, axis=1, mode="nearest"), g0, axis=0, mode="nearest")
    gy = ndimage.correlate1d(ndimage.correlate1d(xf, g0, axis=1, mode="nearest"), g1, axis=0, mode="nearest")
    return np.sqrt(gx * gx + gy * gy) * scale


def error_map(pair: Pair) -> np.ndarray:
    """Per-pixel ``(amp_pred − amp_gt)²`` (numpy path)."""
    ap = amplitude(pair.pred, matte_scale(pair.pred, pair.protocol))
    ag = amplitude(pair.gt, matte_scale(pair.gt, pair.protocol))
    return (ap - ag) ** 2


def grad_sums(pair: Pair, mask: np.ndarray | None, backend: str = "auto") -> tuple[float, float]:
    """Raw Grad sums ``(whole image, mask)``; the mask sum is 0 without a mask."""
    if pair.pred.size == 0:
        return 0.0, 0.0
    nb = _backend.kernels(backend)
    if nb is None:
        return region_sums(error_map(pair), mask)
    g0, g1 = half_factors()
    sp = matte_scale(pair.pred, pair.protocol)
    sg = matte_scale(pair.gt, pair.protocol)
    m = mask if mask is not None else np.zeros((1, 1), np.bool_)
    tiles = nb.grad_tile_sums(pair.pred, pair.gt, sp, sg, m, mask is not None, g0, g1, *TILE)
    return fsum_rows(tiles[:, 0]), fsum_rows(tiles[:, 1])
