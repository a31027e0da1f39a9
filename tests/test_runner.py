"""End-to-end runner tests: files, determinism, resume, sharding, rescore and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.leaderboard import leaderboard
from benchmark.rescore import rescore
from benchmark.runner import RunConfigError, Runner
from methods import METHODS
from methods.base import BaseMethod, MethodInfo
from tests.runner_helpers import assert_same_board, compose_config, read_rows

FAST = ("runner.workers=1", "runner.progress=off")


def run(out: Path, *overrides: str):
    cfg = compose_config(*FAST, *overrides)
    return Runner(cfg, out).run()


def folder_overrides(root: Path) -> tuple[str, ...]:
    return ("dataset=folder", f"dataset.root={root}")


def test_end_to_end_folder_dataset_writes_every_file(tmp_path, folder_dataset):
    stats = run(tmp_path / "out", "method=reference_mask", *folder_overrides(folder_dataset))
    out = tmp_path / "out"
    for name in ("results.csv", "leaderboard.csv", "leaderboard.md", "run.json"):
        assert (out / name).is_file(), name
    rows = read_rows(out / "results.csv")
    # 2 groups × 3 rounds × 2 targets × 2 regions
    assert len(rows) == 2 * 3 * 2 * 2
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["region"] for r in rows} == {"whole", "unknown"}
    assert all(r["trimap_source"].startswith("derived-r") for r in rows if r["region"] == "unknown")
    assert stats.targets == 12 and stats.errors == 0
    # predictions are the quantised values that were scored
    pred = np.asarray(Image.open(out / "predictions" / "r0" / "g0" / "s0.png")) if (
        out / "predictions" / "r0" / "g0" / "s0.png").exists() else None
    files = sorted((out / "predictions").rglob("*.png"))
    assert len(files) == 12
    pred = np.asarray(Image.open(files[0]))
    assert pred.dtype == np.uint8 and pred.shape == (40, 56)
    # rounds use different references when the group has three images
    refs = {(r["group"], r["round"]): r["references"] for r in rows}
    assert len({v for (g, _), v in refs.items() if g == "g0"}) == 3
    board = read_rows(out / "leaderboard.csv")
    assert {b["region"] for b in board} == {"whole", "unknown"}
    assert all(b["complete"] == "1" and b["groups"] == "2" and b["targets"] == "12" for b in board)
    assert "SAD (/1000)" in board[0] and "MSE (raw)" in board[0]


def test_runs_are_deterministic(tmp_path, folder_dataset):
    run(tmp_path / "a", "method=classical", "method.long_side=64", "prompt=scribble", *folder_overrides(folder_dataset))
    run(tmp_path / "b", "method=reference_mask", "prompt=mask", *folder_overrides(folder_dataset))
    run(tmp_path / "c", "method=classical", "method.long_side=64", "prompt=scribble", *folder_overrides(folder_dataset))
    a = read_rows(tmp_path / "a" / "results.csv", drop=("seconds",))
    c = read_rows(tmp_path / "c" / "results.csv", drop=("seconds",))
    assert a == c
    assert sorted(p.read_bytes() for p in (tmp_path / "a" / "prompts").glob("*.npz")) == sorted(
        p.read_bytes() for p in (tmp_path / "c" / "prompts").glob("*.npz"))


class _Interrupting(BaseMethod):
    """Constant 0.3, but the N-th predict call raises KeyboardInterrupt (like a killed run)."""

    info = MethodInfo("interrupting", "in_context", frozenset({"mask", "scribble", "points"}), 4)
    calls = 0
    builds = 0
    interrupt_at: int | None = None

    def __init__(self) -> None:
        super().__init__()
        type(self).builds += 1

    def predict_one(self, target):
        type(self).calls += 1
        if type(self).calls == type(self).interrupt_at:
            raise KeyboardInterrupt
        return np.full(target.image.shape[:2], 0.3, np.float32)


@pytest.fixture()
def interrupting():
    METHODS._entries["interrupting"] = _Interrupting
    _Interrupting.calls = _Interrupting.builds = 0
    yield _Interrupting
    del METHODS._entries["interrupting"]


def test_resume_after_kill_gives_identical_files_and_no_duplicates(tmp_path, folder_dataset, interrupting):
    overrides = ("method=constant", "method.value=0.3", *folder_overrides(folder_dataset))
    run(tmp_path / "ref", *overrides)
    cfg = compose_config(*FAST, "method=constant", *folder_overrides(folder_dataset))
    cfg["method"] = {"name": "interrupting"}
    interrupting.interrupt_at = 3  # episode 1 has 2 targets: dies inside episode 2
    with pytest.raises(KeyboardInterrupt):
        Runner(cfg, tmp_path / "run").run()
    assert len(list((tmp_path / "run" / "episodes").glob("*.csv"))) == 1
    interrupting.interrupt_at = None
    calls_before = interrupting.calls
    Runner(cfg, tmp_path / "run").run()
    # five episodes left × 2 targets; the finished episode is not recomputed
    assert interrupting.calls - calls_before == 10
    rows = read_rows(tmp_path / "run" / "results.csv", drop=("seconds", "method", "method_hash"))
    ref = read_rows(tmp_path / "ref" / "results.csv", drop=("seconds", "method", "method_hash"))
    assert rows == ref
    keys = [(r["round"], r["target"], r["region"]) for r in rows]
    assert len(keys) == len(set(keys))
    # nothing left to do: the method is not even built, and the files do not change
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*.csv")}
    builds = interrupting.builds
    Runner(cfg, tmp_path / "run").run()
    assert interrupting.builds == builds
    assert before == {p: p.read_bytes() for p in (tmp_path / "run").rglob("*.csv")}


def test_unsupported_prompt_is_refused_before_running(tmp_path, folder_dataset):
    with pytest.raises(RunConfigError, match="does not accept prompt=scribble"):
        run(tmp_path / "out", "method=reference_mask", "prompt=scribble", *folder_overrides(folder_dataset))


def test_empty_unknown_region_does_not_blank_the_leaderboard(tmp_path, folder_dataset):
    # an all-background ground truth has no unknown pixel: its MSE is NaN and must be left out
    from PIL import Image as _Image

    _Image.fromarray(np.zeros((40, 56), np.uint8)).save(folder_dataset / "g0" / "alpha" / "s0.png")
    run(tmp_path / "out", "method=constant", *folder_overrides(folder_dataset), "runner.trimap_radius_fraction=0.05")
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert any(r["MSE"] == "nan" for r in rows if r["region"] == "unknown")
    board = {b["region"]: b for b in read_rows(tmp_path / "out" / "leaderboard.csv")}
    assert board["unknown"]["MSE (raw)"] not in ("nan", "")


def test_overwrite_starts_afresh_including_prompts(tmp_path, folder_dataset):
    run(tmp_path / "out", "method=constant", "prompt=points", *folder_overrides(folder_dataset), "runner.rounds=1")
    run(tmp_path / "out", "method=constant", "prompt=points", "prompt.num_fg=2", *folder_overrides(folder_dataset),
        "runner.rounds=1", "runner.overwrite=true")
    from benchmark.prompts import load_prompt

    prompts = [load_prompt(p) for p in (tmp_path / "out" / "prompts").glob("*.npz")]
    assert prompts and all(len(p.points) == 2 for p in prompts)


def test_other_configuration_in_same_run_dir_is_refused(tmp_path, folder_dataset):
    run(tmp_path / "out", "method=constant", *folder_overrides(folder_dataset), "runner.rounds=1")
    with pytest.raises(RunConfigError, match="different configuration"):
        run(tmp_path / "out", "method=constant", *folder_overrides(folder_dataset), "runner.rounds=2")


def test_shards_merge_into_the_full_leaderboard(tmp_path, folder_dataset):
    from tests.conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d4", groups=4, per_group=2)
    base = ("method=reference_mask", *folder_overrides(root))
    run(tmp_path / "full", *base)
    run(tmp_path / "s0", *base, "runner.shard=0", "runner.num_shards=2")
    run(tmp_path / "s1", *base, "runner.shard=1", "runner.num_shards=2")
    partial = leaderboard([tmp_path / "s0"])
    assert all(r["complete"] == 0 for r in partial)
    merged = leaderboard([tmp_path / "s0", tmp_path / "s1"])
    assert_same_board(merged, leaderboard([tmp_path / "full"]))


def test_rescore_reproduces_stored_values(tmp_path, folder_dataset):
    run(tmp_path / "out", "method=reference_mask", *folder_overrides(folder_dataset), "runner.rounds=1")
    before = read_rows(tmp_path / "out" / "results.csv")
    stats = rescore(tmp_path / "out")
    assert stats.targets == 4 and stats.worst < 1e-12 and not stats.unreadable
    assert read_rows(tmp_path / "out" / "results.csv") == before


def test_rescore_keeps_rows_whose_prediction_is_missing(tmp_path, folder_dataset):
    from benchmark.rescore import main as rescore_main

    run(tmp_path / "out", "method=reference_mask", *folder_overrides(folder_dataset), "runner.rounds=1")
    before = read_rows(tmp_path / "out" / "results.csv")
    missing = sorted((tmp_path / "out" / "predictions").rglob("*.png"))[0]
    missing.unlink()
    assert rescore_main([str(tmp_path / "out")]) == 1
    assert read_rows(tmp_path / "out" / "results.csv") == before


def test_official_protocol_every_image_is_a_target_once_per_round(tmp_path, folder_dataset):
    run(tmp_path / "out", "method=constant", *folder_overrides(folder_dataset), "runner.protocol=official",
        "runner.regions=[whole]")
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert len(rows) == 3 * 6  # rounds × images
    for r in rows:
        if r["references"] == r["target"]:
            pytest.fail("groups of 3 must not use the target as its own reference")


def test_official768_scores_at_768(tmp_path, folder_dataset):
    run(tmp_path / "out", "method=constant", *folder_overrides(folder_dataset), "runner.resolution=official768",
        "runner.rounds=1", "runner.regions=[whole]")
    files = sorted((tmp_path / "out" / "predictions").rglob("*.png"))
    assert files and all(Image.open(f).size == (768, 768) for f in files)


class _BadOutput(BaseMethod):
    info = MethodInfo("bad_output", "in_context", frozenset({"mask"}), 1)
    mode = "nan"

    def predict_one(self, target):
        h, w = target.image.shape[:2]
        if type(self).mode == "nan":
            out = np.full((h, w), 0.5, np.float32)
            out[0, 0] = np.nan
            return out
        return np.zeros((h + 1, w), np.float32)


@pytest.mark.parametrize(("mode", "message"), [("nan", "NaN"), ("size", "has shape")])
def test_bad_method_output_is_an_error_row(tmp_path, folder_dataset, mode, message):
    METHODS._entries["bad_output"] = _BadOutput
    try:
        _BadOutput.mode = mode
        cfg = compose_config(*FAST, "method=constant", *folder_overrides(folder_dataset), "runner.rounds=1")
        cfg["method"] = {"name": "bad_output"}
        stats = Runner(cfg, tmp_path / "out").run()
    finally:
        del METHODS._entries["bad_output"]
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert stats.errors == len(rows) == 4
    assert all(r["status"] == "error" and message in r["error"] for r in rows)


def test_bad_files_become_error_rows_and_the_run_goes_on(tmp_path, folder_dataset):
    g0 = folder_dataset / "g0"
    (g0 / "image" / "s1.png").write_bytes(b"not a png")  # unreadable image
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(g0 / "alpha" / "s2.png")  # size mismatch
    rgba = np.zeros((40, 56, 4), np.uint8)
    rgba[..., 0] = np.arange(56)  # channels differ and alpha varies: ambiguous
    rgba[..., 3] = np.arange(40)[:, None]
    Image.fromarray(rgba, "RGBA").save(folder_dataset / "g1" / "alpha" / "s0.png")
    (folder_dataset / "g1" / "image" / "s9.png").write_bytes((folder_dataset / "g1" / "image" / "s1.png").read_bytes())
    stats = run(tmp_path / "out", "method=constant", *folder_overrides(folder_dataset), "runner.rounds=3")
    rows = read_rows(tmp_path / "out" / "results.csv")
    errors = [r for r in rows if r["status"] == "error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, "the run must go on past bad files"
    text = " ".join(r["error"] for r in errors)
    assert "s1.png" in text  # unreadable image named
    assert "size mismatch" in text
    assert "s0.png" in text  # ambiguous matte named
    assert "s9" in text and "no matte" in text  # missing partner file
    assert stats.errors == len(errors)
    board = read_rows(tmp_path / "out" / "leaderboard.csv")
    assert all(b["complete"] == "0" for b in board)


def test_icm57_json_key_without_files_is_reported(tmp_path, icm58_dev):
    groups = json.loads((icm58_dev / "icm58-dev.json").read_text())
    groups["ghost_01"] = dict(groups["doll_01"])
    gfile = tmp_path / "groups.json"
    gfile.write_text(json.dumps(groups))
    with pytest.warns(UserWarning, match="ghost_01"):
        from benchmark.datasets import load_dataset

        ds = load_dataset("icm57", root=str(icm58_dev), groups=str(gfile))
    assert "ghost_01" not in ds.samples
    assert any("ghost_01" in p["error"] and "image/ghost_01" in p["error"] for p in ds.meta["problems"])


def test_icm58_dev_end_to_end_small(tmp_path, icm58_dev):
    stats = run(tmp_path / "out", "method=reference_mask", "dataset=icm57", f"dataset.root={icm58_dev}",
                f"dataset.groups={icm58_dev / 'icm58-dev.json'}", "runner.rounds=1",
                "runner.resolution=official768")
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert stats.errors == 0
    assert len({r["target"] for r in rows}) == 16  # 27 images, 11 groups, 3 singletons skipped
    plan = json.loads((tmp_path / "out" / "run.json").read_text())
    assert {s["group"] for s in plan["skipped_groups"]} == {"statue-None-full", "pumpkin-None-full", "yarn-None-full"}
    files = {r["trimap_source"] for r in rows if r["region"] == "unknown"}
    assert "file" in files and any(f.startswith("derived") for f in files)
