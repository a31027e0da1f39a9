"""Trimaps derived from a ground-truth matte, for unknown-region metrics and trimap-guided methods.

Rule (documented in the README and recorded in result rows as ``trimap_source=derived-r{R}``):
foreground = ``alpha == 1`` (255) eroded by a disc of radius R, background = ``alpha == 0``
eroded by the same disc, unknown (128) everywhere else. R scales with the image: by default
``radius = max(1, round(radius_fraction * max(h, w)))`` with ``radius_fraction = 0.01``
(8 px on an 800-px image), or a fixed pixel radius.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_RADIUS_FRACTION = 0.01


def trimap_radius(shape: tuple[int, int], radius: int | None = None,
                  radius_fraction: float = DEFAULT_RADIUS_FRACTION) -> int:
    """The erosion radius used for an image of ``shape``."""
    if radius is not None:
        return int(radius)
    return max(1, round(radius_fraction * max(shape)))


def derive_trimap(alpha: np.ndarray, radius: int | None = None,
                  radius_fraction: float = DEFAULT_RADIUS_FRACTION) -> np.ndarray:
    """uint8 trimap (0/128/255) from a matte (uint8 0..255 or float in [0, 1])."""
    a = np.asarray(alpha)
    if a.dtype == np.uint8:
        fg, bg = a == 255, a == 0
    else:
        fg, bg = a >= 1.0, a <= 0.0
    r = trimap_radius(a.shape[:2], radius, radius_fraction)
    fg_core = _erode_disc(fg, r)
    bg_core = _erode_disc(bg, r)
    out = np.full(a.shape[:2], 128, np.uint8)
    out[fg_core] = 255
    out[bg_core] = 0
    return out


def _erode_disc(mask: np.ndarray, r: int) -> np.ndarray:
    """Exact erosion by a Euclidean disc of radius r, via the distance to the nearest outside pixel.

    Pixels outside the image count as inside the mask (no border effect), as with a
    ``border_value=1`` binary erosion. Exact for any radius and fast on 24-Mpx mattes.
    """
    if r <= 0 or not mask.any():
        return mask
    if mask.all():
        return mask
    # OpenCV's precise L2 transform is exact (Felzenszwalb–Huttenlocher) and ~10× faster than scipy's;
    # distances are square roots of integers, so the float32 comparison with an integer r is exact.
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist > r
