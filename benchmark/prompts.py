"""Reference prompts derived from the reference's ground-truth matte, seeded per (group, round).

- ``mask``: ``alpha > 0.5`` (what the official code feeds its decoder).
- ``scribble``: ``strokes`` random polyline strokes inside the foreground and
  ``background_strokes`` (default: as many) in the background — 0 gives a foreground-only
  scribble, like the paper's RoI, a foreground map — drawn ``width`` px wide, kept ``margin`` px
  away from the other region (so a stroke never touches the soft edge). Widths and margins default
  to fractions of the long side.
- ``points``: ``num_fg`` foreground points (drawn with probability ∝ distance to the
  background, i.e. away from the edge) and ``num_bg`` background points likewise.

A prompt that cannot be drawn (an object too small to hold a stroke or a point) raises
:class:`PromptError`; the runner records it as an error for that episode.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from benchmark.io import atomic_write_bytes
from benchmark.seeding import rng_for
from benchmark.types import BACKGROUND, FOREGROUND, PROMPT_KINDS, Prompt


class PromptError(ValueError):
    """No valid prompt can be drawn on this reference."""


def foreground_of(alpha: np.ndarray) -> np.ndarray:
    """alpha > 0.5 for uint8 (> 127) or float mattes."""
    a = np.asarray(alpha)
    return a > 127 if a.dtype == np.uint8 else a > 0.5


def make_prompt(kind: str, alpha: np.ndarray, *, seed: int, group: str, round_index: int, reference: str,
                strokes: int = 3, width_fraction: float = 0.01, margin_fraction: float = 0.02,
                num_fg: int = 5, num_bg: int = 0, background_strokes: int | None = None) -> Prompt:
    """Draw the ``kind`` prompt for one reference; identical for identical inputs and seed."""
    if kind not in PROMPT_KINDS:
        raise PromptError(f"unknown prompt kind '{kind}'; choose one of {PROMPT_KINDS}")
    fg = foreground_of(alpha)
    shape = (int(fg.shape[0]), int(fg.shape[1]))
    if not fg.any():
        raise PromptError(f"reference '{reference}': no pixel with alpha > 0.5, cannot draw a {kind} prompt")
    if kind == "mask":
        return Prompt("mask", shape, mask=fg)
    rng = rng_for(seed, "prompt", kind, group, round_index, reference)
    long_side = max(shape)
    margin = max(1, round(margin_fraction * long_side))
    if kind == "points":
        pts = _sample_points(fg, num_fg, margin, rng, reference, "foreground")
        pts += _sample_points(~fg & (np.asarray(alpha) == 0), num_bg, margin, rng, reference, "background")
        n_fg = sum(1 for p in pts if p[2])
        return Prompt("points", shape, points=tuple((int(y), int(x), bool(f)) for y, x, f in pts),
                      counts={"fg_points": n_fg, "bg_points": len(pts) - n_fg})
    width = max(1, round(width_fraction * long_side))
    labels = np.zeros(shape, np.uint8)
    n_bg = strokes if background_strokes is None else int(background_strokes)
    for value, region, name, n in ((FOREGROUND, fg, "foreground", strokes),
                                   (BACKGROUND, np.asarray(alpha) == 0, "background", n_bg)):
        if n <= 0:
            continue
        core = _interior(region, margin + width)
        if not core.any():
            raise PromptError(f"reference '{reference}': {name} too small for a {width}-px stroke "
                              f"{margin} px from the edge")
        labels[_strokes(core, n, width, rng)] = value
    return Prompt("scribble", shape, scribble=labels, counts={"fg_strokes": strokes, "bg_strokes": max(0, n_bg)})


def _interior(region: np.ndarray, distance: int) -> np.ndarray:
    return ndi.distance_transform_edt(region) > distance


def _sample_points(region: np.ndarray, n: int, margin: int, rng: np.random.Generator, reference: str,
                   name: str) -> list[tuple[int, int, bool]]:
    if n <= 0:
        return []
    dist = ndi.distance_transform_edt(region)
    weights = np.where(dist > margin, dist, 0.0).ravel()
    if weights.sum() == 0:
        weights = dist.ravel()
    if weights.sum() == 0:
        raise PromptError(f"reference '{reference}': no {name} pixel to place a point on")
    idx = rng.choice(weights.size, size=min(n, int((weights > 0).sum())), replace=False, p=weights / weights.sum())
    ys, xs = np.unravel_index(np.sort(idx), region.shape)
    return [(int(y), int(x), name == "foreground") for y, x in zip(ys, xs, strict=True)]


def _strokes(core: np.ndarray, n: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` polylines of 4 vertices sampled inside ``core``, thickened to ``width``, clipped to ``core``."""
    ys, xs = np.nonzero(core)
    drawn = np.zeros(core.shape, bool)
    for _ in range(n):
        pick = rng.integers(len(ys), size=4)
        verts = np.stack([ys[pick], xs[pick]], axis=1).astype(np.float64)
        for a, b in itertools.pairwise(verts):
            steps = int(np.abs(b - a).max()) + 1
            t = np.linspace(0.0, 1.0, steps)[:, None]
            line = np.rint(a + t * (b - a)).astype(np.int64)
            drawn[line[:, 0], line[:, 1]] = True
    if width > 1:
        drawn = ndi.distance_transform_edt(~drawn) <= width / 2
    # A straight segment between two interior points can cross a concave gap: clip it.
    return drawn & core


def prompt_bytes(prompt: Prompt) -> bytes:
    """A prompt as ``.npz`` bytes (compressed; maps as bit-packed arrays). The zip entries carry a fixed
    timestamp, so equal prompts give equal bytes (a run's prompts and ``data_tools derive``'s agree)."""
    import io
    import zipfile

    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(
        {"kind": prompt.kind, "shape": list(prompt.shape), "points": [list(p) for p in prompt.points],
         "counts": dict(prompt.counts)}
    ).encode(), np.uint8)}
    if prompt.mask is not None:
        arrays["mask"] = np.packbits(prompt.mask.ravel())
    if prompt.scribble is not None:
        arrays["scribble"] = prompt.scribble
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def save_prompt(path: Path, prompt: Prompt) -> None:
    """Store a prompt as ``.npz`` (:func:`prompt_bytes`), atomically."""
    atomic_write_bytes(path, prompt_bytes(prompt))


def load_prompt(path: Path) -> Prompt:
    """Read a prompt written by :func:`save_prompt`."""
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        shape = (int(meta["shape"][0]), int(meta["shape"][1]))
        mask = None
        if "mask" in data:
            mask = np.unpackbits(data["mask"], count=shape[0] * shape[1]).astype(bool).reshape(shape)
        scribble = data.get("scribble")
    points = tuple((int(y), int(x), bool(f)) for y, x, f in meta["points"])
    return Prompt(meta["kind"], shape, mask=mask, scribble=scribble, points=points, counts=meta.get("counts", {}))
