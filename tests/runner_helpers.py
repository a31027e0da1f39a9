"""Building run configs through Hydra's compose API, exactly as the command line would."""

from __future__ import annotations

import csv
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf


def compose_config(*overrides: str) -> dict:
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def read_rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]
