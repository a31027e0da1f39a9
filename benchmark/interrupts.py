"""Ctrl-C and SIGTERM during a run: an exception at once, and again at the next episode if
Python swallowed it; held back while workers are spawned (:func:`interrupts_held`).

A handler that fires while a finalizer runs (``__del__``, a weakref callback) raises inside the
finalizer, and Python only prints "Exception ignored in …" and goes on: the run would finish and
exit 0 as if nothing had happened. So each signal is also recorded; the swallowed exception is
not printed, and :func:`raise_pending` raises it again where the runner can stop cleanly.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: The signals that interrupt a run.
INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
_pending: list[int] = []


class RunInterrupted(KeyboardInterrupt):
    """The run received SIGTERM (handled like Ctrl-C: finished episodes are kept)."""


def _exception(signum: int) -> KeyboardInterrupt:
    return RunInterrupted("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum: int, frame: Any) -> None:
    _pending.append(signum)
    raise _exception(signum)


def _quiet_swallowed(hook: Any) -> Any:
    def unraisable(args: Any) -> None:
        if _pending and isinstance(args.exc_value, KeyboardInterrupt):
            return  # raised again by raise_pending()
        hook(args)
    return unraisable


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM raises :class:`RunInterrupted` and Ctrl-C :class:`KeyboardInterrupt` (finished
    episodes are kept, workers stop), unless someone else handles the signal already or this is
    not the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = [s for s, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))
            if signal.getsignal(s) is default]
    _pending.clear()
    old = [(s, signal.signal(s, _handler)) for s in ours]
    hook, sys.unraisablehook = sys.unraisablehook, _quiet_swallowed(sys.unraisablehook)
    try:
        yield
    finally:
        for s, h in old:
            signal.signal(s, h)
        sys.unraisablehook = hook
        _pending.clear()


def raise_pending() -> None:
    """Raise again an interrupt whose exception a finalizer swallowed (no-op otherwise)."""
    if _pending:
        raise _exception(_pending[0])


def _restore_handlers(old: list[tuple[int, object]]) -> None:
    """Put every handler back, even when a pending signal's handler raises during one of them."""
    if not old:
        return
    (signum, handler), rest = old[0], old[1:]
    try:
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    finally:
        _restore_handlers(rest)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM (while workers are spawned), then deliver them.

    One arriving half-way through a spawn would leave a child reading a broken pipe (and
    printing its traceback). The signals are blocked in this thread, which the children
    inherit until their initializer runs. That is not enough in the main thread: the run's
    other threads may receive a signal, and Python then runs the handler here anyway. So
    there a stand-in handler records it; on exit the real handlers come back, and each held
    signal is raised again (unless it was ignored).
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    held: list[int] = []
    old: list[tuple[int, object]] = []
    if threading.current_thread() is threading.main_thread():
        old = [(s, signal.signal(s, lambda signum, _frame: held.append(signum))) for s in sorted(INTERRUPTS)]
    try:
        yield
    finally:
        try:
            _restore_handlers(old)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a pending one reaches the real handler
        ignored = {s for s, handler in old if handler is signal.SIG_IGN}
        for signum in dict.fromkeys(held):
            if signum not in ignored:
                signal.raise_signal(signum)
