"""An exclusive lock on a run folder for the duration of a run.

The lock is the file ``.lock``, held with an exclusive ``flock`` (released by the kernel when the
holder dies, however it dies) and holding the holder's pid, host and start time so that a refused
run can name it. Taking it:

- someone holds the ``flock``: the folder is in use; stop at once, naming the holder;
- the file exists but nobody holds it: a run died there (SIGKILL, power loss, a half-written
  lock); if it names this host, or an earlier attempt of this same SLURM job (a requeued job
  keeps its job id, gets a higher ``SLURM_RESTART_COUNT`` and may land on another node), it is
  taken over with a message;
- it names another host: on file systems whose locks do not reach across hosts that run may be
  alive, so it is never taken over; delete the file by hand once that run is known to be gone.

On a file system without ``flock`` support the pid and host in the file decide alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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


def _describe(info: dict) -> str:
    if not info:
        return "holder unknown: the lock file is empty or unreadable"
    return f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"


class RunLock:
    """``with RunLock(path):`` holds ``path`` exclusively; released (deleted) on exit."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict | None:
        """The lock file's content, None when there is no lock file, {} when it is unreadable."""
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if self._lock_fd(fd):
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # lost a race with a releasing run: its file is gone, try the new one
        raise RunLockedError(f"could not lock {self.path} (it keeps changing)")

    def _lock_fd(self, fd: int) -> bool:
        """True when ``fd`` is now the held lock; False to retry; raises when the folder is in use."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flocked = True
        except BlockingIOError:
            raise RunLockedError(self._in_use(self.holder() or {})) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            flocked = False  # no flock here: the content decides
        try:
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                return False
        except FileNotFoundError:
            return False
        info = self._read(fd)
        if info is not None and not self._stale(info, flocked):
            raise RunLockedError(self._in_use(info))
        if info is not None:
            log.warning("taking over the stale lock %s (%s; that run is gone)", self.path, _describe(info))
        self._write(fd)
        self._fd = fd
        return True

    def _in_use(self, info: dict) -> str:
        return (f"{self.path.parent} is in use by another run ({_describe(info)}); wait for it to finish, "
                f"or delete {self.path} if that run is gone")

    @staticmethod
    def _read(fd: int) -> dict | None:
        """The previous holder's record, None for a new (empty) file, {} for a half-written one."""
        data = os.pread(fd, 1 << 16, 0)
        if not data:
            return None
        try:
            info = json.loads(data)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _write(fd: int) -> None:
        info: dict = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        slurm = _slurm_attempt()
        if slurm:
            info["slurm_job"], info["slurm_restart"] = slurm
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    @staticmethod
    def _stale(info: dict, flocked: bool) -> bool:
        """Whether an unheld lock file may be taken over (see the module docstring)."""
        slurm = _slurm_attempt()
        if slurm and info.get("slurm_job") == slurm[0] and int(info.get("slurm_restart", 0)) < slurm[1]:
            return True  # an earlier attempt of this very (requeued) job
        if info.get("host") not in (None, socket.gethostname()):
            return False
        pid = info.get("pid")
        if flocked:  # nobody on this host holds it: whoever wrote it is gone (or never finished writing)
            return True
        return isinstance(pid, int) and pid != os.getpid() and not _alive(pid)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # before unlocking: a waiting run then finds the file gone and retries
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
