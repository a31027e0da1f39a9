"""Decoded pixels of a sample at the run's resolution protocol, decoded once per run.

``original`` keeps every array at its full size. ``official768`` does what the official code
does to the model input, but with fixed interpolation: a centre square crop (rows
``[(h−w)//2, (h−w)//2 + w)`` when h > w, columns likewise when w > h) resized to 768×768 —
image with bicubic (cv2.INTER_CUBIC, clipped to 0..255), matte with bilinear on floats then
rounded, trimap with nearest neighbour. Metrics are then computed at 768×768.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from benchmark.io import read_alpha, read_image, read_trimap
from benchmark.scoring import trimap_for
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
    trimap_source: str = "file"  # "file", or "derived-r<R>" when derived from the ground truth


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


def load_view(sample: Sample, resolution: str = "original", derive_trimap_fraction: float | None = None) -> SampleView:
    """Decode a sample; raises a clear error naming the file on any problem.

    With ``derive_trimap_fraction`` a sample without a trimap file gets one derived from its
    ground truth (at the evaluated resolution), once per run rather than once per round."""
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
    if trimap is None and derive_trimap_fraction is not None:
        trimap, source = trimap_for(alpha, None, derive_trimap_fraction)
        return SampleView(sample, image, alpha, trimap, source)
    return SampleView(sample, image, alpha, trimap)


class ViewCache:
    """Decoded views, each image decoded once per run however many rounds use it.

    Episodes run group by group; views of the current and the next group are kept (anything
    older is dropped), and at most ``capacity`` views are held (least recently used dropped
    first), which bounds memory on videos. Failures are cached too and re-raised on every use.
    With ``threads`` > 0, :meth:`prefetch` decodes upcoming samples in background threads
    (Pillow and OpenCV release the GIL while decoding), overlapping decoding with the method.
    """

    def __init__(self, resolution: str, capacity: int = 64, derive_trimap_fraction: float | None = None,
                 threads: int = 0) -> None:
        self.resolution = resolution
        self.derive_trimap_fraction = derive_trimap_fraction
        self.capacity = capacity
        self._views: dict[str, Future] = {}
        self._groups: list[str] = []
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="decode") if threads > 0 else None
        self._lock = threading.Lock()
        self.decode_seconds = 0.0

    def _load(self, sample: Sample) -> SampleView:
        t0 = time.perf_counter()
        try:
            return load_view(sample, self.resolution, self.derive_trimap_fraction)
        finally:
            with self._lock:
                self.decode_seconds += time.perf_counter() - t0

    def _request(self, sample: Sample, background: bool) -> Future:
        if sample.id in self._views:
            fut = self._views.pop(sample.id)
            self._views[sample.id] = fut  # most recently used last
            return fut
        if sample.group not in self._groups:
            self._groups = [*self._groups[-1:], sample.group]
            keep = set(self._groups)
            self._views = {k: f for k, f in self._views.items() if f.group in keep}  # type: ignore[attr-defined]
        while len(self._views) >= self.capacity:
            del self._views[next(iter(self._views))]
        if background and self._pool is not None:
            fut = self._pool.submit(self._load, sample)
        else:
            fut = Future()
            try:
                fut.set_result(self._load(sample))
            except Exception as exc:  # recorded as that sample's error
                fut.set_exception(exc)
        fut.group = sample.group  # type: ignore[attr-defined]
        self._views[sample.id] = fut
        return fut

    def prefetch(self, samples: Iterable[Sample]) -> None:
        """Start decoding ``samples`` in the background (no-op without threads)."""
        if self._pool is not None:
            for sample in samples:
                self._request(sample, background=True)

    def get(self, sample: Sample) -> SampleView:
        """The decoded view; raises the decoding error (naming the file) if it failed."""
        return self._request(sample, background=False).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
