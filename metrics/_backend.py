"""Choose between the compiled (numba) kernels and the numpy/scipy implementation.

numba is optional (``icmbench[fast]``). It is imported on first use, not when ``metrics`` is
imported, and only when the caller asks for ``backend="auto"`` or ``"numba"``.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from types import ModuleType

_NOTICE = "compiling metric kernels, first run only (about a minute)"
_NOTICE_NO_CACHE = ("compiling metric kernels (about a minute): no writable cache folder, so every process "
                    "compiles them; set NUMBA_CACHE_DIR to a writable folder to keep them")


@functools.cache
def _load() -> ModuleType | None:
    try:
        from metrics import _numba
    except ImportError:
        return None
    compile_notice(_numba)
    return _numba


def _uncached(module: ModuleType) -> bool:
    """True when no numba kernel of ``module`` has an on-disk cache yet: the first run on this
    machine (or after an upgrade), which compiles for about a minute. Later runs may still compile
    a signature they had not needed before, in seconds, without a notice."""
    indexes = [getattr(getattr(getattr(obj, "_cache", None), "_cache_file", None), "_index_path", None)
               for obj in vars(module).values()]
    indexes = [p for p in indexes if p is not None]
    return bool(indexes) and not any(Path(p).exists() for p in indexes)


_noticed: list[bool] = []


def compile_notice(module: ModuleType | None = None) -> bool:
    """Say once per process, on stderr, that the kernels are about to compile (a silent minute
    otherwise); ``ICMBENCH_COMPILE_NOTICE=0`` silences it. Returns whether it was printed now."""
    if module is None:
        _load()  # calls back with the module on first import
        return False
    if _noticed or os.environ.get("ICMBENCH_COMPILE_NOTICE", "1") == "0":
        return False
    _noticed.append(True)
    if not getattr(module, "CACHED", True):
        print(_NOTICE_NO_CACHE, file=sys.stderr, flush=True)
        return True
    try:
        uncached = _uncached(module)
    except Exception:  # numba internals moved: no notice rather than a failure
        return False
    if uncached:
        print(_NOTICE, file=sys.stderr, flush=True)
    return uncached


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
