"""The one interface every matting method implements.

The runner calls ``prepare`` once per episode with the reference(s), their prompts and the
episode's seed, then ``predict`` on batches of targets, and ``close`` once at the end. A method
declares what it needs in :class:`MethodInfo` (``describe(**params)`` when that depends on its
configuration), so the runner knows which guidance to derive (nothing, an in-context reference,
a per-image trimap/mask from the ground truth as in the paper's Table 3, or a per-image prompt as
in Table 4) without special cases. Outputs are float alpha mattes in [0, 1] at each target's
full resolution.

``predict`` returns, per target, a float alpha, a :class:`Prediction` (the alpha plus side outputs
the run folder keeps beside it, e.g. the points and mask of a pipeline, drawn by
``benchmark.visualize``), or a :class:`MethodError` for a target it could not handle (that target
becomes an error row; the others are kept).

The seed: every round of an episode hands the method a different ``seed`` (derived from
``runner.seed``, the group and the round). Stochastic methods draw their randomness from it, so
rounds measure the method's own spread; deterministic methods ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from benchmark.types import Episode, Prompt

Guidance = Literal["in_context", "trimap", "mask", "prompt", "none"]


@dataclass(frozen=True)
class MethodInfo:
    """Facts about a method, readable without loading any weights.

    - ``guidance``: ``in_context`` (reference image + prompt), ``trimap`` / ``mask``
      (a per-target auxiliary input that the runner derives from the ground truth), ``prompt``
      (interactive: a prompt on every target, :attr:`Target.prompt`), or ``none`` (automatic).
    - ``prompt_kinds``: prompts an in-context or interactive method accepts.
    - ``max_references``: how many references ``prepare`` accepts (paper Table 6 uses up to 4).
    - ``whole_episodes``: ``predict`` receives every target of an episode in one call, whatever
      ``runner.batch_size`` says (an external program that reads one spec per episode).
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
    whole_episodes: bool = False

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
    boolean mask at the image's resolution. ``prompt`` is set only for interactive methods
    (``guidance="prompt"``): points, scribble or mask drawn from this target's own ground truth.
    """

    sample_id: str
    image: np.ndarray
    guidance: np.ndarray | None = None
    prompt: Prompt | None = None


class MethodError(RuntimeError):
    """A method could not handle an input (recorded as an error row; the run goes on)."""


@dataclass(frozen=True, eq=False)
class Prediction:
    """An alpha and what the method wants kept beside it.

    ``extras``: name → a 2-D uint8/bool image (saved as a PNG) or a JSON-able value (saved as JSON),
    written under the run folder's ``extras/`` when predictions are saved."""

    alpha: np.ndarray
    extras: Mapping[str, Any] = field(default_factory=dict)


#: What ``predict`` may return for one target.
Output = np.ndarray | Prediction | MethodError


@runtime_checkable
class Method(Protocol):
    """What the runner needs from a method."""

    info: MethodInfo

    def prepare(self, references: Sequence[Reference], *, seed: int = 0, episode: Episode | None = None) -> None:
        """Encode the episode's reference(s); called once per episode before ``predict``.

        ``seed``: the episode's seed (differs between rounds); stochastic methods draw from it.
        ``episode``: the episode being run (its key and round), for methods that read or write
        per-episode files (``external``, ``precomputed``)."""

    def predict(self, targets: Sequence[Target]) -> list[Output]:
        """Per target: a float alpha in [0, 1] shaped like its image (H, W), a :class:`Prediction`,
        or a :class:`MethodError` for that target alone."""

    def close(self) -> None:
        """Release weights, GPU memory, files; the runner calls it once when the run ends."""

    def fingerprint(self) -> str:
        """Identifies the weights/state that change outputs ('' for weight-free methods).

        A content hash: moving the weight files or changing the device must not change it."""


class BaseMethod:
    """Convenience base: stores references and the seed in ``prepare`` and checks the call order."""

    info: MethodInfo

    def __init__(self) -> None:
        self._references: list[Reference] | None = None
        self.seed = 0
        self.episode: Episode | None = None

    @classmethod
    def describe(cls, **params: Any) -> MethodInfo:
        """The :class:`MethodInfo` of this method configured with ``params`` (default: ``cls.info``).

        Override when the configuration changes what the method needs (an adapter whose guidance is
        a parameter); it must not load weights."""
        return cls.info

    def prepare(self, references: Sequence[Reference], *, seed: int = 0, episode: Episode | None = None) -> None:
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
        self.seed = int(seed)
        self.episode = episode

    @property
    def references(self) -> list[Reference]:
        if self._references is None:
            raise MethodError(f"{self.info.name}: predict() called before prepare()")
        return self._references

    def predict(self, targets: Sequence[Target]) -> list[Output]:
        return [self.predict_one(t) for t in targets]

    def predict_one(self, target: Target) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""

    def fingerprint(self) -> str:
        return ""


def method_info(cls: type, params: Mapping[str, Any]) -> MethodInfo:
    """What the method class ``cls`` configured with ``params`` needs (``describe`` when it has one)."""
    describe = getattr(cls, "describe", None)
    return describe(**params) if describe is not None else cls.info
