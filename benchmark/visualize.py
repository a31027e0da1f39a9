"""``python -m benchmark.visualize RUN_DIR``: prediction grids and error maps, one PNG per episode.

Columns: the reference (prompt drawn over it: foreground green, background red), then every
target. Rows: image, prediction, ground truth, and |prediction − ground truth| as a heat map
(black = 0, white = 1). When the method kept side outputs (ICMP's propagated points and SAM mask,
MatAny's and MAM's masks), a fifth row draws them on the target: the mask tinted blue, foreground
points green, background points red. Written to ``RUN_DIR/figures/`` (``--rounds`` picks which rounds).
A file that cannot be read becomes a tile saying so (and a warning); the other tiles and
episodes are drawn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmark.datasets.common import DatasetError
from benchmark.io import write_png
from benchmark.prompts import load_prompt
from benchmark.rundir import RunDir, RunDirError
from benchmark.types import BACKGROUND, FOREGROUND, Dataset, Episode
from benchmark.views import SampleView, load_view

TILE = 192


def _fit(img: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    h, w = img.shape[:2]
    s = TILE / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interpolation)
    if small.ndim == 2:
        small = np.repeat(small[:, :, None], 3, axis=2)
    tile = np.full((TILE, TILE, 3), 40, np.uint8)
    y, x = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    tile[y:y + small.shape[0], x:x + small.shape[1]] = small
    return tile


def _gray(alpha: np.ndarray) -> np.ndarray:
    return alpha if alpha.dtype == np.uint8 else np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8)


def _heat(err: np.ndarray) -> np.ndarray:
    """Error in [0, 1] → an inferno-like colour ramp (black, red, yellow, white)."""
    e = np.clip(err, 0, 1)
    r = np.clip(3 * e, 0, 1)
    g = np.clip(3 * e - 1, 0, 1)
    b = np.clip(3 * e - 2, 0, 1)
    return np.rint(np.stack([r, g, b], axis=2) * 255).astype(np.uint8)


def _overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = image.copy()
    grow = max(1, max(labels.shape) // 150)  # keep thin strokes and points visible when shrunk
    for value, colour in ((FOREGROUND, (0, 255, 0)), (BACKGROUND, (255, 0, 0))):
        m = cv2.dilate((labels == value).astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) > 0
        if value == BACKGROUND and (labels != 0).all():
            continue  # a mask prompt: show only the foreground tint
        out[m] = (0.45 * out[m] + 0.55 * np.array(colour)).astype(np.uint8)
    return out


def _side_outputs(image: np.ndarray, extras: dict) -> np.ndarray:
    """The target with a method's mask (``sam_mask`` or ``mask``) tinted and its ``points`` drawn."""
    out = image.copy()
    mask = extras.get("sam_mask", extras.get("mask"))
    if isinstance(mask, np.ndarray) and mask.shape == out.shape[:2]:
        m = mask > 127
        out[m] = (0.5 * out[m] + 0.5 * np.array((60, 120, 255))).astype(np.uint8)
    radius = max(2, max(out.shape[:2]) // 60)
    for y, x, fg in extras.get("points", []):
        cv2.circle(out, (int(x), int(y)), radius, (0, 255, 0) if fg else (255, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(out, (int(x), int(y)), radius, (0, 0, 0), max(1, radius // 3), cv2.LINE_AA)
    return out


def _unreadable(what: str) -> np.ndarray:
    """A tile that says a file could not be read (dark red, crossed, labelled)."""
    tile = np.full((TILE, TILE, 3), (90, 20, 20), np.uint8)
    cv2.line(tile, (0, 0), (TILE - 1, TILE - 1), (200, 60, 60), 2)
    cv2.line(tile, (0, TILE - 1), (TILE - 1, 0), (200, 60, 60), 2)
    for i, text in enumerate(("unreadable", what[:22])):
        cv2.putText(tile, text, (8, TILE // 2 - 8 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return tile


def _tiles(what: str, draw: Callable[[], list[np.ndarray]], count: int, problems: list[str]) -> list[np.ndarray]:
    """``draw()``'s tiles, or ``count`` 'unreadable' tiles when a file in it cannot be read."""
    try:
        return draw()
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"{what}: {exc}")
        return [_unreadable(what)] * count


def _view(dataset: Dataset, sample_id: str, resolution: str) -> SampleView:
    if sample_id not in dataset.samples:
        raise KeyError(f"'{sample_id}' is no longer in the dataset")
    return load_view(dataset.samples[sample_id], resolution)


def episode_figure(rd: RunDir, episode: Episode, dataset: Dataset, resolution: str,
                   problems: list[str] | None = None) -> np.ndarray:
    """The grid for one episode as an RGB array; unreadable files are listed in ``problems``."""
    problems = [] if problems is None else problems
    blank = np.full((TILE, TILE, 3), 40, np.uint8)

    def reference(ref: str) -> list[np.ndarray]:
        view = _view(dataset, ref, resolution)
        path = rd.prompt_file(episode.key, ref)
        img = _overlay(view.image, load_prompt(path).labels()) if path.exists() else view.image
        return [_fit(img), blank, _fit(_gray(view.alpha))]

    def target(tid: str) -> list[np.ndarray]:
        view = _view(dataset, tid, resolution)
        path = rd.prediction_file(episode.round, tid)
        if not path.exists():
            return [_fit(view.image), blank, _fit(_gray(view.alpha)), blank]
        pred = np.asarray(Image.open(path))
        gt = view.alpha.astype(np.float32) / (255.0 if view.alpha.dtype == np.uint8 else 1.0)
        err = np.abs(pred.astype(np.float32) / 255.0 - gt)
        return [_fit(view.image), _fit(pred), _fit(_gray(view.alpha)), _fit(_heat(err))]

    def side(tid: str) -> list[np.ndarray]:
        extras = rd.read_extras(episode.round, tid)
        return [_fit(_side_outputs(_view(dataset, tid, resolution).image, extras)) if extras else blank]

    columns = [[*_tiles(r, lambda r=r: reference(r), 3, problems), blank] for r in episode.references]
    columns += [_tiles(t, lambda t=t: target(t), 4, problems) for t in episode.targets]
    if any(rd.extras_dir(episode.round, t).is_dir() for t in episode.targets):
        for column in columns[:len(episode.references)]:
            column.append(blank)
        for column, t in zip(columns[len(episode.references):], episode.targets, strict=True):
            column.extend(_tiles(t, lambda t=t: side(t), 1, problems))
    rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(len(columns[0]))]
    return np.concatenate(rows, axis=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.visualize", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, nargs="*", default=[0], help="rounds to draw (default: 0)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/figures)")
    args = parser.parse_args(argv)
    rd = RunDir(args.run_dir)
    try:
        plan = rd.read_plan()
        dataset = rd.load_dataset(plan)
    except (RunDirError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems: list[str] = []
    n = 0
    for episode in plan.episodes:
        if episode.round in args.rounds:
            grid = episode_figure(rd, episode, dataset, plan.runner["resolution"], problems)
            path = rd.figure_file(episode.key)
            write_png(args.out / path.name if args.out else path, grid)
            n += 1
    for p in problems:
        print(f"warning: unreadable, drawn as such: {p}", file=sys.stderr)
    print(f"wrote {n} figures to {args.out or rd.figures_dir} ({len(problems)} unreadable files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
