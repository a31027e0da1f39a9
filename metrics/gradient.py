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
from metrics._kernel import RADIUS, full_factors, half_factors
from metrics._reduce import fsum_rows, region_sums

#: Tile size of the compiled kernel (rows, columns); at least the 4-px kernel radius each way.
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


def _bands(x: np.ndarray, size: int, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` over bands of ``size`` rows (the last one may be shorter): one row per band."""
    h = x.shape[0]
    n, full = -(-h // size), h // size
    out = np.empty((n, *x.shape[1:]), x.dtype)
    if full:
        reduce.reduce(x[: full * size].reshape(full, size, *x.shape[1:]), axis=1, out=out[:full])
    if full < n:
        reduce.reduce(x[full * size:], axis=0, out=out[full])
    return out


def _window_rows(x: np.ndarray, size: int, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` over each band of ``size`` rows widened by the kernel radius (clamped), so over
    every row a tile's amplitude reads; numpy's vectorised reductions do the work."""
    h = x.shape[0]
    start = np.arange(0, h, size)
    stop = np.minimum(start + size, h)
    r = np.arange(RADIUS)
    halo = np.clip(np.concatenate([start[:, None] - 1 - r, stop[:, None] + r], axis=1), 0, h - 1)
    return reduce(_bands(x, size, reduce), reduce.reduce(x[halo], axis=1))


def live_tiles(x: np.ndarray, scale: float, tile: tuple[int, int] = TILE) -> np.ndarray:
    """bool[tile rows, tile cols]: the tiles where the amplitude of ``x`` may be non-zero, i.e.
    whose 4-pixel-padded window is not constant (elsewhere every derivative tap is an exact 0).
    A zero scale (a constant ``dim`` matte) kills every tile."""
    th, tw = tile
    if scale == 0.0:
        return np.zeros((-(-x.shape[0] // th), -(-x.shape[1] // tw)), np.bool_)
    lo, hi = (_window_rows(_window_rows(x, th, red).T, tw, red).T for red in (np.minimum, np.maximum))
    return np.ascontiguousarray(lo != hi)  # one layout, so one compiled kernel


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
    live_p, live_g = live_tiles(pair.pred, sp), live_tiles(pair.gt, sg)
    tiles = nb.grad_tile_sums(pair.pred, pair.gt, sp, sg, live_p, live_g, m, mask is not None, g0, g1, *TILE)
    return fsum_rows(tiles[:, 0]), fsum_rows(tiles[:, 1])
