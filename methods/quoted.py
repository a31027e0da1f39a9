"""Peers of the paper that cannot be run here: listed so that tables and leaderboards can name them,
with the reason, while their numbers come only from the paper (``python -m benchmark.paper``).

Each class carries ``info`` (what the method would need), ``available = False`` and ``reason``;
building one raises :class:`MethodUnavailable`. See ``methods/peers/external.md`` ("Quoted only").
"""

from __future__ import annotations

from typing import Any

from methods.base import BaseMethod, MethodInfo


class MethodUnavailable(RuntimeError):
    """A registered method that cannot be run (no public code or weights); its numbers are quoted."""


class QuotedMethod(BaseMethod):
    """Base of the quoted-only entries: building one raises :class:`MethodUnavailable`."""

    available = False
    reason = ""

    def __init__(self, **params: Any) -> None:
        raise MethodUnavailable(
            f"method '{self.info.name}' cannot be run: {self.reason}; "
            "its paper numbers are quoted by `python -m benchmark.paper`")


class MgmiwMethod(QuotedMethod):
    """Mask-Guided Matting in the Wild (Park et al., CVPR 2023): per-image mask guidance (paper Table 3)."""

    info = MethodInfo(name="mgmiw", guidance="mask", description="Mask-Guided Matting in the Wild (quoted only)")
    reason = "no public code or weights (no official repository or checkpoint could be found)"


class LfMethod(QuotedMethod):
    """Late-fusion CNN matting (Zhang et al., CVPR 2019): automatic, no guidance (paper Table 3)."""

    info = MethodInfo(name="lf", guidance="none", description="Late-Fusion CNN matting (quoted only)")
    reason = ("its Keras/TensorFlow code and weights are published only as a download on an external drive "
              "(yunkezhang/FusionMatting links to OneDrive) and no port exists")
