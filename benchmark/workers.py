"""Metric worker processes that never outlive the run, and how many of them a run may use.

Workers are started with ``spawn`` (never ``fork``: the run's decode threads are already running
when the pool starts), without re-importing the caller's ``__main__`` (workers need only
:mod:`benchmark.scoring`): a script that runs the benchmark without an ``if __name__ ==
"__main__":`` guard still works, and a worker starts in under a second. Each worker ignores
SIGINT (the main process decides what an interrupt means, and a Ctrl-C then prints one line, not
one traceback per process), asks the kernel to kill it when its parent dies (Linux
``PR_SET_PDEATHSIG``), and watches its parent pid as well, so a run killed with SIGKILL leaves no
process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import TracebackType

from benchmark.interrupts import INTERRUPTS, interrupts_held

_PR_SET_PDEATHSIG = 1


def available_cpus() -> int:
    """CPUs this process may use: SLURM's ``SLURM_CPUS_PER_TASK``, else the affinity mask, capped
    by a cgroup CPU quota (containers), else ``os.cpu_count()``."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(n, quota) if quota else n)


def _cgroup_cpu_quota() -> int | None:
    """``ceil(quota / period)`` from cgroup v2 ``cpu.max``, or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)




def _init_worker(parent: int) -> None:
    """Runs first in every worker: ignore SIGINT, die with the parent, no compile notice."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)  # blocked while the pool started it
    os.environ["ICMBENCH_COMPILE_NOTICE"] = "0"  # the main process printed it once already
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died while this worker started
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Hide ``__main__``'s spec and file while a worker is spawned, so it does not re-import it."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
    try:
        if main is not None:
            main.__spec__ = None
            if "__file__" in saved:
                del main.__file__
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _warm_up() -> None:
    """Load the metric kernels in a fresh worker (while the main process builds the method)."""
    import numpy as np

    from metrics import evaluate

    a = np.zeros((8, 8), np.uint8)
    a[2:6, 2:6] = 255
    trimap = np.where(a > 0, 128, 0).astype(np.uint8)
    for protocol in ("dim", "icm"):
        evaluate(a, a, trimap, protocol=protocol)


class _Executor(ProcessPoolExecutor):
    """A process pool whose spawned workers skip the caller's ``__main__`` (see the module docstring)."""

    def _spawn_process(self) -> None:  # CPython ≥ 3.9 starts every worker here
        with _main_module_hidden():
            super()._spawn_process()  # type: ignore[misc]


class ScoringPool:
    """``with ScoringPool(workers) as pool:`` a process pool for metrics, or None to score in-process.

    ``workers=None`` uses :func:`available_cpus`; ``workers <= 1`` scores in the calling process."""

    def __init__(self, workers: int | None) -> None:
        self.n = available_cpus() if workers is None else max(1, int(workers))
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessPoolExecutor | None:
        if self.n <= 1:
            return None
        try:
            with interrupts_held():  # an interrupt waits until every worker has started
                cls = _Executor if hasattr(ProcessPoolExecutor, "_spawn_process") else ProcessPoolExecutor
                self.pool = cls(self.n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                initargs=(os.getpid(),))
                for _ in range(self.n):  # start every worker now, each loading the kernels in the background
                    self.pool.submit(_warm_up)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.pool

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.pool is not None:
            # Queued jobs are dropped; the few running ones finish (each is one image's metrics).
            self.pool.shutdown(wait=True, cancel_futures=True)
