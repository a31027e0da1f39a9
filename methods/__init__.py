"""Matting methods behind one protocol (:mod:`methods.base`), built by name from :data:`METHODS`."""

from __future__ import annotations

from typing import Any

from benchmark.registry import Registry
from methods.base import BaseMethod, Method, MethodError, MethodInfo, Reference, Target

#: name → method class. Entries are lazy: heavy dependencies load only when a method is built.
METHODS: Registry[type] = Registry("method")
METHODS.register("constant", "methods.baselines:ConstantMethod")
METHODS.register("reference_mask", "methods.baselines:ReferenceMaskMethod")
METHODS.register("trimap_matting", "methods.trimap_matting:TrimapMattingMethod")
METHODS.register("classical", "methods.classical:ClassicalMethod")
METHODS.register("iconmatting", "methods.iconmatting.method:IconMattingMethod")


def build_method(name: str, **params: Any) -> Method:
    """Instantiate the method registered as ``name`` with its config parameters."""
    return METHODS.get(name)(**params)


__all__ = ["METHODS", "BaseMethod", "Method", "MethodError", "MethodInfo", "Reference", "Target", "build_method"]
