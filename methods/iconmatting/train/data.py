"""Training data for the in-context decoder: resumable (target, reference) pairs and the official augmentation.

Official sources (``tiny-smart/in-context-matting`` @ ``d5197e0``; identical at ``a4778ea``):

- ``icm/data/data_generator.py:908-936`` (``InContextDataset.__getitem__``): the reference is drawn with
  ``np.random.randint`` from the target's group (``class-sub_class-HalfOrFull``); the target is removed from the
  candidates **only when the group has more than 2 members**, so in a group of 2 the target is its own reference
  half of the time and a singleton always references itself. Its guidance is the reference's ground-truth alpha
  after the same crop/resize (``guidance_on_reference_image = reference_sample['alpha']``).
- ``icm/data/data_generator.py:956-959`` (``get_sample``): when ``'open-images' in dataset_name`` the alpha is
  binarised (< 0.5 → 0, ≥ 0.5 → 1) **before** the crop/resize, for targets and references alike.
- ``icm/data/data_generator.py:394-448`` (``CropResize``) with ``maybe_random_interp`` (lines 19-31): a centre
  square crop (rows ``[(h−w)//2, (h−w)//2 + w)`` if h > w, columns likewise if w > h), then ``cv2.resize`` to the
  output size; image and alpha each get an interpolation drawn independently (image first) with
  ``np.random.choice([INTER_NEAREST, INTER_LINEAR, INTER_CUBIC, INTER_LANCZOS4])``; the trimap uses
  ``INTER_NEAREST``. The alpha is resized as float64 (``cv2.imread(...)/255.``, here too), clipped to [0, 1] and
  cast to float32 by ``ToTensor`` (lines 50-57); the uint8 image saturates inside ``cv2.resize``.
  ``RandomAffine``, ``CutMask`` and ``RandomJitter`` are commented out of ``train_trans`` (lines 888-894).
- ``icm/data/data_module.py:36-41`` with ``shuffle_train: False`` in the training config
  (``config/train_in_context_matting_training_free_attn_multiscale.yaml@a4778ea``): the epoch order is the one
  permutation ``ContextData`` made with ``np.random.RandomState(1)`` (``icm/data/image_file.py:237-241``), the
  same every epoch; datasets are merged into one list, so each contributes in proportion to its size.

Where we differ by default, and the switch that restores the official behaviour:

- ``reference="other"``: in groups of two the reference is always the other member (``reference="official"``
  keeps the "> 2" rule). Singletons reference themselves under both rules (flagged ``self_reference``).
- ``reshuffle=True``: a fresh permutation each epoch (``reshuffle=False``: one fixed permutation, as the code).
- Groups never span datasets (the official code merges equal group keys across datasets).
- ``crop="center"`` is the code; ``crop="random"`` (a square of side min(h, w) at a random position) is the
  paper's "randomly cropped".

Every draw is a pure function of ``(seed, index)`` (:func:`benchmark.seeding.rng_for`), so a resumed run sees
exactly the pairs and augmentations an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from benchmark.io import read_alpha, read_image, read_trimap
from benchmark.seeding import rng_for
from benchmark.trimaps import derive_trimap, trimap_radius
from benchmark.types import Dataset, Sample
from benchmark.views import centre_square

#: The official ``interp_list`` (``icm/data/data_generator.py:23-24``).
INTERPOLATIONS: tuple[int, ...] = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
#: ``interpolation="fixed"``: the benchmark's ``official768`` choice (cubic image, linear alpha), no draw.
FIXED_INTERPOLATION = (cv2.INTER_CUBIC, cv2.INTER_LINEAR)
CropMode = Literal["center", "random"]
InterpolationMode = Literal["random", "fixed"]
ReferenceRule = Literal["other", "official"]
DatasetSpec = Dataset | Sequence[Dataset | tuple[Dataset, float]]


# --------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class TrainPair:
    """One draw of the sampler: which target, which reference, from which source, in which epoch."""

    index: int
    epoch: int
    source: int
    target: Sample
    reference: Sample
    binarize: bool
    self_reference: bool


def is_open_images(dataset: Dataset) -> bool:
    """Whether the official code would binarise this dataset's alphas (its name contains ``open-images``; ours
    also recognises the ``data_tools openimages`` manifests by their ``source`` meta)."""
    name = dataset.name.lower()
    return "open-images" in name or "openimages" in name or dataset.meta.get("source") == "openimages"


def _labelled(dataset: Dataset) -> list[str]:
    """Sample ids that have a ground-truth matte, in the dataset's stored order."""
    return [sid for sid, s in dataset.samples.items() if s.alpha_path is not None]


def _allocate(sizes: list[int], weights: list[float], total: int) -> list[int]:
    """Split ``total`` draws over sources in proportion to ``weights`` (largest remainder; ties by order)."""
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0):
        raise ValueError(f"mixing weights must be ≥ 0, got {weights}")
    w = np.where(np.asarray(sizes) > 0, w, 0.0)  # a source without labelled samples cannot be drawn
    if not np.any(w > 0):
        raise ValueError(f"no source with a positive weight has labelled samples (weights {weights})")
    exact = w / w.sum() * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


class PairSampler:
    """Deterministic, resumable (target, reference) pairs from one or several grouped datasets.

    ``datasets``: a :class:`Dataset`, or a list of datasets and/or ``(dataset, weight)`` pairs. Without weights
    every labelled sample is a target once per epoch (the official merge); with weights an epoch of
    ``epoch_size`` draws (default: all labelled samples) is split over the sources in proportion to them
    (stratified: exact counts, shuffled together), each source walking its own endless stream of permutations.
    ``pair(i)`` / ``info(i)`` are pure functions of ``(seed, i)``; iteration continues from ``position``, which
    ``state_dict()`` / ``load_state_dict()`` save and restore.
    """

    def __init__(self, datasets: DatasetSpec, *, seed: int, epoch_size: int | None = None, reshuffle: bool = True,
                 reference: ReferenceRule = "other", binarize: bool | Sequence[bool] | None = None) -> None:
        entries = [datasets] if isinstance(datasets, Dataset) else list(datasets)
        if not entries:
            raise ValueError("PairSampler needs at least one dataset")
        pairs = [e if isinstance(e, tuple) else (e, None) for e in entries]
        self.datasets: list[Dataset] = [d for d, _ in pairs]
        self._ids = [_labelled(d) for d in self.datasets]
        sizes = [len(ids) for ids in self._ids]
        if not any(sizes):
            raise ValueError("no sample with a ground-truth matte in the training datasets")
        weights = [w for _, w in pairs]
        if all(w is None for w in weights):
            self.counts = sizes if epoch_size is None else _allocate(sizes, sizes, epoch_size)
        else:
            filled = [float(w) if w is not None else float(s) for w, s in zip(weights, sizes, strict=True)]
            self.counts = _allocate(sizes, filled, sum(sizes) if epoch_size is None else epoch_size)
        if reference not in ("other", "official"):
            raise ValueError(f"reference must be 'other' or 'official', got {reference!r}")
        flags = [is_open_images(d) for d in self.datasets] if binarize is None else (
            [bool(binarize)] * len(self.datasets) if isinstance(binarize, bool) else [bool(b) for b in binarize])
        if len(flags) != len(self.datasets):
            raise ValueError("binarize needs one flag per dataset")
        self.binarize = flags
        self.seed, self.reshuffle, self.reference_rule = int(seed), bool(reshuffle), reference
        self.epoch_size = int(sum(self.counts))
        self.position = 0
        self._members = [self._group_members(d, set(ids)) for d, ids in zip(self.datasets, self._ids, strict=True)]
        self._orders: dict[int, np.ndarray] = {}
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    @staticmethod
    def _group_members(dataset: Dataset, labelled: set[str]) -> dict[str, list[str]]:
        return {k: [s for s in g.sample_ids if s in labelled] for k, g in dataset.groups.items()}

    def __len__(self) -> int:
        return self.epoch_size

    def fingerprint(self) -> str:
        """Hash of everything that decides the sequence; a resume refuses a sampler whose fingerprint changed."""
        doc = {"seed": self.seed, "counts": self.counts, "reshuffle": self.reshuffle, "ref": self.reference_rule,
               "binarize": self.binarize, "data": [d.fingerprint for d in self.datasets]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def _order(self, epoch: int) -> np.ndarray:
        """Rows (source, j) of one epoch, shuffled: source ``s`` appears ``counts[s]`` times."""
        key = epoch if self.reshuffle else 0
        if key not in self._orders:
            rows = np.array([(s, j) for s, n in enumerate(self.counts) for j in range(n)], dtype=np.int64)
            self._orders = {key: rows[rng_for(self.seed, "train-order", key).permutation(len(rows))]}
        return self._orders[key]

    def _perm(self, source: int, cycle: int) -> np.ndarray:
        key = (source, cycle if self.reshuffle else 0)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.datasets):
                self._perms.clear()
            self._perms[key] = rng_for(self.seed, "train-source", source, key[1]).permutation(len(self._ids[source]))
        return self._perms[key]

    def _target(self, source: int, epoch: int, j: int) -> str:
        """The ``j``-th target of ``source`` in ``epoch``: position ``epoch·count + j`` of its permutation stream."""
        q = epoch * self.counts[source] + j
        n = len(self._ids[source])
        return self._ids[source][int(self._perm(source, q // n)[q % n])]

    def _reference(self, index: int, source: int, target: str) -> str:
        group = self.datasets[source].samples[target].group
        members = self._members[source].get(group) or [target]
        limit = 2 if self.reference_rule == "other" else 3  # exclude the target in groups of ≥ limit
        candidates = [m for m in members if m != target] if len(members) >= limit else members
        return candidates[int(rng_for(self.seed, "train-reference", index).integers(len(candidates)))]

    def info(self, index: int) -> TrainPair:
        """Everything about draw ``index`` (0-based, over all epochs)."""
        if index < 0:
            raise IndexError(index)
        epoch, row = divmod(int(index), self.epoch_size)
        source, j = (int(v) for v in self._order(epoch)[row])
        target = self._target(source, epoch, j)
        ref = self._reference(index, source, target)
        samples = self.datasets[source].samples
        return TrainPair(index, epoch, source, samples[target], samples[ref], self.binarize[source], ref == target)

    def pair(self, index: int) -> tuple[Sample, Sample]:
        """(target, reference) of draw ``index``."""
        p = self.info(index)
        return p.target, p.reference

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of draw ``index`` (crop position, interpolations)."""
        return rng_for(self.seed, "train-augment", index)

    def __iter__(self) -> Iterator[tuple[Sample, Sample]]:
        return self

    def __next__(self) -> tuple[Sample, Sample]:
        p = self.pair(self.position)
        self.position += 1
        return p

    def state_dict(self) -> dict:
        return {"position": self.position, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError("the training data or sampler settings changed since this state was saved "
                             f"({state.get('fingerprint')} → {self.fingerprint()}); cannot resume the same sequence")
        self.position = int(state["position"])


# --------------------------------------------------------------------------- augmentation


def draw_interpolation(rng: np.random.Generator) -> int:
    """One of the official four interpolations, uniformly (``np.random.choice(interp_list)``)."""
    return INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]


def square_box(shape: tuple[int, int], rng: np.random.Generator, crop: CropMode = "center") -> tuple[slice, slice]:
    """Rows/columns of the square crop: the official centre square, or one at a random offset."""
    if crop == "center":
        return centre_square(shape)
    if crop != "random":
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    h, w = shape
    side = min(h, w)
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    return slice(top, top + side), slice(left, left + side)


def _as_unit_float(alpha: np.ndarray) -> np.ndarray:
    """float64 in [0, 1], as the official ``cv2.imread(...) / 255.`` (float64 keeps its resizes exact enough that a
    constant matte stays exactly constant after the float32 cast, so the loss's all-0/all-1 switch agrees)."""
    return alpha.astype(np.float64) / 255.0 if alpha.dtype == np.uint8 else alpha.astype(np.float64)


def binarize_alpha(alpha: np.ndarray) -> np.ndarray:
    """The official Open Images quantisation: < 0.5 → 0, ≥ 0.5 → 1 (float64, as the official array)."""
    return (_as_unit_float(alpha) >= 0.5).astype(np.float64)


def _interpolations(rng: np.random.Generator, mode: InterpolationMode) -> tuple[int, int]:
    """(image, alpha) interpolation: drawn in that order (official), or the fixed pair."""
    if mode == "random":
        return draw_interpolation(rng), draw_interpolation(rng)
    if mode != "fixed":
        raise ValueError(f"interpolation must be 'random' or 'fixed', got {mode!r}")
    return FIXED_INTERPOLATION


def crop_resize(image: np.ndarray, alpha: np.ndarray, size: int, rng: np.random.Generator, *,
                crop: CropMode = "center", box: tuple[slice, slice] | None = None,
                interpolation: InterpolationMode = "random") -> tuple[np.ndarray, np.ndarray]:
    """Official ``CropResize``: square crop, then resize to ``size``×``size`` with an interpolation drawn for the
    image, then one for the alpha. Returns (uint8 H×W×3, float32 H×W in [0, 1]).

    ``box`` overrides the crop (so a trimap can share it); with ``crop="random"`` the box is drawn first.
    ``interpolation="fixed"`` uses cubic (image) and linear (alpha) instead of the official random draw."""
    rows, cols = box if box is not None else square_box(image.shape[:2], rng, crop)
    dsize = (int(size), int(size))
    i_img, i_alpha = _interpolations(rng, interpolation)
    img = cv2.resize(np.ascontiguousarray(image[rows, cols]), dsize, interpolation=i_img)
    a = cv2.resize(np.ascontiguousarray(_as_unit_float(alpha)[rows, cols]), dsize, interpolation=i_alpha)
    return img, np.clip(a, 0.0, 1.0, out=a).astype(np.float32)


@dataclass(frozen=True, eq=False)
class TrainingExample:
    """One training input at ``size``×``size``: target image/alpha/trimap and the reference with its guidance."""

    image: np.ndarray  # uint8 H×W×3 RGB
    alpha: np.ndarray  # float32 H×W in [0, 1]
    trimap: np.ndarray  # uint8 H×W, 0/128/255 (the file's values where there is a file)
    reference_image: np.ndarray  # uint8 H×W×3 RGB
    reference_alpha: np.ndarray  # float32 H×W in [0, 1]: the reference's ground truth, the official guidance
    target_id: str
    reference_id: str
    trimap_source: str  # "file" or "derived-r<R>"


def _load(sample: Sample, binarize: bool) -> tuple[np.ndarray, np.ndarray]:
    if sample.alpha_path is None:
        raise ValueError(f"sample {sample.id} has no ground-truth matte; it cannot be used for training")
    image, alpha = read_image(sample.image_path), read_alpha(sample.alpha_path)
    if alpha.shape != image.shape[:2]:
        raise ValueError(f"size mismatch: matte {sample.alpha_path} is {alpha.shape[::-1]}, "
                         f"image {sample.image_path} is {image.shape[1::-1]}")
    return image, binarize_alpha(alpha) if binarize else _as_unit_float(alpha)


def _trimap(sample: Sample, box: tuple[slice, slice], size: int, alpha: np.ndarray,
            radius: int | None) -> tuple[np.ndarray, str]:
    """The target's trimap at ``size`` (file, NEAREST as the official code), else derived from the resized alpha."""
    if sample.trimap_path is not None:
        t = read_trimap(sample.trimap_path)[box]
        return cv2.resize(np.ascontiguousarray(t), (size, size), interpolation=cv2.INTER_NEAREST), "file"
    return derive_trimap(alpha, radius=radius), f"derived-r{trimap_radius(alpha.shape, radius)}"


def load_example(target: Sample, reference: Sample, *, size: int, rng: np.random.Generator,
                 binarize_reference: bool = False, binarize_target: bool | None = None, crop: CropMode = "center",
                 interpolation: InterpolationMode = "random", trimap_radius: int | None = None) -> TrainingExample:
    """Decode and augment one (target, reference) pair as the official ``InContextDataset`` does.

    ``binarize_target`` defaults to ``binarize_reference``: target and reference come from the same dataset, and
    the official code binarises both when it is Open Images. Draw order from ``rng``: target crop box (random
    crop only), target image and alpha interpolations, then the same three for the reference."""
    size = int(size)
    image, alpha = _load(target, binarize_reference if binarize_target is None else binarize_target)
    box = square_box(image.shape[:2], rng, crop)
    image, alpha_s = crop_resize(image, alpha, size, rng, box=box, interpolation=interpolation)
    trimap, source = _trimap(target, box, size, alpha_s, trimap_radius)
    ref_image, ref_alpha = _load(reference, binarize_reference)
    ref_image, ref_alpha = crop_resize(ref_image, ref_alpha, size, rng, crop=crop, interpolation=interpolation)
    return TrainingExample(image, alpha_s, trimap, ref_image, ref_alpha, target.id, reference.id, source)


__all__ = [
    "FIXED_INTERPOLATION", "INTERPOLATIONS", "PairSampler", "TrainPair", "TrainingExample", "binarize_alpha",
    "crop_resize", "draw_interpolation", "is_open_images", "load_example", "square_box",
]
