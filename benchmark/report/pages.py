"""The report's table pages: the leaderboard (index), the groups overview, the plots and the run facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.leaderboard import BOARD_KEYS, COLUMNS, _cell
from benchmark.report.data import RANK_PREFIX, ReportData, Run, error_rows, finite, group_matrix
from benchmark.report.html import Cell, esc, link, page, table
from benchmark.report.plots import Plot
from benchmark.scoring import METRIC_NAMES

KEY_NAMES = {"references": "k", "metric_protocol": "metric protocol"}


def _varying(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The keys whose values differ between rows (shown as columns) and the others with their one value."""
    shown, same = [], {}
    for k in keys:
        values = {str(r.get(k) if r.get(k) is not None else "") for r in rows}
        if len(values) > 1:
            shown.append(k)
        else:
            same[k] = values.pop() if values else ""
    return shown, same


def _best(board: pd.DataFrame, column: str) -> set[int]:
    """Row positions holding the lowest value of ``column`` within their dataset and region."""
    values = pd.to_numeric(board[column], errors="coerce")
    best = values.groupby([board["dataset"], board["region"]]).transform("min")
    return {i for i, (v, b) in enumerate(zip(values, best, strict=True)) if finite(v) and v == b}


def _measured_rows(data: ReportData, prefix: str, keys: list[str], ranks: bool) -> list[list[Cell]]:
    board = data.board
    best = {m: _best(board, prefix + COLUMNS[m]) for m in METRIC_NAMES} if len(board) else {}
    out = []
    for i, row in enumerate(board.to_dict("records")):
        entry = data.entry(row["entry"]) if row["entry"] else None
        cells = [Cell("measured")] if data.quoted else []
        runs = data.runs_of(entry.id) if entry else []
        cells.append(Cell(row["method"], href=f"runs.html#run{runs[0].index}" if runs else None,
                          title=entry.label if entry else None))
        cells += [Cell(row[k]) for k in keys]
        for m in METRIC_NAMES:
            mean, std = row[prefix + COLUMNS[m]], row[f"{prefix}{m} std"]
            text = _cell(float(mean) if mean else float("nan"), float(std) if std else float("nan"), m)
            cells.append(Cell(text, mean, "num best" if i in best[m] else "num"))
        if ranks:
            cells += [_rank(row.get(RANK_PREFIX + m)) for m in METRIC_NAMES]
            cells += [Cell(row[k], row[k], "num") for k in ("rounds", "groups", "targets")]
            errors = int(row["errors"] or 0)
            cells.append(Cell(str(errors), str(errors), "num bad" if errors else "num",
                              href="runs.html#errors" if errors else None))
            done = row["complete"] == "1"
            cells.append(Cell("yes" if done else "no", row["complete"], "good" if done else "bad"))
        out.append(cells)
    return out


def _rank(value: object) -> Cell:
    return Cell(f"{float(value):.2f}", repr(float(value)), "num") if finite(value) else Cell("", "", "num")


def _quoted_rows(data: ReportData, keys: list[str], ranks: bool) -> list[list[Cell]]:
    out = []
    for row in data.quoted:
        cells = [Cell(str(row["source"])), Cell(str(row["method"]), title=str(row.get("note") or ""))]
        cells += [Cell("" if row.get(k) is None else str(row[k])) for k in keys]
        for m in METRIC_NAMES:
            v = row.get(COLUMNS[m])
            text = _cell(float(v) if finite(v) else float("nan"), None, m, str(row["missing"].get(m, "?")))
            cells.append(Cell(text, repr(float(v)) if finite(v) else "", "num"))
        if ranks:
            cells += [Cell("", "", "num") for _ in range(4 + 5)]
        out.append(cells)
    return out


def leaderboard_table(data: ReportData, weighting: str, ranks: bool = True, table_id: str = "leaderboard") -> str:
    prefix = "image-weighted " if weighting == "image" else ""
    rows = [*data.board.to_dict("records"), *data.quoted]
    keys, same = _varying(rows, BOARD_KEYS[1:])
    heads = [("source", "source")] if data.quoted else []
    heads += [("method", "method"), *((k, KEY_NAMES.get(k, k)) for k in keys)]
    heads += [(m, prefix + COLUMNS[m]) for m in METRIC_NAMES]
    if ranks:
        heads += [(f"rank-{m}", f"avg rank {m}") for m in METRIC_NAMES]
        heads += [(k, k) for k in ("rounds", "groups", "targets", "errors", "complete")]
    body = _measured_rows(data, prefix, keys, ranks) + _quoted_rows(data, keys, ranks)
    caption = "All rows: " + ", ".join(f"{KEY_NAMES.get(k, k)} {v}" for k, v in same.items() if v) if same else ""
    html = table(heads, body, table_id, caption)
    return html.replace("<tr><td>quoted", '<tr class="quoted"><td>quoted')


def index_page(data: ReportData, weighting: str) -> str:
    other = "image" if weighting == "group" else "group"
    words = {"group": "every group weighs the same: the mean over a group's targets, then over groups",
             "image": "every image weighs the same: the mean over all targets of a round"}
    groups = data.targets.loc[data.targets["status"] == "ok", ["dataset", "group"]].drop_duplicates()
    summary = (f"{len(data.runs)} run folder(s), {len(data.entries)} method setting(s), {len(groups)} group(s), "
               f"{int((data.targets['status'] == 'ok').sum())} scored rows, "
               f"{int((data.targets['status'] == 'error').sum())} error rows.")
    body = f"""
<p class="note">{esc(summary)} Download: <a href="leaderboard.csv">leaderboard.csv</a> (both weightings,
full precision; the numbers below are formatted from it).</p>
<h2>{esc(weighting.capitalize())}-weighted means</h2>
<p class="note">{esc(words[weighting])}; mean ± std (population) over rounds. Units: SAD, Grad and Conn /1000,
MSE raw. Lower is better; the best value per dataset and region is bold. <b>avg rank</b>: each method's rank among
the methods scored on a group (1 = best, ties share), averaged over groups, per metric (as alphamatting.com
ranks methods per image). <b>complete</b>: every shard present, every planned target scored, no error row.
Click a column head to sort{'; quoted rows are the paper’s numbers, never part of a mean' if data.quoted else ''}.</p>
{leaderboard_table(data, weighting)}
<h2>{esc(other.capitalize())}-weighted means</h2>
<p class="note">{esc(words[other])}; mean ± std over rounds.</p>
{leaderboard_table(data, other, ranks=False, table_id="other-weighting")}
"""
    return page("Leaderboard", body, "", "index.html", "Merged over the run folders given (shards merge into one row)")


def groups_page(data: ReportData, files: Mapping[tuple[str, str], str]) -> str:
    matrix = group_matrix(data)
    many = matrix["dataset"].nunique() > 1 if len(matrix) else False
    entries = [e for e in data.entries if e.id in matrix.columns]
    heads = [("group", "group"), *([("dataset", "dataset")] if many else []),
             *((e.id, f"{e.label}: {COLUMNS['SAD']}") for e in entries), ("best", "best")]
    rows = []
    for r in matrix.to_dict("records"):
        values = {e.id: r[e.id] for e in entries if finite(r[e.id])}
        best = min(values, key=values.get) if values else None
        href = files.get((r["dataset"], r["group"]))
        cells = [Cell(r["group"], href=esc(href) if href else None), *([Cell(r["dataset"])] if many else [])]
        cells += [Cell(f"{float(r[e.id]):.3f}", repr(float(r[e.id])), "num best" if e.id == best else "num")
                  if e.id in values else Cell("", "", "num") for e in entries]
        cells.append(Cell(data.entry(best).label if best else ""))
        rows.append(cells)
    listed = set(zip(matrix["dataset"], matrix["group"], strict=True)) if len(matrix) else set()
    unscored = "".join(f'<li><a href="{esc(f)}">{esc(k[1])}</a></li>' for k, f in sorted(files.items())
                       if k not in listed)
    body = (f'<p class="note">Each group\'s SAD (mean over its targets, then over rounds; region {esc(data.region)}) '
            f"per method; the best is bold. Open a group for every target's prediction and error map.</p>"
            + table(heads, rows, "groups")
            + (f"<h2>Groups without a score</h2><ul>{unscored}</ul>" if unscored else ""))
    return page("Groups", body, "", "groups.html")


def plots_page(plots: Sequence[Plot]) -> str:
    figs = "".join(f'<figure><h2>{esc(p.title)}</h2><img src="{esc(p.file)}" alt="{esc(p.title)}">'
                   f'<figcaption class="note">{esc(p.caption)}</figcaption></figure>' for p in plots)
    return page("Plots", f'<div class="plots">{figs or "<p>No scored rows to plot.</p>"}</div>', "", "plots.html")


def _listing(title: str, items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return ""
    lis = "".join("<li>" + esc(" · ".join(f"{k}: {v}" for k, v in i.items())) + "</li>" for i in items)
    return f"<details><summary>{esc(title)} ({len(items)})</summary><ul>{lis}</ul></details>"


def _run_head(data: ReportData, run: Run, out: Path) -> str:
    entry = data.entry(run.entry) if run.entry else None
    swatch = f'<span class="swatch" style="background:{esc(entry.colour)}"></span>' if entry else ""
    files = [(p, p.name) for p in (run.rd.run_json, run.rd.results_csv, run.rd.log_file) if p.is_file()]
    links = " · ".join(f'<a href="{link(p, out)}">{esc(name)}</a>' for p, name in files)
    return (f'<th id="run{run.index}">{swatch}{esc(entry.label if entry else "(no result rows)")}<br>'
            f'<span class="note">{esc(run.rd.root.name)}</span><br>{links}</th>')


def facts_table(data: ReportData, runs: Sequence[Run], out: Path) -> str:
    """One column per run folder, one row per fact; facts that differ between runs are marked."""
    names = list(dict.fromkeys(k for r in runs for k in r.facts))
    rows = []
    for name in names:
        values = [r.facts.get(name, "") for r in runs]
        cls = ' class="differs"' if len(set(values)) > 1 and name not in ("folder",) else ""
        rows.append(f"<tr{cls}><td>{esc(name)}</td>" + "".join(f"<td>{esc(v)}</td>" for v in values) + "</tr>")
    heads = "<th></th>" + "".join(_run_head(data, r, out) for r in runs)
    return (f'<div class="scroll"><table class="facts"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _lists(data: ReportData, run: Run) -> str:
    body = _listing("skipped groups", run.plan.skipped_groups) + _listing("dataset problems", run.plan.dataset_problems)
    entry = data.entry(run.entry).label if run.entry else "(no result rows)"
    return f"<h3>{esc(entry)} · {esc(run.rd.root.name)}</h3>{body}" if body else ""


def runs_page(data: ReportData, out: Path) -> str:
    order = sorted(data.runs, key=lambda r: (r.entry is None, r.entry or "", r.index))
    parts = ['<p class="note">Rows that differ between the runs are highlighted. Each folder links to its '
             "run.json, results.csv and run.log.</p>", facts_table(data, order, out)]
    lists = "".join(_lists(data, r) for r in order)
    none = '<p class="note">none</p>'
    parts.append(f"<h2>Skipped groups and dataset problems</h2>{lists or none}")
    errors = error_rows(data)
    parts.append(f'<h2 id="errors">Error rows ({len(errors)})</h2>')
    if len(errors):
        rows = [[Cell(data.entry(r["entry"]).label), _round(r["round"]), Cell(r["group"]), Cell(r["target"]),
                 Cell(r["error"], cls="msg")] for r in errors.to_dict("records")]
        parts.append(table([("method", "method"), ("round", "round"), ("group", "group"), ("target", "target"),
                            ("error", "error")], rows, "errors-table"))
    else:
        parts.append(none)
    return page("Runs", "\n".join(parts), "", "runs.html",
                "Each run folder's identity and settings, skipped groups, dataset problems and error rows")


def _round(value: int) -> Cell:
    """A round; dataset-problem rows belong to none (-1)."""
    return Cell(str(value) if value >= 0 else "", str(value), "num")
