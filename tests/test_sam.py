"""methods/sam.py: the SAM wrapper on a tiny random SAM (tests/tiny_sam.py), the prompt conversion, and strict
checkpoint loading. Nothing is downloaded."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from benchmark.types import Prompt
from methods._hub import WeightsNotFound
from methods.base import MethodError
from methods.sam import SAM_ARCHS, CheckpointMismatch, SamSegmenter, build_sam, sam_arch, sam_prompt
from tests.conftest import soft_disc
from tests.tiny_sam import tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (36, 48)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sam(tmp_path_factory.mktemp("sam"))


@pytest.fixture(scope="module")
def seg(tiny):
    ckpt, arch = tiny
    s = SamSegmenter("vit_b", str(ckpt), arch=arch, device="cpu")
    yield s
    s.close()


def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    a = soft_disc(*SHAPE, 18, 24, 10)
    return (a[..., None] * 200 + rng.integers(0, 50, (*SHAPE, 3))).astype(np.uint8)


# ----------------------------------------------------------------------------- building
@pytest.mark.parametrize("variant", sorted(SAM_ARCHS))
def test_build_mirrors_the_official_registry_key_for_key(variant):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # no memory, no init cost
        ours, official = build_sam(sam_arch(variant)), sam_model_registry[variant]()
    a, b = ours.state_dict(), official.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_arch_overrides_are_checked():
    assert sam_arch("vit_b", {"encoder_depth": 2})["encoder_depth"] == 2
    with pytest.raises(ValueError, match="encoder_dept"):
        sam_arch("vit_b", {"encoder_dept": 2})
    with pytest.raises(ValueError, match="vit_x"):
        sam_arch("vit_x")
    with pytest.raises(ValueError, match="multiple"):
        sam_arch("vit_b", {"image_size": 100})


# ----------------------------------------------------------------------------- segmenting
def test_masks_at_image_size_for_points_and_box_match_the_official_predictor(seg, tiny):
    from segment_anything import SamPredictor

    img = image()
    seg.set_image(img)
    size = tiny[1]["image_size"]
    assert tuple(seg.embeddings.shape) == (1, 256, size // 16, size // 16)
    assert tuple(seg.model_input.shape) == (1, 3, size, size)
    h, w = seg.predictor.input_size
    assert (h, w) == (96, 128) and not seg.model_input[..., h:, :].any()  # zero padding below the resized image
    official = SamPredictor(seg.model)
    official.set_image(img)
    torch.testing.assert_close(seg.embeddings, official.features, rtol=0, atol=0)
    for points, box in (([(18, 24, True)], None), ([(18, 24, True), (2, 2, False)], None), ((), (14, 8, 34, 28))):
        for multimask in (False, True):
            res = seg.segment(points, box, multimask=multimask)
            assert res.mask.shape == SHAPE and res.mask.dtype == bool
            assert res.logits.shape == (size // 4, size // 4) and res.logits.dtype == np.float32
            xy = np.array([[x, y] for y, x, _ in points], float) if points else None
            lab = np.array([int(fg) for *_, fg in points]) if points else None
            masks, scores, logits = official.predict(xy, lab, None if box is None else np.array(box, float),
                                                     multimask_output=multimask)
            i = int(np.argmax(scores)) if multimask else 0
            assert len(scores) == (3 if multimask else 1) and res.score == pytest.approx(float(scores.max()))
            np.testing.assert_array_equal(res.mask, masks[i])
            np.testing.assert_array_equal(res.logits, logits[i])


def test_segment_guards(seg, tiny):
    fresh = SamSegmenter("vit_b", str(tiny[0]), arch=tiny[1], device="cpu")
    with pytest.raises(MethodError, match="set_image"):
        fresh.segment([(1, 1, True)])
    with pytest.raises(MethodError, match="set_image"):
        _ = fresh.embeddings
    with pytest.raises(MethodError, match="uint8"):
        fresh.set_image(image().astype(np.float32))
    fresh.set_image(image())
    with pytest.raises(MethodError, match="points or a box"):
        fresh.segment()
    fresh.close()


# ----------------------------------------------------------------------------- prompts
def test_sam_prompt_for_each_kind():
    mask = np.zeros(SHAPE, bool)
    mask[5:12, 7:20] = True
    assert sam_prompt(Prompt("mask", SHAPE, mask=mask)) == ([], (7, 5, 19, 11))  # max inclusive
    pts = ((3, 4, True), (30, 40, False))
    assert sam_prompt(Prompt("points", SHAPE, points=pts)) == (list(pts), None)
    scribble = np.zeros(SHAPE, np.uint8)
    scribble[10, 5:45] = 2  # 40 foreground pixels
    scribble[30, 10:13] = 1  # 3 background pixels
    p = Prompt("scribble", SHAPE, scribble=scribble)
    points, box = sam_prompt(p, max_points=10)
    assert box is None and points == sam_prompt(p, max_points=10)[0]  # deterministic
    fg = [q for q in points if q[2]]
    bg = [q for q in points if not q[2]]
    assert len(bg) == 3 and len(fg) == 7  # background capped by its pixels, foreground takes the rest
    assert all(scribble[y, x] == 2 for y, x, _ in fg) and all(scribble[y, x] == 1 for y, x, _ in bg)
    assert [x for _, x, _ in fg] == [5, 11, 18, 25, 31, 37, 44]  # rint(linspace(0, 39, 7)): evenly, ends included
    only_fg = np.where(scribble == 2, 2, 0).astype(np.uint8)
    assert len(sam_prompt(Prompt("scribble", SHAPE, scribble=only_fg), max_points=4)[0]) == 4
    with pytest.raises(ValueError):
        sam_prompt(p, max_points=0)


@pytest.mark.parametrize("prompt", [
    Prompt("mask", SHAPE, mask=np.zeros(SHAPE, bool)),
    Prompt("points", SHAPE, points=()),
    Prompt("points", SHAPE, points=((3, 3, False),)),
    Prompt("scribble", SHAPE, scribble=np.zeros(SHAPE, np.uint8)),
], ids=["empty-mask", "no-points", "only-background-points", "empty-scribble"])
def test_empty_prompts_are_method_errors(prompt):
    with pytest.raises(MethodError, match="SAM prompt"):
        sam_prompt(prompt)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_loaded_strictly_and_missing_files_are_named(tiny, tmp_path):
    ckpt, arch = tiny
    state = torch.load(ckpt, weights_only=True)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    state["mask_decoder.iou_head.layers.0.weight"] = state.pop(key)
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointMismatch, match=key) as info:
        SamSegmenter("vit_b", str(tmp_path / "renamed.pth"), arch=arch, device="cpu")
    assert "mask_decoder.iou_head.layers.0.weight" in str(info.value)
    with pytest.raises(CheckpointMismatch, match="shape of image_encoder"):  # the tiny file is not a ViT-B
        SamSegmenter("vit_b", str(ckpt), arch={**arch, "encoder_embed_dim": 64}, device="cpu")
    missing = tmp_path / "nowhere" / "sam_vit_b_01ec64.pth"
    with pytest.raises(WeightsNotFound, match=re.escape(str(missing))):
        SamSegmenter("vit_b", str(missing), device="cpu")
    with pytest.raises(WeightsNotFound, match=r"sam_vit_h_4b8939\.pth"):
        SamSegmenter("vit_h", None, device="cpu")


def test_fingerprint_follows_content_not_place(seg, tiny, tmp_path):
    ckpt, arch = tiny
    moved = tmp_path / "elsewhere" / ckpt.name
    moved.parent.mkdir()
    shutil.copy(ckpt, moved)
    other = SamSegmenter("vit_b", str(moved), arch=arch, device="cpu")
    assert other.fingerprint() == seg.fingerprint() and len(seg.fingerprint()) == 16
    changed, _ = tiny_sam(tmp_path / "other", seed=1)
    assert SamSegmenter("vit_b", str(changed), arch=arch, device="cpu").fingerprint() != seg.fingerprint()
