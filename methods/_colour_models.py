"""Per-pixel appearance features and smoothed-histogram foreground/background models.

Features are position-free: a quantised CIELAB colour and a quantised local texture energy
(log gradient magnitude of L, averaged over a small window), so a model learnt on one image
applies to another image of the same category. Models are weighted histograms smoothed
with a Gaussian over the bins (a kernel density estimate): deterministic, with no fitting
iterations and no random initialisation, and a lookup per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

#: Bins of the colour histogram (L, a, b) and their ranges on OpenCV's 8-bit Lab scale.
L_BINS, AB_BINS = 10, 20
AB_RANGE = (48.0, 208.0)  # a, b beyond this range are rare in natural photos and clipped
TEX_BINS = 11
TEX_RANGE = (-5.5, 0.0)  # log of the local gradient energy (image in [0, 1])


@dataclass(frozen=True)
class Features:
    """Bin codes of every pixel of one image (H×W int arrays)."""

    colour: np.ndarray
    texture: np.ndarray


def _quantise(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    q = np.floor((x - lo) / (hi - lo) * bins)
    return np.clip(q, 0, bins - 1).astype(np.int32)


def texture_energy(image: np.ndarray) -> np.ndarray:
    """log(local mean gradient magnitude of L + 1e-3): high on in-focus detail, low on blur and flat areas."""
    L = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32) / 255.0
    gx = cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 1.5)
    return np.log(mag + 1e-3)


def features(image: np.ndarray) -> Features:
    """Quantised Lab colour and texture codes of a uint8 RGB image."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    l = _quantise(lab[..., 0], 0.0, 256.0, L_BINS)
    a = _quantise(lab[..., 1], *AB_RANGE, AB_BINS)
    b = _quantise(lab[..., 2], *AB_RANGE, AB_BINS)
    colour = (l * AB_BINS + a) * AB_BINS + b
    texture = _quantise(texture_energy(image), *TEX_RANGE, TEX_BINS)
    return Features(colour, texture)


@dataclass
class HistogramModel:
    """Smoothed, normalised histograms of colour and texture codes for one class (fg or bg)."""

    colour: np.ndarray  # flat, L_BINS * AB_BINS * AB_BINS
    texture: np.ndarray  # TEX_BINS

    @classmethod
    def empty(cls) -> HistogramModel:
        return cls(np.zeros(L_BINS * AB_BINS * AB_BINS), np.zeros(TEX_BINS))

    @classmethod
    def fit(cls, feats: Features, weights: np.ndarray, smooth: float = 1.0) -> HistogramModel:
        """Histograms of the pixels weighted by ``weights`` (H×W, ≥ 0), smoothed and normalised."""
        w = weights.ravel().astype(np.float64)
        col = np.bincount(feats.colour.ravel(), w, L_BINS * AB_BINS * AB_BINS)
        tex = np.bincount(feats.texture.ravel(), w, TEX_BINS)
        col = ndi.gaussian_filter(col.reshape(L_BINS, AB_BINS, AB_BINS), smooth, mode="constant").ravel()
        tex = ndi.gaussian_filter1d(tex, smooth, mode="nearest")
        return cls(_normalise(col), _normalise(tex))

    def __add__(self, other: HistogramModel) -> HistogramModel:
        return HistogramModel(self.colour + other.colour, self.texture + other.texture)

    def scaled(self, k: float) -> HistogramModel:
        return HistogramModel(self.colour * k, self.texture * k)

    def log_likelihood(self, feats: Features, texture_weight: float = 1.0,
                       floor: float = 1e-6) -> np.ndarray:
        """Per-pixel log p(colour) + texture_weight · log p(texture) (naive Bayes), floored."""
        col = np.log(self.colour + floor)[feats.colour]
        if texture_weight == 0.0:
            return col
        return col + texture_weight * np.log(self.texture + floor * TEX_BINS)[feats.texture]


def _normalise(h: np.ndarray) -> np.ndarray:
    s = h.sum()
    return h / s if s > 0 else np.full_like(h, 1.0 / h.size)


def log_ratio(fg: HistogramModel, bg: HistogramModel, feats: Features, texture_weight: float = 1.0,
              clip: float = 6.0) -> np.ndarray:
    """Per-pixel log p(x | fg) − log p(x | bg), clipped to ±``clip`` (float32)."""
    llr = fg.log_likelihood(feats, texture_weight) - bg.log_likelihood(feats, texture_weight)
    return np.clip(llr, -clip, clip).astype(np.float32)
