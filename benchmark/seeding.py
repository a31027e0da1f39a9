"""Deterministic random generators derived from a seed and names (stable across processes/platforms)."""

from __future__ import annotations

import hashlib

import numpy as np


def rng_for(seed: int, *names: object) -> np.random.Generator:
    """A numpy Generator seeded from ``seed`` and ``names`` via SHA-256 (never Python's ``hash``)."""
    text = "\x1f".join([str(seed), *map(str, names)])
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))
