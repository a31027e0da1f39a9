"""``python -m benchmark method=… dataset=… [prompt=…] [runner.key=value …]`` (Hydra app).

``--help`` explains the config groups, the exit status and shows the resolved config.

Exit status: 0 done; 1 done, but some targets ended as error rows (``runner.on_error=ignore``
exits 0); 2 a configuration error or a refused run folder (nothing in it changed); 3 the run
folder is locked by another live run; 130 / 143 interrupted by SIGINT / SIGTERM (finished
episodes are kept; the same command resumes).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmark.datasets.common import DatasetError
from benchmark.registry import UnknownNameError
from benchmark.run_lock import RunLockedError
from benchmark.rundir import RunDirError
from benchmark.runner import RunConfigError, RunInterrupted, Runner

log = logging.getLogger("benchmark")
EXIT_ERROR_ROWS, EXIT_CONFIG, EXIT_LOCKED, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 3, 130, 143


def hydra_files(cfg: DictConfig) -> dict[str, str]:
    """What Hydra would write to ``.hydra/`` (written by the runner once the run is accepted)."""
    hc = HydraConfig.get()
    return {"config.yaml": OmegaConf.to_yaml(cfg),
            "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(hc)})),
            "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task)))}


def _interrupted(runner: Runner, exc: KeyboardInterrupt, out_dir: str) -> None:
    s = runner.stats
    kept = s.episodes_resumed + s.episodes_written
    print(f"interrupted ({'SIGTERM' if isinstance(exc, RunInterrupted) else 'SIGINT'}): {kept} of "
          f"{s.episodes_total} episodes are saved in {out_dir}; run the same command again to resume",
          file=sys.stderr)
    sys.exit(EXIT_SIGTERM if isinstance(exc, RunInterrupted) else EXIT_SIGINT)


@hydra.main(version_base=None, config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> Any:
    out_dir = HydraConfig.get().runtime.output_dir
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    try:
        runner = Runner(plain, out_dir, hydra_files=hydra_files(cfg))
        stats = runner.run()
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_LOCKED)
    except (DatasetError, RunConfigError, RunDirError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt as exc:
        _interrupted(runner, exc, out_dir)
    print(f"{cfg.method.name} on {cfg.dataset.name} ({cfg.prompt.kind}): {stats.episodes_total} episodes "
          f"({stats.episodes_resumed} resumed), {stats.targets} new targets scored, {stats.errors} error rows, "
          f"{stats.wall_s:.1f} s → {out_dir}/leaderboard.csv")
    with open(f"{out_dir}/leaderboard.md") as fh:
        print(fh.read(), end="")
    if stats.errors and cfg.runner.on_error != "ignore":
        print(f"{stats.errors} error rows (see the 'error' column of {out_dir}/results.csv); exit status 1 "
              "(runner.on_error=ignore exits 0; runner.retry_errors=true re-runs them)", file=sys.stderr)
        sys.exit(EXIT_ERROR_ROWS)
    return stats


if __name__ == "__main__":
    main()
