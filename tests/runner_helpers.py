"""Building run configs through Hydra's compose API, exactly as the command line would."""

from __future__ import annotations

import csv
from pathlib import Path

from benchmark.config import compose_run_config


def compose_config(*overrides: str) -> dict:
    return compose_run_config(overrides)


def read_rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]
