"""The in-context decoder: inter-similarity, intra-similarity, multi-scale fusion, detail decoder.

Module and attribute names mirror the official ``InContextDecoder`` so that its checkpoint
(``in_context_decoder.*`` keys, see ``decoder_keys.tsv``) loads strictly. Every size that
the official code derives from its 768×768 input is a :class:`DecoderConfig` field, so the
same code runs a tiny model at 128×128 in tests. The modules are plain, trainable
``nn.Module``s: no ``no_grad`` and no in-place changes of caller tensors in ``forward``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Official working size and the sizes the official config derives from it.
OFFICIAL_INPUT_SIZE = 768
OFFICIAL_FEATURE_CHANNELS = 1280


@dataclass(frozen=True)
class DecoderConfig:
    """Structure of the decoder; the defaults are the official ``config/eval.yaml`` values.

    - ``ft_channels``: channels of the matting features (UNet up blocks 0 and 1).
    - ``cor_channels``: channels of the correspondence feature (LayerNorm width of the
      inter-similarity, official ``use_norm``).
    - ``attn_res``: side of the low and high resolution self-attention maps (24, 48);
      the intra-similarity LayerNorm and conv take ``res²`` key channels.
    """

    ft_channels: tuple[int, int] = (OFFICIAL_FEATURE_CHANNELS, OFFICIAL_FEATURE_CHANNELS)
    cor_channels: int = OFFICIAL_FEATURE_CHANNELS
    attn_res: tuple[int, int] = (OFFICIAL_INPUT_SIZE // 32, OFFICIAL_INPUT_SIZE // 16)
    attn_out: int = 256
    ft_out: tuple[int, int] = (320, 320)
    img_chans: int = 3
    convstream_out: tuple[int, ...] = (48, 96, 192)
    fusion_out: tuple[int, ...] = (256, 128, 64, 32)
    head_mid: int = 16

    @classmethod
    def for_input(
        cls, input_size: int, ft_channels: tuple[int, int] | None = None, cor_channels: int | None = None
    ) -> DecoderConfig:
        """Config for a square working size (multiple of 64) and a UNet's feature widths."""
        if input_size % 64:
            raise ValueError(f"input_size must be a multiple of 64, got {input_size}")
        ft = tuple(ft_channels) if ft_channels is not None else cls.ft_channels
        cor = cor_channels if cor_channels is not None else ft[1]
        return cls(ft_channels=ft, cor_channels=cor, attn_res=(input_size // 32, input_size // 16))  # type: ignore[arg-type]

    @property
    def input_size(self) -> int:
        """Working size implied by the high attention resolution (48 → 768)."""
        return self.attn_res[1] * 16


# --------------------------------------------------------------------------- building blocks
class BasicConv3x3(nn.Module):
    """Conv 3×3 (no bias) → BatchNorm → ReLU (official ``Basic_Conv3x3``)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class AttnConv3x3(nn.Module):
    """LayerNorm over the key axis of [B, H, W, keys] → ReLU → conv 3×3 (official ``Basic_Conv3x3_attn``)."""

    def __init__(self, keys: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(keys, out_chans, 3, 1, 1, bias=False)
        self.ln = nn.LayerNorm(keys, elementwise_affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln(x).permute(0, 3, 1, 2)
        return self.conv(F.relu(x))


class FusionBlock(nn.Module):
    """Upsample ``x`` ×2 (bilinear), concatenate ``[detail, x_up]``, BasicConv3x3 (official ``Fusion_Block``)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = BasicConv3x3(in_chans, out_chans)

    def forward(self, x: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([detail, up], dim=1))


class ConvStream(nn.Module):
    """Stride-2 conv stream on the image: detail features D1..Dn (D0 is the image)."""

    def __init__(self, in_chans: int, out_chans: Sequence[int]) -> None:
        super().__init__()
        chans = [in_chans, *out_chans]
        self.convs = nn.ModuleList(BasicConv3x3(chans[i], chans[i + 1], stride=2) for i in range(len(out_chans)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x]
        for conv in self.convs:
            x = conv(x)
            out.append(x)
        return out


class MattingHead(nn.Module):
    """Conv 3×3 → BatchNorm → ReLU → conv 1×1 to one logit channel."""

    def __init__(self, in_chans: int, mid_chans: int) -> None:
        super().__init__()
        self.matting_convs = nn.Sequential(
            nn.Conv2d(in_chans, mid_chans, 3, 1, 1),
            nn.BatchNorm2d(mid_chans),
            nn.ReLU(),
            nn.Conv2d(mid_chans, 1, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matting_convs(x)


class DetailCapture(nn.Module):
    """ViTMatte-style detail decoder: fuses the 1/16 feature with the conv stream up to full size."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.convstream = ConvStream(cfg.img_chans, cfg.convstream_out)
        detail_chans = [cfg.img_chans, *cfg.convstream_out]
        fus = [cfg.ft_out[-1], *cfg.fusion_out]
        self.fusion_blks = nn.ModuleList(
            FusionBlock(fus[i] + detail_chans[-(i + 1)], fus[i + 1]) for i in range(len(cfg.fusion_out))
        )
        self.matting_head = MattingHead(cfg.fusion_out[-1], cfg.head_mid)

    def forward(self, feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Alpha in [0, 1], [B, 1, H, W], from the fused feature and the [-1, 1] image."""
        details = self.convstream(image)
        x = feature
        for i, blk in enumerate(self.fusion_blks):
            x = blk(x, details[len(self.fusion_blks) - i - 1])
        return torch.sigmoid(self.matting_head(x))


# --------------------------------------------------------------------------- in-context part
class InterSimilarity(nn.Module):
    """RoI tokens of the reference against every target position (official ``TrainingFreeAttention``).

    One shared LayerNorm on reference and target tokens, scaled dot product, softmax over
    the target positions, then the sum over the RoI tokens (Σ map = K).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, elementwise_affine=True)

    def token_probs(self, roi_tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[B, K, h·w]: each RoI token's softmax over the target's positions.

        ``roi_tokens`` is [K, C] (shared by the batch) or [B, K, C]; ``target`` is [B, C, h, w].
        """
        b, c = target.shape[:2]
        with torch.autocast(device_type=target.device.type, enabled=False):  # small, precision-sensitive
            tgt = self.norm(target.float().reshape(b, c, -1).transpose(1, 2))  # [B, N, C]
            ref = self.norm(roi_tokens.float())
            if ref.dim() == 2:
                ref = ref.unsqueeze(0).expand(b, -1, -1)
            sim = torch.matmul(ref, tgt.transpose(1, 2)) * (c**-0.5)
            return sim.softmax(dim=-1)

    def forward(
        self, roi_tokens: torch.Tensor, target: torch.Tensor, token_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Inter-similarity map [B, 1, h, w]: the sum of the K token maps (official), or their
        weighted sum with ``token_weights`` [K] (e.g. 1/R per token for the mean over R references)."""
        b, _, h, w = target.shape
        probs = self.token_probs(roi_tokens, target)
        if token_weights is None:
            return probs.sum(dim=1).reshape(b, 1, h, w)
        w_k = token_weights.to(probs.device, probs.dtype).reshape(1, -1, 1)
        return (probs * w_k).sum(dim=1).reshape(b, 1, h, w)


class MultiScaleFeatureFusion(nn.Module):
    """Fuses the low-resolution branch into the high one (official ``MultiScaleFeatureFusion``)."""

    def __init__(self, in_chans: Sequence[int], out_chans: Sequence[int]) -> None:
        super().__init__()
        self.module_list = nn.ModuleList(FusionBlock(in_chans[i], out_chans[i]) for i in range(len(in_chans) - 1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[0]
        for i, blk in enumerate(self.module_list):
            x = blk(x, features[i + 1])
        return x


class InContextFusion(nn.Module):
    """Inter- and intra-similarity plus multi-scale fusion (official ``SemiTrainingAttentionBlocks``).

    Attribute creation order matches the official state_dict order.
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.attn_module = InterSimilarity(cfg.cor_channels)
        keys = [r * r for r in cfg.attn_res]
        self.attn_module_list = nn.ModuleList(AttnConv3x3(k, cfg.attn_out) for k in keys)
        self.ft_attn_module_list = nn.ModuleList(BasicConv3x3(o + cfg.attn_out, o) for o in cfg.ft_out)
        self.ft_module_list = nn.ModuleList(
            BasicConv3x3(i, o) for i, o in zip(cfg.ft_channels, cfg.ft_out, strict=True)
        )
        self.fusion = MultiScaleFeatureFusion([2 * o for o in cfg.ft_out], list(cfg.ft_out))

    def intra_similarity(self, inter: torch.Tensor, attn: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per resolution: LN/ReLU/conv of the attention rows weighted by the inter map at the key.

        ``attn[i]`` is [B, h, w, h·w] (query position, key index; rows sum to 1).
        """
        out = []
        for module, a in zip(self.attn_module_list, attn, strict=True):
            b, h, w, n = a.shape
            s = F.interpolate(inter, size=(h, w), mode="bilinear", align_corners=True)
            out.append(module(a * s.reshape(b, 1, 1, n)))
        return out


@dataclass
class DecoderOutput:
    """Alpha plus the intermediate maps the official decoder exposes (and a few for parity checks)."""

    alpha: torch.Tensor  # [B, 1, H, W] in [0, 1]
    inter_similarity: torch.Tensor  # [B, 1, h, w], sums to K per item
    att_look: torch.Tensor  # [B, 1, H, W], visualisation only
    intra: list[torch.Tensor]  # per resolution [B, attn_out, r, r]
    fused: torch.Tensor  # [B, ft_out, h, w]


class InContextDecoder(nn.Module):
    """The decoder the official checkpoint stores under ``in_context_decoder.``."""

    def __init__(self, cfg: DecoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DecoderConfig()
        self.in_context_fusion = InContextFusion(self.cfg)
        self.detail_decoder = DetailCapture(self.cfg)

    def forward(
        self,
        image: torch.Tensor,
        ft_cor: torch.Tensor,
        ft_matting: Sequence[torch.Tensor],
        attn: Sequence[torch.Tensor],
        roi_tokens: torch.Tensor,
        roi_weights: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Predict the target alpha.

        - ``image``: target, [B, 3, H, W] in [-1, 1].
        - ``ft_cor``: target correspondence feature [B, C, h, w] (UNet up block 1).
        - ``ft_matting``: (up block 0, up block 1) features, low resolution first.
        - ``attn``: self-attention maps (low, high), each [B, r, r, r²].
        - ``roi_tokens``: reference RoI tokens [K, C] (see :mod:`methods.iconmatting.roi`).
        - ``roi_weights``: optional [K] weights of the token maps in the inter-similarity
          (``None``: the official plain sum).
        """
        fusion = self.in_context_fusion
        inter = fusion.attn_module(roi_tokens, ft_cor, roi_weights)
        intra = fusion.intra_similarity(inter, attn)
        branches = []
        for i, ft in enumerate(ft_matting):
            x = fusion.ft_module_list[i](ft)
            branches.append(fusion.ft_attn_module_list[i](torch.cat([x, intra[i]], dim=1)))
        fused = fusion.fusion(branches)
        size = image.shape[-2:]
        looks = [F.interpolate(t.mean(dim=1, keepdim=True), size=size, mode="bilinear") for t in intra]
        att_look = torch.cat(looks, dim=1).mean(dim=1, keepdim=True)
        alpha = self.detail_decoder(fused, image)
        return DecoderOutput(alpha=alpha, inter_similarity=inter, att_look=att_look, intra=intra, fused=fused)


def parameter_table(module: nn.Module, prefix: str = "") -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every state_dict entry in order, e.g. to diff against ``decoder_keys.tsv``."""
    return [(prefix + k, tuple(v.shape)) for k, v in module.state_dict().items()]


def count_elements(module: nn.Module) -> int:
    """Total elements in the state_dict (parameters and buffers)."""
    return sum(math.prod(v.shape) for v in module.state_dict().values())
