"""The evaluation loop: episodes → prompts → method → saved predictions → metrics → result files.

The run folder belongs to :class:`benchmark.rundir.RunDir`; this module only runs the loop. An
episode goes through small steps — prompt, prepare, predict a batch, save, submit its scores —
and every failure takes one path (:meth:`Runner._fail`): an error row, or a raise with
``runner.on_error=raise``.

Resume model: every finished episode is one CSV file written atomically once *all* its scores
are back, so a run killed at any moment (SIGKILL, SIGTERM, Ctrl-C) loses at most the episodes in
flight, and never writes a partial one. Re-running the same command skips finished episodes,
never builds the method when nothing is left, and rebuilds ``results.csv`` and the leaderboard
from the episode files in plan order, so a resumed run produces the files of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, Executor, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.datasets import absolute_paths, load_dataset
from benchmark.episodes import episode_seed, plan_episodes, shard_groups
from benchmark.interrupts import interrupts_as_exceptions, raise_pending
from benchmark.io import quantize_alpha, write_png
from benchmark.progress import progress_bar
from benchmark.prompts import PromptError, load_prompt, make_prompt, save_prompt
from benchmark.rundir import RunDir, RunPlan, fmt_value, identity_changes
from benchmark.scoring import METRIC_NAMES, REGIONS, ScoreJob, ScoreResult, score, trimap_for
from benchmark.types import Dataset, Episode, Prompt
from benchmark.views import RESOLUTIONS, SampleView, ViewCache
from benchmark.workers import ScoringPool
from methods import METHODS, build_method
from methods.base import Method, MethodInfo, Prediction, Reference, Target, method_info

log = logging.getLogger("benchmark")

#: Runner settings that change results; a run folder holds the results of one value of each.
RUNNER_RESULT_KEYS = ("protocol", "rounds", "references", "max_references", "guidance", "seed", "singletons",
                      "resolution", "regions", "metric_protocol", "trimap_radius_fraction", "shard", "num_shards")
ON_ERROR = ("continue", "raise", "ignore")


class RunConfigError(RuntimeError):
    """The run folder belongs to another configuration, or a setting is invalid."""


class _Incomplete(Exception):
    """An episode's scores did not all come back (cancelled by an interrupt): not written."""


class WorkerDied(RuntimeError):
    """A metric worker process died (killed, out of memory): the run stops, finished episodes kept."""


@dataclass
class RunStats:
    episodes_total: int = 0
    episodes_resumed: int = 0
    episodes_written: int = 0
    targets: int = 0
    errors: int = 0  # every error row of results.csv, dataset problems included
    problem_rows: int = 0  # error rows for dataset entries without usable files
    decode_s: float = 0.0
    method_s: float = 0.0
    metrics_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0


@dataclass(frozen=True)
class WorkItem:
    """Targets of one episode still to compute (all of them, or its error rows on retry)."""

    episode: Episode
    targets: tuple[str, ...]
    kept_rows: tuple[dict[str, str], ...] = ()


@dataclass
class _Flight:
    """An episode whose predictions are saved and whose scores may still be computing."""

    item: WorkItem
    base: dict[str, Any]
    rows: list[dict[str, Any]]
    pending: list[tuple[str, float, Future | ScoreResult]] = field(default_factory=list)

    def done(self) -> bool:
        return all(not isinstance(r, Future) or r.done() for _, _, r in self.pending)


def validate_runner(r: Mapping[str, Any]) -> None:
    """Refuse unknown runner settings before anything runs."""
    choices = {"resolution": RESOLUTIONS, "metric_protocol": ("dim", "icm"), "on_error": ON_ERROR}
    for key, allowed in choices.items():
        if r[key] not in allowed:
            raise RunConfigError(f"runner.{key} must be one of {allowed}, got '{r[key]}'")
    bad = [x for x in r["regions"] if x not in REGIONS]
    if bad:
        raise RunConfigError(f"runner.regions: unknown region(s) {bad}; choose from {REGIONS}")
    if r["workers"] is not None and int(r["workers"]) < 1:
        raise RunConfigError(f"runner.workers must be ≥ 1 or null (the CPUs this process may use), got {r['workers']}")


def guidance_kind(method_guidance: str, runner_guidance: str) -> str:
    """What result rows record as guidance (paper Tables 2-4): ``in_context`` (one reference per
    group), ``per_image`` (every image its own reference, or a prompt on every target), ``trimap``,
    ``mask`` or ``none``."""
    if method_guidance == "in_context":
        return "per_image" if runner_guidance == "per_image" else "in_context"
    return "per_image" if method_guidance == "prompt" else method_guidance


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _split(cfg: Mapping[str, Any], name_key: str) -> tuple[str, dict[str, Any]]:
    params = dict(cfg)
    return str(params.pop(name_key)), params


class Runner:
    """Runs one method on one dataset with one prompt kind under the runner settings.

    ``hydra_files`` (name → text) are written to ``.hydra/`` once the run folder is locked and the
    run accepted, so a refused run changes nothing in the folder."""

    def __init__(self, cfg: Mapping[str, Any], out_dir: str | Path,
                 hydra_files: Mapping[str, str] | None = None) -> None:
        self.cfg = {k: dict(v) if isinstance(v, Mapping) else v for k, v in cfg.items()}
        self.cfg["dataset"] = absolute_paths(self.cfg["dataset"])
        self.rd = RunDir(out_dir)
        self.out = self.rd.root
        self.r = self.cfg["runner"]
        for key, default in (("retry_errors", False), ("overwrite", False), ("max_references", None),
                             ("guidance", "group")):
            self.r.setdefault(key, default)
        validate_runner(self.r)
        self.hydra_files = dict(hydra_files or {})
        self.method_name, self.method_params = _split(self.cfg["method"], "name")
        #: the name results and leaderboards show (a preset such as iconmatting_official sets it)
        self.method_label = str(self.method_params.pop("label", None) or self.method_name)
        self.dataset_name, self.dataset_params = _split(self.cfg["dataset"], "name")
        self.prompt_kind, self.prompt_params = _split(self.cfg["prompt"], "kind")
        self.info: MethodInfo = method_info(METHODS.get(self.method_name), self.method_params)
        self._check_method_settings()
        self.guidance_kind = guidance_kind(self.info.guidance, self.r["guidance"])
        self.stats = RunStats()
        self._method_hash: str | None = None
        self._progress: Any = None
        self._logs: contextlib.ExitStack | None = None  # closes run.log at the end of run()

    def _check_method_settings(self) -> None:
        if self.info.guidance not in ("in_context", "prompt"):
            return
        if self.prompt_kind not in self.info.prompt_kinds:
            raise RunConfigError(f"method '{self.method_name}' does not accept prompt={self.prompt_kind} "
                                 f"(accepts {sorted(self.info.prompt_kinds)})")
        if self.r["references"] > self.info.max_references:
            raise RunConfigError(f"method '{self.method_name}' accepts at most {self.info.max_references} "
                                 f"reference(s); runner.references={self.r['references']}")

    # ----------------------------------------------------------------- planning
    def identity(self, dataset: Dataset) -> dict[str, Any]:
        """What determines the numbers of this run folder (paths, device, batch size, workers do not)."""
        ident = {
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint},
            "method": {"name": self.method_name, "settings": self.info.result_settings(self.method_params),
                       **({"label": self.method_label} if self.method_label != self.method_name else {})},
            "prompt": self.cfg["prompt"], "runner": {k: self.r[k] for k in RUNNER_RESULT_KEYS},
        }
        return json.loads(json.dumps(ident, default=str))  # as it reads back from run.json

    def plan(self, dataset: Dataset) -> tuple[list[Episode], list]:
        """This shard's episodes and skipped groups; invalid protocol settings are a RunConfigError."""
        try:
            # an interactive method gets its prompt on every image: every image is a target, as per_image
            guidance = "per_image" if self.info.guidance == "prompt" else self.r["guidance"]
            episodes, skipped = plan_episodes(dataset, self.r["protocol"], self.r["rounds"], self.r["references"],
                                              self.r["seed"], self.r["singletons"], self.r["max_references"],
                                              guidance)
            mine = shard_groups(list(dataset.groups), self.r["shard"], self.r["num_shards"])
        except ValueError as exc:
            raise RunConfigError(f"runner: {exc}") from exc
        if self.r["num_shards"] > 1:
            episodes = [e for e in episodes if e.group in mine]
            skipped = [s for s in skipped if s.group in mine]
        return episodes, skipped

    def _accept(self, identity: dict[str, Any]) -> RunPlan | None:
        """The stored plan to resume, None to start afresh, or a refusal naming what changed."""
        if not self.rd.has_plan() or self.r["overwrite"]:  # overwrite clears once the run is accepted
            return None
        stored = self.rd.read_plan()
        changes = identity_changes(stored.identity, identity)
        if changes:
            raise RunConfigError(f"{self.out} holds results of a different configuration ({self.rd.run_json}): "
                                 + "; ".join(changes)
                                 + ". Choose another hydra.run.dir, or pass runner.overwrite=true to start afresh")
        return stored

    def _work(self, episodes: Sequence[Episode], fresh: bool) -> list[WorkItem]:
        """Episodes without a file (all of them when ``fresh``), and (``runner.retry_errors``) the
        error targets of finished ones."""
        items = []
        for e in episodes:
            if fresh or not self.rd.finished(e.key):
                items.append(WorkItem(e, e.targets))
            elif self.r["retry_errors"]:
                rows = self.rd.episode_rows(e.key) or []
                failed = {r["target"] for r in rows if r["status"] == "error"}
                if failed:
                    items.append(WorkItem(e, tuple(t for t in e.targets if t in failed),
                                          tuple(r for r in rows if r["target"] not in failed)))
        return items

    # ----------------------------------------------------------------- running
    def run(self) -> RunStats:
        """Lock the folder, check everything that can be checked, then (and only then) write and run.

        A refused run (another identity, changed weights, an invalid setting, a method that cannot be
        built) raises :class:`RunConfigError` before anything in the folder changes."""
        t_start = time.perf_counter()
        with self.rd.lock(), interrupts_as_exceptions(), contextlib.ExitStack() as logs:
            self._logs = logs
            dataset = load_dataset(self.dataset_name, **self.dataset_params)
            identity = self.identity(dataset)
            episodes, skipped = self.plan(dataset)
            stored = self._accept(identity)
            self._method_hash = stored.method_hash if stored else None
            work = self._work(episodes, fresh=stored is None)
            plan = RunPlan(identity, self.cfg, tuple(episodes), self._method_hash,
                           tuple({"group": s.group, "reason": s.reason} for s in skipped),
                           tuple(dataset.meta.get("problems", [])))
            self.stats.episodes_total = len(episodes)
            self.stats.episodes_resumed = len(episodes) - sum(1 for w in work if not w.kept_rows)
            if work:
                self._execute(dataset, work, plan)
            else:
                self._commit(plan)
            self.stats.problem_rows = self._write_problem_rows(dataset)
            self.stats.errors = self.rd.write_results(self.rd.collect_rows(episodes))
            from benchmark.leaderboard import write_leaderboard

            write_leaderboard([self.out], self.rd.leaderboard_csv)
        self.stats.wall_s = time.perf_counter() - t_start
        return self.stats

    def _commit(self, plan: RunPlan) -> None:
        """The run is accepted: clear (overwrite), write the plan and .hydra/, log to run.log."""
        if self.r["overwrite"]:
            self.rd.clear_results()
        self.rd.write_plan(plan)
        self.rd.write_hydra_files(self.hydra_files)
        handler = logging.FileHandler(self.rd.log_file)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
        log.addHandler(handler)
        assert self._logs is not None
        self._logs.callback(log.removeHandler, handler)
        self._logs.callback(handler.close)

    def _build_method(self) -> Method:
        """Build the method and check its weights against the run's; refusals are RunConfigError."""
        try:
            method = build_method(self.method_name, **self.method_params)
            h = _hash([self.method_name, self.info.result_settings(self.method_params), method.fingerprint()])
        except Exception as exc:
            raise RunConfigError(f"cannot build method '{self.method_name}': {type(exc).__name__}: {exc}") from exc
        if self._method_hash not in (None, h):
            raise RunConfigError(
                f"{self.out}: the method's weights changed since this run started (method hash "
                f"{self._method_hash} → {h}; its settings are unchanged, so the weight files' content "
                "differs); use another run directory, or runner.overwrite=true")
        self._method_hash = h
        return method

    def _execute(self, dataset: Dataset, work: list[WorkItem], plan: RunPlan) -> None:
        from metrics import compile_notice

        compile_notice()
        scoring = ScoringPool(self.r["workers"])
        with scoring as pool:  # workers start (and load the kernels) while the method is built
            method = self._build_method()
            try:
                self._commit(replace(plan, method_hash=self._method_hash))
                self._loop(dataset, work, method, pool, scoring.n)
            finally:
                close = getattr(method, "close", None)  # optional for methods written before close()
                if close is not None:
                    close()

    def _loop(self, dataset: Dataset, work: list[WorkItem], method: Method, pool: Executor | None, n: int) -> None:
        """Episodes in order; scoring of earlier ones overlaps the method on later ones."""
        derive = self.r["trimap_radius_fraction"] if "unknown" in self.r["regions"] else None
        # With several workers, as many threads decode upcoming images in the background.
        cache = ViewCache(self.r["resolution"], derive_trimap_fraction=derive, threads=n if n > 1 else 0)
        self._progress = progress_bar(sum(len(w.targets) for w in work), f"{self.method_label} on {self.dataset_name}",
                                      unit="target", mode=self.r.get("progress", "auto")) or _NullProgress()
        flights: deque[_Flight] = deque()
        try:
            for i, item in enumerate(work):
                raise_pending()
                self._prefetch(cache, dataset, work[i:i + 2])
                flights.append(self._run_episode(dataset, item, method, cache, pool))
                while flights and (flights[0].done() or len(flights) > 2 * n):
                    self._finish(flights.popleft())
            while flights:
                raise_pending()
                self._finish(flights.popleft())
            raise_pending()
        except BaseException:
            self._keep_finished(flights)  # before the pool shuts down and cancels the rest
            raise
        finally:
            self._progress.close()
            cache.close()
            self.stats.decode_s += cache.decode_seconds

    def _prefetch(self, cache: ViewCache, dataset: Dataset, items: Sequence[WorkItem]) -> None:
        for item in items:
            ids = (*item.episode.references, *item.targets)
            if len(ids) <= cache.capacity // 2:  # never prefetch past what the cache holds
                cache.prefetch(dataset.samples[s] for s in ids)

    # One episode: prompt, prepare, predict in batches, save, submit the scoring jobs.
    def _run_episode(self, dataset: Dataset, item: WorkItem, method: Method, cache: ViewCache,
                     pool: Executor | None) -> _Flight:
        flight = _Flight(item, self._row_base(dataset, item.episode), [dict(r) for r in item.kept_rows])
        try:
            prepare_s = self._prepare(dataset, item.episode, method, cache) / len(item.targets)
        except Exception as exc:
            for tid in item.targets:
                self._fail(flight, tid, "reference", exc)
            return flight
        batch_size = len(item.targets) if self.info.whole_episodes else max(1, int(self.r["batch_size"]))
        for start in range(0, len(item.targets), batch_size):
            views = self._decode(flight, dataset, cache, item.targets[start:start + batch_size])
            for view, pred, seconds in self._predict(flight, method, views):
                self._submit(flight, view, pred, seconds + prepare_s, pool)
        return flight

    def _prepare(self, dataset: Dataset, episode: Episode, method: Method, cache: ViewCache) -> float:
        """Prompts and ``method.prepare`` (with the episode's seed); returns the method's seconds."""
        seed = episode_seed(self.r["seed"], episode.group, episode.round)
        refs = [cache.get(dataset.samples[s]) for s in episode.references] if self.info.guidance == "in_context" else []
        prompts = [self._prompt(episode, v) for v in refs]
        t0 = time.perf_counter()
        method.prepare([Reference(v.sample.id, v.image, p) for v, p in zip(refs, prompts, strict=True)], seed=seed,
                       episode=episode)
        dt = time.perf_counter() - t0
        self.stats.method_s += dt
        return dt

    def _decode(self, flight: _Flight, dataset: Dataset, cache: ViewCache, ids: Sequence[str]) -> list[SampleView]:
        views = []
        for tid in ids:
            try:
                views.append(cache.get(dataset.samples[tid]))
            except Exception as exc:
                self._fail(flight, tid, None, exc)
        return views

    def _predict(self, flight: _Flight, method: Method, views: list[SampleView]) -> list[tuple]:
        """(view, prediction, seconds) per target; a failing batch is retried target by target so
        only the failing target becomes an error row."""
        if not views:
            return []
        try:
            targets = [self._target(flight.item.episode, v) for v in views]
            t0 = time.perf_counter()
            preds = method.predict(targets)
            dt = time.perf_counter() - t0
            self.stats.method_s += dt
            if len(preds) != len(views):
                raise ValueError(f"method returned {len(preds)} predictions for {len(views)} targets")
        except Exception as exc:
            if len(views) == 1 or self.r["on_error"] == "raise":
                self._fail(flight, views[0].sample.id, "method", exc)
                return []
            return [out for v in views for out in self._predict(flight, method, [v])]
        return [(v, p, dt / len(views)) for v, p in zip(views, preds, strict=True)]

    def _submit(self, flight: _Flight, view: SampleView, pred: Any, seconds: float, pool: Executor | None) -> None:
        """Quantise, save and hand one prediction to the metrics (in a worker when there is a pool).

        A :class:`MethodError` in place of a prediction is that target's error row; a
        :class:`Prediction`'s extras are saved beside the predictions."""
        tid = view.sample.id
        if isinstance(pred, Exception):
            self._fail(flight, tid, "method", pred, seconds)
            return
        try:
            if isinstance(pred, Prediction):
                if self.r["save_predictions"] and pred.extras:
                    self.rd.write_extras(flight.item.episode.round, tid, pred.extras)
                pred = pred.alpha
            q = _check_prediction(pred, view)
        except (ValueError, OSError) as exc:
            self._fail(flight, tid, "method", exc, seconds)
            return
        save = str(self.rd.prediction_file(flight.item.episode.round, tid)) if self.r["save_predictions"] else None
        if view.alpha is None or pool is None:  # write here; with a pool the worker writes
            t0 = time.perf_counter()
            try:
                if save:
                    write_png(save, q)
            except OSError as exc:
                self._fail(flight, tid, "save", exc, seconds)
                return
            save = None
            self.stats.write_s += time.perf_counter() - t0
        if view.alpha is None:  # an unlabelled video frame: saved, not scored
            flight.rows.append(dict(self._error_row(flight.base, tid, "", seconds), status="unscored"))
            self.stats.targets += 1
            self._progress.update(1)
            return
        job = ScoreJob(q, view.alpha, view.trimap, tuple(self.r["regions"]), self.r["metric_protocol"],
                       self.r["trimap_radius_fraction"], view.trimap_source, save)
        try:
            flight.pending.append((tid, seconds, pool.submit(score, job) if pool is not None else score(job)))
        except BrokenProcessPool as exc:
            raise WorkerDied(_WORKER_DIED) from exc
        except Exception as exc:
            self._fail(flight, tid, "metrics", exc, seconds)

    def _finish(self, flight: _Flight) -> None:
        """Collect an episode's scores and write its file (the resume unit) atomically."""
        rows = flight.rows
        for tid, secs, result in flight.pending:
            try:
                res = _result(result)
            except (_Incomplete, WorkerDied):
                raise
            except Exception as exc:
                self._fail(flight, tid, "metrics", exc, secs)
                continue
            self.stats.metrics_s += res.seconds
            self._progress.update(1)
            rows.extend(self._score_rows(flight.base, tid, secs, res))
            self.stats.targets += 1
        episode = flight.item.episode
        order = {t: i for i, t in enumerate(episode.targets)}
        regions = {r: i for i, r in enumerate(self.r["regions"])}
        rows.sort(key=lambda row: (order[row["target"]], regions.get(row["region"], 0)))
        for row in rows:  # per target: in the official protocol only the reference itself is flagged
            row["self_reference"] = int(row["target"] in episode.references)
        t0 = time.perf_counter()
        self.rd.write_episode(episode.key, rows)
        self.stats.write_s += time.perf_counter() - t0
        self.stats.episodes_written += 1

    def _keep_finished(self, flights: deque[_Flight]) -> None:
        """Interrupted: write every episode whose scores are all back (nothing finished is lost)."""
        for flight in flights:
            if flight.done():
                with contextlib.suppress(BaseException):  # an incomplete episode is recomputed on resume
                    self._finish(flight)
        flights.clear()

    def _score_rows(self, base: dict[str, Any], tid: str, secs: float, res: ScoreResult) -> list[dict[str, Any]]:
        out = []
        for region in self.r["regions"]:
            row = dict(base, target=tid, region=region, trimap_source=res.trimap_source if region == "unknown" else "",
                       seconds=f"{secs:.4f}", status="ok", error="")
            row.update({m: fmt_value(res.values[region][m]) for m in METRIC_NAMES})
            out.append(row)
        return out

    def _target(self, episode: Episode, view: SampleView) -> Target:
        """The target as the method sees it, with the guidance its MethodInfo asks for: derived from the
        ground truth (:data:`FROM_TRUTH`, paper Table 3), or a prompt on the target itself (Table 4)."""
        kind = self.info.guidance
        if (kind in FROM_TRUTH or kind == "prompt") and view.alpha is None:
            raise ValueError(f"'{view.sample.id}' has no ground truth to derive a {kind} from")
        guidance = FROM_TRUTH[kind](view, self.r["trimap_radius_fraction"]) if kind in FROM_TRUTH else None
        prompt = self._prompt(episode, view, "target") if kind == "prompt" else None
        return Target(view.sample.id, view.image, guidance, prompt)

    def _prompt(self, episode: Episode, view: SampleView, role: str = "reference") -> Prompt:
        """The stored prompt of this (episode, image, role), or a new one saved before use."""
        path = self.rd.prompt_file(episode.key, view.sample.id, role)
        if path.exists():
            prompt = load_prompt(path)
            if prompt.shape == view.image.shape[:2]:
                return prompt
            log.warning("stored prompt %s has shape %s, the image is %s: drawing it again",
                        path.name, prompt.shape, view.image.shape[:2])
        if view.alpha is None:
            raise PromptError(f"{role} '{view.sample.id}' has no matte to draw a prompt from")
        # The same image gets the same prompt as a reference or as an interactive target (Table 4
        # compares the two), and under the fixed protocol the same prompt in every round.
        draw_round = 0 if self.r["protocol"] == "fixed" else episode.round
        prompt = make_prompt(self.prompt_kind, view.alpha, seed=self.r["seed"], group=episode.group,
                             round_index=draw_round, reference=view.sample.id, **self.prompt_params)
        save_prompt(path, prompt)
        return prompt

    # ----------------------------------------------------------------- rows
    def _row_base(self, dataset: Dataset, episode: Episode | None) -> dict[str, Any]:
        return {
            "method": self.method_label, "method_hash": self._method_hash or "", "dataset": dataset.name,
            "dataset_hash": dataset.fingerprint, "protocol": self.r["protocol"], "prompt": self.prompt_kind,
            "guidance": self.guidance_kind, "round": episode.round if episode else "",
            "group": episode.group if episode else "",
            "references": "+".join(episode.references) if episode else "",
            "self_reference": int(episode.self_reference) if episode else 0, "resolution": self.r["resolution"],
            "metric_protocol": self.r["metric_protocol"],
        }

    def _fail(self, flight: _Flight, target: str, stage: str | None, exc: Exception, seconds: float = 0.0) -> None:
        """The one error path: raise (``on_error=raise``) or record an error row and go on."""
        if self.r["on_error"] == "raise":
            raise exc
        text = f"{type(exc).__name__}: {exc}"
        flight.rows.append(self._error_row(flight.base, target, f"{stage}: {text}" if stage else text, seconds))
        log.warning("%s / %s: %s", flight.base["group"], target, flight.rows[-1]["error"])
        self._progress.update(1)

    @staticmethod
    def _error_row(base: dict[str, Any], target: str, error: str, seconds: float = 0.0) -> dict[str, Any]:
        row = dict(base, target=target, region="", trimap_source="", seconds=f"{seconds:.4f}",
                   status="error", error=error.replace("\n", " "))
        row.update({m: "" for m in METRIC_NAMES})
        return row

    def _write_problem_rows(self, dataset: Dataset) -> int:
        """Dataset entries without usable files become error rows (so counts show them), once across
        shards; returns how many."""
        problems = dataset.meta.get("problems", []) if self.r["shard"] == 0 else []
        base = self._row_base(dataset, None)
        self.rd.write_dataset_problems([self._error_row(dict(base, group=p["group"]), p["sample"],
                                                        f"dataset: {p['error']}") for p in problems])
        return len(problems)


def _trimap_guidance(view: SampleView, radius_fraction: float) -> np.ndarray:
    return view.trimap if view.trimap is not None else trimap_for(view.alpha, None, radius_fraction)[0]


def _mask_guidance(view: SampleView, radius_fraction: float) -> np.ndarray:
    a = view.alpha
    return a > 127 if a.dtype == np.uint8 else a > 0.5


#: Per-target inputs derived from the ground truth, by ``MethodInfo.guidance``.
FROM_TRUTH = {"trimap": _trimap_guidance, "mask": _mask_guidance}


def _result(result: Future | ScoreResult) -> ScoreResult:
    """A score job's result; cancelled jobs and dead workers make the episode incomplete."""
    if not isinstance(result, Future):
        return result
    try:
        return result.result()
    except CancelledError as exc:
        raise _Incomplete("cancelled") from exc
    except BrokenProcessPool as exc:
        raise WorkerDied(_WORKER_DIED) from exc


_WORKER_DIED = ("a metric worker process died (killed, or out of memory?); the episodes already finished are "
                "kept: run the same command again to resume, with fewer runner.workers if memory is short")


def _check_prediction(pred: Any, view: SampleView) -> np.ndarray:
    """Validate a method's output and quantise it (rounding) to the uint8 that is saved and scored."""
    arr = np.asarray(pred)
    h, w = view.image.shape[:2]
    sid = view.sample.id
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.shape != (h, w):
        raise ValueError(f"prediction for '{sid}' has shape {arr.shape}, expected {(h, w)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"prediction for '{sid}' has dtype {arr.dtype}; methods return float alpha")
    if not np.isfinite(arr).all():
        raise ValueError(f"prediction for '{sid}' contains {int((~np.isfinite(arr)).sum())} NaN/inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"prediction for '{sid}' lies in [{lo:.4g}, {hi:.4g}], outside [0, 1]")
    return quantize_alpha(arr)


class _NullProgress:
    """Stands in for a bar when none is shown."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
