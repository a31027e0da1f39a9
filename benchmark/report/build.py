"""Building a report folder: collect the run folders, then write the CSV, assets, plots, thumbnails and pages."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmark.io import atomic_write_text, write_png
from benchmark.report import figures
from benchmark.report.data import collect
from benchmark.report.gallery import COLOUR_BAR, Gallery, failures_page, write_group_pages
from benchmark.report.html import write_assets
from benchmark.report.pages import groups_page, index_page, plots_page, runs_page
from benchmark.report.thumbs import Thumbs
from benchmark.report.tiles import TileMaker

MARKER = "report.json"
PAGES = ("index.html", "plots.html", "groups.html", "failures.html", "runs.html")


class ReportError(ValueError):
    """The output folder cannot hold a report (the message says why)."""


@dataclass(frozen=True)
class BuildStats:
    seconds: float
    runs: int
    entries: int
    group_pages: int
    thumbs_made: int
    thumbs_reused: int
    thumbs_pruned: int


def check_out(out: Path) -> None:
    """Refuse a non-empty folder that is not an earlier report (so no one's files are overwritten)."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ReportError(f"{out} is not empty and holds no earlier report ({MARKER}); choose another --out")


def build_report(run_dirs: Sequence[str | Path], out: str | Path, *, quoted: bool = False, weighting: str = "group",
                 failures: int = 8, thumb: int = 256, zoom: int = 1024,
                 rounds: Iterable[int] | None = (0,)) -> BuildStats:
    """Write the report of ``run_dirs`` into ``out``; ``rounds`` picks the rounds drawn on group pages
    (None: all)."""
    t0 = time.perf_counter()
    out = Path(out)
    check_out(out)
    data = collect(run_dirs, quoted)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.csv", data.board_csv)
    write_assets(out)
    write_png(out / COLOUR_BAR, figures.colour_bar(320))
    from benchmark.report.plots import write_plots  # matplotlib only when building

    plots = write_plots(data, out)
    thumbs = Thumbs(out / "thumbs")
    gallery = Gallery(data, TileMaker(thumbs, thumb, zoom), out, None if rounds is None else frozenset(rounds))
    files = write_group_pages(gallery)
    _prune_pages(out / "groups", {Path(f).name for f in files.values()})
    pages = {"failures.html": failures_page(gallery, failures), "groups.html": groups_page(data, files),
             "index.html": index_page(data, weighting), "plots.html": plots_page(plots),
             "runs.html": runs_page(data, out)}
    for name, text in pages.items():
        atomic_write_text(out / name, text)
    stats = BuildStats(round(time.perf_counter() - t0, 3), len(data.runs), len(data.entries), len(files),
                       thumbs.made, thumbs.reused, thumbs.prune())
    marker = {"run_dirs": [str(r.rd.root) for r in data.runs], "weighting": weighting, "quoted": quoted,
              "failures": failures, "thumb": thumb, "zoom": zoom, "rounds": None if rounds is None else list(rounds),
              **asdict(stats)}
    atomic_write_text(out / MARKER, json.dumps(marker, indent=1) + "\n")
    return stats


def _prune_pages(folder: Path, keep: set[str]) -> None:
    for p in folder.glob("*.html") if folder.is_dir() else ():
        if p.name not in keep:
            p.unlink()
