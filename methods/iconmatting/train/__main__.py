"""``python -m methods.iconmatting.train dataset=<name> sd_path=DIR train.steps=N hydra.run.dir=OUT`` (Hydra app).

``--help`` explains the options and shows the resolved config; methods/iconmatting/TRAINING.md has the recipe.
Under ``torchrun --nproc-per-node N -m methods.iconmatting.train ...`` every process runs this app with the same
arguments (and the same, deterministic, ``hydra.run.dir``); the trainer joins the process group.

Exit status: 0 done or nothing to do; 1 training stopped (loss explosion); 2 configuration error or a run folder
holding another configuration (nothing in it changed); 3 the folder is locked by another live run; 130 / 143
interrupted by SIGINT / SIGTERM (SIGTERM checkpoints first; the same command resumes).
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

from ..checkpoint import CheckpointError
from ..features import SDModelError
from .loop import TrainConfigError, Trainer, TrainingError
from .validate import ValidationError

log = logging.getLogger("methods.iconmatting.train")
EXIT_STOPPED, EXIT_CONFIG, EXIT_LOCKED, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 3, 130, 143
status = 0


def train(cfg: dict[str, Any], out_dir: str) -> int:
    """Train (or resume) into ``out_dir``; the exit status."""
    try:
        with Trainer(cfg, out_dir) as trainer:
            result = trainer.run()
            if trainer.dist.main:
                _report(trainer, result, out_dir)
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (TrainConfigError, ValidationError, DatasetError, UnknownNameError, SDModelError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt as exc:
        sigterm = str(exc) == "SIGTERM"
        what = "checkpointed at the current step" if sigterm else "the last checkpoint is kept"
        print(f"interrupted ({'SIGTERM' if sigterm else 'SIGINT'}): {what} in {out_dir}/checkpoints; run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_SIGTERM if sigterm else EXIT_SIGINT
    return 0


def _report(trainer: Trainer, result: Any, out_dir: str) -> None:
    if result is None:
        print(f"{out_dir}: finished at step {trainer.step_count} (train.steps={trainer.settings.steps}); "
              "nothing to do — raise train.steps to continue")
        return
    print(f"{out_dir}: step {result.step}, loss {result.loss:.5g} → {out_dir}/checkpoints/last.ckpt")
    best = out_dir + "/checkpoints/best.ckpt"
    if trainer.val_spec is not None:
        print(f"best validation checkpoint: {best}; metrics per step in {out_dir}/log.csv")


@hydra.main(version_base=None, config_path="pkg://conf", config_name="train_config")
def main(cfg: DictConfig) -> None:
    global status
    out_dir = HydraConfig.get().runtime.output_dir
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    status = max(status, train(plain, out_dir))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
    sys.exit(status)
