"""One contract for every registered method (``METHODS.names()``): facts readable without weights, the
Method protocol, float mattes in [0, 1] at each target's size, determinism under the seed, batch
invariance, unsupported prompts refused with a clear message, missing weights named, and a stable
fingerprint.

Weight-backed adapters run on tiny random-weight models built from the real classes' configs
(``tests/tiny_hf.py``, ``tests/tiny_sam.py``, ``tests/tiny_dinov2.py``); nothing is downloaded.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark.io import write_png
from benchmark.prompts import make_prompt
from benchmark.safe_names import file_name
from benchmark.types import PROMPT_KINDS, Episode
from methods import METHODS, build_method
from methods.base import Method, MethodError, Prediction, Reference, Target, method_info
from tests.conftest import soft_disc

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
ROOT = Path(__file__).resolve().parents[1]
QUOTED = {"mgmiw", "lf"}  # no public code or weights: refused with the reason (tests/test_external.py)
SHAPE = (36, 48)
EPISODE = Episode("g", 0, ("ref",), ("t0", "t1"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(name: str) -> dict:
    params = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    params.pop("name")
    return params


# ----------------------------------------------------------------------------- building
def _iconmatting(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    return ({"sd_path": str(request.getfixturevalue("tiny_sd")), "allow_random_decoder": True, "input_size": 128,
             "device": "cpu", "prompt_embeds_file": str(request.getfixturevalue("embeds"))}, ["sd_path"])


def _vitmatte(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    from tests.tiny_hf import tiny_vitmatte

    return {"model_path": str(tiny_vitmatte(tmp / "vitmatte")), "device": "cpu"}, ["model_path"]


def _seggpt(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    from tests.tiny_hf import tiny_seggpt

    return {"model_path": str(tiny_seggpt(tmp / "seggpt")), "device": "cpu"}, ["model_path"]


def _sam(tmp: Path) -> dict:
    from tests.tiny_sam import tiny_sam

    ckpt, arch = tiny_sam(tmp / "sam")
    return {"sam_checkpoint": str(ckpt), "sam_arch": arch}


def _mam(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    from tests.tiny_sam import tiny_m2m

    return {**_sam(tmp), "m2m_checkpoint": str(tiny_m2m(tmp / "m2m")), "device": "cpu"}, ["sam_checkpoint",
                                                                                          "m2m_checkpoint"]


def _matany(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    params, _ = _vitmatte(tmp, request)
    return {**_sam(tmp), "vitmatte_path": params["model_path"], "device": "cpu"}, ["sam_checkpoint",
                                                                                     "vitmatte_path"]


def _icmp(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    from tests.tiny_dinov2 import tiny_dinov2

    params, keys = _matany(tmp, request)
    return {**params, **tiny_dinov2(tmp / "dinov2")}, [*keys, "dinov2_checkpoint"]


def _external(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    script = ROOT / "tests" / "data" / "external" / "soft_disc.py"
    return {**config("external"), "command": [sys.executable, str(script), "{spec}"], "workdir": str(tmp / "work"),
            "guidance": "in_context"}, []


def _precomputed(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
    for i, t in enumerate(EPISODE.targets):
        h = SHAPE[0] - 6 + i
        write_png(tmp / "pred" / "r0" / file_name(t, ".png"),
                  np.rint(soft_disc(h, SHAPE[1], 18, 24, 10) * 255).astype(np.uint8))
    return {"path": str(tmp / "pred")}, []


def _weight_free(name: str) -> Callable[[Path, pytest.FixtureRequest], tuple[dict, list[str]]]:
    def build(tmp: Path, request: pytest.FixtureRequest) -> tuple[dict, list[str]]:
        params = config(name)
        if "long_side" in params:
            params["long_side"] = 64
        return params, []

    return build


BUILDERS: dict[str, Callable[[Path, pytest.FixtureRequest], tuple[dict, list[str]]]] = {
    "iconmatting": _iconmatting, "vitmatte": _vitmatte, "seggpt": _seggpt, "mam": _mam, "matany": _matany,
    "icmp": _icmp, "external": _external, "precomputed": _precomputed,
}
RUNNABLE = sorted(set(METHODS.names()) - QUOTED)


def built(name: str, tmp: Path, request: pytest.FixtureRequest) -> Method:
    params, _ = BUILDERS.get(name, _weight_free(name))(tmp, request)
    return build_method(name, **params)


# ----------------------------------------------------------------------------- inputs
def scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    alpha = soft_disc(*SHAPE, 18, 24, 10)
    image = (alpha[..., None] * 200 + rng.integers(0, 50, (*SHAPE, 3))).astype(np.uint8)
    return image, np.rint(alpha * 255).astype(np.uint8)


def episode_inputs(method: Method, kind: str | None = None) -> tuple[list[Reference], list[Target]]:
    """One reference and two targets of different heights, with the guidance the method asks for."""
    image, gt8 = scene()
    info = method.info
    kind = kind or sorted(info.prompt_kinds)[0]

    def prompt(sample: str, alpha: np.ndarray):
        return make_prompt(kind, alpha, seed=0, group="g", round_index=0, reference=sample)

    refs = [Reference("ref", image, prompt("ref", gt8))] if info.guidance == "in_context" else []
    trimap = np.where(gt8 > 250, 255, np.where(gt8 < 5, 0, 128)).astype(np.uint8)
    targets = []
    for i, tid in enumerate(EPISODE.targets):
        h = SHAPE[0] - 6 + i
        guidance = {"trimap": trimap[:h], "mask": gt8[:h] > 127}.get(info.guidance)
        tprompt = prompt(tid, gt8[:h]) if info.guidance == "prompt" else None
        targets.append(Target(tid, image[:h], guidance, tprompt))
    return refs, targets


def alphas(outputs: list) -> list[np.ndarray]:
    out = []
    for o in outputs:
        assert not isinstance(o, Exception), o
        out.append(np.asarray(o.alpha if isinstance(o, Prediction) else o))
    return out


def run(method: Method, refs: list[Reference], targets: list[Target], seed: int = 0) -> list[np.ndarray]:
    method.prepare(refs, seed=seed, episode=EPISODE)
    return alphas(method.predict(targets))


# ----------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", METHODS.names())
def test_method_info_and_config_agree(name):
    cls = METHODS.get(name)
    params = config(name) if (CONF / f"{name}.yaml").is_file() else {}
    info = method_info(cls, params)
    assert info.name == name and info.guidance in ("in_context", "trimap", "mask", "prompt", "none")
    assert info.max_references >= 1 and info.prompt_kinds and info.prompt_kinds <= set(PROMPT_KINDS)
    assert info.description
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if name in QUOTED:
        return
    assert info.runtime_params <= accepted, info.runtime_params - accepted
    assert set(params) <= accepted, set(params) - accepted


@pytest.mark.parametrize("name", RUNNABLE)
def test_method_honours_the_protocol(name, tmp_path, request):
    method = built(name, tmp_path, request)
    assert isinstance(method, Method)
    refs, targets = episode_inputs(method)
    preds = run(method, refs, targets)
    assert len(preds) == len(targets)
    for t, p in zip(targets, preds, strict=True):
        assert p.shape == t.image.shape[:2] and np.issubdtype(p.dtype, np.floating)
        assert np.isfinite(p).all() and p.min() >= -1e-3 and p.max() <= 1 + 1e-3
    # determinism under the seed: the same episode again, and a second instance, give the same mattes
    again = run(method, refs, targets)
    other = built(name, tmp_path / "again", request)
    for a, b, c in zip(preds, again, run(other, refs, targets), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-6)
    # batch invariance: one target at a time gives what the batch gave. Batched float32 matmuls may sum
    # in another order: |Δ| ≲ n·eps·|x| for n ≤ 10⁴ terms, far below one 8-bit step (1/255 ≈ 4e-3).
    for t, p in zip(targets, preds, strict=True):
        method.prepare(refs, seed=0, episode=EPISODE)
        (single,) = alphas(method.predict([t]))
        np.testing.assert_allclose(single, p, atol=1e-4)
    assert isinstance(method.fingerprint(), str)
    assert method.fingerprint() == other.fingerprint()
    method.close()
    other.close()


def _unsupported(name: str) -> list[str]:
    info = method_info(METHODS.get(name), config(name))
    if info.guidance not in ("in_context", "prompt"):
        return []
    return sorted(set(PROMPT_KINDS) - info.prompt_kinds)


PROMPTED = [(n, k) for n in RUNNABLE if n != "external" for k in _unsupported(n)]


@pytest.mark.parametrize(("name", "kind"), PROMPTED)
def test_unsupported_prompt_is_refused_by_name(name, kind, tmp_path, request):
    method = built(name, tmp_path, request)
    refs, targets = episode_inputs(method, kind)
    with pytest.raises(MethodError, match=kind):
        method.prepare(refs, seed=0, episode=EPISODE)
        outputs = method.predict(targets)
        errors = [o for o in outputs if isinstance(o, MethodError)]
        assert len(errors) == len(targets)
        raise errors[0]


WEIGHTED = [n for n in RUNNABLE if n in BUILDERS and n not in ("external", "precomputed")]


@pytest.mark.parametrize("name", WEIGHTED)
def test_missing_weights_are_named(name, tmp_path, request):
    params, keys = BUILDERS[name](tmp_path, request)
    assert keys
    for key in keys:
        missing = tmp_path / "nowhere" / f"{key}-weights"
        with pytest.raises(Exception, match=str(missing).replace("\\", "\\\\")) as info:
            build_method(name, **{**params, key: str(missing)})
        assert isinstance(info.value, (FileNotFoundError, ValueError)), type(info.value)


@pytest.mark.parametrize("name", sorted(QUOTED))
def test_quoted_only_methods_are_refused_with_their_reason(name):
    cls = METHODS.get(name)
    assert cls.available is False and cls.reason
    with pytest.raises(RuntimeError, match="cannot be run"):
        build_method(name)
