"""``python -m benchmark method=… dataset=… [prompt=…] [runner.key=value …]`` (Hydra app).

``--help`` explains the config groups, the exit status and shows the resolved config.

Exit status (the highest of all jobs in a multirun): 0 done; 1 done, but some targets ended as
error rows (``runner.on_error=ignore`` exits 0; rows for dataset entries without usable files do
not count), or the run stopped on an error (a metric worker died; ``runner.on_error=raise``);
2 a configuration error or a refused run folder (another identity, changed weights, a method that
cannot be built), with nothing in the folder changed; 3 the run folder is locked by another live
run; 130 / 143 interrupted by SIGINT / SIGTERM (finished episodes kept; the same command resumes).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmark.datasets.common import DatasetError
from benchmark.interrupts import RunInterrupted
from benchmark.registry import UnknownNameError
from benchmark.run_lock import RunLockedError
from benchmark.rundir import RunDir, RunDirError
from benchmark.runner import RunConfigError, Runner, RunStats, WorkerDied

log = logging.getLogger("benchmark")
EXIT_ERROR_ROWS, EXIT_CONFIG, EXIT_LOCKED, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 3, 130, 143
#: The exit status so far (a multirun runs several jobs in this process; the worst one wins).
status = 0


def hydra_files(cfg: DictConfig) -> dict[str, str]:
    """What Hydra would write to ``.hydra/`` (written by the runner once the run is accepted)."""
    hc = HydraConfig.get()
    return {"config.yaml": OmegaConf.to_yaml(cfg),
            "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(hc)})),
            "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task)))}


def _interrupted(stats: RunStats | None, exc: KeyboardInterrupt, out_dir: str, overwrite: bool) -> None:
    how = "SIGTERM" if isinstance(exc, RunInterrupted) else "SIGINT"
    kept = f"{stats.episodes_resumed + stats.episodes_written} of {stats.episodes_total}" if stats else "no new"
    again = "run it again without runner.overwrite=true" if overwrite else "run the same command again"
    print(f"interrupted ({how}): {kept} episodes are saved in {out_dir}; {again} to resume", file=sys.stderr)
    sys.exit(EXIT_SIGTERM if isinstance(exc, RunInterrupted) else EXIT_SIGINT)


def _report(cfg: DictConfig, stats: RunStats, out_dir: str) -> int:
    """Print the summary and the leaderboard; the job's exit status."""
    label = cfg.method.get("label") or cfg.method.name
    print(f"{label} on {cfg.dataset.name} ({cfg.prompt.kind}): {stats.episodes_total} episodes "
          f"({stats.episodes_resumed} resumed), {stats.targets} new targets scored, {stats.errors} error rows, "
          f"{stats.wall_s:.1f} s → {out_dir}/leaderboard.csv")
    print(RunDir(out_dir).leaderboard_md.read_text(), end="")
    if stats.problem_rows:
        print(f"{stats.problem_rows} dataset entries have no usable files (error rows 'dataset: …' in "
              f"{out_dir}/results.csv)", file=sys.stderr)
    target_errors = stats.errors - stats.problem_rows
    if target_errors and cfg.runner.on_error != "ignore":
        print(f"{target_errors} targets ended as error rows (see the 'error' column of {out_dir}/results.csv); "
              "exit status 1 (runner.on_error=ignore exits 0; runner.retry_errors=true re-runs them)",
              file=sys.stderr)
        return EXIT_ERROR_ROWS
    return 0


def run_job(cfg: DictConfig) -> int:
    """One run; returns its exit status (never exits, so a multirun goes on to the next job)."""
    out_dir = HydraConfig.get().runtime.output_dir
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    runner = None
    try:
        runner = Runner(plain, out_dir, hydra_files=hydra_files(cfg))
        stats = runner.run()
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (DatasetError, RunConfigError, RunDirError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except WorkerDied as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR_ROWS
    except KeyboardInterrupt as exc:
        _interrupted(runner.stats if runner else None, exc, out_dir, bool(cfg.runner.overwrite))
    return _report(cfg, stats, out_dir)


@hydra.main(version_base=None, config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> Any:
    global status
    status = max(status, run_job(cfg))


if __name__ == "__main__":
    main()
    sys.exit(status)
