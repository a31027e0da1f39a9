"""The one figure implementation: tiles (image, matte, error map, prompt, side outputs), text labels, the
error colour bar, and the labelled per-episode grid that ``python -m benchmark.visualize`` writes.

The report's pages (thumbnails) and the grid draw with the same functions, so an error map means the same
colours everywhere: |prediction − ground truth| in alpha units (0 = black, 1 = white, through red and
yellow), explained by :func:`colour_bar`. Prompts are drawn with the foreground green and the background
red; a method's side outputs (its mask tinted blue, its points) as in :func:`side_outputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmark.io import read_alpha
from benchmark.prompts import load_prompt
from benchmark.rundir import RunDir
from benchmark.types import BACKGROUND, FOREGROUND, Dataset, Episode
from benchmark.views import SampleView, load_view

TILE = 192
#: Grid bands: two text lines above each column, the method line and the colour bar below the rows.
HEADER = 34
FOOTER = 62
BACKDROP = 40  # grey of letterbox margins and blank tiles
ERROR_TITLE = "error = |prediction - ground truth| (alpha, 0 to 1)"  # ASCII: the bundled font lacks − and –


# ----------------------------------------------------------------------------- pixels
def rgb(img: np.ndarray) -> np.ndarray:
    """H×W or H×W×3 uint8 → H×W×3 uint8."""
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def gray(alpha: np.ndarray) -> np.ndarray:
    """A matte (uint8 or float in [0, 1]) as uint8."""
    return alpha if alpha.dtype == np.uint8 else np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8)


def alpha_float(alpha: np.ndarray) -> np.ndarray:
    return alpha.astype(np.float32) / (np.float32(255.0) if alpha.dtype == np.uint8 else np.float32(1.0))


def error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|prediction − truth| in [0, 1] (float32); shapes must agree."""
    if pred.shape[:2] != truth.shape[:2]:
        raise ValueError(f"prediction is {pred.shape[1]}×{pred.shape[0]}, truth {truth.shape[1]}×{truth.shape[0]}")
    return np.abs(alpha_float(pred) - alpha_float(truth))


def _ramp(e: np.ndarray) -> np.ndarray:
    channels = [np.clip(3 * e - i, 0, 1) for i in range(3)]
    return np.rint(np.stack(channels, axis=-1) * 255).astype(np.uint8)


#: The error colours, one per 1/255 step: black, red, yellow, white (each third of the range one channel ramps up).
HEAT = _ramp(np.linspace(0, 1, 256))


def heat_index(err: np.ndarray) -> np.ndarray:
    """Error in [0, 1] → its row of :data:`HEAT` (uint8, 1/255 steps)."""
    return np.rint(np.clip(err, 0, 1) * 255).astype(np.uint8)


def heat(err: np.ndarray) -> np.ndarray:
    """Error in [0, 1] → RGB through :data:`HEAT`."""
    return HEAT[heat_index(err)]


def heat_image(err: np.ndarray) -> Image.Image:
    """Error in [0, 1] → a palette image with the :data:`HEAT` colours (the same pixels as :func:`heat`, a
    third of the bytes to encode)."""
    im = Image.fromarray(heat_index(err), "L").convert("P")
    im.putpalette(HEAT.ravel().tolist())
    return im


def downscale(img: np.ndarray, long_side: int) -> np.ndarray:
    """Shrink so the long side is at most ``long_side`` (area interpolation); never enlarges."""
    h, w = img.shape[:2]
    s = long_side / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def tile(img: np.ndarray, size: int = TILE) -> np.ndarray:
    """``img`` fitted into a size×size RGB square (enlarged or shrunk), centred on grey."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST
    small = rgb(cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp))
    out = np.full((size, size, 3), BACKDROP, np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def blank(size: int = TILE) -> np.ndarray:
    return np.full((size, size, 3), BACKDROP, np.uint8)


def overlay_prompt(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The prompt's labels (0 none, 1 background, 2 foreground) tinted over the image, thickened so thin
    strokes and points stay visible when shrunk; a mask prompt shows only its foreground."""
    out = image.copy()
    grow = max(1, max(labels.shape) // 150)
    kernel = np.ones((2 * grow + 1,) * 2, np.uint8)
    for value, colour in ((FOREGROUND, (0, 255, 0)), (BACKGROUND, (255, 0, 0))):
        if value == BACKGROUND and (labels != 0).all():
            continue
        m = cv2.dilate((labels == value).astype(np.uint8), kernel) > 0
        out[m] = (0.45 * out[m] + 0.55 * np.array(colour)).astype(np.uint8)
    return out


def side_outputs(image: np.ndarray, extras: Mapping[str, object]) -> np.ndarray:
    """The target with a method's mask (``sam_mask`` or ``mask``) tinted blue and its ``points`` drawn
    (foreground green, background red)."""
    out = image.copy()
    mask = extras.get("sam_mask", extras.get("mask"))
    if isinstance(mask, np.ndarray) and mask.shape == out.shape[:2]:
        m = mask > 127
        out[m] = (0.5 * out[m] + 0.5 * np.array((60, 120, 255))).astype(np.uint8)
    radius = max(2, max(out.shape[:2]) // 60)
    points = extras.get("points", [])
    for y, x, fg in points if isinstance(points, list) else []:
        cv2.circle(out, (int(x), int(y)), radius, (0, 255, 0) if fg else (255, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(out, (int(x), int(y)), radius, (0, 0, 0), max(1, radius // 3), cv2.LINE_AA)
    return out


def unreadable(what: str, size: int = TILE) -> np.ndarray:
    """A dark red, crossed tile saying that ``what`` could not be read."""
    out = np.full((size, size, 3), (90, 20, 20), np.uint8)
    cv2.line(out, (0, 0), (size - 1, size - 1), (200, 60, 60), 2)
    cv2.line(out, (0, size - 1), (size - 1, 0), (200, 60, 60), 2)
    return text(out, ["unreadable", what], (8, size // 2 - 14), box=True)


# ----------------------------------------------------------------------------- text
@lru_cache(maxsize=8)
def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (its bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def fit_text(line: str, width: int, size: int = 12) -> str:
    """``line`` cut (ending in "..") to fit ``width`` px."""
    f = font(size)
    if f.getlength(line) <= width:
        return line
    while line and f.getlength(line + "..") > width:
        line = line[:-1]
    return line + ".."


def text(img: np.ndarray, lines: Sequence[str], xy: tuple[int, int] = (4, 3), size: int = 12,
         fill: tuple[int, int, int] = (255, 255, 255), box: bool = False, line_height: int | None = None) -> np.ndarray:
    """``img`` with ``lines`` written from ``xy`` (cut to the image width); ``box`` puts them on a dark band."""
    im = Image.fromarray(rgb(img))
    draw = ImageDraw.Draw(im)
    step = line_height or size + 3
    x, y = xy
    for i, line in enumerate(lines):
        line = fit_text(line, img.shape[1] - x - 4, size)
        if box and line:
            left, top, right, bottom = draw.textbbox((x, y + i * step), line, font=font(size))
            draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
        draw.text((x, y + i * step), line, font=font(size), fill=fill)
    return np.array(im)


def band(width: int, height: int, lines: Sequence[str], colours: Sequence[tuple[int, int, int]] | None = None,
         size: int = 12) -> np.ndarray:
    """A dark text band (column headers, captions): one colour per line."""
    out = np.full((height, width, 3), 24, np.uint8)
    for i, line in enumerate(lines):
        colour = colours[i] if colours and i < len(colours) else (235, 235, 235)
        out = text(out, [line], (5, 3 + i * (size + 3)), size, colour)
    return out


def colour_bar(width: int = 320, title: str = ERROR_TITLE) -> np.ndarray:
    """The error map's colour scale: a title, the ramp of :func:`heat` and ticks at 0, ¼, ½, ¾, 1."""
    pad, ramp_h = 10, 12
    out = np.full((44, width, 3), 24, np.uint8)
    out = text(out, [title], (pad, 1), 12)
    ramp = heat(np.tile(np.linspace(0, 1, width - 2 * pad, dtype=np.float32), (ramp_h, 1)))
    out[16:16 + ramp_h, pad:width - pad] = ramp
    for t in (0, 0.25, 0.5, 0.75, 1):
        x = pad + round(t * (width - 2 * pad - 1))
        out[16 + ramp_h:16 + ramp_h + 3, x] = 235
        label = f"{t:g}"
        out = text(out, [label], (max(0, min(width - 18, x - 3 * len(label))), 30), 11)
    return out


# ----------------------------------------------------------------------------- the episode grid
@dataclass(frozen=True)
class Score:
    """What a target's column header says: its scores, or the error that replaced them."""

    sad: float | None = None
    mse: float | None = None
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"error: {self.error}"
        if self.sad is None:
            return "not scored"
        return f"SAD {self.sad:.2f}  MSE {self.mse:.4f}" if self.mse is not None else f"SAD {self.sad:.2f}"


def grid_height(rows: int) -> int:
    """Height in px of an episode grid with ``rows`` tile rows (4, or 5 with side outputs)."""
    return HEADER + rows * TILE + FOOTER


def safe_tiles(what: str, draw: Callable[[], list[np.ndarray]], count: int, problems: list[str]) -> list[np.ndarray]:
    """``draw()``'s tiles, or ``count`` 'unreadable' tiles (and a line in ``problems``) when a file fails."""
    try:
        return draw()
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"{what}: {exc}")
        return [unreadable(what)] * count


ROW_NAMES = ("image", "prediction", "ground truth", "error", "side outputs")
REFERENCE_ROWS = ("reference + prompt", "", "ground truth", "", "")


def _name_row(tiles: list[np.ndarray], i: int, references: int) -> list[np.ndarray]:
    """Row ``i`` with its name written on each reference tile that has content and on the first target."""
    out = list(tiles)
    for j in range(min(references, len(out))):
        if REFERENCE_ROWS[i]:
            out[j] = text(out[j], [REFERENCE_ROWS[i]], (4, TILE - 17), 11, box=True)
    if references < len(out):
        out[references] = text(out[references], [ROW_NAMES[i]], (4, TILE - 17), 11, box=True)
    return out


def grid(columns: Sequence[list[np.ndarray]], headers: Sequence[tuple[str, str, bool]], footer: str,
         references: int = 1) -> np.ndarray:
    """Tile columns (equal lengths; the first ``references`` are references) under two-line ``headers``
    (title, subtitle, is_error) and above a footer band (``footer`` and the colour bar)."""
    width = TILE * len(columns)
    heads = [band(TILE, HEADER, [t, s], [(255, 255, 255), (255, 120, 120) if bad else (200, 200, 200)])
             for t, s, bad in headers]
    rows = [np.concatenate(heads, axis=1)]
    for i in range(len(columns[0])):
        rows.append(np.concatenate(_name_row([c[i] for c in columns], i, references), axis=1))
    foot = band(width, FOOTER, [footer])
    bar = colour_bar(min(width - 4, 360))
    foot[FOOTER - bar.shape[0] - 2:FOOTER - 2, 2:2 + bar.shape[1]] = bar
    rows.append(foot)
    return np.concatenate(rows, axis=0)


def _view(dataset: Dataset, sample_id: str, resolution: str) -> SampleView:
    if sample_id not in dataset.samples:
        raise KeyError(f"'{sample_id}' is no longer in the dataset")
    return load_view(dataset.samples[sample_id], resolution)


def episode_figure(rd: RunDir, episode: Episode, dataset: Dataset, resolution: str,
                   scores: Mapping[str, Score] | None = None, method: str = "",
                   problems: list[str] | None = None) -> np.ndarray:
    """One episode as a labelled grid (RGB): a column per reference (its prompt drawn, its ground truth)
    and per target (image, prediction, ground truth, error map; side outputs when the method kept any),
    each column headed by its id and the target's SAD/MSE, the method and the colour bar below.
    Unreadable files become 'unreadable' tiles, listed in ``problems``."""
    problems = [] if problems is None else problems
    scores = scores or {}

    def reference(ref: str) -> list[np.ndarray]:
        view = _view(dataset, ref, resolution)
        path = rd.prompt_file(episode.key, ref)
        img = overlay_prompt(view.image, load_prompt(path).labels()) if path.exists() else view.image
        return [tile(img), blank(), tile(gray(view.alpha)), blank()]

    def target(tid: str) -> list[np.ndarray]:
        view = _view(dataset, tid, resolution)
        path = rd.prediction_file(episode.round, tid)
        if not path.exists():
            return [tile(view.image), blank(), tile(gray(view.alpha)), blank()]
        pred = read_alpha(path)
        return [tile(view.image), tile(gray(pred)), tile(gray(view.alpha)), tile(heat(error_map(pred, view.alpha)))]

    def side(tid: str) -> list[np.ndarray]:
        extras = rd.read_extras(episode.round, tid)
        return [tile(side_outputs(_view(dataset, tid, resolution).image, extras)) if extras else blank()]

    columns = [safe_tiles(r, lambda r=r: reference(r), 4, problems) for r in episode.references]
    columns += [safe_tiles(t, lambda t=t: target(t), 4, problems) for t in episode.targets]
    if any(rd.extras_dir(episode.round, t).is_dir() for t in episode.targets):
        for column in columns[:len(episode.references)]:
            column.append(blank())
        for column, t in zip(columns[len(episode.references):], episode.targets, strict=True):
            column.extend(safe_tiles(t, lambda t=t: side(t), 1, problems))
    headers = [(f"reference {r}", "", False) for r in episode.references]
    headers += [(t, scores.get(t, Score()).line(), bool(scores.get(t, Score()).error)) for t in episode.targets]
    footer = " · ".join(x for x in (method, f"group {episode.group}", f"round {episode.round}") if x)
    return grid(columns, headers, footer, len(episode.references))
