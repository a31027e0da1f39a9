"""``python -m benchmark.visualize RUN_DIR``: prediction grids and error maps, one PNG per episode.

Columns: the reference (prompt drawn over it: foreground green, background red), then every
target. Rows: image, prediction, ground truth, and |prediction − ground truth| as a heat map
(black = 0, white = 1). Written to ``RUN_DIR/figures/`` (``--rounds`` picks which rounds).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmark.datasets import load_dataset
from benchmark.io import write_png
from benchmark.prompts import load_prompt
from benchmark.runner import _slug, prediction_path
from benchmark.types import BACKGROUND, FOREGROUND
from benchmark.views import load_view

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


def episode_figure(run_dir: Path, episode: dict, dataset, resolution: str) -> np.ndarray:
    """The grid for one episode as an RGB array."""
    blank = np.full((TILE, TILE, 3), 40, np.uint8)
    columns = []
    for ref in episode["references"]:
        view = load_view(dataset.samples[ref], resolution)
        prompt_path = run_dir / "prompts" / f"{_slug(episode['key'] + '|' + ref)}.npz"
        img = _overlay(view.image, load_prompt(prompt_path).labels()) if prompt_path.exists() else view.image
        columns.append([_fit(img), blank, _fit(_gray(view.alpha)), blank])
    for target in episode["targets"]:
        view = load_view(dataset.samples[target], resolution)
        pred_path = prediction_path(run_dir, episode["round"], target)
        if pred_path.exists():
            pred = np.asarray(Image.open(pred_path))
            gt = view.alpha.astype(np.float32) / (255.0 if view.alpha.dtype == np.uint8 else 1.0)
            err = np.abs(pred.astype(np.float32) / 255.0 - gt)
            col = [_fit(view.image), _fit(pred), _fit(_gray(view.alpha)), _fit(_heat(err))]
        else:
            col = [_fit(view.image), blank, _fit(_gray(view.alpha)), blank]
        columns.append(col)
    rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(4)]
    return np.concatenate(rows, axis=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.visualize", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, nargs="*", default=[0], help="rounds to draw (default: 0)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/figures)")
    args = parser.parse_args(argv)
    doc = json.loads((args.run_dir / "run.json").read_text())
    params = dict(doc["config"]["dataset"])
    dataset = load_dataset(params.pop("name"), **params)
    out = args.out or args.run_dir / "figures"
    n = 0
    for episode in doc["episodes"]:
        if episode["round"] in args.rounds:
            grid = episode_figure(args.run_dir, episode, dataset, doc["config"]["runner"]["resolution"])
            write_png(out / f"{_slug(episode['key'])}.png", grid)
            n += 1
    print(f"wrote {n} figures to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
