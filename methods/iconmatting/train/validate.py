"""Validation during training: the current decoder through the benchmark runner, and the best checkpoint.

Every ``train.val_every`` steps (and at the end) the trainer writes the decoder to a checkpoint file, runs
``benchmark.runner.Runner`` with ``method=iconmatting method.checkpoint=<that file>`` on the held-out dataset
into ``OUT/val/step_<n>/`` (the same metrics, protocol and leaderboard as ``python -m benchmark``), reads the
leaderboard mean of ``train.val_metric`` in ``train.val_region`` and keeps ``OUT/checkpoints/best.ckpt`` at the
lowest value (all four metrics are errors). ``OUT/val/summary.json`` records every validated step; it is the
source of truth on resume, so a run killed during a validation repeats exactly that validation (the runner
resumes its own folder) and nothing else.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.io import atomic_write_text
from benchmark.progress import progress_bar
from benchmark.scoring import METRIC_COLUMNS, METRIC_NAMES, REGIONS

log = logging.getLogger(__name__)


class ValidationError(ValueError):
    """The validation settings are invalid (unknown metric or region, no dataset name)."""


@dataclass(frozen=True)
class ValidationSpec:
    """What validation runs: a benchmark dataset config, the metric that picks ``best.ckpt``, and overrides."""

    dataset: Mapping[str, Any]
    metric: str = "SAD"
    region: str = "whole"
    runner: Mapping[str, Any] = field(default_factory=dict)
    method: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metric not in METRIC_NAMES:
            raise ValidationError(f"train.val_metric must be one of {METRIC_NAMES}, got {self.metric!r}")
        if self.region not in REGIONS:
            raise ValidationError(f"train.val_region must be one of {REGIONS}, got {self.region!r}")
        if "name" not in self.dataset:
            raise ValidationError("train.val_dataset needs a 'name' (a benchmark dataset: folder, icm57, ...)")

    @classmethod
    def from_train(cls, train: Mapping[str, Any]) -> ValidationSpec | None:
        """The spec of a ``train`` config block, None when ``train.val_dataset`` is unset."""
        if not train.get("val_dataset"):
            return None
        return cls(dict(train["val_dataset"]), str(train.get("val_metric", "SAD")),
                   str(train.get("val_region", "whole")), dict(train.get("val_runner") or {}),
                   dict(train.get("val_method") or {}))


def compose_benchmark(overrides: Sequence[str]) -> dict[str, Any]:
    """The benchmark's resolved config for ``overrides`` (as ``python -m benchmark`` composes it).

    Inside a running Hydra app (``python -m methods.iconmatting.train``) Hydra is already initialised with the
    same ``pkg://conf`` search path, so the compose API is used directly; elsewhere
    :func:`benchmark.config.compose_run_config` initialises it."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        from benchmark.config import compose_run_config

        return compose_run_config(overrides)
    from hydra import compose
    from omegaconf import OmegaConf

    cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def benchmark_config(spec: ValidationSpec, checkpoint: str | Path, method: Mapping[str, Any]) -> dict[str, Any]:
    """A complete benchmark run config: ``method=iconmatting`` with ``checkpoint`` and the training's extractor
    settings (``method``: sd_path, input_size, ...), then ``spec.method``; the runner defaults then
    ``spec.runner``; ``spec.dataset``."""
    cfg = compose_benchmark(["method=iconmatting", "runner.progress=off"])
    cfg["dataset"] = dict(spec.dataset)
    cfg["method"].update(method)
    cfg["method"].update(spec.method)
    cfg["method"]["checkpoint"] = str(checkpoint)
    cfg["runner"].update(spec.runner)
    return cfg


def evaluate(cfg: Mapping[str, Any], out_dir: str | Path) -> dict[str, float]:
    """Run (or resume) the benchmark into ``out_dir``; the leaderboard means as ``{"<region>/<metric>": value}``
    (SAD, Grad, Conn in the leaderboard's units, /1000; MSE raw)."""
    from benchmark.leaderboard import leaderboard
    from benchmark.runner import Runner

    stats = Runner(cfg, out_dir).run()
    if stats.errors:
        log.warning("validation: %d error rows in %s/results.csv", stats.errors, out_dir)
    out: dict[str, float] = {}
    for row in leaderboard([out_dir]):
        for m in METRIC_NAMES:
            value = row.get(METRIC_COLUMNS[m])
            if isinstance(value, float):
                out[f"{row['region']}/{m}"] = value
    return out


def val_identity(spec: ValidationSpec) -> dict[str, Any]:
    """What makes validations comparable (part of the training identity): the dataset's fingerprint (not its
    path), the metric, the region and the overrides."""
    from benchmark.datasets import absolute_paths, load_dataset

    params = dict(spec.dataset)
    name = params.pop("name")
    ds = load_dataset(name, **absolute_paths(params))
    return json.loads(json.dumps({"dataset": {"name": ds.name, "fingerprint": ds.fingerprint}, "metric": spec.metric,
                                  "region": spec.region, "runner": dict(spec.runner), "method": dict(spec.method)},
                                 default=str))


class Validator:
    """Runs validations into ``OUT/val/step_<n>/`` and keeps ``best.ckpt`` (rank 0 only)."""

    def __init__(self, spec: ValidationSpec, out: Path, method: Mapping[str, Any]) -> None:
        self.spec, self.out, self.method = spec, Path(out), dict(method)
        self.dir = self.out / "val"
        self.summary_file = self.dir / "summary.json"
        self.best_file = self.out / "checkpoints" / "best.ckpt"
        self.summary = self._read_summary()

    @property
    def key(self) -> str:
        return f"{self.spec.region}/{self.spec.metric}"

    def _read_summary(self) -> dict[str, Any]:
        if self.summary_file.is_file():
            return json.loads(self.summary_file.read_text())
        return {"metric": self.key, "steps": {}, "best": None}

    def done(self, step: int) -> bool:
        return str(step) in self.summary["steps"]

    @property
    def best(self) -> dict[str, Any] | None:
        """``{"step": n, "value": v}`` of the best validation so far."""
        return self.summary["best"]

    def history(self) -> dict[int, dict[str, float]]:
        """Every validated step's metrics (``"<region>/<metric>"`` → value)."""
        return {int(k): v for k, v in self.summary["steps"].items()}

    def checkpoint_path(self, step: int) -> Path:
        return self.dir / f"step_{step}.ckpt"

    def run(self, step: int, write_checkpoint) -> dict[str, float]:
        """Validate the decoder of ``step``; ``write_checkpoint(path)`` writes it (skipped when a killed earlier
        attempt already did, so the runner sees the same file). Returns the metrics; updates best.ckpt."""
        ckpt = self.checkpoint_path(step)
        if not ckpt.is_file():
            write_checkpoint(ckpt)
        metrics = evaluate(benchmark_config(self.spec, ckpt, self.method), self.dir / f"step_{step}")
        value = metrics.get(self.key)
        if value is None:
            log.warning("validation at step %d: no %s value (every row failed?); best.ckpt unchanged", step, self.key)
        elif self.best is None or value < self.best["value"]:
            tmp = self.best_file.with_name(f".{self.best_file.name}.tmp")
            self.best_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, tmp)
            tmp.replace(self.best_file)
            self.summary["best"] = {"step": step, "value": value}
        self.summary["steps"][str(step)] = metrics
        atomic_write_text(self.summary_file, json.dumps(self.summary, indent=1, sort_keys=True))
        ckpt.unlink(missing_ok=True)  # best.ckpt holds a copy when it was the best
        return metrics


# --------------------------------------------------------------------------- logs
#: Validation columns of ``log.csv``: ``val_<region>/<metric>``.
VAL_COLUMNS = tuple(f"val_{r}/{m}" for r in REGIONS for m in METRIC_NAMES)


class TrainLog:
    """``OUT/log.csv`` (one ``train`` row every ``log_every`` steps, one ``val`` row per validation),
    TensorBoard under ``OUT/tb`` (when the ``tensorboard`` package is installed) and a tqdm bar on a terminal.

    On resume the CSV is rewritten first: rows after the resumed step are dropped (they come again: training rows
    are recomputed, validation rows are replayed from ``OUT/val/summary.json`` when their step is reached) and a
    truncated last line is removed; TensorBoard purges events after the resumed step. So the files read as those of
    an uninterrupted run (but for wall-clock columns). ``metric`` (``"<region>/<metric>"``) fills ``best_step``."""

    def __init__(self, out: Path, *, resume_step: int, total: int, val_history: Mapping[int, Mapping[str, float]],
                 metric: str = "whole/SAD", tensorboard: bool = True, progress: str = "auto") -> None:
        import csv

        from .loss import TERMS

        self.path = Path(out) / "log.csv"
        self.metric = metric
        self.columns = ("kind", "step", "loss", *TERMS, "lr", "steps_per_s", "examples_per_s", "wall_s",
                        *VAL_COLUMNS, "best_step")
        self._best: tuple[float, int] | None = None
        self._rewrite(resume_step, {k: v for k, v in val_history.items() if k <= resume_step})
        self._fh = self.path.open("a", newline="")
        self._csv = csv.DictWriter(self._fh, self.columns, extrasaction="ignore")
        self._t0 = self._last_t = time.perf_counter()
        self._last_step = resume_step
        self.tb = _summary_writer(Path(out) / "tb", resume_step) if tensorboard else None
        self.bar = progress_bar(total, "train", unit="step", mode=progress, initial=resume_step)

    def _val_row(self, step: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        value = metrics.get(self.metric)
        if value is not None and (self._best is None or value < self._best[0]):
            self._best = (value, step)
        return {"kind": "val", "step": step, **{f"val_{k}": _fmt(v) for k, v in metrics.items()},
                "best_step": self._best[1] if self._best else ""}

    def _rewrite(self, resume_step: int, history: Mapping[int, Mapping[str, float]]) -> None:
        import csv
        import io

        rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if _complete_train_row(r) and int(r["step"]) <= resume_step]
        rows += [self._val_row(step, history[step]) for step in sorted(history)]
        rows.sort(key=lambda r: (int(r["step"]), r["kind"] != "train"))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def step(self, result: Any, *, force: bool = False, every: int = 1, batch: int = 1) -> None:
        """Log one finished optimiser step (``StepResult``) when it is due (every ``every`` steps, or ``force``)."""
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(result.step - self.bar.n)
        if not force and result.step % every:
            return
        sps = (result.step - self._last_step) / max(now - self._last_t, 1e-9)
        self._last_step, self._last_t = result.step, now
        row = {"kind": "train", "step": result.step, "loss": _fmt(result.loss), "lr": _fmt(result.lr),
               "steps_per_s": f"{sps:.4g}", "examples_per_s": f"{sps * batch:.4g}", "wall_s": f"{now - self._t0:.1f}",
               **{k: _fmt(v) for k, v in result.terms.items()}}
        self._csv.writerow(row)
        self._fh.flush()
        if self.tb is not None:
            self.tb.add_scalar("train/loss", result.loss, result.step)
            for k, v in result.terms.items():
                self.tb.add_scalar(f"train/{k}", v, result.step)
            self.tb.add_scalar("train/lr", result.lr, result.step)
            self.tb.add_scalar("train/steps_per_s", sps, result.step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{result.loss:.4g}", lr=f"{result.lr:.3g}", steps_per_s=f"{sps:.3g}")

    def val(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one validation (run now, or replayed from the summary after a resume)."""
        self._csv.writerow(self._val_row(step, metrics))
        self._fh.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"val/{k}", v, step)
        log.info("validation at step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def _complete_train_row(row: Mapping[str, Any]) -> bool:
    """A whole training row (a run killed while appending one leaves a truncated last line)."""
    return row.get("kind") == "train" and None not in row.values() and bool(row.get("wall_s")) and \
        str(row.get("step", "")).isdigit()


def _fmt(x: float) -> str:
    return f"{x:.8g}"


_TB_WARNED = False


def _summary_writer(folder: Path, resume_step: int) -> Any:
    """A TensorBoard ``SummaryWriter`` (events after ``resume_step`` purged), or None with one warning when the
    ``tensorboard`` package is missing."""
    global _TB_WARNED
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _TB_WARNED:
            log.warning("tensorboard is not installed: logging to log.csv only (pip install tensorboard)")
            _TB_WARNED = True
        return None
    return SummaryWriter(str(folder), purge_step=resume_step + 1 if resume_step else None)


__all__ = ["VAL_COLUMNS", "TrainLog", "ValidationError", "ValidationSpec", "Validator", "benchmark_config",
           "compose_benchmark", "evaluate", "val_identity"]
