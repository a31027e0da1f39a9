"""``python -m benchmark.rescore RUN_DIR``: recompute metrics from saved predictions.

The method is not run. Every ``ok`` row's prediction PNG is read back, scored again against
the ground truth with the run's own settings (resolution, regions, metric protocol, trimap
rule), and the episode files, ``results.csv`` and the leaderboard are rewritten. Useful after
a metrics fix, or to check that saved predictions reproduce the stored numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.datasets import load_dataset
from benchmark.leaderboard import write_leaderboard
from benchmark.runner import _fmt, _write_csv, collect_rows, prediction_path
from benchmark.scoring import METRIC_NAMES, ScoreJob, score
from benchmark.views import load_view


def rescore(run_dir: Path) -> tuple[int, float]:
    """Rescore a run directory in place; returns (targets rescored, largest absolute change)."""
    doc = json.loads((run_dir / "run.json").read_text())
    cfg = doc["config"]
    r = cfg["runner"]
    params = dict(cfg["dataset"])
    dataset = load_dataset(params.pop("name"), **params)
    if dataset.fingerprint != doc["identity"]["dataset_hash"]:
        raise SystemExit(f"error: the dataset changed since {run_dir} was run "
                         f"({doc['identity']['dataset_hash']} → {dataset.fingerprint})")
    count, worst = 0, 0.0
    for path in sorted((run_dir / "episodes").glob("*.csv")):
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        by_target: dict[tuple[str, str], list[dict]] = {}
        for row in rows:
            if row["status"] == "ok":
                by_target.setdefault((row["round"], row["target"]), []).append(row)
        for (rnd, target), target_rows in by_target.items():
            pred_path = prediction_path(run_dir, rnd, target)
            pred = np.asarray(Image.open(pred_path))
            view = load_view(dataset.samples[target], r["resolution"])
            res = score(ScoreJob(pred, view.alpha, view.trimap, tuple(r["regions"]), r["metric_protocol"],
                                 r["trimap_radius_fraction"]))
            for row in target_rows:
                for m in METRIC_NAMES:
                    new = res.values[row["region"]][m]
                    old = float(row[m])
                    if np.isfinite(new) and np.isfinite(old):
                        worst = max(worst, abs(new - old))
                    row[m] = _fmt(new)
            count += 1
        _write_csv(path, rows)
    rows = collect_rows(run_dir, [e["key"] for e in doc["episodes"]])
    _write_csv(run_dir / "results.csv", rows)
    write_leaderboard([run_dir], run_dir / "leaderboard.csv")
    return count, worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.rescore", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    n, worst = rescore(args.run_dir)
    print(f"rescored {n} predictions in {args.run_dir}; largest change of a stored value: {worst:.3g}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
