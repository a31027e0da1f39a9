"""``python -m benchmark.report``: built from real run folders (two methods on icm58-dev, a sharded run, a
run with error rows), its pages, links and numbers checked, and opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from benchmark.leaderboard import _cell, leaderboard, to_csv
from benchmark.report.__main__ import main as report_main
from benchmark.report.build import PAGES, build_report
from benchmark.runner import Runner
from benchmark.scoring import METRIC_COLUMNS, METRIC_NAMES
from methods import METHODS
from methods.base import BaseMethod, MethodInfo
from tests.conftest import make_folder_dataset
from tests.runner_helpers import compose_config

FAST = ("runner.workers=1", "runner.progress=off", "runner.rounds=1", "runner.regions=[whole]")
FAILING_TARGET = "plush_toy_03"


class _Flaky(BaseMethod):
    """Pastes the reference mask, but fails on one target (an error row)."""

    info = MethodInfo("flaky", "in_context", frozenset({"mask"}), 1)

    def predict_one(self, target):
        if target.sample_id == FAILING_TARGET:
            raise ValueError("flaky <b>cannot</b> matte & gives up")
        return np.full(target.image.shape[:2], 0.25, np.float32)


def _run(out: Path, *overrides: str, method: dict | None = None) -> Path:
    cfg = compose_config(*FAST, *overrides)
    if method is not None:
        cfg["method"] = method
    Runner(cfg, out).run()
    return out


def _icm(root: Path) -> tuple[str, ...]:
    return ("dataset=icm57", f"dataset.root={root}", f"dataset.groups={root / 'icm58-dev.json'}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, icm58_dev) -> dict[str, Path]:
    """Real run folders: two methods, a run sharded into two folders, a run with an error row."""
    base = tmp_path_factory.mktemp("runs")
    data = _icm(icm58_dev)
    out = {"constant": _run(base / "constant", "method=constant", *data),
           "reference_mask": _run(base / "refmask", "method=reference_mask", *data)}
    for shard in (0, 1):
        out[f"shard{shard}"] = _run(base / f"official{shard}", "method=reference_mask", *data,
                                    "runner.protocol=official", "runner.num_shards=2", f"runner.shard={shard}")
    METHODS._entries["flaky"] = _Flaky
    try:
        out["flaky"] = _run(base / "flaky", "method=constant", *data, method={"name": "flaky"})
    finally:
        del METHODS._entries["flaky"]
    return out


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    build_report(list(runs.values()), out, thumb=96, zoom=160)
    return out


# ----------------------------------------------------------------------------- HTML parsing
class _Page(HTMLParser):
    """Links, images, ids and tables of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []  # (tag, url)
        self.ids: set[str] = set()
        self.tables: dict[str, list[list[tuple[dict, str]]]] = {}
        self.heads: dict[str, list[str]] = {}
        self._table: str | None = None
        self._cell: dict | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if key in a and tag in ("img", "a", "link", "script"):
                self.refs.append((tag, a[key]))
        if tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table], self.heads[self._table] = [], []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell, self._text = a, ""

    def handle_data(self, data):
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            if tag == "th":
                self.heads[self._table].append(self._cell.get("data-key", ""))
            else:
                self.tables[self._table][-1].append((self._cell, self._text.strip()))
            self._cell = None
        elif tag == "table":
            self._table = None


def parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text())
    return p


def html_files(report: Path) -> list[Path]:
    return sorted(report.rglob("*.html"))


# ----------------------------------------------------------------------------- pages and links
def test_every_page_exists_and_every_link_and_image_resolves(report):
    for name in PAGES:
        assert (report / name).is_file(), name
    group_pages = list((report / "groups").glob("*.html"))
    assert len(group_pages) == 11  # icm58-dev's 11 groups (the official protocol scores its 3 singletons too)
    ids = {p.resolve(): parse(p).ids for p in html_files(report)}
    checked = 0
    for page in html_files(report):
        for tag, url in parse(page).refs:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{page.name}: {url} is not a relative link"
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
            assert target.exists(), f"{page.name}: <{tag}> {url} → {target} does not exist"
            if parts.fragment and target.suffix == ".html":
                assert parts.fragment in ids[target], f"{page.name}: no #{parts.fragment} in {target.name}"
            checked += 1
    assert checked > 500
    assert "http://" not in (report / "assets" / "report.js").read_text()
    assert "url(" not in (report / "assets" / "report.css").read_text()  # no fonts or images fetched


def test_leaderboard_page_shows_exactly_the_numbers_of_leaderboard_csv(report, runs):
    import pandas as pd

    csv_text = (report / "leaderboard.csv").read_text()
    assert csv_text == to_csv(leaderboard(list(runs.values())))
    csv = pd.read_csv(report / "leaderboard.csv", dtype=str, keep_default_na=False)
    page = parse(report / "index.html")
    heads, rows = page.heads["leaderboard"], [r for r in page.tables["leaderboard"] if r]
    assert len(rows) == len(csv) == 4  # constant, flaky, reference_mask (paper), reference_mask (official, 2 shards)
    col = {k: heads.index(k) for k in heads}
    for (cells, want) in zip(rows, csv.to_dict("records"), strict=True):
        assert cells[col["method"]][1] == want["method"]
        assert cells[col["protocol"]][1] == want["protocol"]
        for m in METRIC_NAMES:
            attrs, text = cells[col[m]]
            assert attrs["data-value"] == want[METRIC_COLUMNS[m]]
            assert text == _cell(float(want[METRIC_COLUMNS[m]]), float(want[f"{m} std"]), m)
        for k in ("rounds", "groups", "targets", "errors"):
            assert cells[col[k]][1] == want[k], k
        assert cells[col["complete"]][1] == ("yes" if want["complete"] == "1" else "no")
    image = parse(report / "index.html").tables["other-weighting"]
    assert [c[1] for c in image[1]][-4:] == [_cell(float(csv.iloc[0][f"image-weighted {METRIC_COLUMNS[m]}"]),
                                                   float(csv.iloc[0][f"image-weighted {m} std"]), m)
                                             for m in METRIC_NAMES]


def test_a_single_run_report_reproduces_the_run_folders_own_leaderboard(runs, tmp_path):
    build_report([runs["constant"]], tmp_path / "r", thumb=64, zoom=64)
    assert (tmp_path / "r" / "leaderboard.csv").read_bytes() == (runs["constant"] / "leaderboard.csv").read_bytes()


def test_shards_merge_into_one_complete_row_and_both_folders_are_listed(report, runs):
    from tests.runner_helpers import read_rows

    page = parse(report / "index.html")
    heads, rows = page.heads["leaderboard"], page.tables["leaderboard"][1:]
    (merged,) = [r for r in rows if r[heads.index("protocol")][1] == "official"]
    shards = [read_rows(runs[f"shard{i}"] / "results.csv") for i in (0, 1)]
    assert all(shards) and not {r["group"] for r in shards[0]} & {r["group"] for r in shards[1]}
    assert merged[heads.index("complete")][1] == "yes"
    assert merged[heads.index("groups")][1] == str(len({r["group"] for rows in shards for r in rows}))
    assert merged[heads.index("targets")][1] == str(sum(len(rows) for rows in shards))
    text = (report / "runs.html").read_text()
    assert str(runs["shard0"]) in text and str(runs["shard1"]) in text
    assert "0 of 2" in text and "1 of 2" in text


def test_error_rows_are_counted_listed_escaped_and_shown_on_the_group_page(report):
    page = parse(report / "index.html")
    heads, rows = page.heads["leaderboard"], page.tables["leaderboard"][1:]
    (flaky,) = [r for r in rows if r[heads.index("method")][1] == "flaky"]
    assert flaky[heads.index("errors")][1] == "1" and flaky[heads.index("complete")][1] == "no"
    runs_html = (report / "runs.html").read_text()
    assert "flaky &lt;b&gt;cannot&lt;/b&gt; matte &amp; gives up" in runs_html and "<b>cannot" not in runs_html
    errors = parse(report / "runs.html").tables["errors-table"]
    assert [c[1] for c in errors[1]][3] == FAILING_TARGET
    group = next(p for p in html_files(report) if FAILING_TARGET in p.read_text() and "groups" in p.parts)
    assert "&lt;b&gt;cannot" in group.read_text()
    skipped = "statue-None-full"  # a singleton group of icm58-dev
    assert skipped in runs_html


def test_average_ranks_are_per_group_ranks_averaged_over_groups(report, runs):
    from scipy.stats import rankdata

    from tests.runner_helpers import read_rows

    folders = {"constant": ["constant"], "flaky": ["flaky"], "paper": ["reference_mask"],
               "official": ["shard0", "shard1"]}
    sad: dict[str, dict[str, list[float]]] = {}
    for name, keys in folders.items():
        for row in (r for k in keys for r in read_rows(runs[k] / "results.csv") if r["status"] == "ok"):
            sad.setdefault(row["group"], {}).setdefault(name, []).append(float(row["SAD"]))
    ranks: dict[str, list[float]] = {}
    for by_name in sad.values():  # rank the methods scored on each group (1 = lowest mean SAD)
        names = sorted(by_name)
        for name, rank in zip(names, rankdata([np.mean(by_name[n]) for n in names]), strict=True):
            ranks.setdefault(name, []).append(float(rank))
    page = parse(report / "index.html")
    heads, rows = page.heads["leaderboard"], page.tables["leaderboard"][1:]
    shown = {}
    for r in rows:
        method, protocol = r[heads.index("method")][1], r[heads.index("protocol")][1]
        shown[method if method != "reference_mask" else protocol] = r[heads.index("rank-SAD")][1]
    assert shown == {name: f"{np.mean(v):.2f}" for name, v in ranks.items()}
    assert len(set(shown.values())) > 2  # the ranks tell the methods apart


def test_thumbnails_are_small_cached_and_pruned(runs, report, tmp_path):
    out = tmp_path / "r"
    first = build_report([runs["constant"], runs["reference_mask"]], out, thumb=96, zoom=160)
    sizes = [Image.open(p).size for p in (out / "thumbs").iterdir()]
    assert first.thumbs_made == len(sizes) > 0 and max(max(s) for s in sizes) <= 160
    assert sum(max(s) <= 96 for s in sizes) > len(sizes) / 2  # all but the zoomed error maps
    again = build_report([runs["constant"], runs["reference_mask"]], out, thumb=96, zoom=160)
    assert again.thumbs_made == 0 and again.thumbs_reused == first.thumbs_made and again.thumbs_pruned == 0
    fewer = build_report([runs["constant"]], out, thumb=96, zoom=160)
    assert fewer.thumbs_made == 0 and fewer.thumbs_pruned > 0
    assert len(list((out / "thumbs").iterdir())) == first.thumbs_made - fewer.thumbs_pruned
    assert json.loads((out / "report.json").read_text())["run_dirs"] == [str(runs["constant"])]


def test_ids_and_group_names_with_markup_are_escaped_and_linked(tmp_path):
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=2, size=(24, 32))
    (data / "g0").rename(data / 'a<b>&"c d')
    run = _run(tmp_path / "run", "method=constant", "dataset=folder", f"dataset.root={data}")
    out = tmp_path / "r"
    build_report([run], out, thumb=32, zoom=32)
    texts = [p.read_text() for p in html_files(out)]
    assert not any('a<b>&"c' in t for t in texts)
    assert any("a&lt;b&gt;&amp;&quot;c d" in t for t in texts)
    group = next(p for p in (out / "groups").glob("*.html") if "&lt;b&gt;" in p.read_text())
    for _, url in parse(group).refs:
        assert (group.parent / unquote(urlsplit(url).path)).exists(), url


def test_a_moved_dataset_or_an_unreadable_prediction_gives_tiles_that_say_why(tmp_path):
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=2, size=(24, 32))
    run = _run(tmp_path / "run", "method=constant", "dataset=folder", f"dataset.root={data}")
    next((run / "predictions" / "r0").glob("*.png")).write_bytes(b"not a png")
    build_report([run], tmp_path / "r1", thumb=32, zoom=32)
    pages = "".join(p.read_text() for p in (tmp_path / "r1" / "groups").glob("*.html"))
    assert pages.count('class="missing"') == 2 and "AlphaDecodeError" in pages  # its prediction and error map
    shutil.rmtree(data)
    build_report([run], tmp_path / "r2", thumb=32, zoom=32)
    pages = "".join(p.read_text() for p in (tmp_path / "r2" / "groups").glob("*.html"))
    assert "dataset not loadable" in pages
    drawn = [url for p in (tmp_path / "r2" / "groups").glob("*.html") for tag, url in parse(p).refs if tag == "img"]
    assert drawn and all("/pred-" in u or "colourbar" in u for u in drawn)  # the predictions need no dataset


def test_cli_help_refusals_and_a_build(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        report_main(["--help"])
    assert exc.value.code == 0
    assert "--failures" in capsys.readouterr().out
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert report_main([str(runs["constant"]), "--out", str(foreign)]) == 2
    assert "holds no earlier report" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "mine"
    shutil.copytree(runs["shard0"], tmp_path / "copy")
    assert report_main([str(runs["shard0"]), str(tmp_path / "copy"), "--out", str(tmp_path / "x")]) == 2
    assert "the same shard 0" in capsys.readouterr().err
    assert report_main([str(runs["constant"]), "--out", str(tmp_path / "ok"), "--quoted", "--thumb", "48",
                        "--zoom", "48", "--failures", "2", "--weighting", "image"]) == 0
    index = parse(tmp_path / "ok" / "index.html")
    assert any(cells and cells[0][1].startswith("quoted (Table 2)") for cells in index.tables["leaderboard"])
    heads = [h for h in index.heads["leaderboard"] if h in METRIC_NAMES]
    assert heads == list(METRIC_NAMES) and "image-weighted SAD (/1000)" in (tmp_path / "ok" / "index.html").read_text()
    first = (tmp_path / "ok" / "index.html").read_text().index("image-weighted SAD")
    assert first < (tmp_path / "ok" / "index.html").read_text().index(">SAD (/1000)<")  # image-weighted first


def test_visualize_writes_labelled_grids_with_a_colour_bar(runs, tmp_path):
    from benchmark.report.figures import FOOTER, colour_bar, grid_height
    from benchmark.visualize import main as visualize

    assert visualize([str(runs["flaky"]), "--out", str(tmp_path / "f")]) == 0
    figures = sorted((tmp_path / "f").glob("*.png"))
    assert len(figures) == 8
    grids = [np.asarray(Image.open(p).convert("RGB")) for p in figures]
    assert all(g.shape[0] == grid_height(4) for g in grids)
    bar = colour_bar(min(grids[0].shape[1] - 4, 360))
    foot = grids[0][-FOOTER:]
    assert np.array_equal(foot[FOOTER - bar.shape[0] - 2:FOOTER - 2, 2:2 + bar.shape[1]], bar)


# ----------------------------------------------------------------------------- in a browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browse(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.slow
def test_the_report_in_headless_chromium(report, tmp_path):
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: no chromium found (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium binary (apt-get install chromium) to open the report in")
    for page in html_files(report):
        done = _browse(page.as_uri(), tmp_path, "--dump-dom")
        assert not _console(done.stderr), (page.name, _console(done.stderr))
        dom = done.stdout
        assert 'data-broken-images="0"' in dom and 'data-js-errors="0"' in dom, (page.name, dom[:300])
        if "groups" in page.parts or page.name in ("plots.html", "failures.html"):
            assert 'data-images="0"' not in dom and "data-images=" in dom, page.name
    orders = {}
    for sign, direction in (("", "ascending"), ("-", "descending")):
        dom = _browse((report / "index.html").as_uri() + f"#sort={sign}SAD", tmp_path, "--dump-dom").stdout
        assert f'data-sorted="SAD:{direction}"' in dom
        board = parse_dom(dom)
        heads, rows = board.heads["leaderboard"], board.tables["leaderboard"][1:]
        orders[direction] = [float(r[heads.index("SAD")][0]["data-value"]) for r in rows]
    assert len(set(orders["ascending"])) == 4  # distinct, so one of the two orders is not the page's own
    assert orders["ascending"] == sorted(orders["ascending"]) == orders["descending"][::-1]
    by_name = parse_dom(_browse((report / "index.html").as_uri() + "#sort=-method", tmp_path, "--dump-dom").stdout)
    names = [r[by_name.heads["leaderboard"].index("method")][1] for r in by_name.tables["leaderboard"][1:]]
    assert names == sorted(names, reverse=True)
    shot = tmp_path / "report.png"
    _browse((report / "index.html").as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,900")
    assert Image.open(shot).size == (1280, 900)
    keep = os.environ.get("ICMBENCH_ARTEFACTS")
    if keep:  # CI keeps the screenshot as a test artefact
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")


def parse_dom(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p
