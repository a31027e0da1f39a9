"""IconMatting decoder: official key list, structure scaling, RoI tokens, inter/intra maths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SHARED

torch = pytest.importorskip("torch")

from methods.iconmatting.decoder import (  # noqa: E402
    DecoderConfig,
    InContextDecoder,
    count_elements,
    parameter_table,
)
from methods.iconmatting.golden import read_keys  # noqa: E402
from methods.iconmatting.roi import marked_cells, prompt_cells, roi_cells, tokens_from_cells  # noqa: E402

GOLDEN = Path(os.environ.get("ICMBENCH_ICONMATTING_GOLDEN", SHARED / "golden" / "iconmatting"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def official() -> InContextDecoder:
    return InContextDecoder()


def test_official_decoder_size(official: InContextDecoder) -> None:
    # Study §5: 89 state-dict entries, 21,106,462 elements.
    assert len(official.state_dict()) == 89
    assert count_elements(official) == 21_106_462


@pytest.mark.skipif(not (GOLDEN / "decoder_keys.tsv").is_file(), reason="golden data not available")
def test_keys_match_official_tsv(official: InContextDecoder) -> None:
    rows = read_keys(GOLDEN / "decoder_keys.tsv")
    expected = [(r.key, r.shape) for r in rows]
    assert parameter_table(official, "in_context_decoder.") == expected  # same keys, shapes and order
    dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in official.state_dict().items()}
    assert all(dtypes[r.key.removeprefix("in_context_decoder.")] == r.dtype for r in rows)


def test_two_decoders_in_one_process_have_same_keys() -> None:
    # The official ConvStream mutates a default list: a second decoder gets extra keys. Ours must not.
    assert list(InContextDecoder().state_dict()) == list(InContextDecoder().state_dict())


def small_decoder(size: int = 128, ch: int = 8) -> InContextDecoder:
    torch.manual_seed(0)
    return InContextDecoder(DecoderConfig.for_input(size, (ch, ch))).eval()


def small_inputs(size: int = 128, ch: int = 8, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = size // 32, size // 16
    attn = [torch.softmax(torch.randn(b, r, r, r * r, generator=g) * 2, dim=-1) for r in (lo, hi)]
    return {
        "image": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
        "ft_cor": torch.randn(b, ch, hi, hi, generator=g),
        "ft_matting": (torch.randn(b, ch, lo, lo, generator=g), torch.randn(b, ch, hi, hi, generator=g)),
        "attn": tuple(attn),
        "roi_tokens": torch.randn(5, ch, generator=g),
    }


def test_config_scales_with_input() -> None:
    cfg = DecoderConfig.for_input(256, (32, 32))
    assert cfg.attn_res == (8, 16) and cfg.input_size == 256 and cfg.cor_channels == 32
    assert DecoderConfig.for_input(768) == DecoderConfig()
    with pytest.raises(ValueError):
        DecoderConfig.for_input(100)


def test_forward_shapes_and_range() -> None:
    dec, x = small_decoder(), small_inputs()
    with torch.no_grad():
        out = dec(**x)
    assert out.alpha.shape == (2, 1, 128, 128)
    assert float(out.alpha.min()) >= 0 and float(out.alpha.max()) <= 1
    assert out.inter_similarity.shape == (2, 1, 8, 8)
    # Σ of K per-token softmaxes over target positions = K
    torch.testing.assert_close(out.inter_similarity.sum(dim=(1, 2, 3)), torch.full((2,), 5.0))
    assert out.att_look.shape == (2, 1, 128, 128)
    assert [t.shape[1:] for t in out.intra] == [(256, 4, 4), (256, 8, 8)]
    assert out.fused.shape == (2, 320, 8, 8)


def test_inter_similarity_is_softmax_over_target_positions_then_sum() -> None:
    dec, x = small_decoder(), small_inputs(b=1)
    mod = dec.in_context_fusion.attn_module
    with torch.no_grad():
        ref = mod.norm(x["roi_tokens"])
        tgt = mod.norm(x["ft_cor"][0].flatten(1).T)
        manual = torch.softmax(ref @ tgt.T / 8**0.5, dim=1).sum(0).reshape(1, 1, 8, 8)
        torch.testing.assert_close(mod(x["roi_tokens"], x["ft_cor"]), manual)


def test_batch_items_are_independent() -> None:
    dec, x = small_decoder(), small_inputs(b=2)
    one = {k: (v[:1] if k != "roi_tokens" and torch.is_tensor(v) else v) for k, v in x.items()}
    one["ft_matting"] = tuple(t[:1] for t in x["ft_matting"])
    one["attn"] = tuple(t[:1] for t in x["attn"])
    with torch.no_grad():
        torch.testing.assert_close(dec(**x).alpha[:1], dec(**one).alpha, atol=1e-6, rtol=0)


def test_decoder_is_trainable() -> None:
    dec, x = small_decoder().train(), small_inputs()
    out = dec(**x)
    out.alpha.mean().backward()
    grads = [p.grad for p in dec.parameters()]
    assert all(g is not None for g in grads)
    assert dec.in_context_fusion.attn_module.norm.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- RoI tokens
def test_roi_cells_min_pooling_and_strict_threshold() -> None:
    g = torch.zeros(32, 32)
    g[0:8, 0:8] = 1.0  # one full 8x8 cell
    g[8:16, 8:16] = 1.0
    g[15, 15] = 0.5  # exactly 0.5 is background (> 0.5 is foreground): cell (1,1) not full
    g[16:24, 0:8] = 0.51
    cells = roi_cells(g, (4, 4))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 0] = expected[2, 0] = True
    assert torch.equal(cells, expected)
    assert torch.equal(g[15, 15], torch.tensor(0.5))  # input not modified


def test_tokens_row_major() -> None:
    feat = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    cells = torch.zeros(3, 3, dtype=torch.bool)
    cells[0, 2] = cells[2, 1] = True
    tok = tokens_from_cells(feat, cells)
    assert tok.tolist() == [[2.0, 11.0], [7.0, 16.0]]


def test_prompt_cells_extend_by_attention() -> None:
    labels = torch.zeros(16, 16, dtype=torch.uint8)
    labels[1, 1] = 2  # one foreground point in cell (0, 0)
    labels[13, 13] = 1  # background point in cell (3, 3)
    fg, bg = marked_cells(labels, (4, 4), 2), marked_cells(labels, (4, 4), 1)
    attn = torch.full((16, 16), 0.01)
    attn[0, 5] = attn[0, 15] = 0.5  # cell 0 attends most to cells 5 and 15
    cells = prompt_cells(fg, bg, attn, top_m=2)
    assert sorted(cells.reshape(-1).nonzero().flatten().tolist()) == [0, 5]  # 15 is background
