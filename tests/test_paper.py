"""The paper's quoted tables: the data against the transcription doc, the API's filters and the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmark import paper
from tests.conftest import SHARED

DOC = SHARED / "docs" / "paper-tables.md"
REPO = Path(__file__).resolve().parents[1]
DOC_DATASETS = {"ICM-57": "icm57", "AIM-500": "aim500"}
MEASURED_MASK = {"method": "constant", "dataset": "icm57", "prompt": "mask", "protocol": "paper",
                 "resolution": "original", "metric_protocol": "dim", "region": "whole",
                 "SAD (/1000)": 21.5, "SAD std": 0.25, "MSE (raw)": 0.0123, "MSE std": 0.0,
                 "Grad (/1000)": 1.0, "Grad std": 0.0, "Conn (/1000)": 2.0, "Conn std": 0.0,
                 "rounds": 3, "groups": 2, "targets": 4, "errors": 0, "complete": 1}


def doc_text() -> str:
    if not DOC.is_file():
        pytest.skip(f"transcription doc not found at {DOC}")
    return DOC.read_text(encoding="utf-8")


def doc_tables(text: str) -> dict[str, list[dict]]:
    """``{"Table N": [row, …]}`` for every Markdown table under a ``## Table N`` heading. Each row:
    ``label`` (first cell), ``keys`` (the other non-metric cells by header) and ``cells``, a list of
    ``(context, metric, cell)``; a metric header like ``ICM-57 MSE`` sets a context (dataset or prompt)
    that the bare ones after it (``SAD``) keep."""
    lines: dict[str, list[list[str]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("##"):
            heading = re.match(r"##\s+(Table \d+)\b", line)
            current = heading.group(1) if heading else None
            if current:
                lines[current] = []
        elif current and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                lines[current].append(cells)
    parsed: dict[str, list[dict]] = {}
    for table, (head, *rows) in lines.items():
        columns, context = [], None
        for h in head:
            *prefix, last = h.split()
            if last in paper.METRICS:
                context = " ".join(prefix) or context
                columns.append((context, last))
            else:
                columns.append((None, h))
        parsed[table] = [
            {"label": row[0],
             "keys": {col: cell for (ctx, col), cell in zip(columns[1:], row[1:], strict=True)
                      if col not in paper.METRICS},
             "cells": [(ctx, col, cell) for (ctx, col), cell in zip(columns, row, strict=True)
                       if col in paper.METRICS]}
            for row in rows]
    return parsed


def record_for(table: str, label: str, context: str | None) -> dict:
    recs = [r for r in paper.quoted_rows(table=table) if r["row"] == label]
    if context in DOC_DATASETS:
        recs = [r for r in recs if r["dataset"] == DOC_DATASETS[context]]
    elif context is not None:
        recs = [r for r in recs if r["prompt"] == context]
    assert len(recs) == 1, (table, label, context, recs)
    return recs[0]


# ----------------------------------------------------------------- the data against the doc
def test_every_table_of_the_doc_is_held():
    assert set(doc_tables(doc_text())) == set(paper.tables())
    assert paper.tables() == [f"Table {n}" for n in range(2, 9)]


def test_every_cell_matches_the_doc():
    """Cell by cell: numbers equal, '?' null and unreadable, '–' null and not reported, the guidance and
    configuration columns as printed; and no record or metric in the data that the doc lacks."""
    compared = set()
    for table, rows in doc_tables(doc_text()).items():
        for row in rows:
            recs = [r for r in paper.quoted_rows(table=table) if r["row"] == row["label"]]
            assert recs, (table, row["label"])
            for col, cell in row["keys"].items():
                assert col in ("guidance", "configuration"), (table, col)  # a column the data does not hold
                assert all(r[col] == cell for r in recs), (table, row["label"], col)
            for context, col, cell in row["cells"]:
                rec = record_for(table, row["label"], context)
                compared.add((table, rec["row"], rec["dataset"], rec["prompt"], col))
                where = (table, row["label"], context, col, rec[col], cell)
                if cell == "?":
                    assert rec[col] is None and col in rec["unreadable"], where
                elif cell == "–":
                    assert rec[col] is None and col in rec["not_reported"], where
                else:
                    assert rec[col] == float(cell), where
                    assert col not in rec["unreadable"] + rec["not_reported"] + rec["not_in_table"], where
    held = {(r["table"], r["row"], r["dataset"], r["prompt"], m)
            for r in paper.quoted_rows() for m in paper.METRICS if m not in r["not_in_table"]}
    assert held == compared


def test_unknown_cells_are_null_and_never_invented():
    n_unknown = sum(cell == "?" for rows in doc_tables(doc_text()).values() for row in rows
                    for _, _, cell in row["cells"])
    assert n_unknown == sum(len(r["unreadable"]) for r in paper.quoted_rows()) == 4  # MGMiW on AIM-500
    for r in paper.quoted_rows():
        for m in paper.METRICS:
            if r[m] is None:
                assert (m in r["unreadable"]) + (m in r["not_reported"]) + (m in r["not_in_table"]) == 1, (r, m)
            else:
                assert isinstance(r[m], float) and r[m] >= 0


def test_protocol_quotes_are_verbatim_from_the_doc():
    flat = " ".join(doc_text().split())
    quotes = paper.protocol()
    assert len(quotes) == 2
    for q in quotes:
        assert f'"{q}"' in flat
    notes = paper.paper_data()["protocol_notes"]
    assert any("DINOv2" in n and "ViTMatte" in n for n in notes)
    assert any("never released" in n for n in notes)


# ----------------------------------------------------------------- spot checks (no doc needed)
def test_spot_values():
    (seggpt,) = paper.quoted_rows(table="Table 2", dataset="icm57", prompt="mask", guidance_kind="in_context")[:1]
    assert seggpt["method"] == "SegGPT" and seggpt["SAD"] == 38.81 and seggpt["MSE"] == 0.0198
    (mam,) = [r for r in paper.quoted_rows(table=4, prompt="scribble") if r["method"] == "MAM"]
    assert mam["MSE"] == 0.0141 and mam["SAD"] == 40.23 and mam["guidance_kind"] == "per_image"
    assert mam["Grad"] is None and mam["not_in_table"] == ["Grad", "Conn"]
    (t6,) = [r for r in paper.quoted_rows(table="Table 6") if r["references"] == 3]
    assert (t6["MSE"], t6["SAD"], t6["Grad"], t6["Conn"]) == (0.0070, 15.48, 17.56, 10.56)
    vit = paper.quoted_rows(table="T3", guidance_kind="trimap")
    assert [(r["method"], r["dataset"], r["SAD"]) for r in vit] == [("ViTMatte", "icm57", 16.16),
                                                                    ("ViTMatte", "aim500", 18.79)]
    assert all(r["source"] == "quoted" and r["table"] in paper.tables() for r in paper.quoted_rows())


def test_notes_keep_the_docs_doubts():
    mgmiw = paper.quoted_rows(table="Table 3", guidance_kind="mask")
    icm, aim = [r for r in mgmiw if r["method"] == "MGMiW"]
    assert icm["dataset"] == "icm57" and icm["SAD"] == 16.72 and "dataset" in icm["assumed"]
    assert "not readable" in icm["note"] and aim["MSE"] is None
    (star,) = [r for r in paper.quoted_rows(table=4, prompt="mask") if r["method"] == "IconMatting*"]
    assert star["SAD"] == 15.28 and "equals its points SAD" in star["note"]
    icmp = [r for r in paper.quoted_rows(table=4) if r["method"] == "ICMP"]
    assert [r["prompt"] for r in icmp if r["not_reported"] == ["MSE", "SAD"]] == ["scribble", "mask"]
    t8 = {r["timestep"]: r for r in paper.quoted_rows(table=8)}
    assert t8[300]["MSE"] == 0.089 and "0.0089" in t8[300]["note"] and t8[400]["MSE"] == 0.098
    t5 = paper.quoted_rows(table=5)
    assert [r["configuration"] for r in t5][:3] == ["full", "w/o INTRA", "w/o INTER and INTRA"]
    assert all("?" in r["configuration"] for r in t5[3:])
    assert "check marks" in paper.table_info("Table 5")["note"]


def test_units_and_kinds():
    data = paper.paper_data()
    assert data["units"] == {"MSE": "raw", "SAD": "/1000", "Grad": "/1000", "Conn": "/1000"}
    for r in data["rows"]:
        assert r["guidance_kind"] in paper.GUIDANCE_KINDS
        assert r["prompt"] in (None, "mask", "scribble", "points")
        assert r["MSE"] is None or r["MSE"] < 0.1  # raw MSE, as printed
    assert {r["prompt"] for r in paper.quoted_rows(table=2)} | {
        r["prompt"] for r in paper.quoted_rows(table=3) if r["method"] == "IconMatting"} == {"mask"}


def test_filters():
    assert len(paper.quoted_rows()) == len(paper.paper_data()["rows"])
    assert {r["table"] for r in paper.quoted_rows(dataset="aim500")} == {"Table 2", "Table 3"}
    assert all(r["prompt"] == "points" for r in paper.quoted_rows(prompt="points"))
    assert {r["method"] for r in paper.quoted_rows(guidance_kind="none")} == {"LF", "AIM"}
    assert {r["method"] for r in paper.quoted_rows(guidance_kind="per_image")} == {"MatAny", "MAM", "IconMatting*"}
    assert paper.quoted_rows(table=4) == paper.quoted_rows(table="Table 4") == paper.quoted_rows(table="t4")
    assert paper.quoted_rows(dataset="icm57", table=2, prompt="scribble") == []
    with pytest.raises(ValueError, match="no such table"):
        paper.quoted_rows(table=9)
    rows = paper.quoted_rows(table=2)
    rows[0]["SAD"] = -1.0  # copies: the data is not changed
    assert paper.quoted_rows(table=2)[0]["SAD"] == 38.81


def test_package_data_is_shipped():
    assert (REPO / "benchmark" / "paper_tables.json").is_file()
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^benchmark\s*=\s*\[[^\]]*"paper_tables\.json"', section, flags=re.MULTILINE)


# ----------------------------------------------------------------- matching measured rows
def _keys(rows):
    return [(r["source"], r["method"], r["dataset"], r["prompt"]) for r in rows]


def test_quoted_for_matches_dataset_prompt_and_guidance():
    unknown = {**MEASURED_MASK, "region": "unknown", "dataset": "aim500"}  # not 'whole': ignored
    got = paper.quoted_for([MEASURED_MASK, unknown])
    assert _keys(got) == [("quoted (Table 2)", m, "icm57", "mask") for m in ("SegGPT", "SEEM", "IconMatting")] + [
        ("quoted (Table 3)", "IconMatting", "icm57", "mask"), ("quoted (Table 4)", "IconMatting", "icm57", "mask")]
    for row in got:
        assert set(MEASURED_MASK) <= set(row)
        assert row["region"] == "whole" and row["SAD std"] is None and row["MSE std"] is None
    assert got[0]["SAD (/1000)"] == 38.81 and got[0]["MSE (raw)"] == 0.0198 and got[0]["missing"] == {}
    assert got[-1]["Grad (/1000)"] is None and got[-1]["missing"] == {"Grad": "", "Conn": ""}  # Table 4: no column
    assert all(r["guidance"] == "in_context" and r["references"] is None for r in got)
    # Without a guidance column a row counts as in-context; extra columns are fine; matches are listed once.
    no_guidance = {k: v for k, v in MEASURED_MASK.items() if k != "guidance"} | {"weighting": "group"}
    assert _keys(paper.quoted_for([no_guidance, MEASURED_MASK])) == _keys(got)
    per_image = {**MEASURED_MASK, "prompt": "scribble", "guidance": "per_image"}
    assert [r["method"] for r in paper.quoted_for([per_image])] == ["MatAny", "MAM", "IconMatting*"]
    trimap = {**MEASURED_MASK, "dataset": "aim500", "guidance": "trimap"}
    assert _keys(paper.quoted_for([trimap])) == [("quoted (Table 3)", "ViTMatte", "aim500", None)]
    assert paper.quoted_for([{**MEASURED_MASK, "dataset": "folder"}]) == []
    # A record with no number at all (ICMP's '–' cells, MGMiW on AIM-500) has nothing to compare.
    assert paper.quoted_for([{**MEASURED_MASK, "dataset": "aim500", "guidance": "mask"}])[0]["method"] == "MGM"
    assert len(paper.quoted_for([{**MEASURED_MASK, "dataset": "aim500", "guidance": "mask"}])) == 1


def test_quoted_for_references_and_ablations():
    three = {**MEASURED_MASK, "references": 3}
    t6 = [r for r in paper.quoted_for([three]) if r["source"] == "quoted (Table 6)"]
    assert [(r["references"], r["SAD (/1000)"]) for r in t6] == [(3, 15.48)]
    assert not [r for r in paper.quoted_for([MEASURED_MASK]) if r["source"] == "quoted (Table 6)"]
    sources = {r["source"] for r in paper.quoted_for([MEASURED_MASK], ablations=True)}
    assert {"quoted (Table 5)", "quoted (Table 6)", "quoted (Table 8)"} <= sources
    assert "quoted (Table 7)" not in sources  # Composition-1k / RM-1k are not our datasets


def test_render_puts_measured_rows_beside_quoted_ones_without_mixing():
    other = {**MEASURED_MASK, "dataset": "folder", "method": "classical"}
    text = paper.render("Table 2", [MEASURED_MASK, other])
    lines = text.splitlines()
    measured = [ln for ln in lines if ln.startswith("| measured |")]
    assert len(measured) == 2 and "0.01230 ± 0.00000" in measured[0] and "21.500 ± 0.250" in measured[0]
    quoted = [ln for ln in lines if ln.startswith("| quoted (Table 2) |")]
    assert len(quoted) == 6 and any("| 0.0198 | 38.81 | 28.61 | 18.61 |" in ln for ln in quoted)
    assert lines.index(measured[0]) > lines.index(quoted[-1])
    assert "without a quoted counterpart" in text and "| classical |" in measured[1]


# ----------------------------------------------------------------- the command line
def test_cli_prints_quoted_rows(capsys):
    assert paper.main(["4"]) == 0
    out = capsys.readouterr().out
    assert "## Table 4" in out and "## Table 2" not in out
    assert "| quoted (Table 4) | MAM |" in out and "| 0.0141 | 40.23 |" in out and "| – | – |" in out
    assert paper.main([]) == 0
    out = capsys.readouterr().out
    assert all(f"## {t} " in out for t in paper.tables()) and "| measured |" not in out
    assert "| ? | ? | ? | ? |" in out  # MGMiW on AIM-500
    assert paper.main(["Table 9"]) == 2
    assert "no such table" in capsys.readouterr().err
    assert paper.main(["--json", "Table 6"]) == 0
    assert [r["references"] for r in json.loads(capsys.readouterr().out)] == [1, 2, 3, 4]


def test_cli_help_explains_units(capsys):
    with pytest.raises(SystemExit):
        paper.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "MSE raw" in out and "divided by 1000" in out and "'?' marks a cell that is not readable" in out


def icm57_layout(folder: Path, root: Path) -> Path:
    """The ``folder`` fixture's groups laid out as ICM-57 (image/, alpha/, ICM57.json), so runs are named icm57."""
    (root / "image").mkdir(parents=True)
    (root / "alpha").mkdir()
    groups = {}
    for image in sorted(folder.glob("*/image/*.png")):
        group = image.parent.parent.name
        stem = f"{group}_{image.stem}"
        shutil.copy(image, root / "image" / f"{stem}.png")
        shutil.copy(image.parent.parent / "alpha" / image.name, root / "alpha" / f"{stem}.png")
        groups[stem] = {"class": group, "sub_class": "disc", "HalfOrFull": "Full"}
    (root / "ICM57.json").write_text(json.dumps(groups))
    return root


@pytest.mark.filterwarnings("ignore:.*the paper's ICM-57 has 57:UserWarning")  # a 2-group stand-in
def test_cli_with_a_run_folder(folder_dataset, tmp_path, capsys):
    from benchmark.leaderboard import leaderboard
    from benchmark.runner import Runner
    from tests.runner_helpers import compose_config

    root = icm57_layout(folder_dataset, tmp_path / "icm57")
    out = tmp_path / "run"
    Runner(compose_config("method=constant", "dataset=icm57", f"dataset.root={root}", "runner.workers=1",
                          "runner.progress=off", "runner.rounds=1"), out).run()
    board = leaderboard([out])
    (whole,) = [r for r in board if r["region"] == "whole"]
    assert whole["dataset"] == "icm57" and whole["prompt"] == "mask"

    assert paper.main(["2", str(out)]) == 0
    text = capsys.readouterr().out
    measured = [ln for ln in text.splitlines() if ln.startswith("| measured |")]
    assert len(measured) == 1 and "| constant |" in measured[0] and "| icm57 | mask | in_context |" in measured[0]
    assert f"{whole['SAD (/1000)']:.3f}" in measured[0]
    assert "| quoted (Table 2) | SegGPT |" in text and "without a quoted counterpart" not in text

    quoted = paper.quoted_for(board)
    # one reference per episode: Table 6's k = 1 row matches too
    assert {r["source"] for r in quoted} == {"quoted (Table 2)", "quoted (Table 3)", "quoted (Table 4)",
                                             "quoted (Table 6)"}
    assert [r["references"] for r in quoted if r["source"] == "quoted (Table 6)"] == [1]
    assert all(r["dataset"] == "icm57" and r["prompt"] == "mask" for r in quoted)

    assert paper.main(["Table 7", str(out)]) == 0  # no Table 7 row matches: listed apart
    text = capsys.readouterr().out
    assert "without a quoted counterpart" in text and text.count("| measured |") == 1
    assert paper.main([str(tmp_path / "missing-run")]) == 2
