"""IconMatting attention capture: equals the naive per-head average, keeps outputs, stops early."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

from methods.iconmatting.attention import (  # noqa: E402
    AttentionCapture,
    CaptureAttnProcessor,
    StopForward,
    naive_head_maps,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_attn(dim: int = 32, heads: int = 4) -> Attention:
    torch.manual_seed(0)
    attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, upcast_attention=True)
    with torch.no_grad():
        attn.to_q.weight.mul_(4)
        attn.to_k.weight.mul_(4)
    return attn.eval()


def official_average(attn: Attention, x: torch.Tensor, ensemble: int) -> torch.Tensor:
    """The official two-step reshape-mean over [B·E·heads] maps (study §4)."""
    q = attn.to_q(x).view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
    k = attn.to_k(x).view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
    maps = naive_head_maps(q, k, attn.scale)  # [B·E·heads, T, T]
    m = maps.reshape(-1, ensemble, *maps.shape[1:]).mean(1)
    return m.reshape(-1, attn.heads, *m.shape[1:]).mean(1)


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 4096])  # whole map at once / many small chunks
@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_capture_matches_naive_and_keeps_output(chunk_bytes: int, impl: str) -> None:
    attn = make_attn()
    b, e, t = 2, 3, 36
    x = torch.randn(b * e, t, 32)
    with torch.no_grad():
        expected_out = AttnProcessor2_0()(attn, x)
        expected_map = official_average(attn, x, e)
        cap = AttentionCapture(chunk_bytes)
        cap.begin(e, ["layer"], ["other"], stop_early=True)
        attn.set_processor(CaptureAttnProcessor(cap, "layer", "g", impl))
        out = attn(x)
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=1e-5)
    got = cap.mean("g")
    assert got.shape == (b, t, t)
    torch.testing.assert_close(got, expected_map, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(b, t))


def test_layers_are_averaged_and_pass_stops_after_last() -> None:
    attn1, attn2 = make_attn(), make_attn()
    with torch.no_grad():
        attn2.to_q.weight.mul_(-1)
    x = torch.randn(2, 16, 32)
    cap = AttentionCapture()
    cap.begin(1, ["a", "b"], [], stop_early=True)
    attn1.set_processor(CaptureAttnProcessor(cap, "a", "g"))
    attn2.set_processor(CaptureAttnProcessor(cap, "b", "g"))
    with torch.no_grad():
        attn1(x)
        with pytest.raises(StopForward):
            attn2(x)
    expected = (official_average(attn1, x, 1) + official_average(attn2, x, 1)) / 2
    torch.testing.assert_close(cap.mean("g"), expected, atol=1e-7, rtol=1e-5)


def test_cross_attention_is_not_captured() -> None:
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=16).eval()
    cap = AttentionCapture()
    cap.begin(1, ["x"], ["other"], stop_early=True)
    attn.set_processor(CaptureAttnProcessor(cap, "x", "g"))
    with torch.no_grad():
        out = attn(torch.randn(1, 9, 32), encoder_hidden_states=torch.randn(1, 5, 16))
    assert out.shape == (1, 9, 32) and "g" not in cap.sums


def test_chunked_capture_uses_less_memory_than_naive() -> None:
    cap = AttentionCapture(chunk_bytes=1 << 20)
    be, t = 4, 2304
    rows = cap.chunk_rows(be, t)
    assert rows * be * t * 4 <= 1 << 20  # one chunk fits the budget
    assert rows < t  # so a 48² map is never materialised whole per head
