"""The external-process adapter: spec format, errors (crash, timeout, bad outputs), the persistent protocol,
fingerprints, the worked configs, end-to-end equality with ``method=constant``, and the quoted-only entries."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark.prompts import make_prompt
from benchmark.runner import Runner
from benchmark.safe_names import file_name
from benchmark.types import Episode
from methods import METHODS, build_method
from methods.base import MethodError, Reference, Target, method_info
from methods.external import ExternalMethod, program_file
from methods.quoted import LfMethod, MethodUnavailable, MgmiwMethod
from tests.conftest import soft_disc
from tests.runner_helpers import compose_config, read_rows

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "external"
FAST = ("runner.workers=1", "runner.progress=off")
METRICS = ("SAD", "MSE", "Grad", "Conn")
EPISODE = Episode("g", 1, ("ref",), ("t0", "t1"))


def script(name: str) -> str:
    return str(DATA / f"{name}.py")


def command(name: str, *args: str) -> list[str]:
    return [sys.executable, script(name), "{spec}", *args]


def scene(h: int = 30, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    alpha = soft_disc(h, w, h / 2, w / 2, min(h, w) / 3)
    image = (alpha[..., None] * 200 + rng.integers(0, 50, (h, w, 3))).astype(np.uint8)
    return image, np.rint(alpha * 255).astype(np.uint8)


def inputs(kind: str = "points") -> tuple[list[Reference], list[Target]]:
    image, gt8 = scene()
    prompt = make_prompt(kind, gt8, seed=0, group="g", round_index=1, reference="ref")
    targets = [Target("t0", image[:28]), Target("t1", image[:, :36])]
    return [Reference("ref", image, prompt)], targets


def digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not alive(pid)


# ----------------------------------------------------------------------------- settings
def test_describe_reads_the_settings_without_running_anything():
    info = ExternalMethod.describe(command=["/nowhere/program", "{spec}"], guidance="mask", prompt_kinds=["mask"],
                                   max_references=2)
    assert (info.name, info.guidance, info.prompt_kinds, info.max_references) == ("external", "mask",
                                                                                  frozenset({"mask"}), 2)
    assert info.runtime_params == {"timeout_s", "workdir", "persistent", "env", "cwd", "fingerprint_files"}
    assert ExternalMethod.describe().guidance == "in_context"
    assert info.result_settings({"command": ["x"], "timeout_s": 3, "env": {}}) == {"command": ["x"]}
    with pytest.raises(ValueError, match="guidance"):
        ExternalMethod.describe(guidance="trimaps")
    with pytest.raises(ValueError, match="prompt_kinds"):
        ExternalMethod.describe(prompt_kinds=["box"])


def test_command_must_be_an_argument_list_with_a_spec_placeholder(tmp_path):
    with pytest.raises(ValueError, match="list of arguments"):
        ExternalMethod(command="python driver.py {spec}", workdir=str(tmp_path))
    with pytest.raises(ValueError, match="must contain"):
        ExternalMethod(command=[sys.executable, script("fixed")], workdir=str(tmp_path))
    with pytest.raises(ValueError, match="stdin"):
        ExternalMethod(command=command("persistent"), persistent=True, workdir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="fingerprint_files"):
        ExternalMethod(command=command("fixed"), fingerprint_files=[str(tmp_path / "missing.pth")])


# ----------------------------------------------------------------------------- the spec
def test_spec_names_every_input_and_the_outputs_are_read_back(tmp_path):
    rec = tmp_path / "record.jsonl"
    method = ExternalMethod(command=command("fixed", "77"), workdir=str(tmp_path / "work"),
                            env={"ICM_TEST_RECORD": str(rec)})
    refs, targets = inputs("points")
    method.prepare(refs, seed=1234, episode=EPISODE)
    preds = method.predict(targets)
    for t, p in zip(targets, preds, strict=True):
        assert p.dtype == np.float32 and p.shape == t.image.shape[:2]
        np.testing.assert_array_equal(p, np.float32(77) / np.float32(255))
    (doc,) = records(rec)
    spec, files = doc["spec"], doc["files"]
    assert set(spec) == {"version", "episode", "seed", "references", "targets"}
    assert (spec["version"], spec["episode"], spec["seed"]) == (1, EPISODE.key, 1234)
    (ref,) = spec["references"]
    assert set(ref) == {"id", "image", "prompt", "points"} and ref["id"] == "ref"
    assert ref["points"] == [[int(y), int(x), bool(fg)] for y, x, fg in refs[0].prompt.points] and ref["points"]
    assert files[ref["image"]]["sha"] == digest(refs[0].image) and files[ref["image"]]["mode"] == "RGB"
    labels = refs[0].prompt.labels()
    assert files[ref["prompt"]] == {"shape": list(labels.shape), "mode": "L", "sha": digest(labels),
                                    "values": sorted(int(v) for v in np.unique(labels))}
    for t, entry in zip(targets, spec["targets"], strict=True):
        assert set(entry) == {"id", "image", "guidance", "output"} and entry["guidance"] is None
        assert files[entry["image"]]["sha"] == digest(t.image)
        assert Path(entry["output"]).name == file_name(t.sample_id, ".png")
        assert all(Path(entry[k]).is_absolute() and Path(entry[k]).is_relative_to(tmp_path / "work")
                   for k in ("image", "output"))
    assert doc["outputs_dir_exists"]
    # the call's files are gone once its outputs are read; the episode's go at the next prepare
    assert not any(p.name == "spec.json" for p in (tmp_path / "work").rglob("*"))
    method.prepare(refs, seed=0, episode=EPISODE)
    assert not any((tmp_path / "work").iterdir())
    method.close()


def test_mask_and_scribble_prompts_have_no_points_and_ids_stay_inside_the_workdir(tmp_path):
    rec = tmp_path / "record.jsonl"
    method = ExternalMethod(command=command("fixed"), env={"ICM_TEST_RECORD": str(rec)})
    image, gt8 = scene()
    evil = "../../../escape"
    prompt = make_prompt("scribble", gt8, seed=0, group="g", round_index=0, reference=evil)
    method.prepare([Reference(evil, image, prompt)], seed=0)
    (pred,) = method.predict([Target("/abs/" + evil, image)])
    assert not isinstance(pred, MethodError)
    (doc,) = records(rec)
    assert doc["spec"]["episode"] == "" and doc["spec"]["references"][0]["points"] == []
    assert doc["files"][doc["spec"]["references"][0]["prompt"]]["sha"] == digest(prompt.scribble)
    workdir = method.workdir
    for entry in doc["spec"]["references"] + doc["spec"]["targets"]:
        for key in ("image", "prompt", "output"):
            if key in entry:
                assert Path(entry[key]).resolve().is_relative_to(workdir), entry[key]
    assert workdir.is_dir()
    method.close()
    assert not workdir.exists()  # a temporary work folder is the adapter's: removed at close


@pytest.mark.parametrize("guidance", ["trimap", "mask", "prompt"])
def test_per_target_guidance_is_written_as_pngs(tmp_path, guidance):
    rec = tmp_path / "record.jsonl"
    method = ExternalMethod(command=command("fixed"), guidance=guidance, workdir=str(tmp_path / "w"),
                            env={"ICM_TEST_RECORD": str(rec)})
    image, gt8 = scene()
    trimap = np.where(gt8 > 250, 255, np.where(gt8 < 5, 0, 128)).astype(np.uint8)
    prompt = make_prompt("points", gt8, seed=0, group="g", round_index=0, reference="t0")
    target = Target("t0", image, {"trimap": trimap, "mask": gt8 > 127}.get(guidance),
                    prompt if guidance == "prompt" else None)
    method.prepare([], seed=0, episode=EPISODE)
    (pred,) = method.predict([target])
    assert not isinstance(pred, MethodError), pred
    (doc,) = records(rec)
    assert doc["spec"]["references"] == []
    (entry,) = doc["spec"]["targets"]
    if guidance == "prompt":
        assert entry["guidance"] is None and entry["points"] == [[int(y), int(x), bool(f)] for y, x, f in prompt.points]
        assert doc["files"][entry["prompt"]]["sha"] == digest(prompt.labels())
    else:
        expected = trimap if guidance == "trimap" else np.where(gt8 > 127, 255, 0).astype(np.uint8)
        assert doc["files"][entry["guidance"]]["sha"] == digest(expected)
        assert doc["files"][entry["guidance"]]["values"] == sorted(int(v) for v in np.unique(expected))
    method.close()


# ----------------------------------------------------------------------------- failures
def test_a_crash_fails_every_target_with_the_exit_status_and_the_last_stderr_lines(tmp_path):
    method = ExternalMethod(command=command("crash"), workdir=str(tmp_path))
    refs, targets = inputs()
    method.prepare(refs, seed=0, episode=EPISODE)
    errors = method.predict(targets)
    assert len(errors) == 2 and all(isinstance(e, MethodError) for e in errors)
    text = str(errors[0])
    assert "exited with status 3" in text and "crash.py" in text and "boom (stand-in crash)" in text
    assert "log line 29" in text and "log line 10" not in text  # the last 20 lines only
    method.close()


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    child_file = tmp_path / "child.pid"
    method = ExternalMethod(command=command("sleeper"), timeout_s=1.0, workdir=str(tmp_path / "w"),
                            env={"ICM_TEST_CHILD": str(child_file)})
    refs, targets = inputs()
    method.prepare(refs, seed=0, episode=EPISODE)
    t0 = time.monotonic()
    errors = method.predict(targets)
    assert time.monotonic() - t0 < 8
    assert all(isinstance(e, MethodError) and "timed out after 1 s" in str(e) for e in errors)
    assert "sleeping past the timeout" in str(errors[0])
    assert wait_gone(int(child_file.read_text()))  # the program's own child was killed too
    method.close()


def test_wrong_size_and_missing_outputs_fail_only_their_target(tmp_path):
    refs, targets = inputs()
    wrong = ExternalMethod(command=command("wrong_size"), workdir=str(tmp_path / "a"))
    wrong.prepare(refs, seed=0, episode=EPISODE)
    errors = wrong.predict(targets)
    assert all(isinstance(e, MethodError) for e in errors)
    assert "has shape (29, 40), the image is (28, 40)" in str(errors[0]) and "'t0'" in str(errors[0])
    partial = ExternalMethod(command=command("partial"), workdir=str(tmp_path / "b"))
    partial.prepare(refs, seed=0, episode=EPISODE)
    ok, missing = partial.predict(targets)
    assert not isinstance(ok, MethodError) and isinstance(missing, MethodError)
    text = str(missing)
    assert "no output for target 't1'" in text and file_name("t1", ".png") in text and "skipped t1" in text
    wrong.close()
    partial.close()


# ----------------------------------------------------------------------------- persistent
def persistent(tmp_path: Path, **env: str) -> ExternalMethod:
    return ExternalMethod(command=[sys.executable, script("persistent")], persistent=True, timeout_s=5.0,
                          workdir=str(tmp_path / "w"), env={"ICM_TEST_STARTS": str(tmp_path / "starts"), **env})


def starts(tmp_path: Path) -> list[int]:
    return [int(x) for x in (tmp_path / "starts").read_text().split()]


def test_persistent_process_starts_once_and_ends_at_close(tmp_path):
    method = persistent(tmp_path)
    refs, targets = inputs()
    assert not (tmp_path / "starts").exists()  # started lazily
    for r in range(3):
        method.prepare(refs, seed=r, episode=Episode("g", r, ("ref",), ("t0", "t1")))
        preds = method.predict(targets)
        assert all(not isinstance(p, MethodError) and float(p.max()) == np.float32(128) / 255 for p in preds)
    (pid,) = starts(tmp_path)
    assert method.starts == 1 and alive(pid)
    method.close()
    assert wait_gone(pid)


def test_persistent_errors_are_reported_and_a_dead_process_is_restarted(tmp_path):
    method = persistent(tmp_path, ICM_TEST_FAIL_ON="1", ICM_TEST_DIE_ON="2")
    refs, targets = inputs()
    method.prepare(refs, seed=0, episode=EPISODE)
    failed = method.predict(targets)  # spec 1: {"ok": false, ...}: the process stays
    assert all(isinstance(e, MethodError) and "cannot handle spec 1" in str(e) for e in failed)
    died = method.predict(targets)  # spec 2: exit status 5
    assert all(isinstance(e, MethodError) and "exited with status 5" in str(e) for e in died)
    assert "dying on spec 2" in str(died[0])
    again = method.predict(targets)  # a new process: its first spec fails again, by design of the stand-in
    assert all(isinstance(e, MethodError) and "cannot handle spec 1" in str(e) for e in again)
    assert method.starts == 2 and len(starts(tmp_path)) == 2
    method.close()


def test_a_hung_persistent_process_times_out_and_is_replaced(tmp_path):
    method = persistent(tmp_path, ICM_TEST_HANG_ON="1")
    method.timeout_s = 1.0
    refs, targets = inputs()
    method.prepare(refs, seed=0, episode=EPISODE)
    hung = method.predict(targets)
    assert all(isinstance(e, MethodError) and "timed out after 1 s" in str(e) for e in hung)
    first = starts(tmp_path)[0]
    assert wait_gone(first)
    method.env.pop("ICM_TEST_HANG_ON")
    assert all(not isinstance(p, MethodError) for p in method.predict(targets))
    assert method.starts == 2
    method.close()


def test_the_demo_driver_serves_both_modes(tmp_path):
    params = yaml.safe_load((ROOT / "conf" / "method" / "external.yaml").read_text())
    params.pop("name")
    refs, targets = inputs()
    for p in (params, {**params, "command": ["{python}", "-m", "methods.external", "--persistent"],
                       "persistent": True}):
        method = build_method("external", **p)
        method.prepare(refs, seed=0, episode=EPISODE)
        for t, pred in zip(targets, method.predict(targets), strict=True):
            np.testing.assert_array_equal(pred, np.full(t.image.shape[:2], np.float32(128) / 255, np.float32))
        method.close()


# ----------------------------------------------------------------------------- fingerprint
def test_fingerprint_follows_the_program_and_the_pinned_files_not_their_place(tmp_path):
    prog = tmp_path / "prog"
    shutil.copytree(DATA, prog)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"weights-1")
    base = {"command": [sys.executable, str(prog / "fixed.py"), "{spec}"], "workdir": str(tmp_path / "w")}
    fp = ExternalMethod(**base).fingerprint()
    assert program_file(base["command"]) == prog / "fixed.py"
    assert fp == ExternalMethod(**base).fingerprint()
    assert fp != ExternalMethod(**{**base, "guidance": "none"}).fingerprint()
    with_w = ExternalMethod(**base, fingerprint_files=[str(tmp_path / "a" / "w.bin")]).fingerprint()
    assert with_w != fp
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert ExternalMethod(**base, fingerprint_files=[str(tmp_path / "b" / "w.bin")]).fingerprint() == with_w
    (tmp_path / "b" / "w.bin").write_bytes(b"weights-2")
    assert ExternalMethod(**base, fingerprint_files=[str(tmp_path / "b" / "w.bin")]).fingerprint() != with_w
    (prog / "fixed.py").write_text((prog / "fixed.py").read_text() + "\n# edited\n")
    assert ExternalMethod(**base).fingerprint() != fp


# ----------------------------------------------------------------------------- worked configs
@pytest.mark.parametrize(("preset", "guidance", "kinds", "persistent"), [
    ("seem", "in_context", {"mask", "scribble"}, True), ("mgm", "mask", {"mask"}, False),
    ("aim", "none", {"mask", "scribble", "points"}, True)])
def test_worked_configs_compose_and_describe_their_guidance(tmp_path, preset, guidance, kinds, persistent):
    with pytest.raises(Exception, match="Missing mandatory value"):
        compose_config(f"method={preset}")  # the environment's python and the checkout must be given
    cfg = compose_config(f"method={preset}", f"method.command.0={sys.executable}", f"method.cwd={tmp_path}")
    params = dict(cfg["method"])
    assert params.pop("name") == "external" and params.pop("label") == preset
    info = method_info(METHODS.get("external"), params)
    assert (info.guidance, set(info.prompt_kinds), params["persistent"]) == (guidance, kinds, persistent)
    assert params["command"][1] == "tools/icmbench_driver.py"
    assert ("{spec}" in params["command"]) != persistent


# ----------------------------------------------------------------------------- end to end
def run(out: Path, dataset: Path, method: dict | None = None, *overrides: str):
    cfg = compose_config(*FAST, "method=constant", "dataset=folder", f"dataset.root={dataset}", *overrides)
    if method is not None:
        cfg["method"] = method
    return Runner(cfg, out).run()


def keyed(path: Path) -> dict[tuple, dict]:
    return {(r["round"], r["group"], r["target"], r["region"]): r for r in read_rows(path / "results.csv")}


def test_a_driver_writing_128_scores_exactly_like_method_constant(tmp_path, folder_dataset):
    assert yaml.safe_load((ROOT / "conf" / "method" / "constant.yaml").read_text())["value"] == 0.5  # → 128
    run(tmp_path / "constant", folder_dataset)
    stats = run(tmp_path / "external", folder_dataset,
                {"name": "external", "label": "fixed128", "command": command("fixed"), "timeout_s": 30})
    assert stats.errors == 0
    a, b = keyed(tmp_path / "constant"), keyed(tmp_path / "external")
    assert a.keys() == b.keys() and len(a) == 24
    for key, row in a.items():
        assert row["status"] == b[key]["status"] == "ok"
        assert all(row[m] == b[key][m] for m in METRICS), key
    assert {r["method"] for r in b.values()} == {"fixed128"}
    assert {r["guidance"] for r in b.values()} == {"in_context"}


def test_runner_turns_external_failures_into_error_rows_and_goes_on(tmp_path, folder_dataset):
    out = tmp_path / "partial"
    stats = run(out, folder_dataset, {"name": "external", "command": command("partial")}, "runner.rounds=1")
    rows = read_rows(out / "results.csv")
    errors = [r for r in rows if r["status"] == "error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(errors) == 2 and len(ok) == 4 and stats.errors == 2  # per group: target 1 ok (2 regions), 2 not
    assert all("no output for target" in r["error"] and r["target"] in r["error"] for r in errors)


def test_runner_starts_a_persistent_driver_once(tmp_path, folder_dataset):
    method = {"name": "external", "command": [sys.executable, script("persistent")], "persistent": True,
              "env": {"ICM_TEST_STARTS": str(tmp_path / "starts")}}
    stats = run(tmp_path / "run", folder_dataset, method)
    assert stats.errors == 0 and stats.episodes_written == 6
    (pid,) = starts(tmp_path)
    assert wait_gone(pid)  # close() ended it


# ----------------------------------------------------------------------------- quoted only
@pytest.mark.parametrize(("cls", "name", "guidance", "words"), [
    (MgmiwMethod, "mgmiw", "mask", "no public code or weights"), (LfMethod, "lf", "none", "external drive")])
def test_quoted_only_methods_refuse_to_build_with_their_reason(cls, name, guidance, words):
    assert cls.available is False and words in cls.reason
    assert (cls.info.name, cls.info.guidance) == (name, guidance)
    with pytest.raises(MethodUnavailable, match=re.escape(f"method '{name}' cannot be run: {cls.reason};")) as info:
        cls()
    assert "python -m benchmark.paper" in str(info.value) and isinstance(info.value, RuntimeError)
    with pytest.raises(MethodUnavailable):
        build_method(name)



def test_the_runner_gives_an_external_program_one_spec_per_episode(tmp_path):
    from tests.conftest import make_folder_dataset

    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=4)
    rec = tmp_path / "record.jsonl"
    method = {"name": "external", "command": command("fixed"), "env": {"ICM_TEST_RECORD": str(rec)}}
    stats = run(tmp_path / "run", data, method, "runner.rounds=1", "runner.batch_size=1")
    assert stats.errors == 0 and stats.episodes_written == 2
    specs = [doc["spec"] for doc in records(rec)]
    assert len(specs) == 2 and sorted(len(s["targets"]) for s in specs) == [3, 3]  # not one call per target
