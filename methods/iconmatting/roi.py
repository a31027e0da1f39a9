"""Reference RoI tokens: which cells of the reference feature grid describe the foreground.

Official rule (study §5.1): threshold the reference alpha at > 0.5, min-pool it with a
kernel of input/feature size (16 for 768 → 48), and keep the feature vectors of cells whose
every pixel is foreground, in row-major order. The official code thresholds the caller's
tensor in place; here the input is never modified.

Extension for sparse prompts (paper §3.6, our reading): a point or scribble marks too few
pixels to survive min-pooling, so each foreground-marked cell is a seed, and the ``top_m``
cells that the seed attends to most in the reference's own self-attention map join the
RoI. Cells holding background-marked pixels are removed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import MethodError


class EmptyRoIError(MethodError):
    """The reference prompt leaves no RoI token (e.g. a thin object vanishes under min-pooling)."""


def roi_cells(guidance: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Boolean [h, w] map of cells fully inside the thresholded guidance.

    ``guidance`` is [H, W] (or [1, 1, H, W]) in [0, 1]; a pixel is foreground iff > 0.5.
    The kernel is (H // h, W // w), as the official ``maskpool`` uses.
    """
    g = guidance.reshape(1, 1, *guidance.shape[-2:]).float()
    binary = (g > 0.5).float()
    kh, kw = g.shape[-2] // grid[0], g.shape[-1] // grid[1]
    if kh < 1 or kw < 1:
        raise ValueError(f"guidance {tuple(g.shape[-2:])} is smaller than the feature grid {grid}")
    pooled = -F.max_pool2d(-binary, kernel_size=(kh, kw), stride=(kh, kw))
    return (pooled > 0).reshape(pooled.shape[-2:])[: grid[0], : grid[1]]


def tokens_from_cells(feature: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Rows of the [C, h, w] feature at the True cells, row-major: [K, C]."""
    c = feature.shape[0]
    return feature.reshape(c, -1).transpose(0, 1)[cells.reshape(-1).to(feature.device)]


def marked_cells(labels: torch.Tensor, grid: tuple[int, int], value: int) -> torch.Tensor:
    """Boolean [h, w]: cells containing at least one pixel of ``labels`` equal to ``value``."""
    hit = (labels == value).float().reshape(1, 1, *labels.shape[-2:])
    kh, kw = labels.shape[-2] // grid[0], labels.shape[-1] // grid[1]
    pooled = F.max_pool2d(hit, kernel_size=(kh, kw), stride=(kh, kw))
    return (pooled > 0).reshape(pooled.shape[-2:])[: grid[0], : grid[1]]


def prompt_cells(fg_cells: torch.Tensor, bg_cells: torch.Tensor, ref_attn: torch.Tensor, top_m: int) -> torch.Tensor:
    """Extend sparse foreground seeds by their ``top_m`` self-attention responses.

    ``ref_attn`` is the reference's [N, N] self-attention map at the feature grid (row =
    query). Every seed cell keeps itself and adds the ``top_m`` keys it attends to most;
    cells with background marks are removed afterwards.
    """
    seeds = fg_cells.reshape(-1).nonzero().flatten()
    out = fg_cells.reshape(-1).clone()
    if top_m > 0 and seeds.numel():
        rows = ref_attn[seeds.to(ref_attn.device)]  # [S, N]
        top = rows.topk(min(top_m, rows.shape[-1]), dim=-1).indices.reshape(-1).cpu()
        out[top] = True
    out &= ~bg_cells.reshape(-1)
    return out.reshape(fg_cells.shape)
