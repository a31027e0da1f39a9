"""One contract for every registered method: facts readable without weights, the Method protocol,
float mattes in [0, 1] at each target's size, and a stable fingerprint."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark.prompts import make_prompt
from methods import METHODS, build_method
from methods.base import Method, Reference, Target
from tests.conftest import soft_disc

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
NEEDS_WEIGHTS = {"iconmatting"}  # built with a tiny random model in tests/test_iconmatting_*.py


def config(name: str) -> dict:
    params = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    params.pop("name")
    return params


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_method_info_and_config_agree(name):
    cls = METHODS.get(name)
    info = cls.info
    assert info.name == name and info.guidance in ("in_context", "trimap", "mask", "none")
    assert info.max_references >= 1 and info.prompt_kinds
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert info.runtime_params <= accepted, info.runtime_params - accepted
    assert set(config(name)) <= accepted, set(config(name)) - accepted


@pytest.mark.parametrize("name", sorted(set(METHODS.names()) - NEEDS_WEIGHTS))
def test_method_honours_the_protocol(name):
    params = config(name)
    if "long_side" in params:
        params["long_side"] = 64
    method = build_method(name, **params)
    assert isinstance(method, Method)
    shape = (36, 48)
    rng = np.random.default_rng(0)
    alpha = soft_disc(*shape, 18, 24, 10)
    image = (alpha[..., None] * 200 + rng.integers(0, 50, (*shape, 3))).astype(np.uint8)
    gt8 = np.rint(alpha * 255).astype(np.uint8)
    kind = sorted(method.info.prompt_kinds)[0]
    refs = [Reference("ref", image, make_prompt(kind, gt8, seed=0, group="g", round_index=0, reference="ref"))]
    method.prepare(refs if method.info.guidance == "in_context" else [])
    guidance = {"trimap": np.where(gt8 > 250, 255, np.where(gt8 < 5, 0, 128)).astype(np.uint8),
                "mask": gt8 > 127}.get(method.info.guidance)
    targets = [Target(f"t{i}", image[: 30 + i], None if guidance is None else guidance[: 30 + i]) for i in range(2)]
    preds = method.predict(targets)
    assert len(preds) == 2
    for t, p in zip(targets, preds, strict=True):
        p = np.asarray(p)
        assert p.shape == t.image.shape[:2] and np.issubdtype(p.dtype, np.floating)
        assert np.isfinite(p).all() and p.min() >= -1e-3 and p.max() <= 1 + 1e-3
    assert isinstance(method.fingerprint(), str)
    assert method.fingerprint() == build_method(name, **params).fingerprint()
