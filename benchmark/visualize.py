"""``python -m benchmark.visualize RUN_DIR``: one labelled PNG grid per episode.

Columns: the reference (prompt drawn over it: foreground green, background red), then every
target, each headed by its id and, for targets, its SAD and MSE. Rows: image, prediction, ground
truth, and |prediction − ground truth| as a heat map explained by the colour bar below the grid
(black = 0, white = 1). When the method kept side outputs (ICMP's propagated points and SAM mask,
MatAny's and MAM's masks), a fifth row draws them on the target: the mask tinted blue, foreground
points green, background points red. Written to ``RUN_DIR/figures/`` (``--rounds`` picks which rounds).
A file that cannot be read becomes a tile saying so (and a warning); the other tiles and
episodes are drawn. The drawing is :mod:`benchmark.report.figures`, shared with ``benchmark.report``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.datasets.common import DatasetError
from benchmark.io import write_png
from benchmark.report.figures import TILE, Score, episode_figure
from benchmark.rundir import RunDir, RunDirError
from benchmark.types import Dataset, Episode

__all__ = ["TILE", "episode_grid", "main", "scores_of"]


def scores_of(rd: RunDir) -> dict[tuple[int, str], Score]:
    """(round, target) → its scores in the main region (``whole`` when scored), or its error; {} without
    ``results.csv``."""
    try:
        df = rd.results_frame(["round", "target", "region", "status", "error", "SAD", "MSE"])
    except RunDirError:
        return {}
    regions = [r for r in dict.fromkeys(df.loc[df["status"] == "ok", "region"]) if r]
    region = "whole" if "whole" in regions or not regions else regions[0]
    out: dict[tuple[int, str], Score] = {}
    for r in df.itertuples(index=False):
        if r.status == "error":
            out.setdefault((int(r.round), r.target), Score(error=r.error))
        elif r.region == region:
            out[(int(r.round), r.target)] = Score(float(r.SAD), float(r.MSE))
    return out


def episode_grid(rd: RunDir, episode: Episode, dataset: Dataset, resolution: str, method: str = "",
                 problems: list[str] | None = None) -> np.ndarray:
    """The labelled grid of one episode (RGB)."""
    scores = {t: s for (r, t), s in scores_of(rd).items() if r == episode.round}
    return episode_figure(rd, episode, dataset, resolution, scores, method, problems)


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
    method = plan.identity["method"].get("label", plan.identity["method"]["name"])
    scores = scores_of(rd)
    problems: list[str] = []
    n = 0
    for episode in plan.episodes:
        if episode.round in args.rounds:
            mine = {t: s for (r, t), s in scores.items() if r == episode.round}
            grid = episode_figure(rd, episode, dataset, plan.runner["resolution"], mine, method, problems)
            path = rd.figure_file(episode.key)
            write_png(args.out / path.name if args.out else path, grid)
            n += 1
    for p in problems:
        print(f"warning: unreadable, drawn as such: {p}", file=sys.stderr)
    print(f"wrote {n} figures to {args.out or rd.figures_dir} ({len(problems)} unreadable files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
