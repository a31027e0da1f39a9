"""``python -m benchmark.rescore RUN_DIR``: recompute metrics from saved predictions.

The method is not run. Every ``ok`` row's prediction PNG is read back, scored again against
the ground truth with the run's own settings (resolution, regions, metric protocol, trimap
rule), and the episode files, ``results.csv`` and the leaderboard are rewritten. Useful after
a metrics fix, or to check that saved predictions reproduce the stored numbers. A target whose
prediction or ground truth cannot be read keeps its stored rows, is named in a warning, and makes
the exit status 1; the rest goes on. Exit status 2: not a run folder, or its dataset changed;
3: the folder is in use by a run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.datasets.common import DatasetError
from benchmark.leaderboard import write_leaderboard
from benchmark.run_lock import RunLockedError
from benchmark.rundir import RunDir, RunDirError, fmt_value
from benchmark.scoring import METRIC_NAMES, ScoreJob, score
from benchmark.types import Dataset, Episode
from benchmark.views import load_view


class RescoreError(RuntimeError):
    """The run folder cannot be rescored (the message says why)."""


@dataclass
class RescoreStats:
    targets: int = 0  # rescored
    worst: float = 0.0  # largest absolute change of a stored value
    unreadable: list[str] = field(default_factory=list)  # targets left as they were


def _rescore_target(rd: RunDir, dataset: Dataset, runner: dict, rnd: str, target: str, rows: list[dict],
                    stats: RescoreStats) -> None:
    """Rescore one target's rows in place (left unchanged when a file cannot be read)."""
    try:
        pred = np.asarray(Image.open(rd.prediction_file(rnd, target)))
        view = load_view(dataset.samples[target], runner["resolution"])
        res = score(ScoreJob(pred, view.alpha, view.trimap, tuple(runner["regions"]), runner["metric_protocol"],
                             runner["trimap_radius_fraction"]))
    except (OSError, ValueError, KeyError) as exc:
        stats.unreadable.append(f"{target} (round {rnd}): {type(exc).__name__}: {exc}")
        return
    stats.targets += 1
    for row in rows:
        for m in METRIC_NAMES:
            new, old = res.values[row["region"]][m], float(row[m])
            if np.isfinite(new) and np.isfinite(old):
                stats.worst = max(stats.worst, abs(new - old))
            row[m] = fmt_value(new)


def _rescore_episode(rd: RunDir, dataset: Dataset, runner: dict, episode: Episode, stats: RescoreStats) -> None:
    rows = rd.episode_rows(episode.key)
    if rows is None:
        return
    by_target: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["status"] == "ok":
            by_target.setdefault((row["round"], row["target"]), []).append(row)
    for (rnd, target), target_rows in by_target.items():
        _rescore_target(rd, dataset, runner, rnd, target, target_rows, stats)
    rd.write_episode(episode.key, rows)


def rescore(run_dir: str | Path) -> RescoreStats:
    """Rescore a run directory in place."""
    rd = RunDir(run_dir)
    stats = RescoreStats()
    with rd.lock():
        plan = rd.read_plan()
        dataset = rd.load_dataset(plan)
        if dataset.fingerprint != plan.identity["dataset"]["fingerprint"]:
            raise RescoreError(f"the dataset changed since {run_dir} was run "
                               f"({plan.identity['dataset']['fingerprint']} → {dataset.fingerprint})")
        for episode in plan.episodes:
            _rescore_episode(rd, dataset, plan.runner, episode, stats)
        rd.write_results(rd.collect_rows(plan.episodes))
        write_leaderboard([rd.root], rd.leaderboard_csv)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.rescore", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        stats = rescore(args.run_dir)
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (RunDirError, RescoreError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in stats.unreadable:
        print(f"warning: not rescored, stored rows kept: {line}", file=sys.stderr)
    print(f"rescored {stats.targets} predictions in {args.run_dir}; largest change of a stored value: "
          f"{stats.worst:.3g}; {len(stats.unreadable)} left as they were", file=sys.stderr)
    return 1 if stats.unreadable else 0


if __name__ == "__main__":
    raise SystemExit(main())
