"""Runs that survive anything, through the real command line: kills at several moments with two
metric workers, no process left behind, Ctrl-C, the lock, refused runs that change nothing."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.run_lock import RunLock
from tests.conftest import make_folder_dataset
from tests.runner_helpers import read_rows

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    # 8 groups × 3 rounds = 24 episodes of 3 targets: about 4 s of work with trimap_matting
    return make_folder_dataset(tmp_path_factory.mktemp("kill") / "data", groups=8, per_group=4, size=(120, 160))


def command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmark", "method=trimap_matting", "dataset=folder", f"dataset.root={data}",
            "runner.workers=2", "runner.progress=off", f"hydra.run.dir={out}", *extra]


def _sigint_default() -> None:
    """A shell's background job (``cmd &``, as CI or a script may start pytest) ignores SIGINT,
    and a child inherits that: the run would rightly ignore Ctrl-C. The tests want a terminal's run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(command(data, out, *extra), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_sigint_default)


def finish(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(data, out, *extra), cwd=REPO, capture_output=True, text=True, timeout=300)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def group_members(pgid: int) -> set[int]:
    """Live (non-zombie) processes of process group ``pgid``: the run and everything it started."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def wait_until_gone(pgid: int, timeout: float = 10) -> set[int]:
    t0 = time.monotonic()
    while (left := group_members(pgid)) and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    return left


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_episodes(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = len(list((out / "episodes").glob("*.csv"))) if (out / "episodes").is_dir() else 0
        ready = (out / ".lock").exists() if n == 0 else done >= n
        if ready and (n > 0 or descendants(proc.pid)):
            return
        assert proc.poll() is None, f"the run ended before {n} episodes: {proc.communicate()[1][-2000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {n} episodes after {timeout} s")


def folder_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    res = finish(dataset, out)
    assert res.returncode == 0, res.stderr
    return out


def same_results(a: Path, b: Path) -> None:
    assert read_rows(a / "results.csv", drop=("seconds",)) == read_rows(b / "results.csv", drop=("seconds",))
    assert read_rows(a / "leaderboard.csv") == read_rows(b / "leaderboard.csv")


@pytest.mark.parametrize(("sig", "after"), [(signal.SIGKILL, 0), (signal.SIGKILL, 3), (signal.SIGKILL, 12),
                                            (signal.SIGTERM, 0), (signal.SIGTERM, 6)])
def test_kill_then_resume_equals_an_uninterrupted_run(dataset, reference, tmp_path, sig, after):
    out = tmp_path / "run"
    proc = start(dataset, out)
    wait_for_episodes(proc, out, after)
    children = descendants(proc.pid)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    left = wait_until_gone(proc.pid)  # the run's session: workers, resource tracker, anything it started
    assert not left and not [p for p in children if alive(p)], f"processes outlived the run: {left}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert "interrupted (SIGTERM)" in err and "Traceback" not in err, err
    episodes = list((out / "episodes").glob("*.csv")) if (out / "episodes").is_dir() else []
    for path in episodes:  # never a partial episode: every file has all its targets and no cancelled row
        rows = read_rows(path)
        assert rows and not any("Cancelled" in r["error"] or "Broken" in r["error"] for r in rows)
        assert len(rows) == 3 * 2
    res = finish(dataset, out)
    assert res.returncode == 0, res.stderr
    same_results(out, reference)
    assert not (out / ".lock").exists()


def test_ctrl_c_prints_one_line_and_resumes(dataset, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(dataset, out)
    wait_for_episodes(proc, out, 3)
    children = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group gets it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if "interrupted" in line] == [err.strip().splitlines()[-1]]
    assert not wait_until_gone(proc.pid) and not [p for p in children if alive(p)]
    assert finish(dataset, out).returncode == 0
    same_results(out, reference)


def test_locked_folder_is_refused_and_left_unchanged(dataset, reference, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = folder_hashes(out)
    with RunLock(out / ".lock"):
        res = finish(dataset, out)
        assert res.returncode == 3, res.stderr
        assert f"pid {os.getpid()}" in res.stderr and "in use by another run" in res.stderr
        lock = (out / ".lock").read_bytes()
    after = folder_hashes(out)
    after[".lock"] = hashlib.sha256(lock).hexdigest()
    before[".lock"] = after[".lock"]
    assert after == before


def test_another_configuration_is_refused_and_changes_nothing(dataset, reference, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = folder_hashes(out)
    assert ".hydra/config.yaml" in before and ".hydra/overrides.yaml" in before
    res = finish(dataset, out, "runner.rounds=2")
    assert res.returncode == 2 and "runner.rounds: 3 → 2" in res.stderr, res.stderr
    assert folder_hashes(out) == before


def test_two_copies_of_one_command_compute_it_once(dataset, reference, tmp_path):
    out = tmp_path / "run"
    a, b = start(dataset, out), start(dataset, out)
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes in ([0, 0], [0, 3]), (err_a, err_b)  # [0, 0] only if one started after the other ended
    if codes == [0, 3]:
        assert "in use by another run" in (err_a + err_b)
    scored = [int(m) for m in re.findall(r"(\d+) new targets scored", out_a + out_b)]
    assert sum(scored) == 8 * 3 * 3, scored  # every target computed exactly once between the two
    same_results(out, reference)


def test_error_rows_give_exit_status_1_unless_ignored(tmp_path):
    data = make_folder_dataset(tmp_path / "data", groups=1, per_group=3)
    (data / "g0" / "image" / "s1.png").write_bytes(b"broken")
    base = [sys.executable, "-m", "benchmark", "method=constant", "dataset=folder", f"dataset.root={data}",
            "runner.workers=1", "runner.rounds=1"]
    res = subprocess.run([*base, f"hydra.run.dir={tmp_path / 'a'}"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1 and "error rows" in res.stderr
    res = subprocess.run([*base, f"hydra.run.dir={tmp_path / 'b'}", "runner.on_error=ignore"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # a multirun goes on past a job with error rows (or a refused one) and exits with the worst status
    res = subprocess.run([*base[:3], "-m", *base[3:], "runner.seed=0,1", f"hydra.sweep.dir={tmp_path / 'm'}"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert len(list((tmp_path / "m").rglob("results.csv"))) == 2, res.stderr


def test_interrupt_during_worker_spawn_is_held_then_raised():
    """A SIGTERM that reaches another thread while workers spawn must not interrupt the spawn
    (Python runs handlers in the main thread, whatever thread the signal reached)."""
    import threading

    from benchmark.interrupts import interrupts_held

    seen: list[str] = []

    def handler(signum, frame):
        raise RuntimeError("interrupted")

    go = threading.Event()

    def other_thread() -> None:  # started before the hold, like the run's decode threads
        go.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, handler)
    t = threading.Thread(target=other_thread)
    t.start()
    try:
        with pytest.raises(RuntimeError, match="interrupted"), interrupts_held():
            go.set()
            t.join()
            for _ in range(200):  # bytecode boundaries where a handler would run
                time.sleep(0.001)
            seen.append("spawned")
        assert seen == ["spawned"]
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, old)


def test_every_held_interrupt_is_delivered_and_handlers_come_back():
    """SIGINT ignored by the caller and SIGTERM both arrive during the hold: the SIGTERM is not
    lost behind the ignored SIGINT, and both handlers are the caller's again afterwards."""
    import threading

    from benchmark.interrupts import interrupts_held

    def handler(signum, frame):
        raise RuntimeError(f"signal {signum}")

    go = threading.Event()

    def other_thread() -> None:
        go.wait()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, handler)
    t = threading.Thread(target=other_thread)
    t.start()
    try:
        with pytest.raises(RuntimeError, match=f"signal {int(signal.SIGTERM)}"), interrupts_held():
            go.set()
            t.join()
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_swallowed_by_a_finalizer_is_raised_again(sig, capsys):
    """A signal handled while ``__del__`` runs raises inside it, and Python only prints
    "Exception ignored": without the record the run would go on and exit 0."""
    from benchmark.interrupts import RunInterrupted, interrupts_as_exceptions, raise_pending

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # bytecode: the handler runs here, inside the finalizer
                pass

    expected = RunInterrupted if sig == signal.SIGTERM else KeyboardInterrupt
    # the defaults a run starts with (an earlier test, e.g. Ray's, may have left its own handler)
    old = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler),
                                              (signal.SIGTERM, signal.SIG_DFL))}
    try:
        with interrupts_as_exceptions():
            obj = Finalized()
            del obj  # swallowed: no exception here
            with pytest.raises(expected):
                raise_pending()
        assert "Exception ignored" not in capsys.readouterr().err
        raise_pending()  # nothing left once the run is over
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        for s, h in old.items():
            signal.signal(s, h)
