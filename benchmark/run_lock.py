"""An exclusive lock on a run folder for the duration of a run.

The lock is a file created with ``O_CREAT | O_EXCL`` holding the holder's pid, host and start
time. A second run finds it and stops at once, naming the holder. A lock left by a process that
no longer exists on this host (a run killed with SIGKILL) is stale: it is taken over with a
message. So is a lock left by an earlier attempt of the same SLURM job (a requeued job keeps its
job id, gets a higher ``SLURM_RESTART_COUNT`` and may land on another node). Any other lock held
from another host cannot be checked and is never taken over; remove the file by hand once that
run is known to be gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger("benchmark")


class RunLockedError(RuntimeError):
    """The run folder is locked by another live run (the message names it)."""


def _slurm_attempt() -> tuple[str, int] | None:
    """(job id, restart count) of the SLURM job this process belongs to, or None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    return (f"{array}_{task}" if array and task else job), int(restart) if restart.isdigit() else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(path):`` holds ``path`` exclusively; released (deleted) on exit."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.held = False

    def holder(self) -> dict | None:
        """The lock file's content, or None when there is no (readable) lock."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or garbage: treated as held by an unknown process

    def acquire(self) -> None:
        for _ in range(3):
            if self._try_create():
                self.held = True
                return
            info = self.holder()
            if info is None:
                continue  # released meanwhile
            if self._stale(info):
                log.warning("taking over the stale lock %s of pid %s on %s (that process no longer exists)",
                            self.path, info.get("pid"), info.get("host"))
                self.path.unlink(missing_ok=True)
                continue
            raise RunLockedError(f"{self.path.parent} is in use by another run ({_describe(info)}); "
                                 f"wait for it to finish, or delete {self.path} if that run is gone")
        raise RunLockedError(f"could not lock {self.path} (it keeps changing)")

    def release(self) -> None:
        if self.held:
            info = self.holder()
            if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False

    def _try_create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        info: dict = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        slurm = _slurm_attempt()
        if slurm:
            info["slurm_job"], info["slurm_restart"] = slurm
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        return True

    @staticmethod
    def _stale(info: dict) -> bool:
        slurm = _slurm_attempt()
        if slurm and info.get("slurm_job") == slurm[0] and int(info.get("slurm_restart", 0)) < slurm[1]:
            return True  # an earlier attempt of this very (requeued) job
        pid = info.get("pid")
        return (isinstance(pid, int) and info.get("host") == socket.gethostname()
                and pid != os.getpid() and not _alive(pid))

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _describe(info: dict) -> str:
    if not info:
        return "holder unknown: the lock file is unreadable"
    return f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"
