"""Leaderboards from one or more run directories (pandas).

One row per board key (method, dataset, prompt, guidance, protocol, resolution, metric protocol,
region). Aggregation, group-weighted (default): mean over the targets of a (group, round), then
the mean over groups (every group weighs the same), then mean ± standard deviation (population,
ddof = 0) over rounds. Image-weighted (the official validation code's average): mean over all
targets of a round, then mean ± std over rounds; both are in the CSV, ``--weighting`` picks the
one the Markdown table shows. Error rows are counted, not averaged; a NaN value (MSE over an
empty unknown region) is left out of its mean. ``complete`` is 1 when every planned target of
every shard is present and no row failed. Units follow the reference evaluation code: SAD, Grad
and Conn are divided by 1000, MSE is the raw mean.

Folders that fall into one board row must have the same run identity (dataset fingerprint,
method and its weights, prompt, every result-changing runner setting) but for the shard: a
seed-0 and a seed-1 run are refused, naming the differing key, instead of being averaged. A
folder given twice counts once.

Usage: ``python -m benchmark.leaderboard RUN_DIR [RUN_DIR …] [--out FILE] [--by group|round]
[--weighting group|image] [--quoted]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from benchmark.io import atomic_write_text
from benchmark.rundir import RunDir, RunDirError, identity_changes
from benchmark.scoring import METRIC_COLUMNS, METRIC_NAMES, METRIC_UNITS

UNITS = METRIC_UNITS
#: ``references`` is the number of references per episode (k, paper Table 6), from the run's plan.
BOARD_KEYS = ("method", "dataset", "prompt", "guidance", "references", "protocol", "resolution", "metric_protocol",
              "region")
COLUMNS = METRIC_COLUMNS


class LeaderboardError(ValueError):
    """Run folders that must not be merged (the message names what differs)."""


def _identity(plan_identity: dict) -> dict:
    """The identity of a run's results, without its shard (shards of one run merge)."""
    ident = json.loads(json.dumps(plan_identity))
    ident.get("runner", {}).pop("shard", None)
    return ident


#: The result columns the board needs (the rest of results.csv is never loaded).
_USED = frozenset({*BOARD_KEYS, "round", "group", "target", "status", *METRIC_NAMES}) - {"references"}


def _read(run_dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All result rows (one frame) and one line per run folder: its key, shard, planned targets."""
    frames, runs = [], []
    for i, root in enumerate(dict.fromkeys(Path(d).resolve() for d in run_dirs)):  # a folder twice counts once
        rd = RunDir(root)
        plan = rd.read_plan()
        df = rd.results_frame(_USED)
        df.loc[df["guidance"] == "", "guidance"] = "in_context"  # folders written before the guidance column
        df["references"] = str(plan.identity["runner"].get("references", 1))  # k, not the reference ids
        df["_run"] = i
        frames.append(df)
        shard, n = plan.shard
        runs.append({"_run": i, "root": str(root), "identity": _identity(plan.identity), "shard": shard,
                     "num_shards": n, "planned": plan.planned_targets})
    if not frames:
        raise LeaderboardError("no run folders given")
    return pd.concat(frames, ignore_index=True), pd.DataFrame(runs)


def _check_mergeable(rows: pd.DataFrame, runs: pd.DataFrame) -> None:
    """Refuse folders that share a board row but not an identity, naming the differing keys."""
    keys = rows.drop_duplicates(["_run", *BOARD_KEYS[:-1]])[["_run", *BOARD_KEYS[:-1]]]
    for _, group in keys.groupby(list(BOARD_KEYS[:-1]), sort=False):
        first, *others = [runs.loc[runs["_run"] == r].iloc[0] for r in group["_run"]]
        seen = {first["shard"]: first["root"]}
        for other in others:
            changes = identity_changes(first["identity"], other["identity"])
            if changes:
                raise LeaderboardError(f"{first['root']} and {other['root']} hold different runs of one board row "
                                       f"and are not merged: {'; '.join(changes)}")
            if other["shard"] in seen:  # a copy of a shard, or one configuration run into two folders
                raise LeaderboardError(f"{seen[other['shard']]} and {other['root']} hold the same shard "
                                       f"{other['shard']} of one run; pass one of them")
            seen[other["shard"]] = other["root"]


def _rounds(per_round: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """mean ± std (ddof = 0) over rounds of per-round metric means."""
    grouped = per_round.groupby(list(BOARD_KEYS))[list(METRIC_NAMES)]
    mean, std = grouped.mean(), grouped.std(ddof=0)
    out = pd.DataFrame(index=mean.index)
    for m in METRIC_NAMES:
        out[f"{prefix}{COLUMNS[m]}"] = mean[m]
        out[f"{prefix}{m} std"] = std[m]
    return out


def _ok_values(rows: pd.DataFrame) -> pd.DataFrame:
    ok = rows[rows["status"] == "ok"].copy()
    for m in METRIC_NAMES:
        ok[m] = pd.to_numeric(ok[m], errors="coerce")  # "nan" → NaN, left out of every mean
    return ok


def _counts(rows: pd.DataFrame, ok: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    base = list(BOARD_KEYS[:-1])
    c = ok.groupby(list(BOARD_KEYS)).agg(rounds=("round", "nunique"), groups=("group", "nunique"))
    c["targets"] = ok.drop_duplicates([*BOARD_KEYS, "round", "group", "target"]).groupby(list(BOARD_KEYS)).size()
    errors = rows[rows["status"] == "error"].groupby(base).size().rename("errors")
    per_run = rows.drop_duplicates(["_run", *base])[["_run", *base]].merge(runs, on="_run")
    plan = per_run.groupby(base).agg(planned=("planned", "sum"), shards=("shard", lambda s: frozenset(s)),
                                     num_shards=("num_shards", "max"))
    c = c.reset_index().merge(errors.reset_index(), on=base, how="left").merge(plan.reset_index(), on=base)
    c["errors"] = c["errors"].fillna(0).astype(int)
    full = c.apply(lambda r: r["shards"] == frozenset(range(int(r["num_shards"]))), axis=1)
    c["complete"] = (full & (c["errors"] == 0) & (c["targets"] == c["planned"])).astype(int)
    return c.set_index(list(BOARD_KEYS))[["rounds", "groups", "targets", "errors", "complete"]]


def board_frame(run_dirs: Iterable[str | Path], by: str | None = None) -> pd.DataFrame:
    """The leaderboard as a DataFrame; ``by="group"`` or ``"round"`` adds that level (a breakdown)."""
    rows, runs = _read(run_dirs)
    _check_mergeable(rows, runs)
    ok = _ok_values(rows)
    if ok.empty:
        return pd.DataFrame(columns=[*BOARD_KEYS, *COLUMNS.values()])
    group_means = ok.groupby([*BOARD_KEYS, "round", "group"])[list(METRIC_NAMES)].mean().reset_index()
    if by == "group":  # each group's mean over rounds
        g = group_means.groupby([*BOARD_KEYS, "group"])[list(METRIC_NAMES)]
        out = g.mean().rename(columns=COLUMNS).join(g.std(ddof=0).rename(columns=lambda m: f"{m} std"))
        return out.reset_index()
    per_round = group_means.groupby([*BOARD_KEYS, "round"])[list(METRIC_NAMES)].mean().reset_index()
    if by == "round":
        return per_round.rename(columns=COLUMNS)
    image = ok.groupby([*BOARD_KEYS, "round"])[list(METRIC_NAMES)].mean().reset_index()
    out = _rounds(per_round).join(_rounds(image, "image-weighted ")).join(_counts(rows, ok, runs))
    return out.reset_index().sort_values(list(BOARD_KEYS), kind="stable").reset_index(drop=True)


def leaderboard(run_dirs: Iterable[str | Path]) -> list[dict[str, object]]:
    """One row per board key with mean ± std of each metric, counts and the complete flag."""
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in board_frame(run_dirs).to_dict("records")]


def to_csv(board: list[dict[str, object]]) -> str:
    if not board:
        return ""
    return pd.DataFrame(board).to_csv(index=False, float_format="%.6g", lineterminator="\n")


def _cell(mean: object, std: object, metric: str, missing: str = "?") -> str:
    fmt = ".5f" if metric == "MSE" else ".3f"
    if not isinstance(mean, float) or mean != mean:
        return missing  # "?" unknown; a quoted row says "–" (not reported) or "" (not a column of that table)
    return f"{mean:{fmt}}" if not isinstance(std, float) or std != std else f"{mean:{fmt}} ± {std:{fmt}}"


def to_markdown(board: list[dict[str, object]], weighting: str = "group") -> str:
    """A paper-ready table: one line per board key, metrics as mean ± std over rounds (``source``
    added when quoted rows are present)."""
    prefix = "image-weighted " if weighting == "image" else ""
    sourced = any("source" in row for row in board)
    head = ["method", "dataset", "prompt", "guidance", "references", "protocol", "region", *COLUMNS.values(), "groups",
            "targets",
            "errors", "complete", *(["source"] if sourced else [])]
    lines = [f"(means {'over images' if prefix else 'over groups'}; ± std over rounds)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in board:
        cells = ["" if row.get(k) is None else str(row[k])
                 for k in ("method", "dataset", "prompt", "guidance", "references", "protocol", "region")]
        missing = row.get("missing") or {}
        cells += [_cell(row.get(f"{prefix}{COLUMNS[m]}", row.get(COLUMNS[m])), row.get(f"{prefix}{m} std"), m,
                        str(missing.get(m, "?"))) for m in METRIC_NAMES]
        cells += ["" if row.get(k) is None else str(row[k]) for k in ("groups", "targets", "errors")]
        complete = row.get("complete")
        cells.append("" if complete in (None, "") else "yes" if complete else "no")
        if sourced:
            cells.append(str(row.get("source", "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def frame_markdown(df: pd.DataFrame) -> str:
    """Any DataFrame (a breakdown) as a Markdown table."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(run_dirs: Sequence[str | Path], out: str | Path, markdown: str | Path | None = None) -> list:
    """Write the CSV (and a Markdown twin, ``<out>.md`` by default) atomically."""
    board = leaderboard(run_dirs)
    atomic_write_text(out, to_csv(board))
    md = Path(markdown) if markdown else Path(out).with_suffix(".md")
    atomic_write_text(md, to_markdown(board))
    return board


def _quoted(board: list[dict[str, object]]) -> list[dict[str, object]]:
    from benchmark.paper import quoted_for

    return list(quoted_for(board))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.leaderboard",
        description="Merge the results of one or more run directories (e.g. shards) into a leaderboard: "
                    "mean over targets per (group, round), then over groups, then mean ± std over rounds "
                    "(units: SAD, Grad, Conn /1000; MSE raw). Exit status 2 when folders must not be merged.")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories holding results.csv and run.json")
    parser.add_argument("--out", type=Path, help="CSV file to write (default: print the Markdown table)")
    parser.add_argument("--markdown", type=Path, help="Markdown file to write (default: <out>.md)")
    parser.add_argument("--by", choices=("group", "round"), help="print a breakdown per group or per round instead")
    parser.add_argument("--weighting", choices=("group", "image"), default="group",
                        help="means shown: every group weighs the same (default) or every image does")
    parser.add_argument("--quoted", action="store_true",
                        help="add the paper's rows for the same dataset, prompt and guidance (source=quoted; "
                             "never part of a mean)")
    args = parser.parse_args(argv)
    try:
        if args.by:
            sys.stdout.write(frame_markdown(board_frame(args.run_dirs, by=args.by)))
            return 0
        board = write_leaderboard(args.run_dirs, args.out, args.markdown) if args.out else leaderboard(args.run_dirs)
    except (RunDirError, LeaderboardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.quoted:
        board = [*(dict(r, source="measured") for r in board), *_quoted(board)]
    sys.stdout.write(to_markdown(board, args.weighting))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
