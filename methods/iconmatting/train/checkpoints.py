"""Checkpoint files of the IconMatting trainer: atomic saves, the official decoder layout, global RNG state."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.io import atomic_write_bytes

from ..checkpoint import PREFIX


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to memory, then :func:`benchmark.io.atomic_write_bytes`: readers see old or new, whole."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def official_checkpoint(decoder: nn.Module, step: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The official Lightning layout: ``state_dict`` with ``in_context_decoder.*`` keys (no ``feature_extractor``
    keys, as the official ``ModifiedModelCheckpoint`` saves), ``global_step``, and our metadata."""
    state = {PREFIX + k: v.detach().cpu().clone() for k, v in decoder.state_dict().items()}
    return {"state_dict": state, "global_step": int(step), "epoch": 0, "icmbench": dict(meta)}


def rng_state() -> dict[str, Any]:
    """torch/CUDA/numpy/python global RNG states in types ``torch.load(weights_only=True)`` accepts. The maths
    never draws from them (every draw is seeded by the step); they are kept so user code sees a continuous run."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "state": {"key": n["key"].numpy().astype(np.uint32),
                                                                         "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda"])
