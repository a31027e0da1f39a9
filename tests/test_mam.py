"""MAM (methods/mam): the M2M head's official state-dict layout and strict loading, the SAGAN spectral norm, the
official band functions and refinement on hand-made examples, and the adapter on tiny random weights, alone and
through the runner. Nothing is downloaded."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.prompts import make_prompt
from methods._hub import WeightsNotFound
from methods.base import MethodError, Prediction, Target
from methods.mam.m2m import SpectralNorm, load_m2m, m2m_state, sam_decoder_deep
from methods.mam.method import (
    MamMethod,
    band_from_mask_oneside,
    band_from_pred_oneside,
    ellipse,
    outside_mask_box,
    refine_alpha,
)
from methods.sam import CheckpointMismatch
from tests.conftest import make_folder_dataset, soft_disc
from tests.runner_helpers import read_rows
from tests.test_runner import run
from tests.tiny_sam import tiny_m2m, tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (36, 48)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mam")
    ckpt, arch = tiny_sam(root / "sam")
    return ckpt, arch, tiny_m2m(root / "m2m")


def build(files, **kw) -> MamMethod:
    ckpt, arch, m2m = files
    return MamMethod(sam_checkpoint=str(ckpt), m2m_checkpoint=str(m2m), sam_arch=arch, device="cpu", **kw)


@pytest.fixture(scope="module")
def mam(files):
    method = build(files)
    yield method
    method.close()


def target(tid: str, h: int = SHAPE[0], kind: str = "mask") -> Target:
    rng = np.random.default_rng(0)
    alpha = soft_disc(h, SHAPE[1], h / 2, 24, 10)
    image = (alpha[..., None] * 200 + rng.integers(0, 50, (h, SHAPE[1], 3))).astype(np.uint8)
    prompt = make_prompt(kind, np.rint(alpha * 255).astype(np.uint8), seed=0, group="g", round_index=0,
                         reference=tid)
    return Target(tid, image, None, prompt)


# ----------------------------------------------------------------------------- the M2M head
def test_head_has_the_official_layout():
    head = sam_decoder_deep(256)
    sd = head.state_dict()
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 2_714_619  # README: 2.7 M
    blocks = {s: {k.split(".")[1] for k in sd if k.startswith(s + ".")} for s in ("layer2", "layer3", "layer4")}
    assert {s: len(b) for s, b in blocks.items()} == {"layer2": 3, "layer3": 3, "layer4": 2}  # layers [2, 3, 3, 2]
    shapes = {
        "conv1.module.weight_bar": (32, 32, 4, 4), "conv1.module.weight_u": (32,), "conv1.module.weight_v": (512,),
        "layer2.0.conv1.module.weight_bar": (260, 260, 4, 4), "layer2.0.conv2.module.weight_bar": (128, 260, 3, 3),
        "layer2.0.upsample.1.module.weight_bar": (128, 260, 1, 1), "layer2.0.upsample.2.running_var": (128,),
        "layer2.2.conv2.module.weight_v": (128 * 9,), "layer3.0.conv1.module.weight_bar": (132, 132, 4, 4),
        "layer4.0.conv2.module.weight_bar": (32, 68, 3, 3), "layer4.1.bn2.weight": (32,),
        "refine_OS8.0.weight": (32, 128, 3, 3), "refine_OS8.1.running_mean": (32,),
        "refine_OS4.0.weight": (32, 64, 3, 3),
        "refine_OS1.3.weight": (1, 32, 3, 3), "refine_OS1.3.bias": (1,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert not any(k.endswith((".weight",)) and ".module." in k for k in sd)  # SN convs store weight_bar only
    assert "refine_OS1.0.bias" not in sd and "layer1.0.bn1.weight" not in sd


def test_head_outputs_at_every_scale():
    head = sam_decoder_deep(256).eval()
    with torch.inference_mode():
        out = head(torch.randn(1, 256, 4, 4), torch.randn(1, 3, 64, 64), torch.ones(1, 1, 16, 16))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (1, 1, 64, 64) for k in
                                                           ("alpha_os1", "alpha_os4", "alpha_os8", "mask")}
    assert all(((v >= 0) & (v <= 1)).all() for v in out.values())


def test_checkpoint_loads_strictly_as_the_official_loader(files, tmp_path):
    _, _, path = files
    state = m2m_state(path)
    head = sam_decoder_deep(256)
    load_m2m(head, state, path=path)
    for k, v in head.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    prefixed = tiny_m2m(tmp_path, prefix="module.")  # DataParallel keys: the prefix is removed
    assert m2m_state(prefixed).keys() == state.keys()
    renamed = dict(state)
    renamed["layer2.0.conv1.module.weight"] = renamed.pop("layer2.0.conv1.module.weight_bar")
    with pytest.raises(CheckpointMismatch, match=r"layer2\.0\.conv1\.module\.weight_bar") as info:
        load_m2m(sam_decoder_deep(256), renamed, path=path)
    assert "unexpected 1 key(s): layer2.0.conv1.module.weight" in str(info.value)
    with pytest.raises(CheckpointMismatch, match=r"seg_model\.mask_decoder\.x"):  # strict, as the official load
        load_m2m(sam_decoder_deep(256), {**state, "seg_model.mask_decoder.x": torch.zeros(1)}, path=path)


# ----------------------------------------------------------------------------- spectral norm
def test_spectral_norm_eval_uses_the_stored_vectors():
    torch.manual_seed(0)
    sn = SpectralNorm(torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)).eval()
    u, v, w = (getattr(sn.module, f"weight_{s}").detach().clone() for s in ("u", "v", "bar"))
    assert u.shape == (5,) and v.shape == (27,) and set(sn.state_dict()) == {
        "module.weight_u", "module.weight_v", "module.weight_bar"}
    x = torch.randn(2, 3, 6, 7)
    sigma = float(u @ (w.reshape(5, -1) @ v))
    out = sn(x)
    torch.testing.assert_close(out, F.conv2d(x, w / sigma, padding=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sn.module.weight_u, u, rtol=0, atol=0)  # eval: no power iteration
    torch.testing.assert_close(sn.module.weight_v, v, rtol=0, atol=0)


def test_spectral_norm_training_converges_to_the_largest_singular_value():
    torch.manual_seed(0)
    sn = SpectralNorm(torch.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, bias=False)).train()
    w = sn.module.weight_bar.detach().reshape(4, -1)
    x = torch.randn(1, 4, 5, 5)
    for _ in range(200):
        sn(x)
    top = torch.linalg.svdvals(w)[0]
    assert abs(float(sn.sigma().detach()) - float(top)) <= 1e-4 * float(top)
    normalised = sn.module.weight.detach().reshape(4, -1)  # what the last forward ran with: W / σ
    assert abs(float(torch.linalg.svdvals(normalised)[0]) - 1.0) <= 1e-4


# ----------------------------------------------------------------------------- bands and refinement
def test_official_kernels_are_opencv_ellipses():
    k5 = np.array([[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(ellipse(10), k5)  # os8 / os1: width 10 → 5×5
    assert ellipse(20).shape == (10, 10) and ellipse(20)[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(ellipse(6), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def test_mask_band_is_the_outer_ring_within_the_kernel():
    mask = np.zeros((9, 9), np.float32)
    mask[4, 4] = 1
    expected = np.zeros((9, 9), bool)
    expected[2:7, 2:7] = ellipse(10) == 1
    expected[4, 4] = False  # one-sided: the mask itself is never uncertain
    np.testing.assert_array_equal(band_from_mask_oneside(mask, 10), expected)


def test_pred_band_dilates_the_soft_pixels_and_drops_the_opaque_ones():
    pred = np.zeros((12, 12), np.float32)
    pred[6, 6] = 0.5
    pred[2, 2] = 1.0
    pred[9, 2] = 0.5 / 255  # below 1/255: background, not a seed
    expected = np.zeros((12, 12), bool)
    for cy, cx in ((6, 6), (2, 2)):
        for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):  # the 3×3 cross of width 6
            expected[cy + dy, cx + dx] = True
    expected[2, 2] = False  # opaque: dropped
    np.testing.assert_array_equal(band_from_pred_oneside(pred, 6), expected)
    seed = np.zeros((24, 24), np.float32)
    seed[10, 10] = 0.5
    k = ellipse(20)  # even kernel, anchored at (5, 5): the footprint is the kernel mirrored about the anchor
    mirrored = np.zeros((24, 24), bool)
    for ky, kx in zip(*np.nonzero(k), strict=True):
        mirrored[10 + 5 - ky, 10 + 5 - kx] = True
    np.testing.assert_array_equal(band_from_pred_oneside(seed, 20), mirrored)


def test_outside_box_uses_the_official_end_exclusive_slice():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:7] = True
    inside = ~outside_mask_box(mask)
    assert np.argwhere(inside).min(0).tolist() == [2, 3] and np.argwhere(inside).max(0).tolist() == [3, 5]
    assert outside_mask_box(np.zeros((4, 4), bool)).all()


def test_refinement_os8_then_os4_then_os1_on_a_square():
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True
    os8, os4, os1 = (np.full((30, 30), v, np.float32) for v in (0.3, 0.6, 0.9))
    row = refine_alpha(mask, os8, os4, os1, "mask")[15]
    # mask band reach 2 → cols 8-21; os4 kernel 10 reaches -4/+5 → 4-26; os1 kernel 5 reaches ±2 → 2-28
    np.testing.assert_allclose(row, [0] * 2 + [0.9] * 8 + [1] * 10 + [0.9] * 9 + [0])
    row = refine_alpha(mask, os8, os4, os1, "box")[15]
    # inside the box [10:19] alpha_os8; the last mask column (19) is outside the box and stays SAM's 1
    np.testing.assert_allclose(row, [0] * 4 + [0.9] * 15 + [1] + [0.9] * 7 + [0] * 3)
    np.testing.assert_allclose(refine_alpha(mask, os8, os4, os1, "none"), 0.9)
    with pytest.raises(ValueError, match="guidance_mode"):
        refine_alpha(mask, os8, os4, os1, "alpha")
    empty = np.zeros_like(mask)  # no SAM mask: nothing pasted, no band (the official box code fails here)
    for mode in ("box", "mask"):
        assert not refine_alpha(empty, os8, os4, os1, mode).any()


# ----------------------------------------------------------------------------- the adapter
def test_outputs_shape_range_dtype_determinism_and_batch_invariance(mam):
    targets = [target("a"), target("b", h=30, kind="points"), target("c", kind="scribble")]
    mam.prepare([], seed=0)
    outs = mam.predict(targets)
    for t, o in zip(targets, outs, strict=True):
        assert isinstance(o, Prediction), o
        a = o.alpha
        assert a.shape == t.image.shape[:2] and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
        assert o.extras["sam_mask"].shape == a.shape and o.extras["sam_mask"].dtype == bool
    assert "box" in outs[0].extras and "points" in outs[1].extras
    mam.prepare([], seed=7)  # deterministic: the seed changes nothing
    again = mam.predict(targets[::-1])[::-1]  # and the order/batch does not either
    for a, b in zip(outs, again, strict=True):
        np.testing.assert_array_equal(a.alpha, b.alpha)
    (single,) = mam.predict([targets[1]])
    np.testing.assert_array_equal(single.alpha, outs[1].alpha)


def test_missing_prompt_and_bad_settings(mam, files):
    mam.prepare([], seed=0)
    (err,) = mam.predict([Target("x", target("x").image)])
    assert isinstance(err, MethodError) and "no prompt" in str(err)
    with pytest.raises(ValueError, match="guidance_mode"):
        build(files, guidance_mode="alpha")


def test_guidance_modes_change_the_matte(files):
    t = target("a")
    alphas = {}
    for mode in ("box", "mask", "none"):
        m = build(files, guidance_mode=mode)
        m.prepare([], seed=0)
        alphas[mode] = m.predict([t])[0].alpha
    assert not np.array_equal(alphas["box"], alphas["mask"])
    assert not np.array_equal(alphas["box"], alphas["none"])


def test_missing_checkpoint_files_are_named(files, tmp_path):
    ckpt, arch, m2m = files
    nowhere = tmp_path / "nowhere"
    with pytest.raises(WeightsNotFound, match=re.escape(str(nowhere / "mam_vitb.pth"))):
        MamMethod(sam_checkpoint=str(ckpt), m2m_checkpoint=str(nowhere / "mam_vitb.pth"), sam_arch=arch,
                  device="cpu")
    with pytest.raises(WeightsNotFound, match=re.escape(str(nowhere / "sam_vit_b_01ec64.pth"))):
        MamMethod(sam_checkpoint=str(nowhere / "sam_vit_b_01ec64.pth"), m2m_checkpoint=str(m2m), device="cpu")
    with pytest.raises(WeightsNotFound, match="M2M checkpoint"):
        MamMethod(sam_checkpoint=str(ckpt), sam_arch=arch, device="cpu")


def test_fingerprint_covers_both_files(mam, files, tmp_path):
    ckpt, arch, _ = files
    other = MamMethod(sam_checkpoint=str(ckpt), m2m_checkpoint=str(tiny_m2m(tmp_path, seed=1)), sam_arch=arch,
                      device="cpu")
    sam_part, m2m_part = mam.fingerprint().split(":")
    assert other.fingerprint().split(":")[0] == sam_part and other.fingerprint().split(":")[1] != m2m_part


def test_end_to_end_through_the_runner_and_resume(files, tmp_path):
    ckpt, arch, m2m = files
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=2, size=(32, 40))
    arch_override = "{" + ",".join(f"{k}:{v}".replace(" ", "") for k, v in arch.items()) + "}"
    overrides = ("method=mam", f"method.sam_checkpoint={ckpt}", f"method.m2m_checkpoint={m2m}",
                 f"method.sam_arch={arch_override}", "method.device=cpu", "dataset=folder", f"dataset.root={data}",
                 "prompt=points", "runner.rounds=1", "runner.regions=[whole]")
    out = tmp_path / "out"
    stats = run(out, *overrides)
    rows = read_rows(out / "results.csv")
    assert stats.errors == 0, [r["error"] for r in rows if r["error"]]
    assert len(rows) == 4 and {r["guidance"] for r in rows} == {"per_image"}
    assert all(r["status"] == "ok" and r["method_hash"] and float(r["SAD"]) >= 0 for r in rows)
    assert len(list((out / "extras").rglob("sam_mask.png"))) == 4 and len(list((out / "prompts").glob("*.npz"))) == 4
    before = (out / "results.csv").read_bytes()
    again = run(out, *overrides)
    assert again.targets == 0 and (out / "results.csv").read_bytes() == before
