"""The one progress-bar rule of the toolkit: a tqdm bar on a terminal (or when forced), silent in logs and tests.

``mode``: ``auto`` (a bar only when stderr is a terminal), ``on``/true (always), ``off``/false/None (never).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def shown(mode: Any = "auto") -> bool:
    """Whether a bar is drawn under ``mode``."""
    if mode == "auto":
        return sys.stderr.isatty()
    return bool(mode) and mode != "off"


def progress_bar(total: int | None, desc: str = "", *, unit: str = "it", mode: Any = "auto", initial: int = 0) -> Any:
    """A tqdm bar, or ``None`` when none is shown (callers check ``if bar is not None``)."""
    if not shown(mode):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)


def progress(items: Iterable[T], total: int | None = None, desc: str = "", mode: Any = "auto") -> Iterable[T]:
    """``items`` wrapped in a bar when one is shown, unchanged otherwise."""
    if not shown(mode):
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True)
