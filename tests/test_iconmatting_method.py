"""IconMatting through the method protocol on a tiny random SD-2.1-shaped model (CPU, 128² frame)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from benchmark.types import Prompt  # noqa: E402
from methods import build_method  # noqa: E402
from methods.base import MethodError, Reference, Target  # noqa: E402
from methods.iconmatting.checkpoint import CheckpointError  # noqa: E402
from methods.iconmatting.features import SDModelError  # noqa: E402
from methods.iconmatting.method import IconMattingMethod  # noqa: E402
from methods.iconmatting.roi import EmptyRoIError  # noqa: E402
from methods.iconmatting.tiny import randomize_decoder_, save_tiny_sd  # noqa: E402

SIZE = 128


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(tiny_sd: Path, embeds: Path, **kw) -> IconMattingMethod:
    params = {
        "sd_path": str(tiny_sd),
        "allow_random_decoder": True,
        "input_size": SIZE,
        "device": "cpu",
        "prompt_embeds_file": str(embeds),
        **kw,
    }
    return build_method("iconmatting", **params)  # type: ignore[return-value]


def scene(seed: int, shape=(150, 200)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, bool)
    h, w = shape
    mask[h // 5 : 4 * h // 5, w // 4 : 3 * w // 4] = True
    img[mask] = rng.integers(150, 255, (int(mask.sum()), 3), dtype=np.uint8)
    return img, mask


def mask_ref(seed: int = 0, shape=(150, 200)) -> Reference:
    img, mask = scene(seed, shape)
    return Reference(f"ref{seed}", img, Prompt("mask", shape, mask=mask))


def targets() -> list[Target]:
    return [Target("t0", scene(1)[0]), Target("t1", scene(2, (90, 64))[0]), Target("t2", scene(3, (128, 128))[0])]


@pytest.fixture(scope="module")
def method(tiny_sd: Path, embeds: Path) -> IconMattingMethod:
    return make(tiny_sd, embeds)


def test_end_to_end_shapes_and_range(method: IconMattingMethod) -> None:
    method.prepare([mask_ref()])
    tgts = targets()
    out = method.predict(tgts)
    assert len(out) == 3
    for a, t in zip(out, tgts, strict=True):
        assert a.shape == t.image.shape[:2] and a.dtype == np.float32
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert float(a.std()) > 1e-4  # a random decoder with informative weights is not constant


def test_reference_encoded_once_per_episode(method: IconMattingMethod) -> None:
    unet = method.extractor.unet
    runs = {"up2": 0, "up3": 0, "conv_out": 0}
    hooks = [
        unet.up_blocks[2].register_forward_pre_hook(lambda *_: runs.__setitem__("up2", runs["up2"] + 1)),
        unet.up_blocks[3].register_forward_pre_hook(lambda *_: runs.__setitem__("up3", runs["up3"] + 1)),
        unet.conv_out.register_forward_pre_hook(lambda *_: runs.__setitem__("conv_out", runs["conv_out"] + 1)),
    ]
    try:
        before = dict(method.extractor.calls)
        method.prepare([mask_ref()])
        assert runs["up2"] == 0  # reference pass stops after up block 1
        method.predict(targets())
        method.predict(targets()[:1])
        calls = method.extractor.calls
        assert calls["reference"] - before.get("reference", 0) == 1
        assert calls["target"] - before.get("target", 0) == 4
        assert runs["up2"] == 4 and runs["up3"] == 0 and runs["conv_out"] == 0  # batch_size 1: one pass per target
    finally:
        for h in hooks:
            h.remove()


def test_deterministic_and_seed_dependent(method: IconMattingMethod, tiny_sd: Path, embeds: Path) -> None:
    method.prepare([mask_ref()])
    a = method.predict(targets())
    b = method.predict(targets())
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    other = make(tiny_sd, embeds, noise_seed=1)
    other.prepare([mask_ref()])
    c = other.predict(targets())
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, c, strict=True)) > 1e-4


def test_batching_does_not_change_results(method: IconMattingMethod, tiny_sd: Path, embeds: Path) -> None:
    method.prepare([mask_ref()])
    single = method.predict(targets())
    batched = make(tiny_sd, embeds, batch_size=3)
    batched.prepare([mask_ref()])
    for x, y in zip(single, batched.predict(targets()), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)


def test_full_mode_and_posterior_mean(tiny_sd: Path, embeds: Path) -> None:
    m = make(tiny_sd, embeds, preprocess="full", posterior="mean", interpolation="official_random", batch_size=2)
    m.prepare([mask_ref()])
    out = m.predict(targets())
    assert [a.shape for a in out] == [(150, 200), (90, 64), (128, 128)]


def test_several_references_pool_their_tokens(method: IconMattingMethod) -> None:
    method.prepare([mask_ref(0)])
    k0 = method._roi_tokens.shape[0]
    method.prepare([mask_ref(5, (200, 150))])
    k1 = method._roi_tokens.shape[0]
    method.prepare([mask_ref(0), mask_ref(5, (200, 150))])
    assert method._roi_tokens.shape[0] == k0 + k1 > 0
    assert len(method.predict(targets()[:1])) == 1


def test_points_and_scribble_prompts(method: IconMattingMethod) -> None:
    img, _ = scene(0)
    pts = Prompt("points", (150, 200), points=((75, 100, True), (5, 5, False)))
    method.prepare([Reference("p", img, pts)])
    k_points = method._roi_tokens.shape[0]
    assert 1 < k_points <= 1 + method.prompt_top_m
    scribble = np.zeros((150, 200), np.uint8)
    scribble[75, 60:140] = 2  # one-pixel foreground stroke: empty under min-pooling, fine as a prompt
    method.prepare([Reference("s", img, Prompt("scribble", (150, 200), scribble=scribble))])
    assert method._roi_tokens.shape[0] > 1
    assert method.predict(targets()[:1])[0].shape == (150, 200)


def test_empty_roi_is_an_error(method: IconMattingMethod) -> None:
    img, _ = scene(0)
    thin = np.zeros((150, 200), bool)
    thin[:, 100:103] = True  # 3 px wide: no 16×16 cell of the working frame is fully inside
    with pytest.raises(EmptyRoIError, match="empty RoI"):
        method.prepare([Reference("thin", img, Prompt("mask", (150, 200), mask=thin))])
    with pytest.raises(MethodError):
        method.predict(targets()[:1])


def test_protocol_errors(method: IconMattingMethod, tiny_sd: Path, embeds: Path) -> None:
    fresh = make(tiny_sd, embeds)
    with pytest.raises(MethodError, match="before prepare"):
        fresh.predict(targets()[:1])
    with pytest.raises(MethodError, match="at most 4"):
        fresh.prepare([mask_ref()] * 5)


def test_missing_or_wrong_sd_folder(tmp_path: Path, embeds: Path) -> None:
    with pytest.raises(SDModelError, match="not found"):
        make(tmp_path / "nowhere", embeds)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SDModelError, match="not a diffusers Stable Diffusion folder"):
        make(tmp_path / "empty", embeds)
    eps_model = save_tiny_sd(tmp_path / "eps", prediction_type="epsilon", text_encoder=False)
    with pytest.raises(SDModelError, match="v_prediction"):
        make(eps_model, embeds)
    assert make(eps_model, embeds, check_sd21=False).extractor is not None  # override for test models


def test_prompt_embedding_cached_without_text_encoder(tiny_sd: Path, tmp_path: Path) -> None:
    emb = tmp_path / "emb.safetensors"
    first = make(tiny_sd, emb)
    assert emb.is_file()
    copy = tmp_path / "sd_no_text"
    shutil.copytree(tiny_sd, copy)
    shutil.rmtree(copy / "text_encoder")
    shutil.rmtree(copy / "tokenizer")
    second = make(copy, emb)  # must not need the text encoder any more
    assert torch.equal(first.extractor.prompt_embeds, second.extractor.prompt_embeds)
    with pytest.raises(SDModelError, match="tokenizer"):
        make(copy, tmp_path / "missing.safetensors")


def test_checkpoint_required_and_checked(tiny_sd: Path, embeds: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allow_random_decoder"):
        make(tiny_sd, embeds, allow_random_decoder=False)
    ref = make(tiny_sd, embeds)
    state = {f"in_context_decoder.{k}": v for k, v in randomize_decoder_(ref.decoder, seed=7).state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "good.ckpt")
    loaded = make(tiny_sd, embeds, checkpoint=str(tmp_path / "good.ckpt"), allow_random_decoder=False)
    for k, v in loaded.decoder.state_dict().items():
        assert torch.equal(v, state[f"in_context_decoder.{k}"])
    del state["in_context_decoder.detail_decoder.matting_head.matting_convs.0.weight"]
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"missing 1 decoder key.*matting_convs\.0\.weight"):
        make(tiny_sd, embeds, checkpoint=str(tmp_path / "bad.ckpt"))


def test_fingerprint(tiny_sd: Path, embeds: Path, method: IconMattingMethod) -> None:
    fp = method.fingerprint()
    assert fp and fp == make(tiny_sd, embeds).fingerprint()
    assert fp != make(tiny_sd, embeds, noise_seed=3).fingerprint()
    assert fp != make(tiny_sd, embeds, preprocess="full").fingerprint()
    assert fp == make(tiny_sd, embeds, batch_size=4).fingerprint()  # batching does not change outputs


def test_fingerprint_is_content_not_location_or_device(tiny_sd: Path, embeds: Path, tmp_path: Path) -> None:
    import shutil

    ref = make(tiny_sd, embeds)
    state = {f"in_context_decoder.{k}": v for k, v in randomize_decoder_(ref.decoder, seed=3).state_dict().items()}
    (tmp_path / "a").mkdir()
    torch.save({"state_dict": state}, tmp_path / "a" / "icm.ckpt")
    first = make(tiny_sd, embeds, checkpoint=str(tmp_path / "a" / "icm.ckpt"), allow_random_decoder=False)
    fp = first.fingerprint()
    moved = tmp_path / "b" / "renamed.ckpt"
    moved.parent.mkdir()
    shutil.move(tmp_path / "a" / "icm.ckpt", moved)
    sd_copy = tmp_path / "sd_elsewhere"
    shutil.copytree(tiny_sd, sd_copy)
    second = make(sd_copy, embeds, checkpoint=str(moved), allow_random_decoder=False, attention_impl="math",
                  attn_chunk_mb=4)
    assert fp == second.fingerprint()
    state[next(iter(state))] = state[next(iter(state))] + 1
    torch.save({"state_dict": state}, moved)
    third = make(sd_copy, embeds, checkpoint=str(moved), allow_random_decoder=False)
    assert third.fingerprint() != fp
    info = type(first).info
    assert {"checkpoint", "sd_path", "device", "batch_size"} <= info.runtime_params
    assert "dtype" not in info.runtime_params and "noise_seed" not in info.runtime_params


def test_another_sd_model_of_the_same_shape_changes_the_fingerprint(tiny_sd: Path, tmp_path: Path) -> None:
    import shutil

    from methods.iconmatting.features import folder_fingerprint

    other = tmp_path / "other_sd"
    shutil.copytree(tiny_sd, other)
    assert folder_fingerprint(other) == folder_fingerprint(tiny_sd)  # where it lives does not matter
    weights = next(p for p in sorted((other / "unet").iterdir()) if p.suffix in (".safetensors", ".bin"))
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8 * [0x3C])  # same size, other values (a fine-tune of the same architecture)
    weights.write_bytes(bytes(data))
    assert folder_fingerprint(other) != folder_fingerprint(tiny_sd)
