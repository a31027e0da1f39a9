"""Mask → pseudo-trimap, as Matte Anything makes it for ViTMatte (MatAny and ICMP share it).

hustvl/Matte-Anything ``matte_anything.py`` (``generate_trimap``): square kernels of
``erode_kernel_size`` / ``dilate_kernel_size`` (default 10) applied with 5 iterations each; the
dilated mask becomes unknown (128), the eroded mask foreground (255), the rest background (0).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Matte Anything's defaults (kernel side in pixels, iterations of erode and of dilate).
KERNEL, ITERATIONS = 10, 5


def pseudo_trimap(mask: np.ndarray, erode_kernel: int = KERNEL, dilate_kernel: int = KERNEL,
                  iterations: int = ITERATIONS) -> np.ndarray:
    """uint8 trimap (0 background, 128 unknown, 255 foreground) from a boolean/0-255 mask."""
    if erode_kernel < 1 or dilate_kernel < 1 or iterations < 0:
        raise ValueError(f"pseudo_trimap: kernels must be ≥ 1 and iterations ≥ 0, got "
                         f"{erode_kernel}, {dilate_kernel}, {iterations}")
    m = (np.asarray(mask) > (0 if np.asarray(mask).dtype == bool else 127)).astype(np.uint8) * 255
    eroded = cv2.erode(m, np.ones((erode_kernel, erode_kernel), np.uint8), iterations=iterations)
    dilated = cv2.dilate(m, np.ones((dilate_kernel, dilate_kernel), np.uint8), iterations=iterations)
    trimap = np.zeros_like(m)
    trimap[dilated == 255] = 128
    trimap[eroded == 255] = 255
    return trimap


def trimap_levels(trimap: np.ndarray) -> np.ndarray:
    """A grey trimap as ViTMatte's float channel {0, 0.5, 1}: <85 → 0, ≥170 → 1, else 0.5 (the
    original training code's quantisation; other grey levels are not passed through)."""
    t = np.asarray(trimap)
    return np.where(t >= 170, 1.0, np.where(t < 85, 0.0, 0.5)).astype(np.float32)
