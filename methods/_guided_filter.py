"""Edge-aware smoothing with the guided filter (He et al., 2010), built on box filters.

Used to make a per-pixel foreground probability follow the target image's edges: the
output is locally an affine function of the guide's colour, so it is flat inside regions
and steps where the image steps. Cost is a handful of box filters, linear in the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Filter ``src`` (H×W float) guided by ``guide`` (H×W×3 float in [0, 1]); float32 output.

    ``radius`` is the window radius in pixels, ``eps`` the regulariser (larger = smoother,
    less edge-following; in units of the guide's variance).
    """
    if radius < 1:
        return src.astype(np.float32)
    I = guide.astype(np.float32)
    p = src.astype(np.float32)
    mean_I = _box(I, radius)
    mean_p = _box(p, radius)
    cov_Ip = _box(I * p[..., None], radius) - mean_I * mean_p[..., None]
    # 3×3 colour covariance per pixel, regularised, inverted in closed form via numpy.
    prods = _box(np.einsum("hwi,hwj->hwij", I, I).reshape(*I.shape[:2], 9), radius)
    var_I = prods.reshape(*I.shape[:2], 3, 3) - np.einsum("hwi,hwj->hwij", mean_I, mean_I)
    var_I += eps * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var_I, cov_Ip[..., None])[..., 0]
    b = mean_p - np.einsum("hwi,hwi->hw", a, mean_I)
    mean_a = _box(a, radius)
    mean_b = _box(b, radius)
    return (np.einsum("hwi,hwi->hw", mean_a, I) + mean_b).astype(np.float32)
