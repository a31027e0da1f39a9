"""Scoring one saved prediction: the unit of work sent to the metric process pool."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from benchmark.trimaps import DEFAULT_RADIUS_FRACTION, derive_trimap, trimap_radius

METRIC_NAMES = ("SAD", "MSE", "Grad", "Conn")
#: Units as the reference evaluation code prints them (and the paper's tables): SAD, Grad, Conn /1000, MSE raw.
METRIC_UNITS = {"SAD": "/1000", "MSE": "raw", "Grad": "/1000", "Conn": "/1000"}
#: Leaderboard column of each metric's mean, e.g. ``"SAD (/1000)"``.
METRIC_COLUMNS = {m: f"{m} ({METRIC_UNITS[m]})" for m in METRIC_NAMES}
REGIONS = ("whole", "unknown")


@dataclass(frozen=True, eq=False)
class ScoreJob:
    pred: np.ndarray  # uint8, the quantised prediction exactly as saved
    gt: np.ndarray
    trimap: np.ndarray | None  # the dataset's trimap, or None to derive one when needed
    regions: tuple[str, ...]
    metric_protocol: str = "dim"
    radius_fraction: float = DEFAULT_RADIUS_FRACTION
    trimap_source: str = "file"  # how ``trimap`` was obtained, when given
    save_path: str | None = None  # write ``pred`` here as PNG first (in the worker, off the main loop)


@dataclass(frozen=True)
class ScoreResult:
    values: dict[str, dict[str, float]]  # region → metric → value
    trimap_source: str  # "file", "derived-r<R>" or "" (whole image only)
    seconds: float


def trimap_for(gt: np.ndarray, trimap: np.ndarray | None, radius_fraction: float) -> tuple[np.ndarray, str]:
    """The dataset's trimap if it has one, else one derived from the ground truth (and its label)."""
    if trimap is not None:
        return trimap, "file"
    r = trimap_radius(gt.shape[:2], None, radius_fraction)
    return derive_trimap(gt, radius=r), f"derived-r{r}"


def score(job: ScoreJob) -> ScoreResult:
    """Evaluate the requested regions in one metrics call (per-pixel maps shared)."""
    from metrics import evaluate

    if job.save_path is not None:
        from benchmark.io import write_png

        try:
            write_png(job.save_path, job.pred)
        except OSError as exc:
            raise OSError(f"cannot save the prediction {job.save_path}: {exc}") from exc
    t0 = time.perf_counter()
    trimap, source = None, ""
    if "unknown" in job.regions:
        trimap, source = trimap_for(job.gt, job.trimap, job.radius_fraction)
        if job.trimap is not None:
            source = job.trimap_source
    result = evaluate(job.pred, job.gt, trimap, protocol=job.metric_protocol)
    values = {r: {m: float(result[r][m]) for m in METRIC_NAMES} for r in job.regions}
    return ScoreResult(values, source, time.perf_counter() - t0)
