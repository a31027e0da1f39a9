"""Choose between the compiled (numba) kernels and the numpy/scipy implementation.

numba is optional (``icmbench[fast]``). It is imported on first use, not when ``metrics`` is
imported, and only when the caller asks for ``backend="auto"`` or ``"numba"``.
"""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def _load() -> ModuleType | None:
    try:
        from metrics import _numba
    except ImportError:
        return None
    return _numba


def numba_available() -> bool:
    """True when numba is installed and the compiled kernels import."""
    return _load() is not None


def kernels(backend: str) -> ModuleType | None:
    """The numba kernel module for ``backend``, or ``None`` for the numpy path.

    ``"auto"`` uses numba when available; ``"numba"`` requires it; ``"numpy"`` never uses it.
    """
    if backend == "numpy":
        return None
    mod = _load()
    if mod is None and backend == "numba":
        raise RuntimeError("backend='numba' requested but numba is not installed (pip install icmbench[fast])")
    return mod
