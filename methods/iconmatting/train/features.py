"""Feature sources of the IconMatting trainer: fresh (official: every draw encoded anew) or precomputed."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from benchmark.seeding import rng_for
from benchmark.types import Sample

from ..features import TargetFeatures, image_seed
from .batch import MicroBatch, _stack_targets, image_tensor, reference_tokens
from .data import TrainingExample, TrainPair, load_example
from .settings import DTYPES

if TYPE_CHECKING:
    from .loop import Trainer


class FreshFeatures:
    """The official feature source: every draw is decoded, augmented and encoded anew (fresh seeded noise)."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        self.pool = ThreadPoolExecutor(trainer.settings.num_workers) if trainer.settings.num_workers else None
        self._pending: dict[int, Future] = {}

    def _load(self, info: TrainPair, index: int) -> TrainingExample:
        return load_example(info.target, info.reference, rng=self.t.data.sampler.rng(index),
                            binarize_reference=info.binarize, **self.t.augmentation())

    def example(self, index: int) -> TrainingExample:
        return self._load(self.t.data.sampler.info(index), index)

    def prefetch(self, indices: Sequence[int]) -> None:
        """Decode and augment these draws in background threads (the sampler itself runs here: it caches)."""
        if self.pool is None:
            return
        for i in indices:
            if i not in self._pending:
                self._pending[i] = self.pool.submit(self._load, self.t.data.sampler.info(i), i)

    def _examples(self, indices: Sequence[int]) -> list[TrainingExample]:
        out = []
        for i in indices:
            fut = self._pending.pop(i, None)
            out.append(fut.result() if fut is not None else self.example(i))
        return out

    def micro_batch(self, indices: Sequence[int]) -> MicroBatch:
        examples = self._examples(indices)
        ext, dev = self.t.extractor, self.t.device
        images, alpha, sample_map = _stack_targets(examples)
        refs = torch.stack([image_tensor(e.reference_image) for e in examples])
        ref_seeds = [self.t.noise_seed(i, "reference", e.reference_id) for i, e in zip(indices, examples, strict=True)]
        tgt_seeds = [self.t.noise_seed(i, "target", e.target_id) for i, e in zip(indices, examples, strict=True)]
        ft, _ = ext.reference_features(refs.to(dev), seeds=ref_seeds)
        tokens = reference_tokens(ft, [e.reference_alpha for e in examples])
        feats = ext.target_features(images.to(dev), seeds=tgt_seeds)
        return MicroBatch(images.to(dev), alpha.to(dev), sample_map.to(dev), feats, tokens)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()


@dataclass
class _CachedTarget:
    image: Tensor
    alpha: Tensor
    sample_map: Tensor
    feats: tuple[Tensor, Tensor, Tensor, Tensor]  # up0, up1, attn low, attn high (CPU, storage dtype)


class PrecomputedFeatures:
    """``train.precompute_features = N``: N fixed (augmentation, noise) draws per image and role, each encoded
    once (on first use) and kept in CPU memory; draw ``i`` uses one of them, chosen by a hash of ``(seed, i)``.

    This changes the training distribution (N noise draws per image instead of a fresh one every step, and
    N augmentations). Memory per cached target draw at 768: ≈ 37 MB fp32 (up blocks 0/1 and both attention maps),
    half with ``precompute_dtype=bf16``; a reference draw keeps only its RoI tokens."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        self.n = trainer.settings.precompute_features
        self.store = DTYPES[trainer.settings.precompute_dtype]
        self.targets: dict[tuple[str, int], _CachedTarget] = {}
        self.references: dict[tuple[str, int], Tensor] = {}

    def draw(self, index: int, role: str) -> int:
        return int(rng_for(self.t.settings.seed, "precompute-draw", index, role).integers(self.n))

    def _example(self, sample: Sample, binarize: bool, role: str, k: int) -> TrainingExample:
        rng = rng_for(self.t.settings.seed, "precompute-augment", sample.id, role, k)
        return load_example(sample, sample, rng=rng, binarize_reference=binarize, **self.t.augmentation())

    def _seed(self, sample_id: str, role: str, k: int) -> int:
        return image_seed(self.t.settings.seed, k, role, sample_id, stream="train-precompute")

    def _fill_targets(self, missing: list[tuple[Sample, bool, int]]) -> None:
        examples = [self._example(s, b, "target", k) for s, b, k in missing]
        images, alpha, sample_map = _stack_targets(examples)
        seeds = [self._seed(s.id, "target", k) for s, _, k in missing]
        f = self.t.extractor.target_features(images.to(self.t.device), seeds=seeds)
        for j, (s, _, k) in enumerate(missing):
            parts = (f.ft_matting[0][j], f.ft_matting[1][j], f.attn[0][j], f.attn[1][j])
            self.targets[(s.id, k)] = _CachedTarget(images[j], alpha[j], sample_map[j],
                                                    tuple(p.to("cpu", self.store) for p in parts))  # type: ignore[arg-type]

    def _fill_references(self, missing: list[tuple[Sample, bool, int]]) -> None:
        examples = [self._example(s, b, "reference", k) for s, b, k in missing]
        refs = torch.stack([image_tensor(e.reference_image) for e in examples])
        seeds = [self._seed(s.id, "reference", k) for s, _, k in missing]
        ft, _ = self.t.extractor.reference_features(refs.to(self.t.device), seeds=seeds)
        for (s, _, k), tok in zip(missing, reference_tokens(ft, [e.reference_alpha for e in examples]), strict=True):
            self.references[(s.id, k)] = tok.cpu()

    def prefetch(self, indices: Sequence[int]) -> None:
        pass

    def micro_batch(self, indices: Sequence[int]) -> MicroBatch:
        infos = [self.t.data.sampler.info(i) for i in indices]
        tkeys = [(p.target, p.binarize, self.draw(i, "target")) for i, p in zip(indices, infos, strict=True)]
        rkeys = [(p.reference, p.binarize, self.draw(i, "reference")) for i, p in zip(indices, infos, strict=True)]
        todo_t = list({(s.id, k): (s, b, k) for s, b, k in tkeys if (s.id, k) not in self.targets}.values())
        todo_r = list({(s.id, k): (s, b, k) for s, b, k in rkeys if (s.id, k) not in self.references}.values())
        if todo_t:
            self._fill_targets(todo_t)
        if todo_r:
            self._fill_references(todo_r)
        dev = self.t.device
        cached = [self.targets[(s.id, k)] for s, _, k in tkeys]
        parts = [torch.stack([c.feats[p] for c in cached]).to(dev, torch.float32) for p in range(4)]
        feats = TargetFeatures(ft_cor=parts[1], ft_matting=(parts[0], parts[1]), attn=(parts[2], parts[3]))
        tokens = [self.references[(s.id, k)].to(dev) for s, _, k in rkeys]
        image, alpha, sample_map = (torch.stack([getattr(c, a) for c in cached]).to(dev)
                                    for a in ("image", "alpha", "sample_map"))
        return MicroBatch(image, alpha, sample_map, feats, tokens)

    def close(self) -> None:
        self.targets.clear()
        self.references.clear()
