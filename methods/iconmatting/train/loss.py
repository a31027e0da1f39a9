"""The official IconMatting training loss (``LossFunction2``), re-implemented and vectorised over the batch.

Source: ``tiny-smart/in-context-matting:icm/criterion/loss_function.py`` (class ``LossFunction2`` and the
Laplacian helpers at the end of the file) @ ``d5197e0`` (unchanged since ``a2648c7``; the pre-release
``a4778ea`` keeps it at ``icm/models/criterion/loss_function.py`` and its training config
``config/train_in_context_matting_training_free_attn_multiscale.yaml@a4778ea`` selects
``losses_seg=[known_smooth_l1_loss]`` and ``losses_matting=[unknown_l1_loss, known_l1_loss, loss_pha_laplacian,
loss_gradient_penalty]``, the class defaults).

What the official code computes, per sample ``i`` (it loops over the batch with batch-1 slices), with
``m`` = the sample map (1 on the unknown band, 0 elsewhere), ``k = (m == 0)``, ``N = H·W`` and
``S(x) = 512² / Σx`` (0 when ``Σx = 0``):

- if the target is **entirely** 0 or **entirely** 1 (``torch.all(t == 0) or torch.all(t == 1)``; a binary
  matte with both values is *not* this case): ``smooth_l1(p·k, t·k).mean() · S(k)``, logged under the key
  ``known_l1_loss`` (the official method returns it under that name);
- otherwise the sum of
  ``unknown_l1_loss = mean|p·m − t·m| · S(m)``, ``known_l1_loss = mean|p·k − t·k| · S(k)``,
  ``loss_pha_laplacian`` = Σ_l 2^l · mean|L_l(p) − L_l(t)| / 5 over a 5-level Laplacian pyramid (unmasked), and
  ``loss_gradient_penalty = S(m) · (mean|Gx(p)·m − Gx(t)·m| + mean|Gy(p)·m − Gy(t)·m|
  + 0.01·mean|Gx(p)·m| + 0.01·mean|Gy(p)·m|)`` with 3×3 Sobel filters (zero padding);

the four keys are then summed over the batch and the total loss is the sum of the keys
(``icm/models/in_context_matting.py:__shared_step``, lines 87–92 @ ``d5197e0``). ``mean`` is over all ``N``
pixels, so ``mean(·)·S(m)`` is "mean over the unknown band, times 512²/N".

The sample map: ``sample_map = zeros_like(trimap); sample_map[trimap == 0.5] = 1`` (same file, lines 87–88),
where the trimap is the dataset's trimap file mapped by ``ToTensor`` (``icm/data/data_generator.py:58-60``):
values < 85 → 0, ≥ 170 → 1, the rest → 0.5. :func:`sample_map_from_trimap` does exactly that on 0..255 trimaps;
:func:`sample_map_for` derives a trimap from the matte first when a dataset has no trimap file (the official
Open Images trimaps were "self generated" by an unreleased script; we use :func:`benchmark.trimaps.derive_trimap`).

All maths runs in float32 with autocast disabled, whatever the caller's precision (the official run is fp32).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: 512², the official normalising area (``262144`` in the source).
REFERENCE_AREA = 262144.0
LAPLACIAN_LEVELS = 5
GRADIENT_PENALTY = 0.01
TERMS = ("unknown_l1_loss", "known_l1_loss", "loss_pha_laplacian", "loss_gradient_penalty")

_BINOMIAL5 = (1.0, 4.0, 6.0, 4.0, 1.0)  # outer product / 256 is the official 5×5 Gaussian kernel
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def sample_map_from_trimap(trimap: Tensor) -> Tensor:
    """Float {0, 1} map of the unknown band of a 0..255 trimap (85 ≤ v < 170), as the official ``ToTensor`` +
    ``training_step`` build it. Shape is kept (B×1×H×W)."""
    t = trimap.float()
    return ((t >= 85) & (t < 170)).float()


def sample_map_for(alpha: Tensor, trimap: Tensor | None = None, *, radius: int | None = None) -> Tensor:
    """The official sample map for a B×1×H×W target batch.

    With ``trimap`` (0..255 values), it is :func:`sample_map_from_trimap`. Without, a trimap is derived from each
    matte (:func:`benchmark.trimaps.derive_trimap`: fully opaque / fully transparent pixels eroded by a disc of
    ``radius`` px, default 1 % of the longer side) and mapped the same way."""
    if trimap is not None:
        return sample_map_from_trimap(trimap)
    from benchmark.trimaps import derive_trimap

    a = alpha.detach().float().cpu().numpy()
    maps = np.stack([derive_trimap(a[i, 0], radius=radius)[None] for i in range(a.shape[0])])
    return sample_map_from_trimap(torch.from_numpy(maps)).to(alpha.device)


def _masked_scale(mask: Tensor) -> Tensor:
    """Per-sample 512² / Σmask, 0 where the mask is empty (the official ``scale``), shape B."""
    total = mask.sum(dim=(1, 2, 3))
    return torch.where(total > 0, REFERENCE_AREA / total.clamp_min(1.0), torch.zeros_like(total))


def _mean(x: Tensor) -> Tensor:
    """Per-sample mean over C×H×W, shape B (the official ``F.l1_loss`` default on a batch-1 slice)."""
    return x.mean(dim=(1, 2, 3))


def _kernel(rows: tuple[tuple[float, ...], ...], like: Tensor) -> Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)[None, None]


def _blur(x: Tensor) -> Tensor:
    """5×5 binomial blur (the official ``gauss_convolution``): reflect padding by 2, per channel."""
    b, c, h, w = x.shape
    taps = torch.tensor(_BINOMIAL5, dtype=x.dtype, device=x.device) / 16.0
    y = F.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    y = F.conv2d(y, (taps[:, None] * taps[None, :])[None, None])
    return y.reshape(b, c, h, w)


def _pyramid_residuals(x: Tensor, levels: int) -> list[Tensor]:
    """Laplacian pyramid levels: crop to even size, blur+decimate, zero-insert ×4 + blur, subtract."""
    out = []
    for _ in range(levels):
        x = x[:, :, : x.shape[2] // 2 * 2, : x.shape[3] // 2 * 2]
        down = _blur(x)[:, :, ::2, ::2]
        up = x.new_zeros(x.shape)
        up[:, :, ::2, ::2] = down * 4.0
        out.append(x - _blur(up))
        x = down
    return out


def laplacian_terms(pred: Tensor, target: Tensor, levels: int = LAPLACIAN_LEVELS) -> Tensor:
    """Per-sample official ``laplacian_loss`` (Σ 2^l · mean|ΔL_l| / levels), shape B. Needs H, W ≥ 2^(levels+1)."""
    lp, lt = _pyramid_residuals(pred, levels), _pyramid_residuals(target, levels)
    return sum((2.0**i) * _mean((a - b).abs()) for i, (a, b) in enumerate(zip(lp, lt, strict=True))) / levels


def _sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    kx = _kernel(_SOBEL_X, x)
    return F.conv2d(x, kx, padding=1), F.conv2d(x, kx.transpose(2, 3), padding=1)


def gradient_terms(pred: Tensor, target: Tensor, sample_map: Tensor) -> Tensor:
    """Per-sample official ``loss_gradient_penalty`` on the unknown band, shape B."""
    px, py = _sobel(pred)
    tx, ty = _sobel(target)
    m = sample_map
    body = _mean((px * m - tx * m).abs()) + _mean((py * m - ty * m).abs())
    penalty = GRADIENT_PENALTY * (_mean((px * m).abs()) + _mean((py * m).abs()))
    return (body + penalty) * _masked_scale(m)


def per_sample_terms(sample_map: Tensor, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """The four official loss keys for every sample (shape B each), with the per-sample branch applied.

    Segmentation samples (target all 0 or all 1) carry their known-region smooth-ℓ1 in ``known_l1_loss`` and 0 in
    the other keys, as the official dictionary merge does."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p, t, m = pred.float(), target.float(), sample_map.float()
        known = (m == 0).float()
        seg = (t == 0).flatten(1).all(dim=1) | (t == 1).flatten(1).all(dim=1)
        s_known = _masked_scale(known)
        known_l1 = _mean((p * known - t * known).abs()) * s_known
        known_smooth = _mean(F.smooth_l1_loss(p * known, t * known, reduction="none")) * s_known
        zero = torch.zeros_like(known_l1)
        matting = {
            "unknown_l1_loss": _mean((p * m - t * m).abs()) * _masked_scale(m),
            "known_l1_loss": known_l1,
            "loss_pha_laplacian": laplacian_terms(p, t),
            "loss_gradient_penalty": gradient_terms(p, t, m),
        }
        out = {k: torch.where(seg, zero, v) for k, v in matting.items()}
        out["known_l1_loss"] = torch.where(seg, known_smooth, known_l1)
        return out


def matting_loss_terms(sample_map: Tensor, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Batch sums of the four official keys (0-dim tensors). A key no sample produced is 0 here, absent in the
    official dictionary; the totals agree."""
    return {k: v.sum() for k, v in per_sample_terms(sample_map, pred, target).items()}


def matting_loss(sample_map: Tensor, pred: Tensor, target: Tensor) -> Tensor:
    """Total official training loss of a B×1×H×W batch: ``sum(LossFunction2()(sample_map, pred, target).values())``.

    ``sample_map``: 1 on the target's unknown band (:func:`sample_map_for`); ``pred``: the decoder output in [0, 1];
    ``target``: the ground-truth matte in [0, 1]. Summed (not averaged) over the batch, as the official forward."""
    return torch.stack(list(matting_loss_terms(sample_map, pred, target).values())).sum()


__all__ = [
    "TERMS", "gradient_terms", "laplacian_terms", "matting_loss", "matting_loss_terms", "per_sample_terms",
    "sample_map_for", "sample_map_from_trimap",
]
