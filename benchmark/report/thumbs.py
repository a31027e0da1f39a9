"""Thumbnails made once: each file is named by a hash of what it shows (the contents of its source files,
what is drawn, at which size), so a second build reuses every unchanged one and redraws nothing.

Nothing is stored at full size: thumbnails are at most ``size`` px on the long side and zoomed error maps
at most ``zoom`` px; full-resolution files are linked where they lie (run and dataset folders).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmark.io import atomic_write_bytes

#: Bump when a drawing changes, so old thumbnails are not reused.
VERSION = "3"
_NAME = re.compile(r"^[a-z]+-[0-9a-f]{20}\.(png|jpg)$")


class Thumbs:
    """A folder of cached drawings; :meth:`get` draws only what is missing, :meth:`prune` removes the
    files this build did not use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._digests: dict[str, str] = {}
        self.used: set[str] = set()
        self.made = 0
        self.reused = 0

    def digest(self, path: str | os.PathLike) -> str:
        """sha256 of a file's bytes (once per build), or ``missing``."""
        key = os.fspath(path)
        if key not in self._digests:
            try:
                self._digests[key] = hashlib.sha256(Path(key).read_bytes()).hexdigest()
            except OSError:
                self._digests[key] = "missing"
        return self._digests[key]

    def key(self, kind: str, sources: Iterable[str | os.PathLike], params: Iterable[object]) -> str:
        doc = [VERSION, kind, [str(p) for p in params], [self.digest(s) for s in sources]]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:20]

    def get(self, kind: str, sources: Iterable[str | os.PathLike], render: Callable[[], np.ndarray | Image.Image],
            params: Iterable[object] = (), ext: str = "png") -> Path:
        """The file for this drawing, drawn by ``render()`` (an RGB or grey uint8 array, or a PIL image) if not
        cached; ``render``'s exceptions propagate (nothing is written)."""
        path = self.folder / f"{kind}-{self.key(kind, sources, params)}.{ext}"
        if path.is_file():
            self.reused += path.name not in self.used
        else:
            atomic_write_bytes(path, encode(render(), ext))
            self.made += 1
        self.used.add(path.name)
        return path

    def prune(self) -> int:
        """Delete cached drawings this build did not use; returns how many."""
        stale = [p for p in self.folder.iterdir() if _NAME.match(p.name) and p.name not in self.used]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)


def encode(img: np.ndarray | Image.Image, ext: str) -> bytes:
    """RGB or grey uint8 (OpenCV), or a PIL image (a palette error map), → PNG or JPEG (quality 88) bytes."""
    if isinstance(img, Image.Image):
        buf = io.BytesIO()
        img.save(buf, format="PNG" if ext == "png" else "JPEG", compress_level=1)
        return buf.getvalue()
    bgr = img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 88] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(f".{ext}", bgr, params)
    if not ok:
        raise ValueError(f"cannot encode a {img.shape} image as {ext}")
    return buf.tobytes()
