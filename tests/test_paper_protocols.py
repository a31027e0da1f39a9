"""Numbers comparable to the paper: the fixed protocol, method seeds, Table 6's reserved
references, per-image guidance, and a leaderboard that refuses to merge different runs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.datasets import load_dataset
from benchmark.episodes import episode_seed, plan_episodes
from benchmark.leaderboard import LeaderboardError, board_frame, leaderboard
from benchmark.leaderboard import main as leaderboard_main
from benchmark.runner import RunConfigError, Runner
from methods import METHODS
from methods.base import BaseMethod, MethodInfo
from tests.conftest import make_folder_dataset
from tests.runner_helpers import compose_config, read_rows

FAST = ("runner.workers=1", "runner.progress=off")


def run(out: Path, *overrides: str, method: dict | None = None):
    cfg = compose_config(*FAST, *overrides)
    if method is not None:
        cfg["method"] = method
    return Runner(cfg, out).run()


@pytest.fixture()
def groups_of_six(tmp_path):
    return make_folder_dataset(tmp_path / "six", groups=3, per_group=6, size=(32, 40))


def test_fixed_protocol_keeps_references_and_changes_the_method_seed(groups_of_six):
    ds = load_dataset("folder", root=str(groups_of_six))
    eps, skipped = plan_episodes(ds, "fixed", rounds=3, seed=0)
    assert not skipped
    for g in ds.groups:
        mine = [e for e in eps if e.group == g]
        assert len({e.references for e in mine}) == 1 and len({e.targets for e in mine}) == 1
        assert len({episode_seed(0, g, e.round) for e in mine}) == 3  # rounds differ only by the seed
    paper, _ = plan_episodes(ds, "paper", rounds=3, seed=0)
    assert any(len({e.references for e in paper if e.group == g}) == 3 for g in ds.groups)


def test_fixed_protocol_reads_designated_references_from_the_dataset(tmp_path):
    from benchmark.datasets.manifest import write_manifest

    root = make_folder_dataset(tmp_path / "d", groups=1, per_group=4)
    samples = list(load_dataset("folder", root=str(root)).samples.values())
    write_manifest(root, "m", samples, groups={"g0": {"references": ["g0/s2"]}})
    eps, _ = plan_episodes(load_dataset("manifest", root=str(root)), "fixed", rounds=2)
    assert all(e.references == ("g0/s2",) for e in eps)


def test_table6_target_sets_are_identical_for_k_1_to_4(groups_of_six):
    ds = load_dataset("folder", root=str(groups_of_six))
    targets: dict[int, list] = {}
    prev: dict[tuple, tuple] = {}
    for k in (1, 2, 3, 4):
        eps, _ = plan_episodes(ds, "paper", rounds=3, references=k, max_references=4, seed=0)
        assert all(len(e.references) == k for e in eps)
        targets[k] = [(e.group, e.round, e.targets) for e in eps]
        refs = {(e.group, e.round): e.references for e in eps}
        if k > 1:  # the k references are the first k of the same reserved candidates
            assert all(refs[key][: k - 1] == prev[key] for key in refs)
        prev = refs
    assert targets[1] == targets[2] == targets[3] == targets[4]
    with pytest.raises(ValueError, match="max_references"):
        plan_episodes(ds, "paper", references=3, max_references=2)


class _Seeded(BaseMethod):
    """Predicts a constant drawn from the episode seed (a stochastic method)."""

    info = MethodInfo("seeded", "in_context", frozenset({"mask"}), 1)
    seeds: list[int] = []  # noqa: RUF012 - a test probe

    def predict_one(self, target):
        type(self).seeds.append(self.seed)
        return np.full(target.image.shape[:2], np.random.default_rng(self.seed).uniform(0.2, 0.8), np.float32)


def test_methods_receive_the_episode_seed_and_rounds_spread(tmp_path, groups_of_six):
    METHODS._entries["seeded"] = _Seeded
    try:
        _Seeded.seeds = []
        run(tmp_path / "a", "method=constant", "dataset=folder", f"dataset.root={groups_of_six}",
            "runner.protocol=fixed", method={"name": "seeded"})
        first = list(_Seeded.seeds)
        _Seeded.seeds = []
        run(tmp_path / "b", "method=constant", "dataset=folder", f"dataset.root={groups_of_six}",
            "runner.protocol=fixed", method={"name": "seeded"})
    finally:
        del METHODS._entries["seeded"]
    assert first == _Seeded.seeds and len(set(first)) == 9  # 3 groups × 3 rounds, reproducible
    board = {r["region"]: r for r in leaderboard([tmp_path / "a"])}
    assert board["whole"]["SAD std"] > 0  # same references every round: the spread is the method's


def test_per_image_guidance_makes_every_image_its_own_reference(tmp_path, groups_of_six):
    out = tmp_path / "run"
    run(out, "method=reference_mask", "dataset=folder", f"dataset.root={groups_of_six}", "runner.rounds=1",
        "runner.guidance=per_image")
    rows = read_rows(out / "results.csv")
    whole = [r for r in rows if r["region"] == "whole"]
    assert len(whole) == 18 and all(r["references"] == r["target"] and r["self_reference"] == "1" for r in whole)
    assert {r["guidance"] for r in rows} == {"per_image"}
    # its own mask as the prediction: only the soft edge is wrong, far less than with another reference
    own = np.mean([float(r["SAD"]) for r in whole])
    run(tmp_path / "group", "method=reference_mask", "dataset=folder", f"dataset.root={groups_of_six}",
        "runner.rounds=1")
    other = np.mean([float(r["SAD"]) for r in read_rows(tmp_path / "group" / "results.csv") if r["region"] == "whole"])
    assert own < other


# ----------------------------------------------------------------------------- leaderboard
def test_leaderboard_refuses_different_runs_and_counts_a_folder_once(tmp_path, groups_of_six):
    base = ("method=constant", "dataset=folder", f"dataset.root={groups_of_six}", "runner.rounds=1")
    run(tmp_path / "s0", *base, "runner.seed=0")
    run(tmp_path / "s1", *base, "runner.seed=1")
    with pytest.raises(LeaderboardError, match=r"runner\.seed: 0 → 1"):
        leaderboard([tmp_path / "s0", tmp_path / "s1"])
    assert leaderboard_main([str(tmp_path / "s0"), str(tmp_path / "s1")]) == 2
    once = leaderboard([tmp_path / "s0"])
    twice = leaderboard([tmp_path / "s0", tmp_path / "s0" / ".." / "s0"])
    assert once == twice and all(r["complete"] == 1 for r in twice)
    # different methods are different rows, not a conflict
    run(tmp_path / "other", *base, "method.value=0.3")
    with pytest.raises(LeaderboardError, match=r"method\.value: 0\.5 → 0\.3"):
        leaderboard([tmp_path / "s0", tmp_path / "other"])
    run(tmp_path / "ref", "method=reference_mask", *base[1:])
    assert {r["method"] for r in leaderboard([tmp_path / "s0", tmp_path / "ref"])} == {"constant", "reference_mask"}


def test_group_and_image_weighted_means_by_hand(tmp_path):
    root = make_folder_dataset(tmp_path / "d", groups=2, per_group=2)
    extra = make_folder_dataset(tmp_path / "e", groups=1, per_group=3, seed=3)
    shutil.move(extra / "g0", root / "g2")  # groups of 2, 2 and 3 images: 1, 1 and 2 targets
    out = tmp_path / "run"
    run(out, "method=constant", "dataset=folder", f"dataset.root={root}", "runner.rounds=2",
        "runner.regions=[whole]")
    rows = read_rows(out / "results.csv")
    sad: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        sad.setdefault(r["round"], {}).setdefault(r["group"], []).append(float(r["SAD"]))
    group_w = [np.mean([np.mean(v) for v in by_group.values()]) for by_group in sad.values()]
    image_w = [np.mean([x for v in by_group.values() for x in v]) for by_group in sad.values()]
    (row,) = leaderboard([out])
    assert math.isclose(row["SAD (/1000)"], np.mean(group_w), rel_tol=1e-12)
    assert math.isclose(row["SAD std"], np.std(group_w), rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(row["image-weighted SAD (/1000)"], np.mean(image_w), rel_tol=1e-12)
    assert not math.isclose(np.mean(group_w), np.mean(image_w))  # the two weightings differ here
    by_group = board_frame([out], by="group")
    assert len(by_group) == 3 and set(by_group["group"]) == {"g0", "g1", "g2"}
    by_round = board_frame([out], by="round")
    assert sorted(by_round["SAD (/1000)"]) == pytest.approx(sorted(group_w), rel=1e-12)


def test_invalid_protocol_settings_are_refused_before_anything_is_written(tmp_path, groups_of_six):
    with pytest.raises(RunConfigError, match="max_references"):
        run(tmp_path / "run", "method=constant", "dataset=folder", f"dataset.root={groups_of_six}",
            "runner.references=2", "runner.max_references=1")
    assert not (tmp_path / "run" / "run.json").exists()
    with pytest.raises(RunConfigError, match="unknown protocol 'fixd'"):
        run(tmp_path / "run", "method=constant", "dataset=folder", f"dataset.root={groups_of_six}",
            "runner.protocol=fixd")
    assert not (tmp_path / "run" / "run.json").exists()


def test_icm57_reports_its_groups_and_warns_when_the_official_file_gives_not_57(tmp_path, icm58_dev, caplog):
    with caplog.at_level("INFO", logger="benchmark"):
        ds = load_dataset("icm57", root=str(icm58_dev), groups=str(icm58_dev / "icm58-dev.json"))
    assert f"{len(ds.groups)} groups" in caplog.text
    official = tmp_path / "ICM57.json"
    shutil.copy(icm58_dev / "icm58-dev.json", official)
    with pytest.warns(UserWarning, match=f"forms {len(ds.groups)} groups, the paper's ICM-57 has 57"):
        load_dataset("icm57", root=str(icm58_dev), groups=str(official))


def test_foreground_only_scribbles_and_counts_in_prompt_files(tmp_path):
    from benchmark.prompts import load_prompt, make_prompt, save_prompt
    from benchmark.types import BACKGROUND, FOREGROUND
    from tests.conftest import soft_disc

    alpha = np.rint(soft_disc(120, 160, 60, 80, 40) * 255).astype(np.uint8)
    both = make_prompt("scribble", alpha, seed=0, group="g", round_index=0, reference="r")
    fg_only = make_prompt("scribble", alpha, seed=0, group="g", round_index=0, reference="r", background_strokes=0)
    assert (both.scribble == BACKGROUND).any() and not (fg_only.scribble == BACKGROUND).any()
    assert (fg_only.scribble == FOREGROUND).any()
    assert fg_only.counts == {"fg_strokes": 3, "bg_strokes": 0}
    points = make_prompt("points", alpha, seed=0, group="g", round_index=0, reference="r", num_fg=4, num_bg=2)
    assert points.counts == {"fg_points": 4, "bg_points": 2}
    for prompt in (fg_only, points):
        save_prompt(tmp_path / "p.npz", prompt)
        assert load_prompt(tmp_path / "p.npz").counts == prompt.counts


class _Interactive(BaseMethod):
    """An interactive method: predicts the mask prompt drawn on each target itself."""

    info = MethodInfo("interactive", "prompt", frozenset({"mask", "points"}), 1)
    closed = 0

    def predict_one(self, target):
        assert target.prompt is not None and target.prompt.shape == target.image.shape[:2]
        return target.prompt.foreground_mask().astype(np.float32)

    def close(self) -> None:
        type(self).closed += 1


def test_interactive_methods_get_a_saved_prompt_on_every_target_and_are_closed(tmp_path, groups_of_six):
    METHODS._entries["interactive"] = _Interactive
    try:
        _Interactive.closed = 0
        out = tmp_path / "run"
        run(out, "method=constant", "dataset=folder", f"dataset.root={groups_of_six}", "runner.rounds=1",
            method={"name": "interactive"})
        assert _Interactive.closed == 1
    finally:
        del METHODS._entries["interactive"]
    rows = read_rows(out / "results.csv")
    assert {r["guidance"] for r in rows} == {"per_image"} and all(r["status"] == "ok" for r in rows)
    targets = {r["target"] for r in rows}
    assert len(targets) == 18  # every image is a target (no reference reserved), as for IconMatting*
    assert len(list((out / "prompts").glob("*.npz"))) == len(targets)  # one prompt per target, none per reference


@pytest.mark.slow
def test_per_image_guidance_end_to_end_with_a_tiny_iconmatting(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from methods.iconmatting.tiny import save_tiny_sd

    sd = save_tiny_sd(tmp_path / "sd", seed=0)
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=2, size=(72, 96))
    overrides = ("method=iconmatting", f"method.sd_path={sd}", "+method.allow_random_decoder=true",
                 "method.input_size=128", "method.ensemble_size=1", "method.device=cpu",
                 f"method.prompt_embeds_file={tmp_path / 'embeds.safetensors'}", "dataset=folder",
                 f"dataset.root={data}", "runner.rounds=1", "runner.guidance=per_image", "runner.regions=[whole]")
    stats = run(tmp_path / "out", *overrides)
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert stats.errors == 0, [r["error"] for r in rows if r["error"]]
    assert len(rows) == 4 and all(r["references"] == r["target"] and r["guidance"] == "per_image" for r in rows)
    (board,) = leaderboard([tmp_path / "out"])
    assert board["guidance"] == "per_image" and board["complete"] == 1


def test_the_official_preset_sets_method_and_runner_choices_and_names_its_rows():
    cfg = compose_config("method=iconmatting_official")
    assert cfg["method"]["name"] == "iconmatting" and cfg["method"]["label"] == "iconmatting_official"
    assert cfg["method"]["crop_fill"] == "stretch" and cfg["method"]["quantize"] == "truncate"
    assert cfg["runner"]["protocol"] == "official" and cfg["runner"]["resolution"] == "official768"
    assert compose_config("method=iconmatting_official", "runner.protocol=paper")["runner"]["protocol"] == "paper"
    assert compose_config("method=iconmatting")["runner"]["protocol"] == "paper"


@pytest.mark.slow
def test_the_official_preset_runs_and_is_recorded_in_every_row(tmp_path):
    pytest.importorskip("torch")
    from methods.iconmatting.tiny import save_tiny_sd

    sd = save_tiny_sd(tmp_path / "sd", seed=0)
    data = make_folder_dataset(tmp_path / "data", groups=1, per_group=2, size=(60, 90))
    run(tmp_path / "out", "method=iconmatting_official", f"method.sd_path={sd}", "+method.allow_random_decoder=true",
        "method.input_size=128", "method.ensemble_size=1", "method.device=cpu", "method.check_sd21=false",
        f"method.prompt_embeds_file={tmp_path / 'e.safetensors'}", "dataset=folder", f"dataset.root={data}",
        "runner.rounds=1", "runner.regions=[whole]")
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert rows and all(r["method"] == "iconmatting_official" and r["protocol"] == "official"
                        and r["resolution"] == "official768" and r["status"] == "ok" for r in rows)


def test_leaderboard_quoted_rows_are_marked_and_kept_out_of_the_means(tmp_path, icm58_dev, capsys):
    out = tmp_path / "run"
    run(out, "method=reference_mask", "dataset=icm57", f"dataset.root={icm58_dev}",
        f"dataset.groups={icm58_dev / 'icm58-dev.json'}", "runner.rounds=1", "runner.regions=[whole]")
    measured = leaderboard([out])
    assert leaderboard_main([str(out), "--quoted"]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert sum("| measured |" in line for line in lines) == len(measured) == 1
    assert any("SegGPT" in line and "quoted (Table 2)" in line and "38.810" in line for line in lines)
    assert leaderboard([out]) == measured  # quoted rows never enter the measured ones


def test_leaderboard_edge_cases_empty_shard_table6_rows_and_a_copied_shard(tmp_path, groups_of_six, capsys):
    from benchmark.paper import main as paper_main

    base = ("method=constant", "dataset=folder", f"dataset.root={groups_of_six}", "runner.rounds=1")
    run(tmp_path / "empty", *base, "runner.num_shards=4", "runner.shard=3")  # 3 groups: shard 3 has none
    assert leaderboard([tmp_path / "empty"]) == []
    run(tmp_path / "k1", *base, "runner.max_references=2")
    run(tmp_path / "k2", *base, "runner.references=2", "runner.max_references=2")
    rows = leaderboard([tmp_path / "k1", tmp_path / "k2"])  # Table 6: one board, a row per k
    assert sorted({(r["references"], r["targets"]) for r in rows}) == [("1", 12), ("2", 12)]
    run(tmp_path / "s0", *base, "runner.num_shards=2", "runner.shard=0")
    shutil.copytree(tmp_path / "s0", tmp_path / "s0copy")
    with pytest.raises(LeaderboardError, match="the same shard 0"):
        leaderboard([tmp_path / "s0", tmp_path / "s0copy"])
    run(tmp_path / "seed1", *base, "runner.seed=1")
    run(tmp_path / "seed0", *base)
    assert paper_main(["2", str(tmp_path / "seed0"), str(tmp_path / "seed1")]) == 2
    assert "runner.seed: 0 → 1" in capsys.readouterr().err


def test_fixed_protocol_draws_the_same_prompt_every_round(tmp_path, groups_of_six):
    from benchmark.prompts import load_prompt
    from benchmark.rundir import RunDir

    out = tmp_path / "run"
    run(out, "method=constant", "prompt=scribble", "dataset=folder", f"dataset.root={groups_of_six}",
        "runner.protocol=fixed")
    rd = RunDir(out)
    for group in ("g0", "g1", "g2"):
        eps = [e for e in rd.read_plan().episodes if e.group == group]
        prompts = [load_prompt(rd.prompt_file(e.key, e.references[0])).scribble for e in eps]
        assert len(prompts) == 3 and all(np.array_equal(prompts[0], p) for p in prompts[1:])


def test_designated_references_are_part_of_the_dataset_fingerprint(tmp_path):
    from benchmark.datasets.manifest import write_manifest

    root = make_folder_dataset(tmp_path / "d", groups=1, per_group=4)
    samples = list(load_dataset("folder", root=str(root)).samples.values())
    write_manifest(root, "m", samples, groups={"g0": {"references": ["g0/s2"]}})
    a = load_dataset("manifest", root=str(root)).fingerprint
    write_manifest(root, "m", samples, groups={"g0": {"references": ["g0/s2", "g0/s3"]}})
    assert load_dataset("manifest", root=str(root)).fingerprint != a


def test_run_folders_of_other_paper_tables_get_their_own_names():
    from benchmark.hydra_names import run_suffix

    assert run_suffix(0, 1) == ""
    assert run_suffix(0, 1, "per_image") == "-per_image"
    assert run_suffix(1, 4, "group", 2, None) == "-k2-shard1of4"
    assert run_suffix(0, 1, "group", 1, 4) == "-k1of4"
