"""Metric worker processes that never outlive the run, and how many of them a run may use.

Workers are started with ``spawn`` (never ``fork``: the run's decode threads are already running
when the pool starts). Each worker ignores SIGINT (the main process decides what an interrupt
means, and a Ctrl-C then prints one line, not one traceback per process), asks the kernel to kill
it when its parent dies (Linux ``PR_SET_PDEATHSIG``), and watches its parent pid as well, so a
run killed with SIGKILL leaves no process behind.
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import TracebackType

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
    os.environ["ICMBENCH_COMPILE_NOTICE"] = "0"  # the main process printed it once already
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died while this worker started
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


class ScoringPool:
    """``with ScoringPool(workers) as pool:`` a process pool for metrics, or None to score in-process.

    ``workers=None`` uses :func:`available_cpus`; ``workers <= 1`` scores in the calling process."""

    def __init__(self, workers: int | None) -> None:
        self.n = available_cpus() if workers is None else max(1, int(workers))
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessPoolExecutor | None:
        if self.n > 1:
            self.pool = ProcessPoolExecutor(self.n, mp_context=mp.get_context("spawn"),
                                            initializer=_init_worker, initargs=(os.getpid(),))
        return self.pool

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.pool is not None:
            # Queued jobs are dropped; the few running ones finish (each is one image's metrics).
            self.pool.shutdown(wait=True, cancel_futures=True)
