"""Floors every real method must beat: a constant matte and the reference mask pasted on the target."""

from __future__ import annotations

import numpy as np

from benchmark.types import PROMPT_KINDS
from methods.base import BaseMethod, MethodInfo, Target
from methods.resize import resize_alpha


class ConstantMethod(BaseMethod):
    """Predicts ``value`` (0.5 by default) everywhere; needs no guidance."""

    info = MethodInfo(
        name="constant",
        guidance="in_context",
        prompt_kinds=frozenset(PROMPT_KINDS),
        max_references=4,
        description="0.5 everywhere: the floor of any in-context method",
    )

    def __init__(self, value: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"constant: value must be in [0, 1], got {value}")
        self.value = float(value)

    def predict_one(self, target: Target) -> np.ndarray:
        return np.full(target.image.shape[:2], self.value, np.float32)


class ReferenceMaskMethod(BaseMethod):
    """Pastes the reference's prompt mask, resized, onto the target (no image content used)."""

    info = MethodInfo(
        name="reference_mask",
        guidance="in_context",
        prompt_kinds=frozenset({"mask"}),
        max_references=4,
        description="the reference's mask resized onto the target",
    )

    def predict_one(self, target: Target) -> np.ndarray:
        size = target.image.shape[:2]
        masks = [resize_alpha(r.prompt.foreground_mask().astype(np.float32), size) for r in self.references]
        return np.mean(masks, axis=0).astype(np.float32)
