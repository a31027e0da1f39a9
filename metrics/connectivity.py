"""Conn: connectivity error with thresholds 0.1 … 1.0 and θ = 0.15.

Per pixel, ``m`` counts the thresholds t_i = i/10 that both mattes pass, so the
intersections ``B_i = {m >= i}`` are nested. Ω_i is the largest 4-connected component of
B_i; a pixel's round-down level is l = t_{i-1} at the first i with the pixel outside Ω_i
(never revised; l = 1 if in every Ω_i). Then d = α − l, φ = 1 − d·[d ≥ 0.15] and
Conn = Σ|φ_pred − φ_gt|. Raw sums are returned; callers divide by 1000.

``dim`` (MATLAB reference):

- threshold test exact on the 0..255 value x: x passes t_i iff ``10·x ≥ 255·i``
  (51, 102, 153, 204 and 255 pass 0.2, 0.4, 0.6, 0.8, 1.0). For float input, x = 255·v is
  first snapped to the nearest integer when within 1e-4 of it (so a float matte holding
  k/255 scores like the uint8 matte k); the test is then evaluated in float64;
- the background is never a candidate; an empty B_i gives an empty Ω_i;
- equal-size components: the one whose first pixel comes first in column-major order wins
  (MATLAB's ``bwconncomp`` numbering and ``max``);
- for uint8 input every term is a multiple of 1/510, so the sum is exact in integers.

``icm`` (official In-Context Matting Python code):

- α = float32(x) / float32(255) in float32, compared in float64 with
  ``np.arange(0, 1.1, 0.1)`` thresholds (153/255 passes 0.6 like the reference);
- the largest component is ``argmax(bincount(labels))`` *including* the background label 0,
  so Ω_i is the background when it is at least as large as every component (and the whole
  image when B_i is empty); components are numbered row-major (ties: row-major first);
- l takes the ``np.arange`` values, d and φ are computed in float64.

Two implementations give the same level map: the numpy path labels each B_i with scipy
(the transposed mask for column-major numbering), literally as the reference loops; the
numba path (:func:`metrics._numba.level_codes`) finds every level's runs in one scan and
labels each level with a union-find over its runs.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from metrics import _backend
from metrics._inputs import Pair
from metrics._reduce import fsum_rows, region_sums

#: The official code's thresholds ``np.arange(0, 1 + step, step)`` for step 0.1.
ICM_THRESHOLDS = np.arange(0, 1 + 0.1, 0.1)
#: Float inputs: |255·v − k| ≤ SNAP_TOL counts as the integer k (dim Conn only).
SNAP_TOL = 1e-4
#: θ of the reference.
THETA = 0.15
_THETA_2550 = 382.5  # 2550·θ, exact in binary
_CROSS = ndimage.generate_binary_structure(2, 1)
#: uint8 → itself: :func:`metrics._numba.level_codes` on levels computed already (float mattes).
IDENTITY_LUT = np.arange(256, dtype=np.uint8)


def dim_level_lut() -> np.ndarray:
    """uint8[256]: number of thresholds i/10 (i = 1..10) that the 8-bit value k passes."""
    return ((10 * np.arange(256)) // 255).astype(np.uint8)


def dim_phi_table() -> np.ndarray:
    """int32[11, 256]: 510·d·[d ≥ 0.15] for d = k/255 − j/10, i.e. (2k − 51j)·[40k − 1020j ≥ 1530]."""
    j = np.arange(11)[:, None]
    k = np.arange(256)[None, :]
    return np.where(40 * k - 1020 * j >= 1530, 2 * k - 51 * j, 0).astype(np.int32)


@functools.cache
def dim_error_table() -> np.ndarray:
    """int16[11·256·256], flattened: ``|T[j, p] − T[j, g]|`` for :func:`dim_phi_table` ``T``,
    indexed by ``(j << 16) | (p << 8) | g``."""
    t = dim_phi_table().astype(np.int32)
    err = np.abs(t[:, :, None] - t[:, None, :]).astype(np.int16).ravel()
    err.flags.writeable = False
    return err


def snap(x: np.ndarray) -> np.ndarray:
    """Round 0..255 float values that lie within SNAP_TOL of an integer."""
    r = np.rint(x)
    return np.where(np.abs(x - r) <= SNAP_TOL, r, x)


def _dim_levels_float(x: np.ndarray) -> np.ndarray:
    ten_x = 10.0 * x
    lev = np.zeros(x.shape, np.uint8)
    for i in range(1, 11):
        lev += ten_x >= 255.0 * i
    return lev


def icm_alpha(x: np.ndarray) -> np.ndarray:
    """The official code's ``pred / 255.0`` on float32 input, widened to float64."""
    return (np.asarray(x, dtype=np.float32) / np.float32(255.0)).astype(np.float64)


def _icm_levels(alpha: np.ndarray) -> np.ndarray:
    lev = np.zeros(alpha.shape, np.uint8)
    for i in range(1, 11):
        lev += alpha >= ICM_THRESHOLDS[i]
    return lev


def reference_levels(m: np.ndarray) -> np.ndarray:
    """Round-down index j per pixel (l = j/10), reference rule, one labelling per threshold.

    Labelling the transposed mask numbers components in column-major order, so ``argmax``
    over sizes breaks ties the way MATLAB does.
    """
    j = np.full(m.shape, -1, np.int8)
    for i in range(1, 11):
        lab, n = ndimage.label((m >= i).T, structure=_CROSS)
        if n:
            sizes = np.bincount(lab.ravel())
            sizes[0] = -1
            omega = (lab == int(np.argmax(sizes))).T
            j[(j == -1) & ~omega] = i - 1
        else:
            j[j == -1] = i - 1
        if not (j == -1).any():
            break
    j[j == -1] = 10
    return j.astype(np.uint8)


def icm_levels(m: np.ndarray) -> np.ndarray:
    """Round-down index j per pixel under the official code's component rule (background included)."""
    j = np.full(m.shape, -1, np.int8)
    for i in range(1, 11):
        lab, _ = ndimage.label(m >= i, structure=_CROSS)
        omega = lab == int(np.argmax(np.bincount(lab.ravel())))
        j[(j == -1) & ~omega] = i - 1
    j[j == -1] = 10
    return j.astype(np.uint8)


def _dim_sums_numpy(pair: Pair, mask: np.ndarray | None) -> tuple[float, float]:
    if pair.exact:
        lut, table = dim_level_lut(), dim_phi_table()
        jm = reference_levels(np.minimum(lut[pair.pred], lut[pair.gt]))
        whole, masked = region_sums(np.abs(table[jm, pair.pred] - table[jm, pair.gt]), mask)
        return whole / 510.0, masked / 510.0
    xp, xg = snap(pair.pred), snap(pair.gt)
    jm = reference_levels(np.minimum(_dim_levels_float(xp), _dim_levels_float(xg))).astype(np.float64)
    n_p = 10.0 * xp - 255.0 * jm  # = 2550·d, so d >= θ reads n >= 2550·θ
    n_g = 10.0 * xg - 255.0 * jm
    dp = np.where(n_p >= _THETA_2550, n_p / 2550.0, 0.0)
    dg = np.where(n_g >= _THETA_2550, n_g / 2550.0, 0.0)
    return region_sums(np.abs(dp - dg), mask)


def _dim_sums(pair: Pair, mask: np.ndarray | None, backend: str) -> tuple[float, float]:
    nb = _backend.kernels(backend)
    if nb is None:
        return _dim_sums_numpy(pair, mask)
    mk = mask if mask is not None else np.zeros((1, 1), np.bool_)
    if pair.exact:
        codes = np.empty(pair.pred.shape, np.uint8)
        lut = nb.level_codes(pair.pred, pair.gt, dim_level_lut(), codes, False, nb.RUN_BUDGET)
        rows = nb.conn_row_sums_int(pair.pred, pair.gt, codes, lut, dim_error_table(), mk, mask is not None)
        whole, masked = rows.sum(axis=0)  # integer numerators: exact
        return float(whole) / 510.0, float(masked) / 510.0
    codes = nb.min_levels_float(pair.pred, pair.gt, SNAP_TOL)
    lut = nb.level_codes(codes, codes, IDENTITY_LUT, codes, False, nb.RUN_BUDGET)
    rows = nb.conn_row_sums_float(pair.pred, pair.gt, codes, lut, mk, mask is not None, SNAP_TOL)
    return fsum_rows(rows[:, 0]), fsum_rows(rows[:, 1])


def _icm_phi(alpha: np.ndarray, lmap: np.ndarray) -> np.ndarray:
    d = alpha - lmap
    return 1.0 - d * (d >= THETA)


def _icm_sums(pair: Pair, mask: np.ndarray | None, backend: str) -> tuple[float, float]:
    lvals = np.append(ICM_THRESHOLDS[:10], 1.0)  # l for j = 0..9, and 1 for never dropped
    nb = _backend.kernels(backend)
    if nb is None:
        ap, ag = icm_alpha(pair.pred), icm_alpha(pair.gt)
        lmap = lvals[icm_levels(np.minimum(_icm_levels(ap), _icm_levels(ag)))]
        return region_sums(np.abs(_icm_phi(ap, lmap) - _icm_phi(ag, lmap)), mask)
    mk = mask if mask is not None else np.zeros((1, 1), np.bool_)
    if pair.exact:
        alpha = icm_alpha(np.arange(256))
        codes = np.empty(pair.pred.shape, np.uint8)
        lut = nb.level_codes(pair.pred, pair.gt, _icm_levels(alpha), codes, True, nb.RUN_BUDGET)
        table = _icm_phi(alpha[None, :], lvals[:, None])
        rows = nb.conn_row_sums_table(pair.pred, pair.gt, codes, lut, table, mk, mask is not None)
    else:
        codes = nb.min_levels_icm_float(pair.pred, pair.gt, ICM_THRESHOLDS)
        lut = nb.level_codes(codes, codes, IDENTITY_LUT, codes, True, nb.RUN_BUDGET)
        rows = nb.conn_row_sums_icm_float(pair.pred, pair.gt, codes, lut, lvals, THETA, mk, mask is not None)
    return fsum_rows(rows[:, 0]), fsum_rows(rows[:, 1])


def conn_sums(pair: Pair, mask: np.ndarray | None, backend: str = "auto") -> tuple[float, float]:
    """Raw Conn sums ``(whole image, mask)``; the mask sum is 0 without a mask."""
    if pair.pred.size == 0:
        return 0.0, 0.0
    if pair.protocol == "icm":
        return _icm_sums(pair, mask, backend)
    return _dim_sums(pair, mask, backend)
