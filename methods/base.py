"""The one interface every matting method implements.

The runner calls ``prepare`` once per episode with the reference(s) and their prompts, then
``predict`` on batches of targets. A method declares what it needs in :class:`MethodInfo`,
so the runner knows which guidance to derive (nothing, an in-context reference, or a
per-image trimap/mask from the ground truth, as in the paper's Table 3) without special
cases. Outputs are float alpha mattes in [0, 1] at each target's full resolution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from benchmark.types import Prompt

Guidance = Literal["in_context", "trimap", "mask", "none"]


@dataclass(frozen=True)
class MethodInfo:
    """Facts about a method, readable without loading any weights.

    - ``guidance``: ``in_context`` (reference image + prompt), ``trimap`` / ``mask``
      (a per-target auxiliary input that the runner derives from the ground truth), or
      ``none`` (automatic matting).
    - ``prompt_kinds``: reference prompts an in-context method accepts.
    - ``max_references``: how many references ``prepare`` accepts (paper Table 6 uses up to 4).
    - ``runtime_params``: constructor parameters that do not change the numbers (paths to
      weights, device, batch size, compile flags, memory knobs). They are recorded with a run but
      are not part of its identity, so a run can resume after the weights moved or on another
      device. Every other parameter is result-changing; a method whose numbers really depend on,
      say, its dtype leaves ``dtype`` out of this set.
    """

    name: str
    guidance: Guidance
    prompt_kinds: frozenset[str] = field(default_factory=lambda: frozenset({"mask"}))
    max_references: int = 1
    description: str = ""
    runtime_params: frozenset[str] = frozenset()

    def result_settings(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters of ``params`` that change results (everything but ``runtime_params``)."""
        return {k: v for k, v in sorted(params.items()) if k not in self.runtime_params}


@dataclass(frozen=True, eq=False)
class Reference:
    """A reference image (uint8 RGB, H×W×3) with the prompt drawn on it."""

    sample_id: str
    image: np.ndarray
    prompt: Prompt


@dataclass(frozen=True, eq=False)
class Target:
    """A target image (uint8 RGB, H×W×3).

    ``guidance`` is set only for ``trimap``/``mask`` methods: a uint8 trimap (0/128/255) or a
    boolean mask at the image's resolution.
    """

    sample_id: str
    image: np.ndarray
    guidance: np.ndarray | None = None


class MethodError(RuntimeError):
    """A method could not handle an input (recorded as an error row; the run goes on)."""


@runtime_checkable
class Method(Protocol):
    """What the runner needs from a method."""

    info: MethodInfo

    def prepare(self, references: Sequence[Reference]) -> None:
        """Encode the episode's reference(s); called once per episode before ``predict``."""

    def predict(self, targets: Sequence[Target]) -> list[np.ndarray]:
        """One float alpha in [0, 1] per target, shaped like that target's image (H, W)."""

    def fingerprint(self) -> str:
        """Identifies the weights/state that change outputs ('' for weight-free methods).

        A content hash: moving the weight files or changing the device must not change it."""


class BaseMethod:
    """Convenience base: stores references in ``prepare`` and checks the call order."""

    info: MethodInfo

    def __init__(self) -> None:
        self._references: list[Reference] | None = None

    def prepare(self, references: Sequence[Reference]) -> None:
        if self.info.guidance == "in_context":
            if not references:
                raise MethodError(f"{self.info.name}: needs at least one reference")
            if len(references) > self.info.max_references:
                raise MethodError(
                    f"{self.info.name}: accepts at most {self.info.max_references} reference(s), "
                    f"got {len(references)}"
                )
            for ref in references:
                if ref.prompt.kind not in self.info.prompt_kinds:
                    raise MethodError(
                        f"{self.info.name}: prompt kind '{ref.prompt.kind}' not supported "
                        f"(supports {sorted(self.info.prompt_kinds)})"
                    )
        self._references = list(references)

    @property
    def references(self) -> list[Reference]:
        if self._references is None:
            raise MethodError(f"{self.info.name}: predict() called before prepare()")
        return self._references

    def predict(self, targets: Sequence[Target]) -> list[np.ndarray]:
        return [self.predict_one(t) for t in targets]

    def predict_one(self, target: Target) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> str:
        return ""
