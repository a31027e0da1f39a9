"""Compose a run's configuration exactly as ``python -m benchmark OVERRIDES`` would (Hydra's
compose API), for code that starts runs without the command line: the Ray launcher, tests,
benchmark scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def compose_run_config(overrides: Sequence[str]) -> dict[str, Any]:
    """The resolved run config (plain dicts) for these Hydra overrides."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
