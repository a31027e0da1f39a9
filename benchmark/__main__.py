"""``python -m benchmark method=… dataset=… [prompt=…] [runner.key=value …]`` (Hydra app).

``--help`` explains the config groups and shows the resolved config.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmark.datasets.common import DatasetError
from benchmark.registry import UnknownNameError
from benchmark.runner import RunConfigError, Runner

log = logging.getLogger("benchmark")


@hydra.main(version_base=None, config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> None:
    out_dir = HydraConfig.get().runtime.output_dir
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    try:
        stats = Runner(plain, out_dir).run()
    except (DatasetError, RunConfigError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{cfg.method.name} on {cfg.dataset.name} ({cfg.prompt.kind}): {stats.episodes_total} episodes "
          f"({stats.episodes_resumed} resumed), {stats.targets} new targets scored, {stats.errors} error rows, "
          f"{stats.wall_s:.1f} s → {out_dir}/leaderboard.csv")
    board = (f"{out_dir}/leaderboard.md")
    with open(board) as fh:
        print(fh.read(), end="")


if __name__ == "__main__":
    main()
