"""Validate metric inputs and convert them to the pixel scale (0..255) the metrics work in.

Accepted mattes are 2-D ``uint8`` arrays (0..255) or floating arrays in [0, 1]. A ``uint8``
pair is kept as is, so the integer metrics (SAD, MSE, Conn) can be computed exactly. Any
floating input turns the pair into ``float64`` values on the 0..255 scale:

- ``dim``: ``x = 255 * v`` in float64;
- ``icm``: ``x = float32(v) * float32(255)`` in float32, as the official pipeline does.

A ``uint8`` value ``k`` becomes ``float(k)`` when the other matte of the pair is floating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Protocol = Literal["dim", "icm"]
PROTOCOLS: tuple[str, ...] = ("dim", "icm")
Backend = Literal["auto", "numba", "numpy"]
BACKENDS: tuple[str, ...] = ("auto", "numba", "numpy")


@dataclass(frozen=True)
class Pair:
    """A validated prediction/ground-truth pair on the 0..255 scale (``uint8`` or ``float64``)."""

    pred: np.ndarray
    gt: np.ndarray
    protocol: Protocol

    @property
    def exact(self) -> bool:
        """True when both mattes are ``uint8`` (integer arithmetic applies)."""
        return self.pred.dtype == np.uint8


def check_protocol(protocol: str) -> Protocol:
    """Return ``protocol`` or raise ``ValueError`` naming the accepted values."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    return protocol  # type: ignore[return-value]


def check_backend(backend: str) -> Backend:
    """Return ``backend`` or raise ``ValueError`` naming the accepted values."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return backend  # type: ignore[return-value]


def _check_matte(a: object, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D H×W array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 (0..255) or floating in [0, 1], got dtype {arr.dtype}")
    if arr.size:
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"floating {name} must lie in [0, 1], got values in [{lo}, {hi}]")
    return arr


def _canonical(a: np.ndarray) -> np.ndarray:
    """C-contiguous, aligned and writable (copied only if not): one compiled kernel per dtype.

    numba types read-only arrays (e.g. ``np.asarray`` of a PIL image) separately, which
    would cost a second compilation.
    """
    return np.require(a, requirements=("C_CONTIGUOUS", "ALIGNED", "WRITEABLE"))


def _to_scale(arr: np.ndarray, protocol: Protocol) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if protocol == "icm":
        return (arr.astype(np.float32) * np.float32(255.0)).astype(np.float64)
    return arr.astype(np.float64) * 255.0


def make_pair(pred: object, gt: object, protocol: str = "dim") -> Pair:
    """Validate ``pred``/``gt`` and bring them to a common 0..255 representation."""
    proto = check_protocol(protocol)
    p = _check_matte(pred, "pred")
    g = _check_matte(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    if p.dtype == np.uint8 and g.dtype == np.uint8:
        return Pair(_canonical(p), _canonical(g), proto)
    return Pair(_to_scale(p, proto), _to_scale(g, proto), proto)


def region_mask(region: object, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate a boolean region mask of ``shape`` (``None`` means the whole image)."""
    if region is None:
        return None
    m = np.asarray(region)
    if m.dtype != np.bool_:
        raise TypeError(f"region must be a boolean mask, got dtype {m.dtype}")
    if m.shape != shape:
        raise ValueError(f"region shape {m.shape} differs from the matte shape {shape}")
    return _canonical(m)


def unknown_mask(trimap: object, shape: tuple[int, ...]) -> np.ndarray:
    """The unknown region ``trimap == 128`` of an integer trimap of ``shape``.

    Only the value 128 counts; 127 or 129 do not. Floating trimaps are refused because a
    [0, 1] trimap (0.5 for unknown) would silently give an empty region.
    """
    t = np.asarray(trimap)
    if t.ndim != 2:
        raise ValueError(f"trimap must be a 2-D H×W array, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"trimap must be an integer array (uint8 0/128/255), got dtype {t.dtype}")
    if t.shape != shape:
        raise ValueError(f"trimap shape {t.shape} differs from the matte shape {shape}")
    return _canonical(t == 128)
