"""Decoded pixels of a sample at the run's resolution protocol, decoded once per run.

``original`` keeps every array at its full size. ``official768`` does what the official code
does to the model input, but with fixed interpolation: a centre square crop (rows
``[(h−w)//2, (h−w)//2 + w)`` when h > w, columns likewise when w > h) resized to 768×768 —
image with bicubic (cv2.INTER_CUBIC, clipped to 0..255), matte with bilinear on floats then
rounded, trimap with nearest neighbour. Metrics are then computed at 768×768.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from benchmark.io import read_alpha, read_image, read_trimap
from benchmark.types import Sample

RESOLUTIONS = ("original", "official768")
OFFICIAL_SIZE = 768


@dataclass(frozen=True, eq=False)
class SampleView:
    """A sample's decoded image (uint8 RGB), ground truth (uint8 or float; None for unlabelled
    frames of a video) and optional trimap."""

    sample: Sample
    image: np.ndarray
    alpha: np.ndarray | None
    trimap: np.ndarray | None


def centre_square(shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows/columns of the official centre square crop."""
    h, w = shape
    if h > w:
        top = (h - w) // 2
        return slice(top, top + w), slice(0, w)
    left = (w - h) // 2
    return slice(0, h), slice(left, left + h)


def to_official768(image: np.ndarray, alpha: np.ndarray | None, trimap: np.ndarray | None):
    rows, cols = centre_square(image.shape[:2])
    size = (OFFICIAL_SIZE, OFFICIAL_SIZE)
    img = cv2.resize(image[rows, cols].astype(np.float32), size, interpolation=cv2.INTER_CUBIC)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if alpha is None:
        return img, None, None
    a = alpha[rows, cols]
    a_float = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    a = cv2.resize(a_float, size, interpolation=cv2.INTER_LINEAR)
    a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    t = None
    if trimap is not None:
        t = cv2.resize(np.ascontiguousarray(trimap[rows, cols]), size, interpolation=cv2.INTER_NEAREST)
    return img, a, t


def load_view(sample: Sample, resolution: str = "original") -> SampleView:
    """Decode a sample; raises a clear error naming the file on any problem."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution '{resolution}'; choose one of {RESOLUTIONS}")
    image = read_image(sample.image_path)
    if sample.alpha_path is None:  # an unlabelled video frame: predicted, not scored
        return SampleView(sample, *to_official768(image, None, None)) if resolution == "official768" else \
            SampleView(sample, image, None, None)
    alpha = read_alpha(sample.alpha_path)
    if alpha.shape != image.shape[:2]:
        raise ValueError(f"size mismatch: matte {sample.alpha_path} is {alpha.shape[1]}×{alpha.shape[0]}, "
                         f"image {sample.image_path} is {image.shape[1]}×{image.shape[0]}")
    trimap = None
    if sample.trimap_path is not None:
        trimap = read_trimap(sample.trimap_path)
        if trimap.shape != alpha.shape:
            raise ValueError(f"size mismatch: trimap {sample.trimap_path} is {trimap.shape[1]}×{trimap.shape[0]}, "
                             f"matte is {alpha.shape[1]}×{alpha.shape[0]}")
    if resolution == "official768":
        image, alpha, trimap = to_official768(image, alpha, trimap)
    return SampleView(sample, image, alpha, trimap)


class ViewCache:
    """Keeps the decoded views of one group at a time: episodes run group by group, so every
    image is decoded once per run however many rounds use it. Failures are cached too. At most
    ``capacity`` views are held (least recently used dropped), which bounds memory on videos."""

    def __init__(self, resolution: str, capacity: int = 64) -> None:
        self.resolution = resolution
        self.capacity = capacity
        self._group: str | None = None
        self._views: dict[str, SampleView | Exception] = {}
        self.decode_seconds = 0.0

    def get(self, sample: Sample) -> SampleView:
        import time

        if sample.group != self._group:
            self._group, self._views = sample.group, {}
        if sample.id in self._views:
            self._views[sample.id] = self._views.pop(sample.id)  # most recently used last
        else:
            if len(self._views) >= self.capacity:
                del self._views[next(iter(self._views))]
            t0 = time.perf_counter()
            try:
                self._views[sample.id] = load_view(sample, self.resolution)
            except Exception as exc:  # recorded as that sample's error
                self._views[sample.id] = exc
            self.decode_seconds += time.perf_counter() - t0
        view = self._views[sample.id]
        if isinstance(view, Exception):
            raise view
        return view
