"""The numba kernel cache when the package is installed read-only.

A copy of ``metrics/`` runs in a subprocess in which chosen folders refuse writes. The refusal
is made at the calls numba and ``metrics._numba`` use to decide where to cache
(``os.makedirs``, ``os.mkdir``, ``tempfile.TemporaryFile``), because permission bits do not
stop root, which CI may be; the copy is also made read-only for a non-root run. Expected:

- package folder read-only: the kernels are cached in the user cache (``$XDG_CACHE_HOME/numba``)
  and a second process loads them without compiling;
- user cache read-only too: they go to the private ``$TMPDIR/icmbench-numba-<uid>``;
- nothing writable: the metrics still work, and the compile notice says every process compiles.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metrics import evaluate, numba_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not numba_available(), reason="numba not installed")]

PACKAGE = Path(__file__).resolve().parents[1] / "metrics"

SCRIPT = r'''
import json, os, tempfile

READ_ONLY = [os.path.realpath(p) for p in os.environ["TEST_READ_ONLY"].split(os.pathsep) if p]


def blocked(path):
    path = os.path.realpath(os.fspath(path))
    return any(path == r or path.startswith(r + os.sep) for r in READ_ONLY)


def refuse(path):
    raise PermissionError(13, "read-only folder (test)", os.fspath(path))


_makedirs, _mkdir, _tempfile = os.makedirs, os.mkdir, tempfile.TemporaryFile
os.makedirs = lambda name, *a, **k: refuse(name) if blocked(name) else _makedirs(name, *a, **k)
os.mkdir = lambda name, *a, **k: refuse(name) if blocked(name) else _mkdir(name, *a, **k)
tempfile.TemporaryFile = lambda *a, dir=None, **k: (
    refuse(dir) if dir is not None and blocked(dir) else _tempfile(*a, dir=dir, **k))

import numba
import numpy as np

import metrics
import metrics._numba as kernels

a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
b = np.full((8, 8), 200, np.uint8)
t = np.full((8, 8), 128, np.uint8)
r = metrics.evaluate(a, b, t, backend="numba")
print(json.dumps({"cached": kernels.CACHED, "private": str(kernels.PRIVATE_CACHE or ""),
                  "numba_cache_dir": numba.config.CACHE_DIR, "file": kernels.__file__, "scores": r}))
'''

A = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
B = np.full((8, 8), 200, np.uint8)
T = np.full((8, 8), 128, np.uint8)


@pytest.fixture
def install(tmp_path):
    """A read-only copy of the package, with private home, user cache and temp folders."""
    root = tmp_path / "site"
    shutil.copytree(PACKAGE, root / "metrics", ignore=shutil.ignore_patterns("__pycache__"))
    folders = {name: tmp_path / name for name in ("home", "xdg", "tmp", "cwd")}
    for f in folders.values():
        f.mkdir()
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        for p in [root / "metrics", *(root / "metrics").iterdir()]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield root, folders
    for p in [root / "metrics", *(root / "metrics").iterdir()]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def _run(root: Path, folders: dict[str, Path], read_only: list[Path]) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "ICMBENCH_", "PYTHON"))}
    env.update(PYTHONPATH=str(root), HOME=str(folders["home"]), XDG_CACHE_HOME=str(folders["xdg"]),
               TMPDIR=str(folders["tmp"]), TEST_READ_ONLY=os.pathsep.join(map(str, read_only)))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=folders["cwd"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _index_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.nbi"))


def _scores_ok(got: dict) -> bool:
    """Equal to the numpy path within float64 reordering (the tests elsewhere prove 1e-10)."""
    want = evaluate(A, B, T, backend="numpy")
    return all(abs(got[r][k] - v) <= 1e-10 * abs(v) + 1e-15 for r in want for k, v in want[r].items())


def test_read_only_package_caches_in_the_user_cache(install):
    root, folders = install
    out, err = _run(root, folders, [root / "metrics"])
    assert out["file"].startswith(str(root)), out["file"]
    assert out["cached"] is True
    assert _scores_ok(out["scores"])
    assert "compiling metric kernels, first run only" in err
    assert _index_files(folders["xdg"] / "numba"), "no kernel cached in the user cache"
    assert not list((root / "metrics").rglob("*.nbi")), "wrote into the read-only package"
    again, err2 = _run(root, folders, [root / "metrics"])  # a second process loads them
    assert "compiling metric kernels" not in err2, err2
    assert again["scores"] == out["scores"]


def test_read_only_package_and_user_cache_use_a_private_temp_folder(install):
    root, folders = install
    out, _err = _run(root, folders, [root / "metrics", folders["xdg"]])
    assert out["cached"] is True
    assert out["numba_cache_dir"] == "", "numba's setting must come back for other libraries"
    private = Path(out["private"])
    assert private.parent == folders["tmp"] and private.name.startswith("icmbench-numba-")
    assert private.stat().st_mode & 0o077 == 0, oct(private.stat().st_mode)
    assert _index_files(private), "no kernel cached in the private folder"
    assert not _index_files(folders["xdg"])
    assert _scores_ok(out["scores"])


def test_nothing_writable_still_scores_and_says_why_it_compiles(install):
    root, folders = install
    out, err = _run(root, folders, [root / "metrics", folders["xdg"], folders["tmp"]])
    assert out["cached"] is False
    assert "no writable cache folder" in err and "NUMBA_CACHE_DIR" in err, err
    assert _scores_ok(out["scores"])
    assert not _index_files(folders["tmp"]) and not _index_files(folders["xdg"])


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX ownership checks")
def test_private_folder_of_someone_else_is_refused(tmp_path, monkeypatch):
    """A writable-by-others folder, a symlink or another user's folder under the shared temp
    dir is never used for kernels (numba loads what it finds there)."""
    from metrics import _numba

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    folder = tmp_path / f"icmbench-numba-{os.geteuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    assert _numba.private_cache_dir() is None
    folder.chmod(0o700)
    assert _numba.private_cache_dir() == folder
    monkeypatch.setattr(os, "geteuid", lambda: folder.stat().st_uid + 1)  # now it is someone else's
    other = tmp_path / f"icmbench-numba-{os.geteuid()}"
    other.mkdir(mode=0o700)
    assert _numba.private_cache_dir() is None
    monkeypatch.undo()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    folder.rmdir()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    folder.symlink_to(target)
    assert _numba.private_cache_dir() is None
