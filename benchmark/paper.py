"""The In-Context Matting paper's numbers (Tables 2–8) as package data, and measured rows beside them.

``paper_tables.json`` (next to this module) holds one record per (table, method or configuration
row, dataset, prompt / guidance setting), transcribed from the paper: units as printed (MSE raw;
SAD, Grad and Conn divided by 1000); a cell that is not readable in the source (``?``) or not
reported (``–``) is ``null``, never invented; every record has ``source = "quoted"``. Quoted rows
are facts to compare with, never averaged with measured ones.

Usage: ``python -m benchmark.paper [TABLE] [RUN_DIR ...]`` (``TABLE``: ``4``, ``"Table 4"``, ``T4``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from benchmark.scoring import METRIC_COLUMNS, METRIC_UNITS

METRICS = ("MSE", "SAD", "Grad", "Conn")  # the paper's column order
UNITS = METRIC_UNITS
BOARD_COLUMNS = METRIC_COLUMNS
GUIDANCE_KINDS = ("in_context", "per_image", "trimap", "mask", "none")
#: Tables whose rows compare methods under the paper's main setting (the rest are ablations and studies).
COMPARISON_TABLES = ("Table 2", "Table 3", "Table 4")
#: Spellings of a guidance value (leaderboard or method info) → the normalised kind.
_GUIDANCE_ALIASES = {"in_context": "in_context", "in-context": "in_context", "group": "in_context",
                     "per_image": "per_image", "per-image": "per_image", "prompt": "per_image",
                     "trimap": "trimap", "mask": "mask", "none": "none", "auto": "none"}
_BOARD_KEYS = ("method", "dataset", "prompt", "protocol", "resolution", "metric_protocol", "region")


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    return json.loads(resources.files("benchmark").joinpath("paper_tables.json").read_text(encoding="utf-8"))


def paper_data() -> dict[str, Any]:
    """The whole data file: ``units``, ``protocol`` (quoted sentences), ``protocol_notes``, ``tables``, ``rows``."""
    return json.loads(json.dumps(_load()))  # a copy: callers may change it


def tables() -> list[str]:
    """The tables held, in paper order: ``["Table 2", …, "Table 8"]``."""
    return [t["table"] for t in _load()["tables"]]


def table_info(table: str) -> dict[str, Any]:
    """Title, part (main paper / supplement), datasets, metrics and note of one table."""
    name = normalize_table(table)
    return dict(next(t for t in _load()["tables"] if t["table"] == name))


def protocol() -> list[str]:
    """The paper's protocol sentences, verbatim."""
    return list(_load()["protocol"])


def normalize_table(table: str | int) -> str:
    """``4``, ``"4"``, ``"T4"``, ``"table 4"``, ``"Table4"`` → ``"Table 4"`` (``ValueError`` if not held)."""
    m = re.fullmatch(r"\s*(?:t(?:able)?\s*)?(\d+)\s*", str(table), flags=re.IGNORECASE)
    name = f"Table {int(m.group(1))}" if m else str(table)
    if name not in tables():
        raise ValueError(f"no such table {table!r}; held: {', '.join(tables())}")
    return name


def normalize_guidance(value: object) -> str:
    """A guidance value as a kind in :data:`GUIDANCE_KINDS`; missing or empty means ``in_context``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return "in_context"
    kind = _GUIDANCE_ALIASES.get(str(value).strip().lower())
    if kind is None:
        raise ValueError(f"unknown guidance {value!r} (expected one of {', '.join(GUIDANCE_KINDS)})")
    return kind


def quoted_rows(dataset: str | None = None, prompt: str | None = None, guidance_kind: str | None = None,
                table: str | int | None = None) -> list[dict[str, Any]]:
    """The quoted records (copies), filtered on each argument that is given, in paper order."""
    name = normalize_table(table) if table is not None else None
    kind = normalize_guidance(guidance_kind) if guidance_kind is not None else None
    return [dict(r) for r in _load()["rows"]
            if (name is None or r["table"] == name) and (dataset is None or r["dataset"] == dataset)
            and (prompt is None or r["prompt"] == prompt) and (kind is None or r["guidance_kind"] == kind)]


# ----------------------------------------------------------------- matching measured rows
def _board_references(row: Mapping[str, Any]) -> int | None:
    value = row.get("references")
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def matches(quoted: Mapping[str, Any], board_row: Mapping[str, Any], *, need_references: bool = False) -> bool:
    """Whether a quoted record and a measured leaderboard row share dataset, prompt and guidance kind.

    A quoted record without a prompt (an auxiliary-input or automatic model) matches any prompt.
    A measured row without a ``guidance`` column counts as ``in_context``. A quoted record that fixes
    ``references`` (Table 6) matches only a row with the same ``references`` column when
    ``need_references``; otherwise a row without that column is not checked on it.
    """
    if quoted["dataset"] != board_row.get("dataset"):
        return False
    if quoted["prompt"] is not None and quoted["prompt"] != board_row.get("prompt"):
        return False
    try:
        if quoted["guidance_kind"] != normalize_guidance(board_row.get("guidance")):
            return False
    except ValueError:
        return False
    if quoted.get("references") is not None:
        refs = _board_references(board_row)
        if refs is None:
            return not need_references
        return refs == quoted["references"]
    return True


def _whole(board: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in board if r.get("region", "whole") == "whole"]


def missing_reasons(quoted: Mapping[str, Any]) -> dict[str, str]:
    """Why each null metric of a quoted record is null: ``"?"`` (not readable in the source), ``"–"``
    (not reported) or ``""`` (not a column of that table)."""
    out = {}
    for m in METRICS:
        if quoted[m] is None:
            out[m] = "–" if m in quoted.get("not_reported", ()) else "" if m in quoted.get("not_in_table", ()) else "?"
    return out


def as_board_row(quoted: Mapping[str, Any]) -> dict[str, Any]:
    """A quoted record shaped like a leaderboard row (no std, counts or run settings: the paper has none)."""
    row: dict[str, Any] = {k: None for k in _BOARD_KEYS}
    row.update(method=quoted["method"], dataset=quoted["dataset"], prompt=quoted["prompt"], region="whole")
    for m in METRICS:
        row[BOARD_COLUMNS[m]] = quoted[m]
        row[f"{m} std"] = None
    row.update({"rounds": None, "groups": None, "targets": None, "errors": None, "complete": None,
                "guidance": quoted["guidance_kind"], "references": quoted.get("references"),
                "configuration": quoted.get("configuration"), "note": quoted.get("note"),
                "missing": missing_reasons(quoted), "source": f"quoted ({quoted['table']})"})
    return row


def quoted_for(board_rows: Iterable[Mapping[str, Any]], *, ablations: bool = False) -> list[dict[str, Any]]:
    """The quoted rows that match the dataset, prompt and guidance of any measured (``whole``) row,
    each once, shaped like a leaderboard row with ``source = "quoted (Table N)"``.

    By default only the comparison tables (2–4) and, for a row that states its ``references``, the
    matching Table 6 row; ``ablations=True`` adds the ablation and supplement tables (5–8). A record
    without any number (all ``?`` or ``–``) has nothing to compare and is left out.
    """
    board = _whole(board_rows)
    out = []
    for q in _load()["rows"]:
        if not ablations and q["table"] not in COMPARISON_TABLES and q.get("references") is None:
            continue
        if all(q[m] is None for m in METRICS):
            continue
        if any(matches(q, b, need_references=not ablations) for b in board):
            out.append(as_board_row(q))
    return out


# ----------------------------------------------------------------- the printed table
HEAD = ("source", "method", "configuration", "dataset", "prompt", "guidance", "references",
        *(BOARD_COLUMNS[m] for m in METRICS), "note")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _quoted_cell(rec: Mapping[str, Any], m: str) -> str:
    v = rec[m]
    if _is_number(v):
        return f"{v:.4f}" if m == "MSE" else f"{v:.2f}"
    return missing_reasons(rec)[m]


def _measured_cell(row: Mapping[str, Any], m: str) -> str:
    mean, std = row.get(BOARD_COLUMNS[m]), row.get(f"{m} std")
    fmt = ".5f" if m == "MSE" else ".3f"
    if not _is_number(mean):
        return ""
    return f"{mean:{fmt}} ± {std:{fmt}}" if _is_number(std) else f"{mean:{fmt}}"


def _text(x: object) -> str:
    return "" if x is None else str(x).replace("|", "\\|").replace("\n", " ")


def _quoted_line(rec: Mapping[str, Any]) -> list[str]:
    return [f"quoted ({rec['table']})", rec["method"], _text(rec.get("configuration")), rec["dataset"],
            _text(rec["prompt"]) or "—", _text(rec["guidance"] or rec["guidance_kind"]), _text(rec.get("references")),
            *(_quoted_cell(rec, m) for m in METRICS), _text(rec.get("note"))]


def _measured_line(row: Mapping[str, Any]) -> list[str]:
    return ["measured", _text(row.get("method")), "", _text(row.get("dataset")), _text(row.get("prompt")),
            _safe_kind(row) or _text(row.get("guidance")), _text(row.get("references")),
            *(_measured_cell(row, m) for m in METRICS),
            "incomplete run" if row.get("complete") in (0, "0", False) else ""]


def _markdown(lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + "\n"


def render(table: str | int | None = None, board: Sequence[Mapping[str, Any]] = ()) -> str:
    """Markdown: per table its quoted rows, then the measured (``whole``) rows that match any of them;
    measured rows matching no quoted row of the tables shown are listed last."""
    names = [normalize_table(table)] if table is not None else tables()
    measured = _whole(board)
    shown: set[int] = set()
    parts = []
    for name in names:
        info = table_info(name)
        recs = quoted_rows(table=name)
        lines = [_quoted_line(r) for r in recs]
        for i, row in enumerate(measured):
            if any(matches(q, row) for q in recs):
                lines.append(_measured_line(row))
                shown.add(i)
        parts.append(f"## {name} ({info['part']}) — {info['title']}\n\n" + _markdown(lines)
                     + (f"\n{info['note']}\n" if info.get("note") else ""))
    rest = [_measured_line(r) for i, r in enumerate(measured) if i not in shown]
    if rest:
        parts.append("## Measured rows without a quoted counterpart in the tables shown\n\n" + _markdown(rest))
    header = ("Units: MSE raw; SAD, Grad, Conn /1000. '?': not readable in the source; '–': not reported; "
              "blank: not a column of that table. Quoted rows are the paper's; measured rows are mean ± std "
              "over rounds, never averaged with quoted ones.\n")
    return header + "\n" + "\n".join(parts)


def _safe_kind(row: Mapping[str, Any]) -> str | None:
    try:
        return normalize_guidance(row.get("guidance"))
    except ValueError:
        return None


def _read_board(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    from benchmark.leaderboard import leaderboard  # lazy: the quoted data needs nothing else

    return [dict(r) for r in leaderboard(run_dirs)]


def _split_args(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """The optional leading TABLE and the run folders (an existing folder is never taken for a table)."""
    if items and not Path(items[0]).is_dir():
        try:
            return normalize_table(items[0]), list(items[1:])
        except ValueError:
            if re.fullmatch(r"\s*(?:t(?:able)?\s*)?\d+\s*", items[0], flags=re.IGNORECASE):
                raise
    return None, list(items)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.paper",
        usage="%(prog)s [-h] [--json] [TABLE] [RUN_DIR ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the In-Context Matting paper's quoted numbers (Tables 2-8) as Markdown and, given run\n"
                    "folders, the measured leaderboard rows (region 'whole') beside the quoted rows with the same\n"
                    "dataset, prompt and guidance. Every row is marked 'measured' or 'quoted (Table N)'; quoted\n"
                    "and measured rows are never averaged together.",
        epilog="Units as the paper prints them: MSE raw (mean squared error of alpha in [0, 1]);\n"
               "SAD, Grad and Conn divided by 1000.\n"
               "'?' marks a cell that is not readable in the source (stored as null, never invented);\n"
               "'–' a cell the paper does not report; a blank metric, not a column of that table.\n"
               f"Tables: {', '.join(tables())}.")
    parser.add_argument("items", nargs="*", metavar="TABLE_OR_RUN_DIR",
                        help="optional table ('4', 'Table 4', 'T4'; default: all), then run folders to read "
                             "measured rows from")
    parser.add_argument("--json", action="store_true", help="print the selected quoted records as JSON instead")
    args = parser.parse_args(argv)
    try:
        table, run_dirs = _split_args(args.items)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(quoted_rows(table=table), indent=2, ensure_ascii=False) + "\n")
        return 0
    board: list[dict[str, Any]] = []
    if run_dirs:
        from benchmark.leaderboard import LeaderboardError
        from benchmark.rundir import RunDirError

        try:
            board = _read_board(run_dirs)
        except (RunDirError, LeaderboardError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    sys.stdout.write(render(table, board))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
