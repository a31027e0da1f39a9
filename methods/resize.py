"""Working-resolution helpers: every method computes at a bounded size and answers at full size."""

from __future__ import annotations

import cv2
import numpy as np


def working_size(shape: tuple[int, int], long_side: int | None) -> tuple[int, int]:
    """(h, w) scaled so the long side is at most ``long_side`` (never upscaled)."""
    h, w = shape
    if not long_side or max(h, w) <= long_side:
        return h, w
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H×W(×C) image to ``size`` = (h, w); area filter when shrinking, linear when growing."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrinking = h * w < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean/label map with nearest neighbour (labels must not blend)."""
    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    dtype = mask.dtype
    out = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return out.astype(dtype)


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bring a float alpha to ``size`` = (h, w) (bilinear), clipped to [0, 1], float32."""
    out = resize_image(np.asarray(alpha, np.float32), size)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
