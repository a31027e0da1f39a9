"""Self-attention capture: head- and ensemble-averaged maps accumulated on the fly.

The official code materialises every captured layer's full score matrix
([E·heads, T, T], ≈ 850 MB per 48² layer in fp32) and averages afterwards. Here a custom
diffusers attention processor adds each head's softmax map, one head and one query chunk
at a time, into a single fp32 running sum per resolution ([B, T, T]). The layer's real
output is still ``F.scaled_dot_product_attention``. The capture can also end the UNet pass
(:class:`StopForward`) as soon as everything requested has been collected.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


class StopForward(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside the UNet once every requested output has been captured."""


class AttentionCapture:
    """State shared by the processors and hooks of one UNet pass.

    ``begin`` names the events the pass must produce (capturing layers and other tags such
    as up-block outputs); ``done(tag)`` ticks one off and, when nothing is left and
    ``stop_early`` is set, raises :class:`StopForward`.
    """

    def __init__(self, chunk_bytes: int = 32 << 20) -> None:
        self.chunk_bytes = int(chunk_bytes)
        self.ensemble = 1
        self.stop_early = False
        self.pending: set[str] = set()
        self.capture_layers: set[str] = set()
        self.sums: dict[str, torch.Tensor] = {}
        self.layers: dict[str, int] = {}

    def begin(self, ensemble: int, capture_layers: Iterable[str], other_events: Iterable[str], stop_early: bool) -> None:
        """Start a pass that captures ``capture_layers`` and waits for ``other_events``."""
        self.ensemble = int(ensemble)
        self.capture_layers = set(capture_layers)
        self.pending = self.capture_layers | set(other_events)
        self.stop_early = stop_early
        self.sums, self.layers = {}, {}

    def end(self) -> None:
        """Forget the pass's settings (the sums stay readable until the next ``begin``)."""
        self.capture_layers, self.pending = set(), set()
        self.stop_early = False

    def wants(self, layer: str) -> bool:
        return layer in self.capture_layers

    def done(self, tag: str) -> None:
        """Mark ``tag`` produced; stop the pass if nothing else is needed."""
        self.pending.discard(tag)
        if self.stop_early and not self.pending:
            raise StopForward

    def accumulate(self, group: str, query: torch.Tensor, key: torch.Tensor, scale: float) -> None:
        """Add softmax(q·kᵀ·scale) averaged over ensemble and heads to the ``group`` sum.

        ``query``/``key``: [B·E, heads, T, d] (diffusers' batch-major layout, item b's
        ensemble members at b·E … b·E+E−1). Computed in fp32, one head and query chunk
        at a time, so the peak extra memory is one [B, T, T] sum plus one chunk.
        """
        be, heads, t_q, _ = query.shape
        t_k = key.shape[2]
        e = self.ensemble
        b = be // e
        acc = self.sums.get(group)
        if acc is None:
            acc = torch.zeros(b, t_q, t_k, dtype=torch.float32, device=query.device)
            self.sums[group] = acc
        weight = 1.0 / (e * heads)
        chunk = max(1, min(t_q, self.chunk_bytes // (4 * be * t_k)))
        with torch.autocast(device_type=query.device.type, enabled=False):
            for h in range(heads):
                k_h = key[:, h].float().transpose(-1, -2)
                for c0 in range(0, t_q, chunk):
                    c1 = min(t_q, c0 + chunk)
                    p = (torch.matmul(query[:, h, c0:c1].float(), k_h) * scale).softmax(dim=-1)
                    acc[:, c0:c1] += p.view(b, e, c1 - c0, t_k).sum(dim=1) * weight
        self.layers[group] = self.layers.get(group, 0) + 1

    def mean(self, group: str) -> torch.Tensor:
        """[B, T, T]: the group's map averaged over its captured layers (rows sum to 1)."""
        if group not in self.sums:
            raise RuntimeError(f"no attention captured for {group!r}")
        return self.sums[group] / self.layers[group]


class CaptureAttnProcessor:
    """Drop-in for diffusers' ``AttnProcessor2_0`` that also feeds :class:`AttentionCapture`."""

    def __init__(self, capture: AttentionCapture, layer: str, group: str) -> None:
        self.capture = capture
        self.layer = layer
        self.group = group

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        is_self = encoder_hidden_states is None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if is_self and self.capture.wants(self.layer):
            self.capture.accumulate(self.group, query, key, attn.scale)
            self.capture.done(self.layer)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=attn.scale
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def naive_head_maps(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference/benchmark: every head's full map at once, [B·E·heads, T, T] (what the official code holds)."""
    be, heads, t, d = query.shape
    q = query.reshape(be * heads, t, d).float()
    k = key.reshape(be * heads, -1, d).float()
    return (torch.bmm(q, k.transpose(1, 2)) * scale).softmax(dim=-1)
