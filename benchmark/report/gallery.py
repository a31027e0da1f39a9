"""Per-group pages and the failure gallery: every target's image and ground truth beside each method's
prediction and error map, labelled with the method and its SAD/MSE."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.io import atomic_write_text
from benchmark.report.data import ReportData, Run, disagreements, finite, ok_rows, worst_targets
from benchmark.report.html import Cell, esc, link, page, table
from benchmark.report.tiles import Tile, TileMaker
from benchmark.safe_names import hashed_name
from benchmark.scoring import METRIC_COLUMNS, METRIC_NAMES
from benchmark.types import Episode

COLOUR_BAR = "assets/colourbar.png"


def anchor(round_index: int, target: str) -> str:
    return "t" + hashlib.sha256(f"{round_index}|{target}".encode()).hexdigest()[:12]


def group_file(dataset: str, group: str) -> str:
    """The page of a group, relative to the report folder."""
    return f"groups/{hashed_name(f'{dataset}/{group}', '.html')}"


@dataclass
class Gallery:
    """Where every (entry, round, target) was run, its scores, and the tiles that draw it."""

    data: ReportData
    tiles: TileMaker
    out: Path
    drawn_rounds: frozenset[int] | None = None  # None: every round
    shots: dict[tuple[str, str, int, str], tuple[Run, Episode]] = field(default_factory=dict)
    episodes: dict[tuple[str, str], dict[int, list[tuple[str, Run, Episode]]]] = field(default_factory=dict)
    scores: dict[tuple[int, int, str], tuple[float, float]] = field(default_factory=dict)
    errors: dict[tuple[int, int, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for run in self.data.runs:
            if run.entry is None:
                continue
            dataset = self.data.entry(run.entry).key[1]
            for e in run.plan.episodes:
                self.episodes.setdefault((dataset, e.group), {}).setdefault(e.round, []).append((run.entry, run, e))
                for t in e.targets:
                    self.shots[(run.entry, dataset, e.round, t)] = (run, e)
        for r in ok_rows(self.data).itertuples(index=False):
            self.scores[(r.run_index, r.round, r.target)] = (r.SAD, r.MSE)
        t = self.data.targets
        for r in t[t["status"] == "error"].itertuples(index=False):
            self.errors.setdefault((r.run_index, r.round, r.target), r.error)

    def drawn(self, round_index: int) -> bool:
        return self.drawn_rounds is None or round_index in self.drawn_rounds

    # ------------------------------------------------------------------ html pieces
    def figure(self, tile: Tile, page_dir: Path) -> str:
        caption = "<br>".join(esc(c) for c in tile.caption)
        if tile.src is None:
            body = f'<div class="missing">{esc(tile.problem or "not drawn")}</div>'
        else:
            img = f'<img src="{link(tile.src, page_dir)}" alt="{esc(" ".join(tile.caption))}">'
            body = f'<a href="{link(tile.href, page_dir)}">{img}</a>' if tile.href else img
        return f'<figure class="tile"><div class="box">{body}</div><figcaption>{caption}</figcaption></figure>'

    def score_line(self, run: Run, round_index: int, target: str) -> str:
        key = (run.index, round_index, target)
        if key in self.errors:
            return f"error: {self.errors[key]}"
        if key in self.scores:
            sad, mse = self.scores[key]
            return f"SAD {sad:.3f} · MSE {mse:.5f}" if finite(sad) else "SAD undefined"
        return "not scored"

    def entry_block(self, entry: str, run: Run, episode: Episode, target: str, page_dir: Path) -> str:
        e = self.data.entry(entry)
        line = self.score_line(run, episode.round, target)
        tiles = [self.tiles.target_prompt(run, episode, target),
                 self.tiles.prediction(run, episode.round, target, (e.label, line)),
                 self.tiles.error(run, episode.round, target, ("error map", e.label)),
                 self.tiles.side(run, episode.round, target)]
        inner = "".join(self.figure(t, page_dir) for t in tiles if t is not None)
        return f'<div class="entry" style="border-top-color: {esc(e.colour)}">{inner}</div>'

    def strip(self, dataset: str, round_index: int, target: str, entries: Iterable[str], page_dir: Path,
              title: str | None = None, group: str | None = None) -> str:
        """One target: its image and ground truth, then each entry's prediction and error map."""
        shots = [(e, *self.shots[(e, dataset, round_index, target)]) for e in entries
                 if (e, dataset, round_index, target) in self.shots]
        if not shots:
            return ""
        _, run, _ = shots[0]
        head = [self.tiles.image(run, target, ("target", target)), self.tiles.truth(run, target)]
        body = "".join(self.figure(t, page_dir) for t in head)
        body += "".join(self.entry_block(e, r, ep, target, page_dir) for e, r, ep in shots)
        heading = esc(title or f"{target} · round {round_index}")
        if group is not None:  # a gallery item: say where it comes from
            href = group_file(dataset, group) + (f"#{anchor(round_index, target)}" if self.drawn(round_index) else "")
            heading += f' <span class="note">· group <a href="{esc(href)}">{esc(group)}</a></span>'
            return f'<section><h3>{heading}</h3><div class="strip">{body}</div></section>'
        return (f'<section id="{anchor(round_index, target)}"><h3>{heading}</h3>'
                f'<div class="strip">{body}</div></section>')

    def legend(self, prefix: str) -> str:
        swatches = " ".join(f'<span><span class="swatch" style="background:{esc(e.colour)}"></span>{esc(e.label)}'
                            f"</span>" for e in self.data.entries)
        return (f'<div class="legend"><img src="{prefix}{COLOUR_BAR}" alt="error colour scale: 0 black, 1 white">'
                f"<span>error map: |prediction − ground truth| per pixel, alpha units. Click a thumbnail for the "
                f'full-resolution file.</span><span class="swatches">{swatches}</span></div>')


# ----------------------------------------------------------------------------- group pages
def references_html(g: Gallery, shots: Sequence[tuple[str, Run, Episode]], page_dir: Path) -> str:
    """Each distinct reference (and prompt) of a round once, naming the methods that used it."""
    seen: dict[tuple[str, str], tuple[Run, Episode, list[str]]] = {}
    for entry, run, e in shots:
        for ref in e.references:
            key = (ref, g.tiles.thumbs.digest(run.rd.prompt_file(e.key, ref)))
            seen.setdefault(key, (run, e, []))[2].append(g.data.entry(entry).label)
    figs = []
    for (ref, _), (run, e, users) in seen.items():
        kind = str(run.plan.identity.get("prompt", {}).get("kind", ""))
        figs.append(g.figure(g.tiles.reference(run, e, ref, ("reference " + ref, f"{kind} prompt · "
                                                                  + ", ".join(dict.fromkeys(users)))), page_dir))
    return f'<div class="strip">{"".join(figs)}</div>'


def group_scores(g: Gallery, dataset: str, group: str) -> str:
    bg = g.data.by_group
    rows = bg[(bg["dataset"] == dataset) & (bg["group"] == group) & (bg["region"] == g.data.region)] \
        if len(bg) else bg
    heads = [("method", "method"), *((m, METRIC_COLUMNS[m]) for m in METRIC_NAMES)]
    cells = []
    for values in rows.to_dict("records"):
        label = g.data.entry(values["entry"]).label if values["entry"] else values["method"]
        cells.append([Cell(label), *(_num(values[METRIC_COLUMNS[m]], values.get(f"{m} std"), m)
                                     for m in METRIC_NAMES)])
    return table(heads, cells, caption=f"This group's means over its targets, then over rounds (± std over rounds), "
                                       f"region {g.data.region}")


def _num(mean: object, std: object, metric: str) -> Cell:
    fmt = ".5f" if metric == "MSE" else ".3f"
    if not finite(mean):
        return Cell("?", "", "num")
    text = f"{float(mean):{fmt}}" + (f" ± {float(std):{fmt}}" if finite(std) else "")
    return Cell(text, repr(float(mean)), "num")


def group_page(g: Gallery, dataset: str, group: str) -> str:
    page_dir = g.out / "groups"
    by_round = g.episodes[(dataset, group)]
    parts = [group_scores(g, dataset, group), g.legend("../")]
    for round_index in sorted(r for r in by_round if g.drawn(r)):
        shots = by_round[round_index]
        parts.append(f"<h2>Round {round_index}</h2><h3>References</h3>{references_html(g, shots, page_dir)}")
        targets = list(dict.fromkeys(t for _, _, e in shots for t in e.targets))
        entries = list(dict.fromkeys(entry for entry, _, _ in shots))
        parts.extend(g.strip(dataset, round_index, t, entries, page_dir) for t in targets)
    skipped = sorted(r for r in by_round if not g.drawn(r))
    if skipped:
        parts.append(f'<p class="note">Rounds not drawn (see --rounds): {esc(", ".join(map(str, skipped)))}</p>')
    return page(group, "\n".join(parts), "../", "groups.html", f"dataset {dataset}")


def write_group_pages(g: Gallery) -> dict[tuple[str, str], str]:
    """Every group's page; returns (dataset, group) → its file (relative to the report folder)."""
    files = {}
    for dataset, group in sorted(g.episodes):
        files[(dataset, group)] = group_file(dataset, group)
        atomic_write_text(g.out / files[(dataset, group)], group_page(g, dataset, group))
    return files


# ----------------------------------------------------------------------------- failure gallery
def failures_page(g: Gallery, n: int) -> str:
    """The ``n`` worst targets of each method by SAD (each target once), then the ``n`` targets where methods
    disagree most."""
    parts = [g.legend(""), f"<h2>Worst {n} targets per method (SAD, region {esc(g.data.region)})</h2>"]
    for entry in g.data.entries:
        worst = worst_targets(g.data, entry.id, n)
        parts.append(f'<h3><span class="swatch" style="background:{esc(entry.colour)}"></span>{esc(entry.label)}</h3>')
        parts.extend(_worst_item(g, entry.id, r) for r in worst.itertuples(index=False))
        if worst.empty:
            parts.append('<p class="note">no scored target</p>')
    spread = disagreements(g.data, n)
    parts.append(f"<h2>Where methods disagree most (largest max − min SAD over methods, top {n})</h2>")
    if spread.empty:
        parts.append('<p class="note">needs two methods scored on the same targets</p>')
    for r in spread.itertuples(index=False):
        title = f"{r.target} · round {r.round} · SAD spread {r.spread:.3f} over {r.entries} methods"
        entries = [e.id for e in g.data.entries]
        parts.append(g.strip(r.dataset, r.round, r.target, entries, g.out, title, r.group))
    return page("Failure gallery", '<div class="compact">' + "\n".join(parts) + "</div>", "", "failures.html",
                "The targets with the largest errors, and those on which the methods disagree most")


def _worst_item(g: Gallery, entry: str, r: Any) -> str:
    title = f"{r.target} · round {r.round} · SAD {r.SAD:.3f} · MSE {r.MSE:.5f}"
    return g.strip(r.dataset, r.round, r.target, [entry], g.out, title, r.group)
