"""Training data and micro-batches of the IconMatting trainer: the datasets and pair sampler, image tensors,
reference RoI tokens, and the batched decoder forward (items with different references)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmark.datasets import absolute_paths, load_dataset
from benchmark.types import Dataset

from ..decoder import InContextDecoder
from ..features import TargetFeatures
from ..roi import roi_cells, tokens_from_cells
from .data import PairSampler, TrainingExample, is_open_images
from .loss import sample_map_from_trimap
from .settings import TrainConfigError, TrainSettings


@dataclass(frozen=True)
class TrainData:
    """The training datasets (with weight and binarisation) and the sampler over them."""

    datasets: tuple[Dataset, ...]
    weights: tuple[float | None, ...]
    binarize: tuple[bool | None, ...]
    sampler: PairSampler

    def identity(self) -> list[dict[str, Any]]:
        return [{"name": d.name, "fingerprint": d.fingerprint, "weight": w, "binarize": b}
                for d, w, b in zip(self.datasets, self.weights, self.binarize, strict=True)]


def dataset_entries(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The training datasets: ``dataset`` (when chosen) then every entry of ``train.datasets``."""
    entries = [dict(cfg["dataset"])] if cfg.get("dataset") else []
    entries += [dict(d) for d in cfg["train"].get("datasets") or ()]
    if not entries:
        raise TrainConfigError("no training data: choose dataset=<name> (conf/dataset/*) or list train.datasets")
    for e in entries:
        if "name" not in e:
            raise TrainConfigError(f"a training dataset needs a 'name' (a benchmark dataset): {e}")
    return entries


def build_data(cfg: Mapping[str, Any], settings: TrainSettings) -> TrainData:
    """Load every training dataset (listing files only) and build the pair sampler."""
    datasets, weights, flags = [], [], []
    for entry in dataset_entries(cfg):
        weight, flag = entry.pop("weight", None), entry.pop("binarize", None)
        name = entry.pop("name")
        datasets.append(load_dataset(name, **absolute_paths(entry)))
        weights.append(None if weight is None else float(weight))
        flags.append(None if flag is None else bool(flag))
    spec = [d if w is None else (d, w) for d, w in zip(datasets, weights, strict=True)]
    binarize = [is_open_images(d) if f is None else f for d, f in zip(datasets, flags, strict=True)]
    sampler = PairSampler(spec, seed=settings.seed, epoch_size=settings.epoch_size, reshuffle=settings.reshuffle,
                          reference=settings.reference, binarize=binarize)  # type: ignore[arg-type]
    return TrainData(tuple(datasets), tuple(weights), tuple(binarize), sampler)


def image_tensor(image: np.ndarray) -> Tensor:
    """uint8 H×W×3 RGB → float32 [3, H, W] in [−1, 1] (the official ``norm_type: sd``: x / 127.5 − 1)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 127.5 - 1.0


class BatchedDecoder(nn.Module):
    """The decoder forward for a batch whose items have *different* references (the official training batch).

    The inter-similarity runs per item with that item's RoI tokens (K differs); everything after it runs on the
    whole batch, so BatchNorm sees ``batch_size`` items as in the official run. Same maths as
    :meth:`InContextDecoder.forward` (tested), returning only the alpha."""

    def __init__(self, decoder: InContextDecoder) -> None:
        super().__init__()
        self.decoder = decoder
        self._body = self.body

    def compile_body(self) -> None:
        """``torch.compile`` the part after the inter-similarity (static shapes; the per-item part stays eager)."""
        self._body = torch.compile(self.body)

    def forward(self, image: Tensor, ft_cor: Tensor, ft_matting: Sequence[Tensor], attn: Sequence[Tensor],
                tokens: Sequence[Tensor]) -> Tensor:
        sim = self.decoder.in_context_fusion.attn_module
        inter = torch.cat([sim(t, ft_cor[i : i + 1]) for i, t in enumerate(tokens)])
        return self._body(image, inter, tuple(ft_matting), tuple(attn))

    def body(self, image: Tensor, inter: Tensor, ft_matting: tuple[Tensor, ...], attn: tuple[Tensor, ...]) -> Tensor:
        fusion = self.decoder.in_context_fusion
        intra = fusion.intra_similarity(inter, attn)
        branches = []
        for i, ft in enumerate(ft_matting):
            x = fusion.ft_module_list[i](ft)
            branches.append(fusion.ft_attn_module_list[i](torch.cat([x, intra[i]], dim=1)))
        return self.decoder.detail_decoder(fusion.fusion(branches), image)


@dataclass
class MicroBatch:
    """Decoder inputs and loss targets of one micro-batch, on the training device."""

    image: Tensor  # [B, 3, S, S] in [-1, 1]
    alpha: Tensor  # [B, 1, S, S]
    sample_map: Tensor  # [B, 1, S, S], 1 on the unknown band
    feats: TargetFeatures
    tokens: list[Tensor]  # per item [K_i, C]

    def to_channels_last(self) -> MicroBatch:
        cl = torch.channels_last
        f = self.feats
        feats = TargetFeatures(f.ft_cor, tuple(t.contiguous(memory_format=cl) for t in f.ft_matting), f.attn)
        return MicroBatch(self.image.contiguous(memory_format=cl), self.alpha, self.sample_map, feats, self.tokens)


def reference_tokens(ft: Tensor, guidance: Sequence[np.ndarray]) -> list[Tensor]:
    """Per reference: the feature rows of the cells fully inside its thresholded guidance (official maskpool).
    An empty RoI gives no token, and the inter-similarity is then 0 (as in the official code)."""
    grid = (ft.shape[-2], ft.shape[-1])
    return [tokens_from_cells(ft[i], roi_cells(torch.from_numpy(g), grid)) for i, g in enumerate(guidance)]


def _stack_targets(examples: Sequence[TrainingExample]) -> tuple[Tensor, Tensor, Tensor]:
    images = torch.stack([image_tensor(e.image) for e in examples])
    alpha = torch.stack([torch.from_numpy(e.alpha)[None] for e in examples])
    trimap = torch.stack([torch.from_numpy(e.trimap)[None] for e in examples])
    return images, alpha, sample_map_from_trimap(trimap)
