"""Mapping images and prompts into the square working frame and predictions back.

The decoder's intra-similarity has one input channel per attention key (576/2304 at 768),
so the official weights only work on a square ``size``×``size`` frame. Two modes:

- ``official768``: centre square crop (official ``CropResize``), resized to ``size``.
  Interpolation is fixed by default (``INTER_CUBIC`` for images, ``INTER_LINEAR`` for
  reference alphas); ``interpolation="official_random"`` draws each from {NEAREST, LINEAR,
  CUBIC, LANCZOS4} like the official loader, from a seeded generator. Back-mapping:
  ``crop_fill="edge"`` (default) resizes the prediction into its crop window and fills the
  cut-off sides by repeating the window's border rows/columns; ``"zero"`` fills 0;
  ``"stretch"`` emulates the official code (``validation_step_end``: the square stretched over
  the whole frame with torch's bilinear, align_corners=False; misaligned for non-square images).
- ``full``: letterbox. The whole image is resized so its long side is ``size`` (keeping the
  aspect ratio) and centred on a ``size``×``size`` canvas padded with 0 (mid-grey in
  [−1, 1]); the reference prompt is padded with background. The prediction's valid window
  is resized back to the full target, so every pixel of a non-square image is predicted.

Quantisation (``quantize``): ``round`` returns the float alpha (the runner rounds it to
uint8); ``truncate`` returns the official uint8 levels ``floor(255·alpha)/255`` (for
``stretch`` in the official order: ×255, resize, truncate), which the runner's rounding
keeps exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MODES = ("official768", "full")
CROP_FILLS = ("edge", "zero", "stretch")
INTERPOLATIONS = ("fixed", "official_random")
QUANTIZE = ("round", "truncate")
OFFICIAL_INTERPS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)


@dataclass(frozen=True)
class Frame:
    """Where an original H×W image sits in the working square.

    ``src`` = (y0, x0, h, w): region of the original that is used (the crop; the whole image
    for ``full``). ``dst`` = (y0, x0, h, w): where that region lands in the working square.
    """

    shape: tuple[int, int]
    size: int
    mode: str
    src: tuple[int, int, int, int]
    dst: tuple[int, int, int, int]


def make_frame(shape: tuple[int, int], size: int, mode: str) -> Frame:
    """Geometry of ``mode`` for an image of ``shape`` = (H, W)."""
    h, w = shape
    if mode == "official768":
        if h > w:
            src = ((h - w) // 2, 0, w, w)
        elif w > h:
            src = (0, (w - h) // 2, h, h)
        else:
            src = (0, 0, h, w)
        return Frame(shape, size, mode, src, (0, 0, size, size))
    if mode == "full":
        s = size / max(h, w)
        nh, nw = min(size, max(1, round(h * s))), min(size, max(1, round(w * s)))
        return Frame(shape, size, mode, (0, 0, h, w), ((size - nh) // 2, (size - nw) // 2, nh, nw))
    raise ValueError(f"preprocess must be one of {MODES}, got {mode!r}")


def pick_interpolation(kind: str, interpolation: str, rng: np.random.Generator | None) -> int:
    """cv2 flag for ``kind`` ('image' or 'alpha')."""
    if interpolation == "fixed":
        return cv2.INTER_CUBIC if kind == "image" else cv2.INTER_LINEAR
    if interpolation == "official_random":
        if rng is None:
            raise ValueError("official_random interpolation needs a seeded generator")
        return int(OFFICIAL_INTERPS[int(rng.integers(len(OFFICIAL_INTERPS)))])
    raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")


def _place(region: np.ndarray, frame: Frame, interp: int, pad_value: float) -> np.ndarray:
    y0, x0, h, w = frame.dst
    resized = cv2.resize(region, (w, h), interpolation=interp)
    canvas = np.full((frame.size, frame.size, *region.shape[2:]), pad_value, dtype=resized.dtype)
    canvas[y0 : y0 + h, x0 : x0 + w] = resized
    return canvas


def _crop(x: np.ndarray, frame: Frame) -> np.ndarray:
    y0, x0, h, w = frame.src
    return np.ascontiguousarray(x[y0 : y0 + h, x0 : x0 + w])


def image_to_frame(image: np.ndarray, frame: Frame, interp: int) -> np.ndarray:
    """uint8 H×W×3 RGB → float32 [3, size, size] in [−1, 1] (resized as uint8, then scaled)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 H×W×3 image, got {image.dtype} {image.shape}")
    placed = _place(_crop(image, frame), frame, interp, 127.5)
    out = placed.astype(np.float32) / 127.5 - 1.0
    if frame.mode == "full":  # padding is exactly 0 after scaling
        y0, x0, h, w = frame.dst
        pad = np.ones(out.shape[:2], bool)
        pad[y0 : y0 + h, x0 : x0 + w] = False
        out[pad] = 0.0
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def alpha_to_frame(alpha: np.ndarray, frame: Frame, interp: int) -> np.ndarray:
    """Float H×W map in [0, 1] → float32 [size, size] (clipped; padding is 0)."""
    placed = _place(_crop(np.asarray(alpha, np.float32), frame), frame, interp, 0.0)
    return np.clip(placed, 0.0, 1.0)


def labels_to_frame(labels: np.ndarray, frame: Frame) -> np.ndarray:
    """uint8 label map (0/1/2) → [size, size] with nearest neighbour; sparse marks are kept."""
    crop = _crop(labels, frame)
    y0, x0, h, w = frame.dst
    out = np.zeros((frame.size, frame.size), np.uint8)
    ys, xs = np.nonzero(crop)
    if ys.size:  # map every marked pixel (points must not vanish when shrinking)
        ty = np.clip(((ys + 0.5) * h / crop.shape[0]).astype(int), 0, h - 1) + y0
        tx = np.clip(((xs + 0.5) * w / crop.shape[1]).astype(int), 0, w - 1) + x0
        vals = crop[ys, xs]
        order = np.argsort(vals, kind="stable")  # foreground (2) written last wins over background (1)
        out[ty[order], tx[order]] = vals[order]
    return out


def truncate_levels(alpha: np.ndarray) -> np.ndarray:
    """float alpha → float32 ``floor(255·alpha)/255`` (the official uint8 truncation, as a float).

    Each value is ``k/255`` in float32, and ``rint(255·(k/255))`` is ``k`` for every k in 0…255, so
    the runner's rounding quantiser reproduces the truncated uint8 exactly."""
    scaled = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0) * np.float32(255.0)
    return (np.floor(scaled) / np.float32(255.0)).astype(np.float32)


def official_stretch(pred: np.ndarray, shape: tuple[int, int], truncate: bool) -> np.ndarray:
    """The official back-mapping (``validation_step_end``): ``pred·255`` (with ``truncate``), torch
    bilinear (align_corners=False) resize of the whole square to (H, W), uint8 truncation."""
    t = torch.from_numpy(np.ascontiguousarray(pred, np.float32)).reshape(1, 1, *pred.shape[-2:])
    if truncate:
        t = t * 255.0
    out = F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()
    if truncate:
        return (np.floor(np.clip(out, 0.0, 255.0)) / np.float32(255.0)).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def alpha_from_frame(pred: np.ndarray, frame: Frame, crop_fill: str = "edge", quantize: str = "round") -> np.ndarray:
    """[size, size] prediction → float32 H×W alpha for the original image (``quantize``: module docstring)."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if crop_fill not in CROP_FILLS:
        raise ValueError(f"crop_fill must be one of {CROP_FILLS}, got {crop_fill!r}")
    truncate = quantize == "truncate"
    h, w = frame.shape
    pred = np.asarray(pred, np.float32)
    if frame.mode == "full":
        y0, x0, ph, pw = frame.dst
        out = cv2.resize(np.ascontiguousarray(pred[y0 : y0 + ph, x0 : x0 + pw]), (w, h), interpolation=cv2.INTER_LINEAR)
    elif crop_fill == "stretch":
        return official_stretch(pred, (h, w), truncate)
    else:
        sy, sx, sh, sw = frame.src
        window = cv2.resize(pred, (sw, sh), interpolation=cv2.INTER_LINEAR)
        border = cv2.BORDER_REPLICATE if crop_fill == "edge" else cv2.BORDER_CONSTANT
        out = cv2.copyMakeBorder(window, sy, h - sy - sh, sx, w - sx - sw, border, value=0)
    return truncate_levels(out) if truncate else np.clip(out, 0.0, 1.0)
