"""A small generic registry with lazy entries and did-you-mean errors.

Entries are ``"package.module:attr"`` strings imported on first use, so listing methods or
datasets never imports torch. One class serves methods and datasets alike.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name → object (or lazy ``"module:attr"`` reference)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, str | T] = {}

    def register(self, name: str, target: str | T | None = None) -> Callable[[T], T] | None:
        """Register ``target`` under ``name``; without a target, act as a decorator."""
        if target is None:

            def decorator(obj: T) -> T:
                self._add(name, obj)
                return obj

            return decorator  # type: ignore[return-value]
        self._add(name, target)
        return None

    def _add(self, name: str, target: str | T) -> None:
        if name in self._entries and self._entries[name] is not target:
            raise ValueError(f"{self.kind} '{name}' is already registered ({self._entries[name]!r})")
        self._entries[name] = target

    def get(self, name: str) -> T:
        """The registered object, importing it if it was registered lazily."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{hint} available: {', '.join(sorted(self._entries))}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
