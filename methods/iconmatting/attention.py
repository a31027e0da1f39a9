"""Self-attention capture: head- and ensemble-averaged maps accumulated on the fly.

The official code materialises every captured layer's full score matrix
([E·heads, T, T], ≈ 850 MB per 48² layer in fp32) and averages afterwards. Here a custom
diffusers attention processor adds each head's softmax map, one head and one query chunk
at a time, into a single fp32 running sum per resolution ([B, T, T]). The layer's real
output is ``F.scaled_dot_product_attention`` (``impl="sdpa"``), or, to reproduce the
official numerics (its xformers kernel computes exact fp32 softmax attention), an explicit
chunked fp32 softmax attention (``impl="math"``). The capture can also end the UNet pass
(:class:`StopForward`) as soon as everything requested has been collected.

Reduced precision: a layer whose model config asks for ``upcast_attention`` (SD 2.1's UNet
does) computes its SDPA output from fp32 query/key/value, with autocast off, when the working
dtype is bf16/fp16 (``upcast=True``, the default); the result is cast back to the working
dtype. ``upcast=False`` is the opt-in fast path (attention in the working dtype). The captured
maps and ``impl="math"`` are fp32 whatever the dtype.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

IMPLS = ("sdpa", "math")
REDUCED = (torch.bfloat16, torch.float16)


class StopForward(Exception):
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

    def begin(
        self, ensemble: int, capture_layers: Iterable[str], other_events: Iterable[str], stop_early: bool
    ) -> None:
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

    def is_last(self, tag: str) -> bool:
        """True if producing ``tag`` ends the pass (its own output is then not needed)."""
        return self.stop_early and self.pending <= {tag}

    def done(self, tag: str) -> None:
        """Mark ``tag`` produced; stop the pass if nothing else is needed."""
        self.pending.discard(tag)
        if self.stop_early and not self.pending:
            raise StopForward

    def chunk_rows(self, batch: int, keys: int) -> int:
        """Query rows per chunk so one [batch, rows, keys] fp32 block fits ``chunk_bytes``."""
        return max(1, self.chunk_bytes // (4 * batch * keys))

    def add(self, group: str, probs: torch.Tensor, row0: int, rows_total: int, heads: int) -> None:
        """Add one head's probabilities for query rows ``row0…`` ([B·E, rows, T_k]) to ``group``.

        Each item's ensemble members (b·E … b·E+E−1, diffusers' batch-major layout) are summed
        and weighted by 1/(E·heads), so after all heads the layer contributes its mean map.
        """
        be, rows, t_k = probs.shape
        e = self.ensemble
        acc = self.sums.get(group)
        if acc is None:
            acc = torch.zeros(be // e, rows_total, t_k, dtype=torch.float32, device=probs.device)
            self.sums[group] = acc
        acc[:, row0 : row0 + rows].add_(probs.view(be // e, e, rows, t_k).sum(dim=1), alpha=1.0 / (e * heads))

    def finish_layer(self, group: str) -> None:
        self.layers[group] = self.layers.get(group, 0) + 1

    def mean(self, group: str) -> torch.Tensor:
        """[B, T, T]: the group's map averaged over its captured layers (rows sum to 1)."""
        if group not in self.sums:
            raise RuntimeError(f"no attention captured for {group!r}")
        return self.sums[group] / self.layers[group]


def chunked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    scale: float,
    mask: torch.Tensor | None,
    capture: AttentionCapture | None,
    group: str | None,
) -> torch.Tensor | None:
    """fp32 softmax attention, one head and query chunk at a time.

    ``query``/``key``/``value``: [B·E, heads, T, d]. Feeds the probabilities to ``capture``
    (if given) and returns the attention output (if ``value`` is given) in ``query.dtype``.
    """
    be, heads, t_q, _ = query.shape
    t_k = key.shape[2]
    rows = capture.chunk_rows(be, t_k) if capture is not None else max(1, (32 << 20) // (4 * be * t_k))
    out = (
        None
        if value is None
        else torch.empty(*query.shape[:3], value.shape[-1], dtype=torch.float32, device=query.device)
    )
    with torch.autocast(device_type=query.device.type, enabled=False):
        for h in range(heads):
            k_t = key[:, h].float().transpose(-1, -2)
            v_h = None if value is None else value[:, h].float()
            for r0 in range(0, t_q, rows):
                r1 = min(t_q, r0 + rows)
                # (q·kᵀ)·scale in this order, as the official map computation does
                logits = torch.matmul(query[:, h, r0:r1].float(), k_t) * scale
                if mask is not None:
                    m = mask[:, h if mask.shape[1] > 1 else 0]
                    logits = logits + (m if m.shape[-2] == 1 else m[:, r0:r1]).float()
                p = logits.softmax(dim=-1)
                if capture is not None and group is not None:
                    capture.add(group, p, r0, t_q, heads)
                if out is not None and v_h is not None:
                    out[:, h, r0:r1] = torch.matmul(p, v_h)
    if capture is not None and group is not None:
        capture.finish_layer(group)
    return None if out is None else out.to(query.dtype)


class CaptureAttnProcessor:
    """Drop-in for diffusers' ``AttnProcessor2_0`` that can also feed :class:`AttentionCapture`.

    ``layer``/``group`` name a capturing self-attention layer (``None`` for any other layer);
    ``impl`` selects the output computation (``sdpa`` or ``math``); ``upcast`` honours the
    layer's ``upcast_attention`` in bf16/fp16 (SDPA from fp32 inputs, see the module docstring).
    """

    def __init__(
        self, capture: AttentionCapture | None, layer: str | None = None, group: str | None = None, impl: str = "sdpa",
        upcast: bool = True,
    ) -> None:
        if impl not in IMPLS:
            raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")
        self.capture, self.layer, self.group, self.impl = capture, layer, group, impl
        self.upcast = bool(upcast)

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

        capture = self.capture
        capturing = is_self and capture is not None and self.layer is not None and capture.wants(self.layer)
        if capturing:
            last = capture.is_last(self.layer)  # the pass ends here: this layer's output is unused
            want_out = self.impl == "math" and not last
            out = chunked_attention(
                query, key, value if want_out else None, attn.scale, attention_mask, capture, self.group
            )
            capture.done(self.layer)
        elif self.impl == "math":
            out = chunked_attention(query, key, value, attn.scale, attention_mask, None, None)
        else:
            out = None
        if out is None:
            out = sdpa(query, key, value, attention_mask, attn.scale,
                       upcast=self.upcast and bool(getattr(attn, "upcast_attention", False)))
        hidden_states = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def sdpa(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float,
    upcast: bool,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; with ``upcast`` and a bf16/fp16 query, from fp32 inputs with
    autocast off (scores, softmax and the weighted sum in fp32), returned in the query's dtype."""
    if not (upcast and query.dtype in REDUCED):
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False, scale=scale
        )
    if mask is not None and mask.is_floating_point():
        mask = mask.float()
    with torch.autocast(device_type=query.device.type, enabled=False):
        out = F.scaled_dot_product_attention(
            query.float(), key.float(), value.float(), attn_mask=mask, dropout_p=0.0, is_causal=False, scale=scale
        )
    return out.to(query.dtype)


def naive_head_maps(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference/benchmark: every head's full map at once, [B·E·heads, T, T] (what the official code holds)."""
    be, heads, t, d = query.shape
    q = query.reshape(be * heads, t, d).float()
    k = key.reshape(be * heads, -1, d).float()
    return (torch.bmm(q, k.transpose(1, 2)) * scale).softmax(dim=-1)
