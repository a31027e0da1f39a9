"""Leaderboards from one or more run directories.

Aggregation (per method, dataset, prompt, protocol, resolution, metric protocol and region):
mean over the targets of a (group, round), then the mean over groups (every group weighs the
same), then mean ± standard deviation (population, ddof = 0) over rounds. Error rows are
counted, not averaged; a NaN value (MSE over an empty unknown region) is left out of its
mean. ``complete`` is 1 when every planned episode of every shard is present and no row failed.
Units follow the reference evaluation code: SAD, Grad and Conn are divided by 1000, MSE is the
raw mean.

Usage: ``python -m benchmark.leaderboard RUN_DIR [RUN_DIR …] [--out FILE] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.io import atomic_write_text
from benchmark.rundir import RunDir, RunDirError
from benchmark.scoring import METRIC_NAMES

UNITS = {"SAD": "/1000", "MSE": "raw", "Grad": "/1000", "Conn": "/1000"}
BOARD_KEYS = ("method", "dataset", "prompt", "protocol", "resolution", "metric_protocol", "region")


def _mean(xs: Sequence[float]) -> float:
    """Mean of the finite values (an empty region's NaN MSE is left out, not propagated)."""
    xs = [x for x in xs if not math.isnan(x)]
    return math.fsum(xs) / len(xs) if xs else math.nan


def _std(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / len(xs))


@dataclass
class _Tally:
    """Per-target values (streamed from result rows) and the plan facts of the runs read."""

    # (board key) → (round) → (group) → per-target metric tuples (in METRIC_NAMES order)
    values: dict[tuple, dict[str, dict[str, list[tuple[float, ...]]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    targets: dict[tuple, set] = field(default_factory=lambda: defaultdict(set))
    errors: dict[tuple, int] = field(default_factory=lambda: defaultdict(int))
    shards: dict[tuple, set[int]] = field(default_factory=lambda: defaultdict(set))
    num_shards: dict[tuple, int] = field(default_factory=dict)
    planned: dict[tuple, int] = field(default_factory=lambda: defaultdict(int))

    def add_run(self, rd: RunDir) -> None:
        plan = rd.read_plan()
        shard, n_shards = plan.shard
        bases = set()
        for r in rd.iter_results():  # streamed: memory grows with the values, not the rows
            base = tuple(r[k] for k in BOARD_KEYS[:-1])
            bases.add(base)
            if r["status"] != "ok":
                self.errors[base] += r["status"] == "error"  # "unscored" video frames have no ground truth
                continue
            key = (*base, r["region"])
            self.values[key][r["round"]][r["group"]].append(tuple(float(r[m]) for m in METRIC_NAMES))
            self.targets[key].add((r["round"], r["group"], r["target"]))
        for base in bases:
            self.shards[base].add(shard)
            self.num_shards[base] = n_shards
            self.planned[base] += plan.planned_targets

    def board_row(self, key: tuple) -> dict[str, object]:
        base = key[:-1]
        per_round: dict[str, list[float]] = {m: [] for m in METRIC_NAMES}
        groups: set[str] = set()
        for _round, by_group in sorted(self.values[key].items()):
            groups.update(by_group)
            for i, m in enumerate(METRIC_NAMES):
                per_round[m].append(_mean([_mean([v[i] for v in vals]) for vals in by_group.values()]))
        n_targets = len(self.targets[key])
        complete = (self.shards[base] == set(range(self.num_shards[base])) and self.errors[base] == 0
                    and n_targets == self.planned[base])
        row: dict[str, object] = dict(zip(BOARD_KEYS, key, strict=True))
        for m in METRIC_NAMES:
            row[f"{m} ({UNITS[m]})"] = per_round[m] and _mean(per_round[m])
            row[f"{m} std"] = per_round[m] and _std(per_round[m])
        row.update({"rounds": len(self.values[key]), "groups": len(groups), "targets": n_targets,
                    "errors": self.errors[base], "complete": int(complete)})
        return row


def leaderboard(run_dirs: Iterable[str | Path]) -> list[dict[str, object]]:
    """One row per board key with mean ± std of each metric, counts and the complete flag."""
    tally = _Tally()
    for d in dict.fromkeys(Path(d).resolve() for d in run_dirs):  # a folder given twice counts once
        tally.add_run(RunDir(d))
    return [tally.board_row(key) for key in sorted(tally.values)]


def to_csv(board: list[dict[str, object]]) -> str:
    if not board:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(board[0]), lineterminator="\n")
    writer.writeheader()
    for row in board:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def to_markdown(board: list[dict[str, object]]) -> str:
    """A paper-ready table: one line per board key, metrics as mean ± std over rounds."""
    head = ["method", "dataset", "prompt", "region", *(f"{m} ({UNITS[m]})" for m in METRIC_NAMES),
            "groups", "targets", "errors", "complete"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in board:
        cells = [str(row["method"]), str(row["dataset"]), str(row["prompt"]), str(row["region"])]
        for m in METRIC_NAMES:
            mean, std = row[f"{m} ({UNITS[m]})"], row[f"{m} std"]
            fmt = ".5f" if m == "MSE" else ".3f"
            cells.append(f"{mean:{fmt}} ± {std:{fmt}}")
        cells += [str(row["groups"]), str(row["targets"]), str(row["errors"]), "yes" if row["complete"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(run_dirs: Sequence[str | Path], out: str | Path, markdown: str | Path | None = None) -> list:
    """Write the CSV (and a Markdown twin, ``<out>.md`` by default) atomically."""
    board = leaderboard(run_dirs)
    atomic_write_text(out, to_csv(board))
    md = Path(markdown) if markdown else Path(out).with_suffix(".md")
    atomic_write_text(md, to_markdown(board))
    return board


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.leaderboard",
        description="Merge the results of one or more run directories (e.g. shards) into a leaderboard: "
                    "mean over targets per (group, round), then over groups, then mean ± std over rounds.")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories holding results.csv and run.json")
    parser.add_argument("--out", type=Path, help="CSV file to write (default: print the Markdown table)")
    parser.add_argument("--markdown", type=Path, help="Markdown file to write (default: <out>.md)")
    args = parser.parse_args(argv)
    try:
        board = write_leaderboard(args.run_dirs, args.out, args.markdown) if args.out else leaderboard(args.run_dirs)
    except RunDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(to_markdown(board))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
