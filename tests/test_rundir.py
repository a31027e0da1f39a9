"""The run folder: safe names, containment, identity, lock, overwrite and retry (in-process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets import load_dataset
from benchmark.run_lock import RunLock, RunLockedError
from benchmark.rundir import RunDir
from benchmark.runner import RunConfigError, Runner
from benchmark.safe_names import file_name
from benchmark.types import Episode
from benchmark.workers import available_cpus
from methods import METHODS
from methods.base import BaseMethod, MethodInfo
from tests.runner_helpers import compose_config, read_rows

FAST = ("runner.workers=1", "runner.progress=off")
HOSTILE_IDS = ["../../x", "/abs/x", "..", ".", ".hidden", "a/b", "a\\b", "tab\there", "nl\nx", "ctl\x01", "~home",
               "a%2Fb", "é", "x" * 400]


def run(out: Path, *overrides: str, method: dict | None = None):
    cfg = compose_config(*FAST, *overrides)
    if method is not None:
        cfg["method"] = method
    return Runner(cfg, out).run()


def folder(root: Path) -> tuple[str, ...]:
    return ("dataset=folder", f"dataset.root={root}")


# ----------------------------------------------------------------------------- names and keys
@pytest.mark.parametrize("sid", HOSTILE_IDS)
def test_file_names_are_one_plain_component(sid):
    name = file_name(sid, ".png")
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert all(c.isascii() and c.isprintable() for c in name)
    assert len(name.encode()) <= 200
    root = Path("/run/predictions/r0")
    assert (root / name).resolve().parent == root


def test_file_names_are_injective():
    ids = [*HOSTILE_IDS, "a_b", "a-b", "a.b", "a%b", "a b", "A", "a", "x" * 401]
    names = [file_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    with pytest.raises(ValueError, match="empty"):
        file_name("")


def test_episode_keys_never_collide():
    # the old keys joined with "__" and "+": both pairs below collided
    pairs = [
        (Episode("g__r0", 0, ("a",), ("t1", "t2")), Episode("g", 0, ("r0__a",), ("t1", "t2"))),
        (Episode("g", 0, ("a+b",), ("t1", "t2")), Episode("g", 0, ("a", "b"), ("t1", "t2"))),
        (Episode("g", 0, ("a",), ("b__c",)), Episode("g", 0, ("a__b",), ("c",))),
        (Episode("g/r0", 0, ("a",), ("t", "u")), Episode("g", 0, ("r0/a",), ("t", "u"))),
    ]
    for a, b in pairs:
        assert a.key != b.key
        rd = RunDir("/run")
        assert rd.episode_file(a.key) != rd.episode_file(b.key)
        assert rd.prompt_file(a.key, "a") != rd.prompt_file(b.key, "a")


# ----------------------------------------------------------------------------- containment
def _manifest(root: Path, entries: list[dict]) -> None:
    (root / "manifest.json").write_text(json.dumps({"format": "icmbench-dataset", "version": 1, "name": "m",
                                                    "samples": entries, "groups": {}}))


def _pair(folder_: Path, stem: str, value: float = 1.0) -> tuple[str, str]:
    folder_.mkdir(parents=True, exist_ok=True)
    img = np.full((24, 32, 3), 120, np.uint8)
    Image.fromarray(img).save(folder_ / f"{stem}.png")
    a = np.zeros((24, 32), np.uint8)
    a[6:18, 8:24] = int(255 * value)
    Image.fromarray(a).save(folder_ / f"{stem}_a.png")
    return f"{stem}.png", f"{stem}_a.png"


def test_hostile_sample_ids_stay_inside_the_run_folder(tmp_path):
    root = tmp_path / "data"
    entries = []
    for i, sid in enumerate(["../../x", "/abs/y", "ok", "a__b+c"]):
        img, alpha = _pair(root / "f", f"s{i}")
        entries.append({"id": sid, "group": "g", "image": f"f/{img}", "alpha": f"f/{alpha}"})
    _manifest(root, entries)
    out = tmp_path / "deep" / "run"
    stats = run(out, "method=constant", "dataset=manifest", f"dataset.root={root}", "runner.rounds=2")
    assert stats.errors == 0
    written = {p.resolve() for p in tmp_path.rglob("*.png")} - {p.resolve() for p in root.rglob("*.png")}
    assert written and all(p.is_relative_to(out.resolve()) for p in written)
    assert not (tmp_path / "x.png").exists() and not Path("/abs/y.png").exists()
    plan = json.loads((out / "run.json").read_text())
    for ep in plan["episodes"]:  # the plan names each episode's files, and they exist inside the folder
        for rel in [*ep["predictions"].values(), *ep["prompts"].values(), ep["file"]]:
            assert (out / rel).resolve().is_relative_to(out.resolve()) and (out / rel).is_file(), rel


def test_dataset_files_outside_the_root_are_reported_not_read(tmp_path):
    root = tmp_path / "data"
    outside = tmp_path / "secret"
    o_img, o_alpha = _pair(outside, "s")
    entries = []
    for i in range(3):
        img, alpha = _pair(root / "f", f"s{i}")
        entries.append({"id": f"s{i}", "group": "g", "image": f"f/{img}", "alpha": f"f/{alpha}"})
    entries.append({"id": "dotdot", "group": "g", "image": f"../secret/{o_img}", "alpha": "f/s0_a.png"})
    entries.append({"id": "absolute", "group": "g", "image": str(outside / o_img), "alpha": "f/s0_a.png"})
    os.symlink(outside / o_alpha, root / "f" / "link_a.png")
    entries.append({"id": "symlink", "group": "g", "image": "f/s1.png", "alpha": "f/link_a.png"})
    _manifest(root, entries)
    with pytest.warns(UserWarning, match="outside"):
        ds = load_dataset("manifest", root=str(root))
    assert set(ds.samples) == {"s0", "s1", "s2"}
    problems = {p["sample"]: p["error"] for p in ds.meta["problems"]}
    assert set(problems) == {"dotdot", "absolute", "symlink"}
    assert all("outside the dataset root" in e and "allow_outside_root" in e for e in problems.values())
    allowed = load_dataset("manifest", root=str(root), allow_outside_root=True)
    assert {"dotdot", "absolute", "symlink"} <= set(allowed.samples)
    # through the runner they are error rows, and the run goes on
    with pytest.warns(UserWarning, match="outside"):
        stats = run(tmp_path / "out", "method=constant", "dataset=manifest", f"dataset.root={root}",
                    "runner.rounds=1")
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert {r["target"] for r in rows if r["status"] == "error"} == {"dotdot", "absolute", "symlink"}
    assert stats.errors == 3 and any(r["status"] == "ok" for r in rows)


# ----------------------------------------------------------------------------- identity
class _Weighted(BaseMethod):
    """Predicts the float stored in its checkpoint file; the file's content is its weights."""

    info = MethodInfo("weighted", "in_context", frozenset({"mask"}), 1,
                      runtime_params=frozenset({"checkpoint", "device", "batch_size"}))
    calls = 0

    def __init__(self, checkpoint: str, device: str = "cpu", batch_size: int = 1, gain: float = 1.0) -> None:
        super().__init__()
        self.path = Path(checkpoint)
        self.value = float(self.path.read_text()) * gain

    def predict_one(self, target):
        type(self).calls += 1
        return np.full(target.image.shape[:2], self.value, np.float32)

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@pytest.fixture()
def weighted():
    METHODS._entries["weighted"] = _Weighted
    _Weighted.calls = 0
    yield _Weighted
    del METHODS._entries["weighted"]


def test_moving_weights_or_changing_device_resumes(tmp_path, folder_dataset, weighted):
    ckpt = tmp_path / "a" / "w.txt"
    ckpt.parent.mkdir()
    ckpt.write_text("0.25")
    out = tmp_path / "run"
    run(out, "method=constant", *folder(folder_dataset), method={"name": "weighted", "checkpoint": str(ckpt)})
    before = read_rows(out / "results.csv")
    calls = weighted.calls
    moved = tmp_path / "b" / "renamed.txt"
    moved.parent.mkdir()
    shutil.move(ckpt, moved)
    stats = run(out, "method=constant", *folder(folder_dataset),
                method={"name": "weighted", "checkpoint": str(moved), "device": "cuda", "batch_size": 8})
    assert stats.episodes_resumed == stats.episodes_total and weighted.calls == calls
    assert read_rows(out / "results.csv") == before
    plan = json.loads((out / "run.json").read_text())
    assert plan["config"]["method"]["device"] == "cuda"  # recorded, not identity


def test_changed_weights_are_refused_naming_them(tmp_path, folder_dataset, weighted):
    ckpt = tmp_path / "w.txt"
    ckpt.write_text("0.25")
    out = tmp_path / "run"
    method = {"name": "weighted", "checkpoint": str(ckpt)}
    run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1", method=method)
    for f in (out / "episodes").glob("*.csv"):  # something left to do, so the method is built again
        f.unlink()
        break
    ckpt.write_text("0.75")
    before = folder_files(out)
    with pytest.raises(RunConfigError, match="weights changed"):
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1",
            method={**method, "device": "cuda"})
    assert folder_files(out) == before  # refused: run.json and the rest untouched
    with pytest.raises(RunConfigError, match=r"method\.gain: \(unset\) → 2\.0"):
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1", method={**method, "gain": 2.0})


def folder_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_with_an_invalid_setting_deletes_nothing(tmp_path, folder_dataset):
    out = tmp_path / "run"
    run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")
    before = folder_files(out)
    with pytest.raises(RunConfigError, match="rounds"):
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=0", "runner.overwrite=true")
    with pytest.raises(RunConfigError, match="cannot build method 'constant'"):
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1", "runner.overwrite=true",
            "+method.no_such_parameter=1")
    assert folder_files(out) == before


def test_changed_dataset_or_setting_is_refused_naming_it(tmp_path, folder_dataset):
    out = tmp_path / "run"
    run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(folder_dataset / "g0" / "alpha" / "s0.png")
    hydra_before = sorted(p.read_bytes() for p in out.rglob("*") if p.is_file())
    with pytest.raises(RunConfigError, match="the dataset changed") as info:
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")
    assert "runner.rounds" not in str(info.value) and "method." not in str(info.value)  # only the dataset
    with pytest.raises(RunConfigError, match=r"runner\.rounds: 1 → 2"):
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=2")
    assert sorted(p.read_bytes() for p in out.rglob("*") if p.is_file()) == hydra_before


def test_run_json_stores_absolute_roots_so_tools_work_from_anywhere(tmp_path, folder_dataset, monkeypatch):
    from benchmark.rescore import rescore

    monkeypatch.chdir(folder_dataset.parent)
    run(tmp_path / "run", "method=constant", "dataset=folder", f"dataset.root={folder_dataset.name}",
        "runner.rounds=1")
    plan = json.loads((tmp_path / "run" / "run.json").read_text())
    assert plan["config"]["dataset"]["root"] == str(folder_dataset)
    monkeypatch.chdir(tmp_path / "run")
    assert rescore(Path(".")).targets == 4


# ----------------------------------------------------------------------------- lock
def test_locked_folder_is_refused_and_stale_lock_taken_over(tmp_path, folder_dataset, caplog):
    out = tmp_path / "run"
    run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")
    with RunLock(out / ".lock"), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with caplog.at_level("WARNING", logger="benchmark"):
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")
    assert "stale lock" in caplog.text
    assert not (out / ".lock").exists()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "started": "x"}))
    with pytest.raises(RunLockedError, match="host elsewhere"):  # another host: never taken over
        run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")


def test_lock_of_an_earlier_attempt_of_a_requeued_slurm_job_is_stale(tmp_path, monkeypatch):
    lock = tmp_path / ".lock"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock.write_text(json.dumps({"pid": 1, "host": "node-a", "slurm_job": "77", "slurm_restart": 0}))
    with RunLock(lock):
        assert json.loads(lock.read_text())["slurm_restart"] == 1
    lock.write_text(json.dumps({"pid": 1, "host": "node-a", "slurm_job": "78", "slurm_restart": 0}))
    with pytest.raises(RunLockedError, match="node-a"):  # another job's lock on another node
        RunLock(lock).acquire()


# ----------------------------------------------------------------------------- overwrite, retry, batches
class _Flaky(BaseMethod):
    """Constant 0.4; fails on the targets named in ``fail`` (the whole batch raises)."""

    info = MethodInfo("flaky", "in_context", frozenset({"mask"}), 1)
    fail: ClassVar[set[str]] = set()
    seen: ClassVar[list[int]] = []

    def predict(self, targets):
        type(self).seen.append(len(targets))
        bad = [t.sample_id for t in targets if t.sample_id in type(self).fail]
        if bad:
            raise RuntimeError(f"cannot do {bad}")
        return [np.full(t.image.shape[:2], 0.4, np.float32) for t in targets]


@pytest.fixture()
def flaky():
    METHODS._entries["flaky"] = _Flaky
    _Flaky.fail, _Flaky.seen = set(), []
    yield _Flaky
    del METHODS._entries["flaky"]


def test_batch_failure_is_retried_target_by_target(tmp_path, folder_dataset, flaky):
    flaky.fail = {"g0/s1"}
    stats = run(tmp_path / "run", "method=constant", *folder(folder_dataset), "runner.rounds=3",
                "runner.batch_size=4", method={"name": "flaky"})
    rows = read_rows(tmp_path / "run" / "results.csv")
    errors = [r for r in rows if r["status"] == "error"]
    assert {r["target"] for r in errors} == {"g0/s1"} and stats.errors == len(errors) == 2  # 2 rounds target it
    assert "cannot do" in errors[0]["error"] and errors[0]["error"].startswith("method:")
    assert 2 in flaky.seen and 1 in flaky.seen  # a batch of two, then one by one


def test_retry_errors_reruns_only_error_targets_and_matches_a_clean_run(tmp_path, folder_dataset, flaky):
    run(tmp_path / "clean", "method=constant", *folder(folder_dataset), method={"name": "flaky"})
    flaky.fail = {"g0/s1", "g1/s2"}
    out = tmp_path / "run"
    run(out, "method=constant", *folder(folder_dataset), method={"name": "flaky"})
    assert any(r["status"] == "error" for r in read_rows(out / "results.csv"))
    flaky.fail, flaky.seen = set(), []
    run(out, "method=constant", *folder(folder_dataset), method={"name": "flaky"})  # plain resume keeps them
    assert flaky.seen == [] and any(r["status"] == "error" for r in read_rows(out / "results.csv"))
    run(out, "method=constant", *folder(folder_dataset), "runner.retry_errors=true", method={"name": "flaky"})
    assert sum(flaky.seen) == 4  # each failed target in the two rounds where it is a target
    drop = ("seconds",)
    assert read_rows(out / "results.csv", drop) == read_rows(tmp_path / "clean" / "results.csv", drop)
    assert read_rows(out / "leaderboard.csv") == read_rows(tmp_path / "clean" / "leaderboard.csv")


def test_overwrite_always_starts_afresh(tmp_path, folder_dataset, flaky):
    out = tmp_path / "run"
    run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1", method={"name": "flaky"})
    (out / "figures").mkdir()
    (out / "figures" / "old.png").write_bytes(b"x")
    flaky.seen = []
    stats = run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1", "runner.overwrite=true",
                method={"name": "flaky"})
    assert stats.episodes_resumed == 0 and sum(flaky.seen) == 4
    assert not (out / "figures").exists()


# ----------------------------------------------------------------------------- small things
def test_available_cpus_follows_slurm_and_affinity(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cpus() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_output_files_honour_the_umask(tmp_path, folder_dataset):
    code = ("import sys; from tests.runner_helpers import compose_config; from benchmark.runner import Runner; "
            f"Runner(compose_config('runner.workers=1', 'runner.progress=off', 'method=constant', "
            f"'dataset=folder', 'dataset.root={folder_dataset}', 'runner.rounds=1'), '{tmp_path / 'run'}').run()")
    subprocess.run(["bash", "-c", f"umask 027 && {sys.executable} -c \"{code}\""], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o640}


def test_visualize_draws_unreadable_files_and_goes_on(tmp_path, folder_dataset, capsys):
    from benchmark.visualize import main as visualize

    out = tmp_path / "run"
    run(out, "method=constant", *folder(folder_dataset), "runner.rounds=1")
    rd = RunDir(out)
    plan = rd.read_plan()
    rd.prediction_file(0, plan.episodes[0].targets[0]).write_bytes(b"not a png")
    assert visualize([str(out)]) == 0
    assert len(list((out / "figures").glob("*.png"))) == len(plan.episodes)
    assert "1 unreadable" in capsys.readouterr().err


def test_plan_round_trips(tmp_path):
    rd = RunDir(tmp_path)
    from benchmark.rundir import RunPlan

    eps = (Episode("g", 0, ("a",), ("b", "c")), Episode("g/x", 1, ("a", "b"), ("c",), True))
    rd.write_plan(RunPlan({"runner": {"shard": 0, "num_shards": 1}}, {"runner": {}}, eps, "h"))
    plan = rd.read_plan()
    assert plan.episodes == eps and plan.method_hash == "h" and plan.planned_targets == 3


def test_compile_notice_is_said_once_when_kernels_are_not_cached(tmp_path, monkeypatch, capsys):
    import types

    from metrics import _backend

    def kernel(index: Path) -> object:
        cache_file = types.SimpleNamespace(_index_path=str(index))
        return types.SimpleNamespace(_cache=types.SimpleNamespace(_cache_file=cache_file))

    (tmp_path / "cached.nbi").write_text("")
    cached = types.ModuleType("cached")
    cached.k = kernel(tmp_path / "cached.nbi")
    fresh = types.ModuleType("fresh")
    fresh.k, fresh.j = kernel(tmp_path / "missing1.nbi"), kernel(tmp_path / "missing2.nbi")
    partly = types.ModuleType("partly")  # some signatures compiled already: not a first run
    partly.k, partly.j = kernel(tmp_path / "cached.nbi"), kernel(tmp_path / "missing.nbi")
    for module in (cached, partly):
        monkeypatch.setattr(_backend, "_noticed", [])
        assert not _backend.compile_notice(module)
    monkeypatch.setattr(_backend, "_noticed", [])
    monkeypatch.setenv("ICMBENCH_COMPILE_NOTICE", "0")
    assert not _backend.compile_notice(fresh)
    monkeypatch.delenv("ICMBENCH_COMPILE_NOTICE")
    assert _backend.compile_notice(fresh) and not _backend.compile_notice(fresh)  # once per process
    assert capsys.readouterr().err.count("compiling metric kernels, first run only") == 1


class _KillsWorker(BaseMethod):
    """Constant 0.4; on the N-th target it SIGKILLs one metric worker (as the OOM killer would)."""

    info = MethodInfo("kills_worker", "in_context", frozenset({"mask"}), 1)
    calls = 0
    at: int | None = None

    def predict_one(self, target):
        type(self).calls += 1
        if type(self).calls == type(self).at:
            import signal

            workers = [p for p in Path("/proc").glob("[0-9]*") if _is_worker_of(p, os.getpid())]
            os.kill(int(workers[0].name), signal.SIGKILL)
            time.sleep(0.5)
        return np.full(target.image.shape[:2], 0.4, np.float32)


def _is_worker_of(proc: Path, parent: int) -> bool:
    try:
        ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        return ppid == parent and b"spawn_main" in (proc / "cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return False


@pytest.mark.slow
def test_a_dead_worker_stops_the_run_and_keeps_finished_episodes(tmp_path, folder_dataset):
    from benchmark.runner import WorkerDied

    METHODS._entries["kills_worker"] = _KillsWorker
    try:
        _KillsWorker.calls, _KillsWorker.at = 0, 7
        cfg = compose_config("runner.workers=2", "runner.progress=off", "method=constant", *folder(folder_dataset))
        cfg["method"] = {"name": "kills_worker"}
        with pytest.raises(WorkerDied, match="worker process died"):
            Runner(cfg, tmp_path / "run").run()
        rows = [r for p in (tmp_path / "run" / "episodes").glob("*.csv") for r in read_rows(p)]
        assert not any(r["status"] == "error" for r in rows)  # no 'BrokenProcessPool' error rows
        _KillsWorker.at = None
        Runner(cfg, tmp_path / "run").run()
        Runner(dict(cfg, method={"name": "kills_worker"}), tmp_path / "clean").run()
    finally:
        del METHODS._entries["kills_worker"]
    drop = ("seconds",)
    assert read_rows(tmp_path / "run" / "results.csv", drop) == read_rows(tmp_path / "clean" / "results.csv", drop)
    assert not (tmp_path / "run" / ".lock").exists()
