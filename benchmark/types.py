"""Value types shared by datasets, episodes, prompts, methods and the runner.

These are the only definitions of these types in the project: loaders, ``data_tools`` and
every method adapter build and consume exactly these. Pixels are never stored here; a
``Sample`` points at files and :mod:`benchmark.io` decodes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmark.safe_names import escape

PromptKind = Literal["mask", "scribble", "points"]
PROMPT_KINDS: tuple[str, ...] = ("mask", "scribble", "points")

#: Label values of :meth:`Prompt.labels`.
UNLABELED, BACKGROUND, FOREGROUND = 0, 1, 2


@dataclass(frozen=True)
class Sample:
    """One image of a grouped dataset: where its image, matte and (optional) trimap live."""

    id: str
    group: str
    image_path: Path
    alpha_path: Path | None
    trimap_path: Path | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """Images that share a foreground instance or category (ICM-57's ``class-sub_class-HalfOrFull``)."""

    key: str
    sample_ids: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """A grouped matting dataset.

    ``fingerprint`` hashes the manifest (ids, groups, relative paths) and every file's size (its
    sha256 when a manifest v2 stores them),
    so a changed file or grouping changes the value recorded in each result row.
    """

    name: str
    root: Path
    samples: Mapping[str, Sample]
    groups: Mapping[str, Group]
    fingerprint: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def group_samples(self, key: str) -> list[Sample]:
        """The samples of group ``key`` in their stored order."""
        return [self.samples[s] for s in self.groups[key].sample_ids]


@dataclass(frozen=True)
class Episode:
    """One in-context evaluation unit: reference(s) and targets of one group in one round.

    ``self_reference`` flags episodes whose reference is also a target (singleton groups
    evaluated on purpose, or the official protocol in groups of two or fewer).
    """

    group: str
    round: int
    references: tuple[str, ...]
    targets: tuple[str, ...]
    self_reference: bool = False

    @property
    def key(self) -> str:
        """Stable identifier used for resume bookkeeping: ``group/r<round>/ref+ref[/target]``.

        Every part is percent-escaped (``/`` and ``+`` included), so no two episodes share a key
        whatever characters the ids contain."""
        parts = [escape(self.group), f"r{self.round}", "+".join(escape(r) for r in self.references)]
        if len(self.targets) == 1:
            parts.append(escape(self.targets[0]))
        return "/".join(parts)


@dataclass(frozen=True, eq=False)
class Prompt:
    """What the user marked on a reference image, at the reference's full resolution.

    - ``mask``: ``mask`` is a boolean foreground map.
    - ``scribble``: ``scribble`` is a uint8 map with 0 unlabeled, 1 background, 2 foreground.
    - ``points``: ``points`` holds ``(y, x, is_foreground)`` triples.

    :meth:`labels` gives every kind the same uint8 view (0/1/2) for methods that only need
    "which pixels are known foreground or background".
    """

    kind: PromptKind
    shape: tuple[int, int]
    mask: np.ndarray | None = None
    scribble: np.ndarray | None = None
    points: tuple[tuple[int, int, bool], ...] = ()
    #: what was drawn: foreground/background points or strokes (recorded in the prompt files)
    counts: Mapping[str, int] = field(default_factory=dict)

    def labels(self) -> np.ndarray:
        """uint8 map: 0 unlabeled, 1 background, 2 foreground."""
        if self.kind == "mask":
            assert self.mask is not None
            return np.where(self.mask, FOREGROUND, BACKGROUND).astype(np.uint8)
        if self.kind == "scribble":
            assert self.scribble is not None
            return self.scribble
        out = np.zeros(self.shape, np.uint8)
        for y, x, fg in self.points:
            out[y, x] = FOREGROUND if fg else BACKGROUND
        return out

    def foreground_mask(self) -> np.ndarray:
        """Boolean map of the pixels marked foreground (the whole mask for ``mask``)."""
        return self.labels() == FOREGROUND
