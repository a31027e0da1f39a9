"""IconMatting checkpoint loading: Lightning .ckpt, plain state dicts, safetensors, strict errors."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from methods.iconmatting.checkpoint import CheckpointError, load_decoder_weights  # noqa: E402
from methods.iconmatting.decoder import DecoderConfig, InContextDecoder  # noqa: E402
from methods.iconmatting.tiny import randomize_decoder_  # noqa: E402

CFG = DecoderConfig.for_input(128, (8, 8))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def source_state() -> dict[str, torch.Tensor]:
    return randomize_decoder_(InContextDecoder(CFG), seed=3).state_dict()


def assert_loaded(dec: InContextDecoder, state: dict[str, torch.Tensor]) -> None:
    for k, v in dec.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_lightning_ckpt_with_prefix_and_extractor_keys(tmp_path: Path) -> None:
    state = source_state()
    ckpt = {
        "epoch": 3,
        "global_step": 1234,
        "state_dict": {
            **{f"in_context_decoder.{k}": v for k, v in state.items()},
            "feature_extractor.prompt_embeds": torch.zeros(1, 77, 1024),  # ignored
        },
    }
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    dec = InContextDecoder(CFG)
    load_decoder_weights(dec, path)
    assert_loaded(dec, state)


def test_plain_state_dict_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = source_state()
    torch.save(state, tmp_path / "plain.pt")
    save_file({f"in_context_decoder.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "d.safetensors"))
    for name in ("plain.pt", "d.safetensors"):
        dec = InContextDecoder(CFG)
        load_decoder_weights(dec, tmp_path / name)
        assert_loaded(dec, state)


def test_missing_key_is_reported(tmp_path: Path) -> None:
    state = {f"in_context_decoder.{k}": v for k, v in source_state().items()}
    del state["in_context_decoder.in_context_fusion.attn_module.norm.weight"]
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=r"missing 1 decoder key.*attn_module\.norm\.weight"):
        load_decoder_weights(InContextDecoder(CFG), tmp_path / "m.ckpt")


def test_unexpected_and_misshaped_keys_are_reported() -> None:
    state = {f"in_context_decoder.{k}": v for k, v in source_state().items()}
    state["in_context_decoder.extra.weight"] = torch.zeros(1)
    state["in_context_decoder.detail_decoder.matting_head.matting_convs.3.bias"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as e:
        load_decoder_weights(InContextDecoder(CFG), state)
    assert "unexpected 1 key(s): extra.weight" in str(e.value)
    assert "matting_convs.3.bias: checkpoint (2,) vs decoder (1,)" in str(e.value)


def test_official_shapes_refuse_a_small_decoder() -> None:
    official = InContextDecoder().state_dict()
    with pytest.raises(CheckpointError, match="shape of"):
        load_decoder_weights(InContextDecoder(CFG), official)


class Hparams:
    """A custom class inside a checkpoint (Lightning stores such hyper-parameter objects)."""


def test_untrusted_pickle_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": source_state(), "hyper_parameters": Hparams()}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        load_decoder_weights(InContextDecoder(CFG), tmp_path / "x.ckpt")
    dec = InContextDecoder(CFG)
    load_decoder_weights(dec, tmp_path / "x.ckpt", trust_checkpoint=True)
    assert_loaded(dec, source_state())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_decoder_weights(InContextDecoder(CFG), tmp_path / "nope.ckpt")
