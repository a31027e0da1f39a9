"""The report's plots (matplotlib, Agg backend, SVG): per-group SAD per method, the spread over rounds,
per-target distributions, and SAD against Grad and Conn. Each has axis labels with units and uses the
entries' colours of the page. Point clouds over 2000 points are rasterised inside the SVG to keep it small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmark.leaderboard import COLUMNS
from benchmark.report.data import ReportData, ok_rows

plt.rcParams.update({"svg.hashsalt": "icmbench", "font.size": 9, "axes.spines.top": False,
                     "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
RASTER = 2000


@dataclass(frozen=True)
class Plot:
    file: str  # relative to the report folder
    title: str
    caption: str


def write_plots(data: ReportData, out: Path) -> list[Plot]:
    """Draw every plot that has data into ``out/plots/``; returns them in page order."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    makers: list[tuple[str, str, str, Callable[[ReportData], plt.Figure | None]]] = [
        ("per_group_sad", "SAD per group",
         "Each group's SAD (mean over its targets, then over rounds) for every method; groups ordered by their "
         "mean over methods.", per_group),
        ("rounds", "Spread over rounds",
         "Each round's group-weighted SAD (dots) and their mean ± std (bar): how much the numbers move with the "
         "round (another reference, or another seed of the method).", rounds),
        ("distributions", "Per-target distributions",
         "Every scored target (all rounds) as a dot over a box plot (median, quartiles, 1.5 IQR whiskers).",
         distributions),
        ("sad_vs_grad_conn", "SAD against Grad and Conn",
         "One dot per scored target and round: where the metrics agree and where a method's errors are "
         "gradient (blur) or connectivity (holes, islands) errors rather than area.", scatter),
    ]
    plots = []
    for name, title, caption, make in makers:
        fig = make(data)
        if fig is None:
            continue
        fig.savefig(out / "plots" / f"{name}.svg", format="svg", metadata={"Date": None}, bbox_inches="tight")
        plt.close(fig)
        plots.append(Plot(f"plots/{name}.svg", title, f"{caption} Region: {data.region}."))
    return plots


def _legend(ax: plt.Axes, data: ReportData, entries: list[str]) -> None:
    handles = [plt.Line2D([], [], marker="o", ls="", color=data.entry(e).colour, label=data.entry(e).label)
               for e in entries]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=min(len(handles), 4), fontsize=8,
              frameon=False)


def per_group(data: ReportData) -> plt.Figure | None:
    bg = data.by_group[data.by_group["region"] == data.region] if len(data.by_group) else data.by_group
    if bg.empty:
        return None
    col = COLUMNS["SAD"]
    bg = bg.assign(label=bg["group"] if bg["dataset"].nunique() == 1 else bg["dataset"] + "/" + bg["group"])
    order = bg.groupby("label")[col].mean().sort_values().index.tolist()
    y = {g: i for i, g in enumerate(order)}
    entries = [e.id for e in data.entries if e.id in set(bg["entry"])]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * len(order) + 1.2)))
    offsets = np.linspace(-0.25, 0.25, len(entries)) if len(entries) > 1 else [0.0]
    for off, e in zip(offsets, entries, strict=True):
        rows = bg[bg["entry"] == e]
        ax.scatter(rows[col], [y[g] + off for g in rows["label"]], s=14, color=data.entry(e).colour, zorder=3)
    ax.set_yticks(range(len(order)), order, fontsize=7 if len(order) > 30 else 8)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.set_xlabel(f"{col}, mean over the group's targets and rounds")
    ax.set_ylabel("group")
    _legend(ax, data, entries)
    return fig


def rounds(data: ReportData) -> plt.Figure | None:
    br = data.by_round[data.by_round["region"] == data.region] if len(data.by_round) else data.by_round
    if br.empty:
        return None
    col = COLUMNS["SAD"]
    entries = [e.id for e in data.entries if e.id in set(br["entry"])]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(entries) + 2), 3.4))
    for i, e in enumerate(entries):
        values = br.loc[br["entry"] == e, col].to_numpy(float)
        colour = data.entry(e).colour
        ax.errorbar([i], [values.mean()], yerr=[values.std()], fmt="_", ms=18, capsize=6, color=colour, zorder=2)
        ax.scatter(np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, s=18, color=colour,
                   edgecolor="white", zorder=3)
    ax.set_xticks(range(len(entries)), [data.entry(e).label for e in entries], rotation=20, ha="right")
    ax.set_ylabel(f"{col}, group-weighted mean of one round")
    ax.set_xlabel("method (dots: rounds; bar: mean ± std over rounds)")
    return fig


def distributions(data: ReportData) -> plt.Figure | None:
    rows = ok_rows(data)
    entries = [e.id for e in data.entries if e.id in set(rows["entry"])]
    if not entries:
        return None
    metrics = ("SAD", "MSE")
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 2.2 * len(entries) + 3), 3.6))
    rng = np.random.default_rng(0)
    for ax, m in zip(axes, metrics, strict=True):
        values = [rows.loc[rows["entry"] == e, m].dropna().to_numpy(float) for e in entries]
        ax.boxplot(values, positions=range(len(entries)), widths=0.5, showfliers=False,
                   medianprops={"color": "black"})
        for i, (e, v) in enumerate(zip(entries, values, strict=True)):
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=8, alpha=0.6, color=data.entry(e).colour,
                       rasterized=len(v) > RASTER, zorder=3)
        ax.set_xticks(range(len(entries)), [data.entry(e).label for e in entries], rotation=20, ha="right")
        ax.set_ylabel(f"{COLUMNS[m]} per target")
    axes[0].set_title("SAD", fontsize=9)
    axes[1].set_title("MSE", fontsize=9)
    return fig


def scatter(data: ReportData) -> plt.Figure | None:
    rows = ok_rows(data)
    entries = [e.id for e in data.entries if e.id in set(rows["entry"])]
    if not entries:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, m in zip(axes, ("Grad", "Conn"), strict=True):
        for e in entries:
            r = rows[rows["entry"] == e]
            ax.scatter(r["SAD"], r[m], s=9, alpha=0.7, color=data.entry(e).colour, rasterized=len(r) > RASTER)
        ax.set_xlabel(f"{COLUMNS['SAD']} per target")
        ax.set_ylabel(f"{COLUMNS[m]} per target")
    _legend(axes[0], data, entries)
    return fig
