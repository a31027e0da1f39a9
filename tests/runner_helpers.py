"""Building run configs through Hydra's compose API, exactly as the command line would."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from benchmark.config import compose_run_config


def compose_config(*overrides: str) -> dict:
    return compose_run_config(overrides)


def read_rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]


def assert_same_board(merged: list[dict], full: list[dict]) -> None:
    """Two leaderboards agree: every float to 1e-12 relative, everything else exactly, all complete."""
    assert merged and len(merged) == len(full)
    assert all(r["complete"] == 1 for r in merged)
    for m, f in zip(merged, full, strict=True):
        for k, v in f.items():
            if isinstance(v, float):
                assert math.isclose(m[k], v, rel_tol=1e-12, abs_tol=1e-15), k
            else:
                assert m[k] == v, k
