"""The evaluation loop: episodes → prompts → method → saved predictions → metrics → result files.

Resume model: every finished episode is one CSV file under ``episodes/`` written atomically
(temp file + rename) after its predictions are saved and scored, so a run killed at any moment
loses at most the episodes in flight (scoring overlaps up to 2 × workers episodes). Re-running
skips episodes whose file exists, never builds the method when nothing is left, and rebuilds
``results.csv`` and ``leaderboard.csv`` from the episode files in plan order, so a resumed run
produces the same files as an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.datasets import load_dataset
from benchmark.episodes import plan_episodes, shard_groups
from benchmark.io import atomic_write_text, quantize_alpha, write_png
from benchmark.prompts import PromptError, load_prompt, make_prompt, save_prompt
from benchmark.scoring import METRIC_NAMES, REGIONS, ScoreJob, ScoreResult, score, trimap_for
from benchmark.types import Dataset, Episode, Prompt
from benchmark.views import RESOLUTIONS, SampleView, ViewCache
from methods import build_method
from methods.base import Method, Reference, Target

log = logging.getLogger("benchmark")

RESULT_COLUMNS = (
    "method", "method_hash", "dataset", "dataset_hash", "protocol", "prompt", "round", "group",
    "references", "target", "self_reference", "resolution", "metric_protocol", "region", "trimap_source",
    *METRIC_NAMES, "seconds", "status", "error",
)
#: Config keys that change results; a run directory holds results of one such configuration.
RUNNER_RESULT_KEYS = ("protocol", "rounds", "references", "seed", "singletons", "resolution", "regions",
                      "metric_protocol", "trimap_radius_fraction", "shard", "num_shards")


class RunConfigError(RuntimeError):
    """The run directory belongs to another configuration, or a setting is invalid."""


@dataclass
class RunStats:
    episodes_total: int = 0
    episodes_resumed: int = 0
    targets: int = 0
    errors: int = 0
    decode_s: float = 0.0
    method_s: float = 0.0
    metrics_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prediction_path(run_dir: Path, round_index: int | str, target: str) -> Path:
    """Where the 8-bit prediction of ``target`` in round ``round_index`` is saved."""
    return Path(run_dir) / "predictions" / f"r{round_index}" / f"{target}.png"


def _slug(key: str) -> str:
    """A file-name-safe, unique name for an episode key."""
    clean = re.sub(r"[^A-Za-z0-9._+-]+", "~", key)[:90]
    return f"{clean}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _split(cfg: Mapping[str, Any], name_key: str) -> tuple[str, dict[str, Any]]:
    params = dict(cfg)
    name = params.pop(name_key)
    return str(name), params


class Runner:
    """Runs one method on one dataset with one prompt kind under the runner settings."""

    def __init__(self, cfg: Mapping[str, Any], out_dir: str | os.PathLike) -> None:
        self.cfg = {k: dict(v) if isinstance(v, Mapping) else v for k, v in cfg.items()}
        self.out = Path(out_dir)
        r = self.cfg["runner"]
        self.r = r
        if r["resolution"] not in RESOLUTIONS:
            raise RunConfigError(f"runner.resolution must be one of {RESOLUTIONS}, got '{r['resolution']}'")
        bad = [x for x in r["regions"] if x not in REGIONS]
        if bad:
            raise RunConfigError(f"runner.regions: unknown region(s) {bad}; choose from {REGIONS}")
        if r["metric_protocol"] not in ("dim", "icm"):
            raise RunConfigError(f"runner.metric_protocol must be 'dim' or 'icm', got '{r['metric_protocol']}'")
        if r["on_error"] not in ("continue", "raise"):
            raise RunConfigError(f"runner.on_error must be 'continue' or 'raise', got '{r['on_error']}'")
        self.method_name, self.method_params = _split(self.cfg["method"], "name")
        self.dataset_name, self.dataset_params = _split(self.cfg["dataset"], "name")
        self.prompt_kind, self.prompt_params = _split(self.cfg["prompt"], "kind")
        from methods import METHODS

        info = getattr(METHODS.get(self.method_name), "info", None)
        if info is not None and info.guidance == "in_context":
            if self.prompt_kind not in info.prompt_kinds:
                raise RunConfigError(f"method '{self.method_name}' does not accept prompt={self.prompt_kind} "
                                     f"(accepts {sorted(info.prompt_kinds)})")
            if r["references"] > info.max_references:
                raise RunConfigError(f"method '{self.method_name}' accepts at most {info.max_references} "
                                     f"reference(s); runner.references={r['references']}")
        self.stats = RunStats()
        self._method: Method | None = None
        self._method_hash: str | None = None

    # ----------------------------------------------------------------- planning
    def identity(self, dataset: Dataset) -> dict[str, Any]:
        """Everything that determines the results of this run directory."""
        return {
            "method": self.cfg["method"], "dataset": self.dataset_name, "dataset_hash": dataset.fingerprint,
            "prompt": self.cfg["prompt"], "runner": {k: self.r[k] for k in RUNNER_RESULT_KEYS},
        }

    def plan(self, dataset: Dataset) -> tuple[list[Episode], list]:
        episodes, skipped = plan_episodes(dataset, self.r["protocol"], self.r["rounds"], self.r["references"],
                                          self.r["seed"], self.r["singletons"])
        if self.r["num_shards"] > 1:
            mine = shard_groups(list(dataset.groups), self.r["shard"], self.r["num_shards"])
            episodes = [e for e in episodes if e.group in mine]
            skipped = [s for s in skipped if s.group in mine]
        return episodes, skipped

    def _check_run_dir(self, identity: dict[str, Any]) -> dict[str, Any]:
        path = self.out / "run.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("identity") != json.loads(json.dumps(identity, default=str)):
                if not self.r.get("overwrite", False):
                    raise RunConfigError(
                        f"{self.out} holds results of a different configuration (see {path}); "
                        "choose another hydra.run.dir or pass runner.overwrite=true to start afresh")
                for sub in ("episodes", "prompts", "predictions"):
                    shutil.rmtree(self.out / sub, ignore_errors=True)
                stored = {}
            return stored
        return {}

    # ----------------------------------------------------------------- running
    def run(self) -> RunStats:
        t_start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        dataset = load_dataset(self.dataset_name, **self.dataset_params)
        identity = self.identity(dataset)
        stored = self._check_run_dir(identity)
        self._method_hash = stored.get("method_hash")
        episodes, skipped = self.plan(dataset)
        ep_dir = self.out / "episodes"
        ep_dir.mkdir(exist_ok=True)
        pending = [e for e in episodes if not (ep_dir / f"{_slug(e.key)}.csv").exists()]
        self.stats.episodes_total = len(episodes)
        self.stats.episodes_resumed = len(episodes) - len(pending)
        self._write_plan(dataset, episodes, skipped, identity)
        if pending:
            self._run_pending(dataset, pending, ep_dir, identity)
        self._write_problem_rows(dataset, skipped, ep_dir)
        rows = collect_rows(self.out, [e.key for e in episodes])
        self._write_results(rows)
        from benchmark.leaderboard import write_leaderboard

        write_leaderboard([self.out], self.out / "leaderboard.csv")
        self.stats.wall_s = time.perf_counter() - t_start
        self.stats.errors = sum(1 for r in rows if r["status"] == "error")
        return self.stats

    def _write_plan(self, dataset: Dataset, episodes: list[Episode], skipped: list, identity: dict) -> None:
        plan = {
            "identity": identity,
            "config": self.cfg,
            "method_hash": self._method_hash,
            "dataset_root": str(dataset.root),
            "episodes": [{"key": e.key, "group": e.group, "round": e.round, "references": list(e.references),
                          "targets": list(e.targets), "self_reference": e.self_reference} for e in episodes],
            "skipped_groups": [{"group": s.group, "reason": s.reason} for s in skipped],
            "dataset_problems": list(dataset.meta.get("problems", [])),
        }
        atomic_write_text(self.out / "run.json", json.dumps(plan, indent=1, default=str) + "\n")

    def _build_method(self, identity: dict) -> Method:
        if self._method is None:
            self._method = build_method(self.method_name, **self.method_params)
            h = _hash([self.cfg["method"], self._method.fingerprint()])
            if self._method_hash not in (None, h):
                raise RunConfigError(f"{self.out}: the method's weights changed since this run started "
                                     f"(hash {self._method_hash} → {h}); use another run directory")
            self._method_hash = h
            run_json = self.out / "run.json"
            doc = json.loads(run_json.read_text())
            doc["method_hash"] = h
            atomic_write_text(run_json, json.dumps(doc, indent=1, default=str) + "\n")
        return self._method

    def _run_pending(self, dataset: Dataset, pending: list[Episode], ep_dir: Path, identity: dict) -> None:
        method = self._build_method(identity)
        derive = self.r["trimap_radius_fraction"] if "unknown" in self.r["regions"] else None
        scoring = _scoring_pool(self.r["workers"])
        # With several workers, as many threads decode upcoming images in the background.
        threads = scoring.n if scoring.n > 1 else 0
        cache = ViewCache(self.r["resolution"], derive_trimap_fraction=derive, threads=threads)
        total = sum(len(e.targets) for e in pending)
        progress = _progress(total, f"{self.method_name} on {self.dataset_name}", self.r.get("progress", "auto"))
        in_flight: deque[_InFlight] = deque()
        try:
            with scoring as pool:
                # Scoring of earlier episodes overlaps with the method on later ones; an episode's
                # file is written (in plan order) once all its scores are back.
                limit = 2 * scoring.n
                for i, episode in enumerate(pending):
                    for upcoming in pending[i:i + 2]:
                        ids = (*upcoming.references, *upcoming.targets)
                        if len(ids) <= cache.capacity // 2:  # never prefetch past what the cache holds
                            cache.prefetch(dataset.samples[s] for s in ids)
                    in_flight.append(self._start_episode(dataset, episode, method, cache, pool, progress))
                    while in_flight and (in_flight[0].done() or len(in_flight) > limit):
                        self._finish_episode(in_flight.popleft(), ep_dir, progress)
                while in_flight:
                    self._finish_episode(in_flight.popleft(), ep_dir, progress)
        finally:
            # Interrupted: keep every episode whose scores are already back (nothing finished is lost).
            while in_flight and in_flight[0].done():
                try:
                    self._finish_episode(in_flight.popleft(), ep_dir, progress)
                except Exception:
                    break
            progress.close()
            cache.close()
        self.stats.decode_s += cache.decode_seconds

    # One episode: prompt, prepare, predict in batches, save, submit the scoring jobs.
    def _start_episode(self, dataset: Dataset, episode: Episode, method: Method, cache: ViewCache,
                       pool: Executor | None, progress) -> _InFlight:
        base = self._row_base(dataset, episode)
        guidance = method.info.guidance
        try:
            t0 = time.perf_counter()
            if guidance == "in_context":
                refs = [cache.get(dataset.samples[s]) for s in episode.references]
                prompts = [self._prompt(episode, v) for v in refs]
                t0 = time.perf_counter()
                method.prepare([Reference(v.sample.id, v.image, p) for v, p in zip(refs, prompts, strict=True)])
            else:
                method.prepare([])
            prepare_s = (time.perf_counter() - t0) / max(1, len(episode.targets))
            self.stats.method_s += time.perf_counter() - t0
        except Exception as exc:
            self._maybe_raise(exc)
            progress.update(len(episode.targets))
            return _InFlight(episode, base, [self._error_row(base, t, f"reference: {_describe(exc)}")
                                             for t in episode.targets], [])

        rows: list[dict[str, Any]] = []
        pending: list[tuple[str, float, Future | ScoreResult]] = []
        batch_size = max(1, int(self.r["batch_size"]))
        for start in range(0, len(episode.targets), batch_size):
            batch_ids = episode.targets[start:start + batch_size]
            views: list[SampleView] = []
            for tid in batch_ids:
                try:
                    views.append(cache.get(dataset.samples[tid]))
                except Exception as exc:
                    self._maybe_raise(exc)
                    rows.append(self._error_row(base, tid, _describe(exc)))
                    progress.update(1)
            if not views:
                continue
            try:
                targets = [Target(v.sample.id, v.image, self._guidance(v, guidance)) for v in views]
                t0 = time.perf_counter()
                preds = method.predict(targets)
                dt = time.perf_counter() - t0
                self.stats.method_s += dt
                if len(preds) != len(views):
                    raise ValueError(f"method returned {len(preds)} predictions for {len(views)} targets")
            except Exception as exc:
                self._maybe_raise(exc)
                rows.extend(self._error_row(base, v.sample.id, f"method: {_describe(exc)}") for v in views)
                progress.update(len(views))
                continue
            per_target_s = dt / len(views) + prepare_s
            for view, pred in zip(views, preds, strict=True):
                try:
                    q = _check_prediction(pred, view)
                except ValueError as exc:
                    self._maybe_raise(exc)
                    rows.append(self._error_row(base, view.sample.id, f"method: {exc}", per_target_s))
                    progress.update(1)
                    continue
                save_path = None
                if self.r.get("save_predictions", True):
                    save_path = str(prediction_path(self.out, episode.round, view.sample.id))
                if view.alpha is None or pool is None:  # write here; with a pool the worker writes
                    t0 = time.perf_counter()
                    if save_path:
                        write_png(save_path, q)
                    save_path = None
                    self.stats.write_s += time.perf_counter() - t0
                if view.alpha is None:  # an unlabelled video frame: saved, not scored
                    rows.append(dict(self._error_row(base, view.sample.id, "", per_target_s, log_it=False),
                                     status="unscored"))
                    self.stats.targets += 1
                    progress.update(1)
                    continue
                job = ScoreJob(q, view.alpha, view.trimap, tuple(self.r["regions"]), self.r["metric_protocol"],
                               self.r["trimap_radius_fraction"], view.trimap_source, save_path)
                try:
                    result = pool.submit(score, job) if pool is not None else score(job)
                except Exception as exc:
                    self._maybe_raise(exc)
                    rows.append(self._error_row(base, view.sample.id, f"metrics: {_describe(exc)}", per_target_s))
                    progress.update(1)
                    continue
                pending.append((view.sample.id, per_target_s, result))
        return _InFlight(episode, base, rows, pending)

    def _finish_episode(self, job: _InFlight, ep_dir: Path, progress) -> None:
        """Collect an episode's scores and write its file (the resume unit) atomically."""
        episode, base, rows = job.episode, job.base, job.rows
        for tid, secs, result in job.pending:
            try:
                res = result.result() if isinstance(result, Future) else result
                self.stats.metrics_s += res.seconds
                progress.update(1)
            except Exception as exc:
                self._maybe_raise(exc)
                rows.append(self._error_row(base, tid, f"metrics: {_describe(exc)}", secs))
                continue
            for region in self.r["regions"]:
                source = res.trimap_source if region == "unknown" else ""
                row = dict(base, target=tid, region=region, trimap_source=source,
                           seconds=f"{secs:.4f}", status="ok", error="")
                row.update({m: _fmt(res.values[region][m]) for m in METRIC_NAMES})
                rows.append(row)
            self.stats.targets += 1
        order = {t: i for i, t in enumerate(episode.targets)}
        regions = {r: i for i, r in enumerate(self.r["regions"])}
        rows.sort(key=lambda row: (order[row["target"]], regions.get(row["region"], 0)))
        for row in rows:  # per target: in the official protocol only the reference itself is flagged
            row["self_reference"] = int(row["target"] in episode.references)
        t0 = time.perf_counter()
        _write_csv(ep_dir / f"{_slug(episode.key)}.csv", rows)
        self.stats.write_s += time.perf_counter() - t0

    def _guidance(self, view: SampleView, guidance: str) -> np.ndarray | None:
        """Per-target auxiliary input derived from the ground truth (paper Table 3)."""
        if guidance in ("trimap", "mask") and view.alpha is None:
            raise ValueError(f"'{view.sample.id}' has no ground truth to derive a {guidance} from")
        if guidance == "trimap":
            return view.trimap if view.trimap is not None else trimap_for(
                view.alpha, None, self.r["trimap_radius_fraction"])[0]
        if guidance == "mask":
            a = view.alpha
            return a > 127 if a.dtype == np.uint8 else a > 0.5
        return None

    def _prompt(self, episode: Episode, ref: SampleView) -> Prompt:
        """The stored prompt of this (episode, reference), or a new one saved before use."""
        path = self.out / "prompts" / f"{_slug(episode.key + '|' + ref.sample.id)}.npz"
        if path.exists():
            prompt = load_prompt(path)
            if prompt.shape == ref.image.shape[:2]:
                return prompt
            log.warning("stored prompt %s has shape %s, reference is %s: drawing it again",
                        path.name, prompt.shape, ref.image.shape[:2])
        if ref.alpha is None:
            raise PromptError(f"reference '{ref.sample.id}' has no matte to draw a prompt from")
        prompt = make_prompt(self.prompt_kind, ref.alpha, seed=self.r["seed"], group=episode.group,
                             round_index=episode.round, reference=ref.sample.id, **self.prompt_params)
        save_prompt(path, prompt)
        return prompt

    def _row_base(self, dataset: Dataset, episode: Episode) -> dict[str, Any]:
        return {
            "method": self.method_name, "method_hash": self._method_hash or "", "dataset": dataset.name,
            "dataset_hash": dataset.fingerprint, "protocol": self.r["protocol"], "prompt": self.prompt_kind,
            "round": episode.round, "group": episode.group, "references": "+".join(episode.references),
            "self_reference": int(episode.self_reference), "resolution": self.r["resolution"],
            "metric_protocol": self.r["metric_protocol"],
        }

    def _error_row(self, base: dict[str, Any], target: str, error: str, seconds: float = 0.0,
                   log_it: bool = True) -> dict[str, Any]:
        row = dict(base, target=target, region="", trimap_source="", seconds=f"{seconds:.4f}",
                   status="error", error=error.replace("\n", " "))
        row.update({m: "" for m in METRIC_NAMES})
        if log_it:
            log.warning("%s / %s: %s", base["group"], target, error)
        return row

    def _maybe_raise(self, exc: Exception) -> None:
        if self.r["on_error"] == "raise":
            raise exc

    def _write_problem_rows(self, dataset: Dataset, skipped: list, ep_dir: Path) -> None:
        """Dataset entries without files become error rows (so counts show them)."""
        problems = dataset.meta.get("problems", [])
        if not problems or self.r["shard"] != 0:  # reported once, not once per shard
            return
        base = {"method": self.method_name, "method_hash": self._method_hash or "", "dataset": dataset.name,
                "dataset_hash": dataset.fingerprint, "protocol": self.r["protocol"], "prompt": self.prompt_kind,
                "round": "", "references": "", "self_reference": 0, "resolution": self.r["resolution"],
                "metric_protocol": self.r["metric_protocol"]}
        rows = [self._error_row(dict(base, group=p["group"]), p["sample"], f"dataset: {p['error']}")
                for p in problems]
        _write_csv(ep_dir / "_dataset_problems.csv", rows)

    def _write_results(self, rows: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        _write_csv(self.out / "results.csv", rows)
        self.stats.write_s += time.perf_counter() - t0


@dataclass
class _InFlight:
    """An episode whose predictions are saved and whose scores may still be computing."""

    episode: Episode
    base: dict[str, Any]
    rows: list[dict[str, Any]]
    pending: list[tuple[str, float, Future | ScoreResult]]

    def done(self) -> bool:
        return all(not isinstance(r, Future) or r.done() for _, _, r in self.pending)


def _check_prediction(pred: Any, view: SampleView) -> np.ndarray:
    """Validate a method's output and quantise it (rounding) to the uint8 that is saved and scored."""
    arr = np.asarray(pred)
    h, w = view.image.shape[:2]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.shape != (h, w):
        raise ValueError(f"prediction for '{view.sample.id}' has shape {arr.shape}, expected {(h, w)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"prediction for '{view.sample.id}' has dtype {arr.dtype}; methods return float alpha")
    if not np.isfinite(arr).all():
        raise ValueError(f"prediction for '{view.sample.id}' contains {int((~np.isfinite(arr)).sum())} NaN/inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"prediction for '{view.sample.id}' lies in [{lo:.4g}, {hi:.4g}], outside [0, 1]")
    return quantize_alpha(arr)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _fmt(x: float) -> str:
    return "nan" if x != x else repr(float(x))


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class _NullProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, mode: str):
    """A tqdm bar on a terminal (or when forced), silent otherwise."""
    show = sys.stderr.isatty() if mode == "auto" else bool(mode) and mode != "off"
    if not show:
        return _NullProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="target", dynamic_ncols=True)


class _scoring_pool:
    """A process pool for metrics (None when ``workers`` ≤ 1: score in-process)."""

    def __init__(self, workers: int | None) -> None:
        n = (os.cpu_count() or 1) if workers is None else int(workers)
        self.n = n
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessPoolExecutor | None:
        if self.n > 1:
            # fork is fast; after torch (threads) has been imported, forkserver is the safe choice.
            method = "forkserver" if "torch" in sys.modules else "fork"
            self.pool = ProcessPoolExecutor(self.n, mp_context=mp.get_context(method))
        return self.pool

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def collect_rows(run_dir: Path, episode_keys: Sequence[str]) -> list[dict[str, str]]:
    """The rows of the finished episodes in plan order, then the dataset-problem rows."""
    ep_dir = run_dir / "episodes"
    rows: list[dict[str, str]] = []
    for name in [*(f"{_slug(k)}.csv" for k in episode_keys), "_dataset_problems.csv"]:
        path = ep_dir / name
        if path.exists():
            with path.open(newline="") as fh:
                rows.extend(csv.DictReader(fh))
    return rows
