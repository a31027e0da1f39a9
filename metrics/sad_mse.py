"""SAD and MSE: sums of |pred − gt| and (pred − gt)² on the 0..255 scale.

For uint8 pairs both sums are integers and exact. Callers turn them into the reported units
(SAD = Σ|e|/255/1000, MSE = Σe²/255²/|R|).
"""

from __future__ import annotations

import numpy as np

from metrics import _backend
from metrics._inputs import Pair
from metrics._reduce import fsum_rows, region_sums


def diff_sums(pair: Pair, mask: np.ndarray | None,
              backend: str = "auto") -> tuple[tuple[float, float], tuple[float, float]]:
    """``((Σ|d| whole, Σ|d| mask), (Σd² whole, Σd² mask))`` with d = pred − gt on 0..255."""
    if pair.pred.size == 0:
        return (0.0, 0.0), (0.0, 0.0)
    nb = _backend.kernels(backend)
    if nb is None:
        d = pair.pred.astype(np.int64) - pair.gt.astype(np.int64) if pair.exact else pair.pred - pair.gt
        return region_sums(np.abs(d), mask), region_sums(d * d, mask)
    m = mask if mask is not None else np.zeros((1, 1), np.bool_)
    if pair.exact:  # integer sums: exact whatever the order
        rows = nb.diff_row_sums_u8(pair.pred, pair.gt, m, mask is not None).sum(axis=0)
        return (float(rows[0]), float(rows[2])), (float(rows[1]), float(rows[3]))
    rows = nb.diff_row_sums(pair.pred, pair.gt, m, mask is not None)
    return (fsum_rows(rows[:, 0]), fsum_rows(rows[:, 2])), (fsum_rows(rows[:, 1]), fsum_rows(rows[:, 3]))
