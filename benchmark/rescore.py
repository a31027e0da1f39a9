"""``python -m benchmark.rescore RUN_DIR``: recompute metrics from saved predictions.

The method is not run. Every ``ok`` row's prediction PNG is read back, scored again against
the ground truth with the run's own settings (resolution, regions, metric protocol, trimap
rule), and the episode files, ``results.csv`` and the leaderboard are rewritten. Useful after
a metrics fix, or to check that saved predictions reproduce the stored numbers. A prediction or
ground truth that cannot be read turns that target's rows into error rows; the rest goes on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.datasets.common import DatasetError
from benchmark.leaderboard import write_leaderboard
from benchmark.rundir import RunDir, RunDirError, fmt_value
from benchmark.scoring import METRIC_NAMES, ScoreJob, score
from benchmark.types import Dataset, Episode
from benchmark.views import load_view


class RescoreError(RuntimeError):
    """The run folder cannot be rescored (the message says why)."""


def _rescore_target(rd: RunDir, dataset: Dataset, runner: dict, rnd: str, target: str,
                    rows: list[dict]) -> float:
    """Rescore one target's rows in place; returns the largest change of a stored value."""
    try:
        pred = np.asarray(Image.open(rd.prediction_file(rnd, target)))
        view = load_view(dataset.samples[target], runner["resolution"])
        res = score(ScoreJob(pred, view.alpha, view.trimap, tuple(runner["regions"]), runner["metric_protocol"],
                             runner["trimap_radius_fraction"]))
    except (OSError, ValueError, KeyError) as exc:
        for row in rows:
            row.update({m: "" for m in METRIC_NAMES}, status="error", error=f"rescore: {type(exc).__name__}: {exc}")
        print(f"warning: {target} (round {rnd}): {exc}", file=sys.stderr)
        return 0.0
    worst = 0.0
    for row in rows:
        for m in METRIC_NAMES:
            new, old = res.values[row["region"]][m], float(row[m])
            if np.isfinite(new) and np.isfinite(old):
                worst = max(worst, abs(new - old))
            row[m] = fmt_value(new)
    return worst


def _rescore_episode(rd: RunDir, dataset: Dataset, runner: dict, episode: Episode) -> tuple[int, float]:
    rows = rd.episode_rows(episode.key)
    if rows is None:
        return 0, 0.0
    by_target: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["status"] == "ok":
            by_target.setdefault((row["round"], row["target"]), []).append(row)
    worst = max([_rescore_target(rd, dataset, runner, rnd, t, rs) for (rnd, t), rs in by_target.items()],
                default=0.0)
    rd.write_episode(episode.key, rows)
    return len(by_target), worst


def rescore(run_dir: str | Path) -> tuple[int, float]:
    """Rescore a run directory in place; returns (targets rescored, largest absolute change)."""
    rd = RunDir(run_dir)
    with rd.lock():
        plan = rd.read_plan()
        dataset = rd.load_dataset(plan)
        if dataset.fingerprint != plan.identity["dataset"]["fingerprint"]:
            raise RescoreError(f"the dataset changed since {run_dir} was run "
                               f"({plan.identity['dataset']['fingerprint']} → {dataset.fingerprint})")
        count, worst = 0, 0.0
        for episode in plan.episodes:
            n, w = _rescore_episode(rd, dataset, plan.runner, episode)
            count, worst = count + n, max(worst, w)
        rd.write_results(rd.collect_rows(plan.episodes))
        write_leaderboard([rd.root], rd.leaderboard_csv)
    return count, worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.rescore", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        n, worst = rescore(args.run_dir)
    except (RunDirError, RescoreError, DatasetError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rescored {n} predictions in {args.run_dir}; largest change of a stored value: {worst:.3g}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
