"""Everything a report shows, collected from run folders (through :class:`RunDir` only) into pandas frames.

- ``targets``: one row per (run, round, group, target, region) with numeric metrics, status and error;
- ``board``: the merged leaderboard exactly as :func:`benchmark.leaderboard.to_csv` writes it (strings),
  plus the average rank over groups per metric (alphamatting.com ranks methods per image; here per group);
- ``by_group`` / ``by_round``: the leaderboard's breakdowns (numeric);
- ``runs``: each folder's facts (identity, hashes, settings), skipped groups, dataset problems, error rows.

An *entry* is a leaderboard row without its region: one method under one setting, drawn as one column of
every figure and one colour of every plot.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.leaderboard import BOARD_KEYS, COLUMNS, board_frame, leaderboard, to_csv
from benchmark.rundir import RunDir, RunPlan
from benchmark.scoring import METRIC_NAMES

#: The keys of an entry: a board row without its region.
ENTRY_KEYS = BOARD_KEYS[:-1]
TARGET_COLUMNS = (*BOARD_KEYS, "round", "group", "references", "target", "self_reference", "status", "error",
                  "seconds", *METRIC_NAMES)
#: matplotlib's tab10, so the page and the plots give an entry the same colour.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
RANK_PREFIX = "avg rank "


@dataclass(frozen=True)
class Entry:
    """One method under one setting (a board row without its region)."""

    id: str  # "m0", "m1", …: anchors, CSS classes, file names
    key: tuple[str, ...]  # the values of ENTRY_KEYS
    label: str  # the method, plus the settings that tell it from the other entries
    colour: str

    @property
    def method(self) -> str:
        return self.key[0]


@dataclass(frozen=True)
class Run:
    """One run folder: its plan, facts and counts."""

    index: int
    rd: RunDir
    plan: RunPlan
    facts: dict[str, str]
    entry: str | None  # the entry its rows belong to (None: no row yet)
    rows: int
    errors: int


@dataclass
class ReportData:
    runs: list[Run]
    entries: list[Entry]
    targets: pd.DataFrame
    board_csv: str
    board: pd.DataFrame
    by_group: pd.DataFrame
    by_round: pd.DataFrame
    region: str
    quoted: list[dict[str, Any]] = field(default_factory=list)

    def entry(self, entry_id: str) -> Entry:
        return next(e for e in self.entries if e.id == entry_id)

    def runs_of(self, entry_id: str) -> list[Run]:
        return [r for r in self.runs if r.entry == entry_id]


def collect(run_dirs: Iterable[str | Path], quoted: bool = False) -> ReportData:
    """Read every run folder once (a folder given twice counts once, as in the leaderboard)."""
    roots = list(dict.fromkeys(Path(d).resolve() for d in run_dirs))
    plans = [RunDir(r).read_plan() for r in roots]
    targets = _targets(roots, plans)
    entries = _entries(targets)
    ids = {e.key: e.id for e in entries}
    targets["entry"] = [ids[k] for k in targets[list(ENTRY_KEYS)].itertuples(index=False, name=None)]
    board_rows = leaderboard(roots)
    board_csv = to_csv(board_rows)
    by_group = _with_entry(board_frame(roots, by="group"), ids)
    by_round = _with_entry(board_frame(roots, by="round"), ids)
    board = _board(board_csv, ids, average_ranks(by_group))
    runs = [_run(i, RunDir(root), plan, targets[targets["run_index"] == i]) for i, (root, plan) in
            enumerate(zip(roots, plans, strict=True))]
    data = ReportData(runs, entries, targets, board_csv, board, by_group, by_round, main_region(targets))
    if quoted:
        from benchmark.paper import quoted_for

        data.quoted = list(quoted_for(board_rows))
    return data


def _targets(roots: Sequence[Path], plans: Sequence[RunPlan]) -> pd.DataFrame:
    frames = []
    for i, (root, plan) in enumerate(zip(roots, plans, strict=True)):
        df = RunDir(root).results_frame(TARGET_COLUMNS).rename(columns={"references": "reference_ids"})
        df.loc[df["guidance"] == "", "guidance"] = "in_context"  # as the leaderboard reads old folders
        df["references"] = str(plan.identity["runner"].get("references", 1))
        df["run_index"] = i
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*TARGET_COLUMNS, "run_index"])
    for m in (*METRIC_NAMES, "seconds"):
        df[m] = pd.to_numeric(df[m], errors="coerce")
    df["round"] = pd.to_numeric(df["round"], errors="coerce").fillna(-1).astype(int)
    return df


def _entries(targets: pd.DataFrame) -> list[Entry]:
    keys = sorted(set(targets[list(ENTRY_KEYS)].itertuples(index=False, name=None)))
    out = []
    for n, key in enumerate(keys):
        same = [k for k in keys if k[0] == key[0]]
        varying = [i for i in range(1, len(ENTRY_KEYS)) if len({k[i] for k in same}) > 1]
        extra = [f"k={key[i]}" if ENTRY_KEYS[i] == "references" else key[i] for i in varying]
        out.append(Entry(f"m{n}", key, " · ".join([key[0], *extra]), COLOURS[n % len(COLOURS)]))
    return out


def _with_entry(frame: pd.DataFrame, ids: dict[tuple[str, ...], str]) -> pd.DataFrame:
    frame = frame.copy()
    keys = frame[list(ENTRY_KEYS)].astype(str).itertuples(index=False, name=None) if len(frame) else []
    frame["entry"] = [ids.get(k, "") for k in keys]
    return frame


def average_ranks(by_group: pd.DataFrame) -> pd.DataFrame:
    """Per board row: the mean over groups of its rank among the entries scored on that group (1 = best,
    ties share the mean rank), per metric, within one dataset and region."""
    if by_group.empty:
        return pd.DataFrame(columns=[*BOARD_KEYS, *(RANK_PREFIX + m for m in METRIC_NAMES)])
    ranked = by_group[[*BOARD_KEYS, "group"]].copy()
    for m in METRIC_NAMES:
        ranked[m] = by_group.groupby(["dataset", "region", "group"])[COLUMNS[m]].rank(method="average")
    means = ranked.groupby(list(BOARD_KEYS))[list(METRIC_NAMES)].mean()
    return means.rename(columns=lambda m: RANK_PREFIX + m).reset_index()


def _board(board_csv: str, ids: dict[tuple[str, ...], str], ranks: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as its CSV reads back (strings, so the page shows exactly the file's numbers)."""
    if not board_csv:
        return pd.DataFrame(columns=[*BOARD_KEYS, "entry"])
    board = pd.read_csv(io.StringIO(board_csv), dtype=str, keep_default_na=False)
    board = _with_entry(board, ids)
    ranks = ranks.astype({k: str for k in BOARD_KEYS})
    return board.merge(ranks, on=list(BOARD_KEYS), how="left")


def main_region(targets: pd.DataFrame) -> str:
    """The region plots and galleries use: ``whole`` when scored, else the first one scored."""
    regions = [r for r in dict.fromkeys(targets.loc[targets["status"] == "ok", "region"]) if r]
    return "whole" if "whole" in regions or not regions else regions[0]


def _run(index: int, rd: RunDir, plan: RunPlan, rows: pd.DataFrame) -> Run:
    entry = str(rows["entry"].iloc[0]) if len(rows) else None
    errors = int((rows["status"] == "error").sum())
    return Run(index, rd, plan, run_facts(rd, plan, rows), entry, len(rows), errors)


def run_facts(rd: RunDir, plan: RunPlan, rows: pd.DataFrame) -> dict[str, str]:
    """A run's identity and settings in words, in display order."""
    ident, cfg, r = plan.identity, plan.config, plan.identity["runner"]
    method = ident.get("method", {})
    shard, num_shards = plan.shard
    return {
        "folder": str(rd.root),
        "method": str(method.get("label", method.get("name", "?"))),
        "method settings": ", ".join(f"{k}={v}" for k, v in sorted(method.get("settings", {}).items())) or "—",
        "method hash": str(plan.method_hash or _first(rows, "method_hash")),
        "dataset": str(ident.get("dataset", {}).get("name", "?")),
        "dataset hash": str(ident.get("dataset", {}).get("fingerprint", "?")),
        "dataset root": str(cfg.get("dataset", {}).get("root", "")),
        "protocol": str(r.get("protocol", "?")),
        "prompt": ", ".join(f"{k}={v}" for k, v in ident.get("prompt", {}).items()),
        "guidance": str(r.get("guidance", "group")),
        "references per episode": str(r.get("references", 1)),
        "seed": str(r.get("seed", "?")),
        "rounds": str(r.get("rounds", "?")),
        "resolution": str(r.get("resolution", "?")),
        "regions": ", ".join(map(str, r.get("regions", ()))),
        "metric protocol": str(r.get("metric_protocol", "?")),
        "shard": f"{shard} of {num_shards}",
        "episodes": str(len(plan.episodes)),
        "planned targets": str(plan.planned_targets),
        "result rows": str(len(rows)),
        "error rows": str(int((rows["status"] == "error").sum())),
    }


def _first(rows: pd.DataFrame, column: str) -> str:
    values = [v for v in rows[column] if v] if len(rows) else []
    return values[0] if values else "?"


def error_rows(data: ReportData) -> pd.DataFrame:
    """Every error row (dataset problems included), with its run, entry and message."""
    cols = ["run_index", "entry", "round", "group", "target", "error"]
    return data.targets.loc[data.targets["status"] == "error", cols].reset_index(drop=True)


def ok_rows(data: ReportData, region: str | None = None) -> pd.DataFrame:
    """The scored rows of one region (the main one by default)."""
    t = data.targets
    return t[(t["status"] == "ok") & (t["region"] == (region or data.region))]


def worst_targets(data: ReportData, entry_id: str, n: int, metric: str = "SAD") -> pd.DataFrame:
    """The ``n`` targets of an entry with the largest ``metric`` (main region), each once, in its worst round."""
    rows = ok_rows(data)
    rows = rows[(rows["entry"] == entry_id) & rows[metric].notna()]
    rows = rows.sort_values([metric, "group", "target", "round"], ascending=[False, True, True, True], kind="stable")
    return rows.drop_duplicates(["dataset", "target"]).head(n)


def disagreements(data: ReportData, n: int, metric: str = "SAD") -> pd.DataFrame:
    """The ``n`` (dataset, round, group, target) where entries' ``metric`` spread most (max − min), among
    targets scored by two entries or more; one row per target with its spread."""
    rows = ok_rows(data)
    rows = rows[rows[metric].notna()]
    if rows["entry"].nunique() < 2:
        return pd.DataFrame(columns=["dataset", "round", "group", "target", "spread", "entries"])
    g = rows.groupby(["dataset", "round", "group", "target"])[metric]
    out = pd.DataFrame({"spread": g.max() - g.min(), "entries": g.size()}).reset_index()
    out = out[out["entries"] >= 2]
    return out.sort_values(["spread", "group", "target"], ascending=[False, True, True], kind="stable").head(n)


def group_matrix(data: ReportData, metric: str = "SAD") -> pd.DataFrame:
    """Rows (dataset, group), one column per entry: the group's mean over rounds of ``metric`` (main region)."""
    bg = data.by_group
    bg = bg[bg["region"] == data.region] if len(bg) else bg
    if bg.empty:
        return pd.DataFrame(columns=["dataset", "group"])
    table = bg.pivot_table(index=["dataset", "group"], columns="entry", values=COLUMNS[metric], aggfunc="first")
    return table.reindex(columns=[e.id for e in data.entries if e.id in table.columns]).reset_index()


def finite(x: Any) -> bool:
    try:
        return bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False
