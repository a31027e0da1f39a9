"""SegGPT adapter on a tiny random-weight model (tests/tiny_hf.py; nothing is downloaded).

Batch invariance tolerance: with one reference the samples of a batch never mix (the embeddings
are stacked along the batch, ``merge_index`` averages each sample's two halves, and no
feature ensemble), so [a, b] and [a], [b] compute the same sums; only a different GEMM blocking for
another batch shape can reorder them. A reordered fp32 sum of K terms moves by at most about
K·2⁻²⁴·Σ|terms| and typically √K·2⁻²⁴ relative; the tiny model has ~10 such layers with K ≤ 4·32
(decoder input), so alpha (unit scale, un-normalised by std ≤ 0.23) moves by well under 1e-5.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.prompts import make_prompt
from benchmark.types import Prompt
from methods._hub import WeightsNotFound
from methods.base import MethodError, Reference, Target
from methods.seggpt import SegGptMethod, soft_alpha
from tests.conftest import make_folder_dataset, soft_disc
from tests.runner_helpers import read_rows
from tests.test_runner import run
from tests.tiny_hf import SEGGPT_SIDE, tiny_seggpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCH_ATOL = 1e-5  # see the module docstring


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_seggpt(tmp_path_factory.mktemp("seggpt") / "model")


def image_and_alpha(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    alpha = soft_disc(h, w, h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3), min(h, w) / 3)
    image = (alpha[..., None] * rng.integers(100, 256, 3) + rng.integers(0, 60, (h, w, 3))).astype(np.uint8)
    return image, alpha


def reference(seed: int, kind: str = "mask", size: tuple[int, int] = (40, 56)) -> Reference:
    image, alpha = image_and_alpha(*size, seed)
    prompt = make_prompt(kind, np.rint(alpha * 255).astype(np.uint8), seed=0, group="g", round_index=0,
                         reference=f"r{seed}")
    return Reference(f"r{seed}", image, prompt)


def target(h: int, w: int, seed: int) -> Target:
    return Target(f"t{seed}", image_and_alpha(h, w, 100 + seed)[0])


def method(folder: Path, **kwargs) -> SegGptMethod:
    return SegGptMethod(model_path=folder, device="cpu", **kwargs)


SIZES = [(37, 61), (50, 30), (90, 20)]


def test_soft_alphas_are_float_maps_at_each_targets_own_size(folder):
    m = method(folder)
    m.prepare([reference(0)])
    targets = [target(h, w, i) for i, (h, w) in enumerate(SIZES)]
    for t, alpha in zip(targets, m.predict(targets), strict=True):
        assert alpha.shape == t.image.shape[:2] and alpha.dtype == np.float32
        assert np.isfinite(alpha).all() and alpha.min() >= 0 and alpha.max() <= 1
        assert len(np.unique(alpha)) > 10  # soft, not a class map


def test_hard_is_the_processors_binary_map_of_the_same_prediction(folder):
    """At the processor's own size neither resize acts: hard = 1 exactly where the soft value
    (channel mean) is above 0.5 (the palette's nearest colour is white), 0 elsewhere."""
    refs = [reference(0)]
    targets = [target(SEGGPT_SIDE, SEGGPT_SIDE, 0), target(*SIZES[0], 1)]
    soft, hard = method(folder, output="soft"), method(folder, output="hard")
    soft.prepare(refs)
    hard.prepare(refs)
    s, h = soft.predict(targets), hard.predict(targets)
    for a, b in zip(s, h, strict=True):
        assert a.shape == b.shape and b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}
    clear = np.abs(s[0] - 0.5) > 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(h[0][clear], (s[0] > 0.5)[clear].astype(np.float32))


def test_hard_upsamples_nearest_and_soft_bilinearly(folder):
    """A target 3× the square in height and 2× in width: nearest makes constant 3×2 blocks."""
    refs, t = [reference(0)], target(3 * SEGGPT_SIDE, 2 * SEGGPT_SIDE, 0)
    hard, soft = method(folder, output="hard"), method(folder, output="soft")
    hard.prepare(refs)
    soft.prepare(refs)
    (h,), (s,) = hard.predict([t]), soft.predict([t])
    blocks = h.reshape(SEGGPT_SIDE, 3, SEGGPT_SIDE, 2)
    assert (blocks == blocks[:, :1, :, :1]).all()
    s_blocks = s.reshape(SEGGPT_SIDE, 3, SEGGPT_SIDE, 2)
    assert not (s_blocks == s_blocks[:, :1, :, :1]).all()


def test_soft_alpha_unnormalises_averages_clips_and_resizes_bilinearly():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ramp = torch.linspace(-0.2, 1.2, 8).repeat(8, 1)  # the value every channel should decode to
    value = torch.stack([ramp + 0.1, ramp, ramp - 0.1])  # channel mean = ramp
    normalised = (value - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    pred = torch.cat([torch.zeros_like(normalised), normalised], dim=1)[None]  # prompt half on top
    same = soft_alpha(pred, mean, std, (8, 8))
    np.testing.assert_allclose(same, ramp.clamp(0, 1).numpy(), atol=1e-6)
    big = soft_alpha(pred, mean, std, (16, 32))
    row = big[5]
    inner = row[8:24]  # between clipped ends: bilinear keeps a ramp, steps of 1/4 of a source pixel
    steps = np.diff(inner)
    assert np.allclose(steps, steps[0], atol=1e-6) and steps[0] > 0
    assert big.min() >= 0 and big.max() <= 1


def test_deterministic_and_batch_invariant(folder):
    m = method(folder, batch_size=4)
    m.prepare([reference(0)])
    targets = [target(*SIZES[0], 0), target(*SIZES[1], 1)]
    together = m.predict(targets)
    np.testing.assert_array_equal(together[0], m.predict(targets)[0])  # same inputs, same bits
    for t, a in zip(targets, together, strict=True):
        np.testing.assert_allclose(m.predict([t])[0], a, rtol=0, atol=BATCH_ATOL)
    one_at_a_time = method(folder, batch_size=1)
    one_at_a_time.prepare([reference(0)])
    for a, b in zip(one_at_a_time.predict(targets), together, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=BATCH_ATOL)


class CountingProcessor:
    """Delegates to the real processor and records which inputs each call got."""

    def __init__(self, processor):
        self._processor, self.calls = processor, []

    def __call__(self, *args, **kwargs):
        self.calls.append(sorted(k for k, v in kwargs.items() if v is not None))
        return self._processor(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._processor, name)


def test_references_are_encoded_once_per_episode(folder):
    m = method(folder)
    m.processor = CountingProcessor(m.processor)
    m.prepare([reference(0), reference(1)])
    for i in range(3):
        m.predict([target(*SIZES[i], i)])
    prompt_calls = [c for c in m.processor.calls if "prompt_images" in c]
    assert m.reference_encodings == 1 and len(prompt_calls) == 1
    assert sum("images" in c for c in m.processor.calls) == 3  # the targets, once each
    m.prepare([reference(2)])
    assert m.reference_encodings == 2


def forward_calls(m: SegGptMethod) -> list[tuple[int, bool]]:
    calls: list[tuple[int, bool]] = []
    m.model.register_forward_pre_hook(
        lambda _mod, _args, kwargs: calls.append((kwargs["pixel_values"].shape[0], kwargs["feature_ensemble"])),
        with_kwargs=True)
    return calls


def test_several_references_go_through_the_feature_ensemble(folder):
    targets = [target(*SIZES[0], 0), target(*SIZES[1], 1)]
    single = method(folder)
    calls = forward_calls(single)
    single.prepare([reference(0)])
    one = single.predict(targets)
    assert calls == [(2, False)]  # one forward for both targets, samples independent
    m = method(folder)
    calls = forward_calls(m)
    m.prepare([reference(0), reference(1), reference(2)])
    three = m.predict(targets)
    assert calls == [(3, True), (3, True)]  # per target: one (target, prompt_i) pair per reference
    assert all(np.abs(a - b).max() > 1e-4 for a, b in zip(one, three, strict=True))
    np.testing.assert_array_equal(m.predict(targets[1:])[0], three[1])  # targets never mix


def test_prompt_kinds_and_reference_counts_are_checked(folder):
    m = method(folder)
    with pytest.raises(MethodError, match=r"prompt kind 'points' not supported \(supports \['mask'\]\)"):
        m.prepare([reference(0, kind="points")])
    with pytest.raises(MethodError, match="at most 8"):
        m.prepare([reference(i) for i in range(9)])
    with pytest.raises(MethodError, match="before prepare"):
        m.predict([target(*SIZES[0], 0)])
    m.prepare([Reference("r", image_and_alpha(40, 56, 0)[0], Prompt("mask", (40, 56), mask=np.ones((40, 56), bool)))])
    assert m.predict([target(*SIZES[0], 0)])[0].shape == SIZES[0]


def test_embedding_type_changes_the_type_token(folder):
    refs, targets = [reference(0)], [target(*SIZES[0], 0)]
    a, b = method(folder, embedding_type="instance"), method(folder, embedding_type="semantic")
    a.prepare(refs)
    b.prepare(refs)
    assert np.abs(a.predict(targets)[0] - b.predict(targets)[0]).max() > 1e-4
    with pytest.raises(ValueError, match="embedding_type"):
        method(folder, embedding_type="panoptic")
    with pytest.raises(ValueError, match="output"):
        method(folder, output="logits")


def test_missing_weights_and_inconsistent_processor_are_named(folder, tmp_path):
    with pytest.raises(WeightsNotFound, match="not a folder"):
        method(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFound, match=r"expected file config\.json at .*empty/config\.json"):
        method(tmp_path / "empty")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        method(folder, dtype="bf16")
    odd = shutil.copytree(folder, tmp_path / "odd")
    cfg = json.loads((odd / "preprocessor_config.json").read_text())
    cfg["size"] = {"height": 64, "width": 64}
    (odd / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not two 64×64 processor images stacked"):
        method(odd)


def test_fingerprint_is_content_based(folder, tmp_path):
    fp = method(folder).fingerprint()
    assert fp and fp == method(folder).fingerprint()
    assert method(shutil.copytree(folder, tmp_path / "moved")).fingerprint() == fp
    assert method(tiny_seggpt(tmp_path / "other", seed=1)).fingerprint() != fp


def test_end_to_end_through_the_runner(folder, tmp_path):
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=3, size=(40, 56))
    base = ("method=seggpt", f"method.model_path={folder}", "method.device=cpu", "dataset=folder",
            f"dataset.root={data}", "runner.rounds=1")
    for name, extra in (("k1", ()), ("k2", ("runner.references=2",))):
        stats = run(tmp_path / name, *base, *extra)
        rows = read_rows(tmp_path / name / "results.csv")
        assert stats.errors == 0, [r["error"] for r in rows if r["error"]]
        assert rows and all(float(r["SAD"]) >= 0 and r["method_hash"] for r in rows)
        assert {r["guidance"] for r in rows} == {"in_context"}
