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
# Peers of the paper's Tables 2-4 (methods/peers/<name>.md: which files go where).
METHODS.register("seggpt", "methods.seggpt:SegGptMethod")
METHODS.register("vitmatte", "methods.vitmatte:VitMatteMethod")
METHODS.register("matany", "methods.matany:MatAnyMethod")
METHODS.register("mam", "methods.mam.method:MamMethod")
METHODS.register("icmp", "methods.icmp:IcmpMethod")
METHODS.register("external", "methods.external:ExternalMethod")
METHODS.register("precomputed", "methods.precomputed:PrecomputedMethod")
# Quoted only: no runnable public code or weights (listed with the reason, refused when run).
METHODS.register("mgmiw", "methods.quoted:MgmiwMethod")
METHODS.register("lf", "methods.quoted:LfMethod")


def build_method(name: str, **params: Any) -> Method:
    """Instantiate the method registered as ``name`` with its config parameters."""
    return METHODS.get(name)(**params)


__all__ = ["METHODS", "BaseMethod", "Method", "MethodError", "MethodInfo", "Reference", "Target", "build_method"]
