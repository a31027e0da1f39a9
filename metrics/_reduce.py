"""Region reductions: sum a per-pixel map over the whole image and over a mask in one place.

Sums are taken per row and the row sums are added with ``math.fsum``, so the result does not
depend on summation order beyond one rounding per row (integer maps are summed exactly).
"""

from __future__ import annotations

import math

import numpy as np


def fsum_rows(rows: np.ndarray) -> float:
    """Correctly rounded sum of per-row (or per-tile) partial sums."""
    return math.fsum(np.asarray(rows, dtype=np.float64).ravel().tolist())


def region_sums(values: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    """``(sum over all pixels, sum over mask)`` of a per-pixel map; the second is 0 without mask."""
    if np.issubdtype(values.dtype, np.integer):
        whole = float(int(values.sum(dtype=np.int64)))
        masked = 0.0 if mask is None else float(int(values.sum(dtype=np.int64, where=mask)))
        return whole, masked
    whole = fsum_rows(values.sum(axis=-1)) if values.size else 0.0
    if mask is None:
        return whole, 0.0
    masked = fsum_rows(np.where(mask, values, 0.0).sum(axis=-1)) if values.size else 0.0
    return whole, masked
