"""Decoding images, mattes and trimaps, and writing files atomically.

Images are decoded to uint8 RGB (EXIF orientation is ignored, as OpenCV and the official
code do). Mattes and trimaps follow the documented channel rules of :mod:`metrics.io`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from metrics.io import AlphaDecodeError, new_file_mode, read_alpha, read_trimap

Image.MAX_IMAGE_PIXELS = 400_000_000  # 24-Mpx photos are normal here; keep a guard against bombs


class ImageDecodeError(ValueError):
    """An image file is missing, unreadable or has an unusable mode; the message names it."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 H×W×3 RGB. Grayscale is replicated; an alpha channel is dropped."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
                rgb = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
                return np.repeat(rgb[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"image not found: {path}") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot decode image {path}: {exc}") from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), new_file_mode())  # what open() gives, not mkstemp's 0o600
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 H×W (or H×W×3) array as PNG, atomically."""
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(path, buf.getvalue())


def read_alpha_float(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """A matte file (a prediction made elsewhere) as float32 in [0, 1], which must be ``shape``.

    Raises ``FileNotFoundError``, :class:`AlphaDecodeError`, or ``ValueError`` naming both shapes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    alpha = read_alpha(path)
    if alpha.shape != tuple(shape):
        raise ValueError(f"{path} has shape {alpha.shape}, the image is {tuple(shape)}")
    return alpha.astype(np.float32) / np.float32(255.0) if alpha.dtype == np.uint8 else alpha.astype(np.float32)


def quantize_alpha(alpha: np.ndarray) -> np.ndarray:
    """float alpha in [0, 1] → uint8 by rounding (the values that are saved and scored)."""
    a = np.asarray(alpha)
    scaled = np.clip(a, 0.0, 1.0) * a.dtype.type(255.0) if np.issubdtype(a.dtype, np.floating) \
        else np.clip(a, 0.0, 1.0) * 255.0
    return np.rint(scaled, out=scaled).astype(np.uint8)


__all__ = [
    "AlphaDecodeError", "ImageDecodeError", "atomic_write_bytes", "atomic_write_text", "quantize_alpha",
    "read_alpha", "read_alpha_float", "read_image", "read_trimap", "write_png",
]
