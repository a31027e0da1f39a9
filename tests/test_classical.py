"""classical: output contract, determinism, every prompt kind, several references, errors, and that it
actually reads the target (beats the pasted reference mask on a moved object)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.types import Prompt
from methods import build_method
from methods.base import MethodError, Reference, Target
from methods.baselines import ReferenceMaskMethod
from methods.classical import ClassicalMethod


def scene(h: int, w: int, cy: float, cx: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, float alpha): a textured orange blob with a soft edge over a blue-green noise texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    r = 0.25 * min(h, w)
    alpha = np.clip((r - np.hypot(yy - cy * h, xx - cx * w)) / max(1.0, 0.01 * min(h, w)) + 0.5, 0, 1)
    fg = np.array([230.0, 120.0, 30.0]) + rng.normal(0, 12, (h, w, 1))
    bg = np.array([40.0, 110.0, 150.0]) + rng.normal(0, 15, (h, w, 3))
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), alpha


def mask_ref(image: np.ndarray, alpha: np.ndarray, sid: str = "ref") -> Reference:
    return Reference(sid, image, Prompt(kind="mask", shape=alpha.shape, mask=alpha > 0.5))


def run(method, refs, image: np.ndarray) -> np.ndarray:
    method.prepare(refs)
    (out,) = method.predict([Target("t", image)])
    return out


def sad(pred: np.ndarray, alpha: np.ndarray) -> float:
    return float(np.abs(pred - alpha).sum())


@pytest.fixture(scope="module")
def ref_scene():
    return scene(90, 120, 0.5, 0.5, seed=1)


@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (700, 530)])
def test_output_contract(ref_scene, shape):
    image, alpha = scene(*shape, 0.45, 0.55, seed=2)
    out = run(ClassicalMethod(), [mask_ref(*ref_scene)], image)
    assert out.shape == shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert sad(out, alpha) < 0.3 * sad(np.full(shape, 0.5), alpha)


def test_beats_the_pasted_reference_mask_on_a_moved_object(ref_scene):
    image, alpha = scene(96, 128, 0.38, 0.3, seed=3)  # object moved up-left of the reference's
    refs = [mask_ref(*ref_scene)]
    ours = run(ClassicalMethod(), refs, image)
    pasted = run(ReferenceMaskMethod(), refs, image)
    assert sad(ours, alpha) < 0.5 * sad(pasted, alpha)
    assert ((ours > 0.5) == (alpha > 0.5)).mean() > 0.95


def test_deterministic(ref_scene):
    image, _ = scene(61, 77, 0.5, 0.5, seed=4)
    a = run(ClassicalMethod(), [mask_ref(*ref_scene)], image)
    b = run(ClassicalMethod(), [mask_ref(*ref_scene)], image)
    assert np.array_equal(a, b)


def test_scribble_and_points_prompts(ref_scene):
    image, alpha = scene(80, 100, 0.5, 0.45, seed=5)
    ref_img, ref_alpha = ref_scene
    h, w = ref_alpha.shape
    scribble = np.zeros((h, w), np.uint8)
    scribble[h // 2 - 1: h // 2 + 2, w // 2 - 10: w // 2 + 10] = 2  # a stroke across the blob
    scribble[3:6, 5: w - 5] = 1  # a stroke along the top background
    points = ((h // 2, w // 2, True), (h // 2 + 5, w // 2 - 6, True), (4, 4, False), (h - 5, w - 5, False))
    fg_only = ((h // 2, w // 2, True),)  # no background marked: the border stands in
    prompts = [
        Prompt(kind="scribble", shape=(h, w), scribble=scribble),
        Prompt(kind="points", shape=(h, w), points=points),
        Prompt(kind="points", shape=(h, w), points=fg_only),
    ]
    for prompt in prompts:
        out = run(ClassicalMethod(), [Reference("ref", ref_img, prompt)], image)
        assert out.shape == alpha.shape and out.dtype == np.float32
        assert ((out > 0.5) == (alpha > 0.5)).mean() > 0.9, prompt.kind


def test_multiple_references_of_different_sizes(ref_scene):
    refs = [mask_ref(*ref_scene, sid="a"), mask_ref(*scene(50, 41, 0.5, 0.5, seed=6), sid="b"),
            mask_ref(*scene(120, 90, 0.6, 0.4, seed=7), sid="c")]
    image, alpha = scene(70, 90, 0.5, 0.5, seed=8)
    out = run(ClassicalMethod(), refs, image)
    assert out.shape == alpha.shape
    assert ((out > 0.5) == (alpha > 0.5)).mean() > 0.95


def test_solvers_and_trimap_only_matting(ref_scene):
    image, alpha = scene(48, 64, 0.5, 0.5, seed=9)
    for kwargs in ({"solver": "lbdm"}, {"solver": "knn"}, {"soft_lambda": 0.0}):
        out = run(ClassicalMethod(**kwargs), [mask_ref(*ref_scene)], image)
        assert out.shape == alpha.shape and np.isfinite(out).all(), kwargs
        assert ((out > 0.5) == (alpha > 0.5)).mean() > 0.9, kwargs


def test_errors(ref_scene):
    image, alpha = ref_scene
    m = ClassicalMethod()
    with pytest.raises(MethodError, match="before prepare"):
        m.predict([Target("t", image)])
    with pytest.raises(MethodError, match="not supported"):
        m.prepare([Reference("r", image, Prompt(kind="box", shape=alpha.shape))])  # type: ignore[arg-type]
    with pytest.raises(MethodError, match="at most 4"):
        m.prepare([mask_ref(image, alpha)] * 5)
    with pytest.raises(MethodError, match="at least one"):
        m.prepare([])
    with pytest.raises(MethodError, match="no foreground"):
        m.prepare([Reference("r", image, Prompt(kind="mask", shape=alpha.shape, mask=np.zeros_like(alpha, bool)))])
    with pytest.raises(MethodError, match="no background"):
        m.prepare([Reference("r", image, Prompt(kind="mask", shape=alpha.shape, mask=np.ones_like(alpha, bool)))])
    with pytest.raises(MethodError, match="shape"):
        m.prepare([Reference("r", image, Prompt(kind="mask", shape=(5, 5), mask=np.ones((5, 5), bool)))])
    m.prepare([mask_ref(image, alpha)])
    with pytest.raises(MethodError, match="RGB"):
        m.predict([Target("t", image[..., 0])])
    with pytest.raises(ValueError, match="solver"):
        ClassicalMethod(solver="nope")


def test_registry_and_info():
    m = build_method("classical", long_side=256)
    assert m.info.name == "classical" and m.info.guidance == "in_context"
    assert m.info.prompt_kinds == {"mask", "scribble", "points"} and m.info.max_references == 4
