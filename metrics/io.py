"""Read alpha mattes and trimaps from image files with explicit, documented decoding rules.

One matte channel is chosen as follows (anything else raises :class:`AlphaDecodeError`,
whose message names the file):

- 8-bit grayscale (``L``): as is (uint8). Bilevel (``1``) or boolean: 0/255.
- 16-bit grayscale (``I;16``): ``value // 257`` as uint8 when every value is a multiple of
  257 (an exact 8-bit matte), else ``value / 65535`` as float32.
- 32-bit float (``F``): float32, values must lie in [0, 1].
- RGB: all three channels equal → that channel; channels differ → ambiguous, error.
- RGBA (and LA): if A is constant, the colour channels must carry the matte (equal
  channels); if A varies, the colour must be constant over the image and A is the matte;
  both varying → ambiguous, error.
- Palette images are expanded to RGB (RGBA if they carry transparency) first.

A missing, unreadable or corrupt file also raises :class:`AlphaDecodeError`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["AlphaDecodeError", "alpha_from_array", "new_file_mode", "read_alpha", "read_trimap"]


class AlphaDecodeError(ValueError):
    """A file or array that does not decode to one unambiguous matte (the message names it)."""


def _scalar(a: np.ndarray, name: str) -> np.ndarray:
    """One channel to uint8 (8-bit exact) or float32 in [0, 1]."""
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint16:
        if not np.any(a % 257):
            return (a // 257).astype(np.uint8)
        return (a.astype(np.float32) / np.float32(65535.0)).astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise AlphaDecodeError(f"{name}: floating matte must lie in [0, 1], got [{lo}, {hi}]")
        return a.astype(np.float32)
    raise AlphaDecodeError(f"{name}: unsupported sample type {a.dtype} (expected uint8, uint16 or float)")


def _constant(a: np.ndarray) -> bool:
    return bool(np.all(a == a.reshape(-1, *a.shape[2:])[0]))


def alpha_from_array(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Decode an H×W or H×W×C (C = 1..4) array with the module's rules.

    Returns uint8 H×W for 8-bit-exact mattes, float32 H×W in [0, 1] otherwise.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise AlphaDecodeError(f"{name}: expected an H×W or H×W×{{1,2,3,4}} image, got shape {a.shape}")
    if a.size == 0:
        raise AlphaDecodeError(f"{name}: empty image of shape {a.shape}")
    if a.ndim == 2:
        return _scalar(a, name)
    channels = a.shape[2]
    colour = a if channels == 3 else a[:, :, : channels - 1]
    grey = bool(np.all(colour == colour[:, :, :1]))
    if channels == 3:
        if not grey:
            raise AlphaDecodeError(f"{name}: RGB channels differ, so no single matte can be chosen")
        return _scalar(colour[:, :, 0], name)
    alpha = a[:, :, -1]
    if _constant(alpha):
        if not grey:
            raise AlphaDecodeError(f"{name}: alpha channel is constant and the colour channels differ")
        return _scalar(colour[:, :, 0], name)
    if _constant(colour):
        return _scalar(alpha, name)
    raise AlphaDecodeError(f"{name}: ambiguous matte: both the colour channels and the alpha channel vary")


def _pixels(im: Image.Image, name: str) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode not in ("1", "L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F"):
        raise AlphaDecodeError(f"{name}: unsupported image mode {mode!r}")
    arr = np.asarray(im)
    if mode.startswith("I;16"):
        return arr.astype(np.uint16)
    if mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise AlphaDecodeError(f"{name}: 32-bit integer image with values outside 0..65535")
        return arr.astype(np.uint16)
    return arr


def _load(path: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
    name = str(path)
    try:
        with Image.open(Path(path)) as im:
            im.load()
            return _pixels(im, name), name
    except AlphaDecodeError:
        raise
    except FileNotFoundError as e:
        raise AlphaDecodeError(f"{name}: file not found") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise AlphaDecodeError(f"{name}: cannot read image ({e})") from e


def read_alpha(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a matte: uint8 H×W for 8-bit-exact mattes, float32 H×W in [0, 1] otherwise."""
    arr, name = _load(path)
    return alpha_from_array(arr, name)


def read_trimap(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a trimap as uint8 H×W (same channel rules as mattes; must be 8-bit exact).

    Values other than 0/128/255 are kept; the metrics count only ``== 128`` as unknown.
    """
    arr, name = _load(path)
    t = alpha_from_array(arr, name)
    if t.dtype != np.uint8:
        raise AlphaDecodeError(f"{name}: trimap is not 8-bit exact (expected values 0/128/255)")
    return t


@functools.cache
def new_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 minus the umask); atomic writers apply it to
    their temporary files, which ``mkstemp`` creates as 0o600. The umask is read from
    ``/proc/self/status`` where Linux offers it (no change, thread-safe), else set and restored once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
