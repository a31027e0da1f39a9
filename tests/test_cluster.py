"""Many machines: sweep folder names, the SLURM launcher config, a submitit multirun over shards
and the Ray launcher, each merged leaderboard equal to the unsharded one."""

from __future__ import annotations

import itertools
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from benchmark.hydra_names import EMPTY_NAME, MAX_NAME, override_dirname, shard_suffix
from benchmark.leaderboard import leaderboard
from benchmark.runner import Runner
from tests.runner_helpers import assert_same_board, compose_config, read_rows

FAST = ("runner.rounds=1", "runner.workers=1", "runner.progress=off")
SAFE_NAME = re.compile(r"[A-Za-z0-9._=,+-]+")


def icm_overrides(root: Path) -> tuple[str, ...]:
    return ("method=reference_mask", "dataset=icm57", f"dataset.root={root}", f"dataset.groups={root}/icm58-dev.json")


@pytest.fixture(scope="module")
def full_board(icm58_dev, tmp_path_factory) -> list[dict]:
    """The leaderboard of one unsharded run (the reference every merged run must equal)."""
    out = tmp_path_factory.mktemp("full") / "run"
    Runner(compose_config(*icm_overrides(icm58_dev), *FAST), out).run()
    return leaderboard([out])


def hydra_config(*overrides: str):
    with initialize_config_module(config_module="conf", version_base=None):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


# ---------------------------------------------------------------- folder names
def test_swept_keys_name_the_folder_sorted_by_key():
    assert override_dirname(["runner.shard=0", "runner.num_shards=4"]) == "runner.num_shards=4,runner.shard=0"
    assert override_dirname(["runner.shard=1", "runner.num_shards=4"]) != override_dirname(
        ["runner.shard=0", "runner.num_shards=4"])


def test_prefix_groups_paths_and_execution_keys_are_left_out():
    left_out = ["method=iconmatting", "dataset=icm57", "prompt=points", "dataset.root=/data/ICM57",
                "dataset.groups=ICM57.json", "dataset.path=x", "method.sd_path=sd21", "method.device=cuda",
                "hydra.launcher.timeout_min=5", "hydra/launcher=submitit_local", "runner.workers=8",
                "runner.progress=off", "runner.overwrite=true", "runner.retry_errors=true", "runner.batch_size=8"]
    runtime = {"device", "checkpoint", "sd_path"}
    assert override_dirname(left_out, runtime) == EMPTY_NAME
    assert override_dirname([*left_out, "runner.rounds=1"], runtime) == "runner.rounds=1"
    assert override_dirname(["method.long_side=64", "prompt.num_fg=3"]) == "method.long_side=64,prompt.num_fg=3"
    # weights and other path values are shown by their last part, so a sweep over checkpoints splits
    assert override_dirname(["method.checkpoint=/c/e10.pt"], runtime) == "method.checkpoint=e10.pt"
    assert override_dirname(["method.checkpoint=e20.pt"], runtime) == "method.checkpoint=e20.pt"
    assert override_dirname([r"runner.note=C:\data\x", "+method.extra=../weights/"]) == \
        "method.extra=weights,runner.note=x"


def test_unsafe_characters_are_escaped_and_names_never_collide():
    name = override_dirname(["prompt.note=a b,c+d", "runner.regions=[whole,unknown]", "+x.y=ü"])
    assert name == "prompt.note=a+20b+2Cc+2Bd,runner.regions=+5Bwhole+2Cunknown+5D,x.y=+C3+BC"
    assert SAFE_NAME.fullmatch(name)
    assert override_dirname(["a.b=1,c.d=2"]) != override_dirname(["a.b=1", "c.d=2"])
    assert override_dirname(["~runner.seed"]) == "+7Erunner.seed"


def test_names_are_deterministic_and_fit_a_file_name():
    items = ["runner.shard=2", "runner.num_shards=4", "runner.seed=7", "prompt.num_fg=3"]
    assert len({override_dirname(p) for p in itertools.permutations(items)}) == 1
    long_a = [f"runner.k{i}={'v' * 30}" for i in range(20)]
    long_b = [*long_a[:-1], f"runner.k19={'w' * 30}"]
    a, b = override_dirname(long_a), override_dirname(long_b)
    assert len(a) <= MAX_NAME and len(b) <= MAX_NAME and a != b and SAFE_NAME.fullmatch(a)
    assert override_dirname(long_a) == a


def test_shard_suffix():
    assert shard_suffix(0, 1) == ""
    assert shard_suffix("2", "4") == "-shard2of4"


def test_hydra_folders_follow_the_overrides():
    cfg = hydra_config("method=reference_mask", "runner.shard=1", "runner.num_shards=4", "dataset.root=/x/y")
    assert OmegaConf.select(cfg, "hydra.sweep.subdir") == (
        "reference_mask/mask-paper-original/runner.num_shards=4,runner.shard=1")
    assert OmegaConf.select(cfg, "hydra.run.dir") == "outputs/synthetic/reference_mask/mask-paper-original-shard1of4"
    assert cfg.hydra.output_subdir is None
    plain = hydra_config("method=reference_mask")
    assert OmegaConf.select(plain, "hydra.run.dir") == "outputs/synthetic/reference_mask/mask-paper-original"
    assert OmegaConf.select(plain, "hydra.sweep.subdir").endswith(f"/{EMPTY_NAME}")


# ---------------------------------------------------------------- SLURM
def test_slurm_gpu_config_makes_a_one_gpu_sbatch_script(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = hydra_config("hydra/launcher=slurm_gpu", "method=reference_mask", "hydra.launcher.partition=a100")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("SlurmLauncher")
    assert cfg.runner.workers is None  # each job uses the CPUs SLURM gave it
    # what SlurmLauncher.launch does with these parameters, short of calling sbatch
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path, slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("_target_", "submitit_folder", "max_num_timeout")})
    script = executor._executor._make_submission_file_text("python -m benchmark", "uid")
    for line in ("--gpus-per-node=1", "--cpus-per-task=8", "--partition=a100", "--ntasks-per-node=1",
                 "--job-name=icm-reference_mask-synthetic"):
        assert f"#SBATCH {line}\n" in script, line


# ---------------------------------------------------------------- submitit (local)
@pytest.mark.slow
def test_submitit_multirun_writes_one_folder_per_shard(icm58_dev, full_board, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "benchmark", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
           "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={sweep}", *icm_overrides(icm58_dev), *FAST,
           "runner.shard=0,1,2,3", "runner.num_shards=4"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dirs = sorted(p.parent for p in sweep.rglob("results.csv"))
    assert [d.name for d in dirs] == [f"runner.num_shards=4,runner.rounds=1,runner.shard={i}" for i in range(4)]
    assert all(d.parent == sweep / "reference_mask" / "mask-paper-original" for d in dirs)
    assert sum(len(read_rows(d / "results.csv")) for d in dirs) == sum(r["targets"] for r in full_board)
    assert_same_board(leaderboard(dirs), full_board)


# ---------------------------------------------------------------- Ray
@pytest.fixture()
def ray_env(monkeypatch):
    """A local Ray instance that writes nothing outside /tmp: a token in the environment stops Ray
    saving a fresh one under ~/.ray (token authentication stays on)."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    yield
    import ray

    assert not ray.is_initialized()


def ray_args(root: Path, out: Path, num_shards: int) -> list[str]:
    return ["--address", "local", "--num-cpus", "2", "--num-shards", str(num_shards), "--out", str(out), "--",
            *icm_overrides(root), "runner.rounds=1", "runner.progress=off"]


@pytest.mark.slow
def test_ray_failed_shard_is_reported_then_a_rerun_completes(icm58_dev, full_board, tmp_path, ray_env, capsys):
    from benchmark.ray_launch import main

    out = tmp_path / "ray"
    out.mkdir()
    (out / "shard1of2").write_text("a file where shard 1's folder belongs\n")
    assert main(ray_args(icm58_dev, out, 2)) == 1
    err = capsys.readouterr().err
    assert "error: shard 1/2 failed:" in err and "shard 0/2 failed" not in err
    partial = read_rows(out / "leaderboard.csv")
    assert partial and all(r["complete"] == "0" for r in partial)

    (out / "shard1of2").unlink()
    assert main(ray_args(icm58_dev, out, 2)) == 0
    captured = capsys.readouterr()
    assert "| reference_mask | icm57 | mask |" in captured.out and "error: shard" not in captured.err
    dirs = [out / "shard0of2", out / "shard1of2"]
    assert_same_board(leaderboard(dirs), full_board)
    assert [r["complete"] for r in read_rows(out / "leaderboard.csv")] == ["1"] * len(full_board)
    assert (out / "leaderboard.md").is_file()


def test_ray_launch_rejects_bad_arguments_before_starting_ray(tmp_path, capsys):
    from benchmark.ray_launch import main, parse_args, shard_overrides

    for argv in (["--address", "local", "--num-shards", "2", "--out", str(tmp_path), "--", "runner.shard=1"],
                 ["--address", "auto", "--num-cpus", "2", "--num-shards", "2", "--out", str(tmp_path)],
                 ["--address", "local", "--num-shards", "0", "--out", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0 and "--num-shards" in capsys.readouterr().out
    assert main(["--address", "local", "--num-shards", "2", "--out", str(tmp_path), "--", "method=nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert shard_overrides(["a=1"], 1, 4, 3) == ["a=1", "runner.shard=1", "runner.num_shards=4", "runner.workers=3"]
    assert shard_overrides(["runner.workers=1"], 0, 2, 3) == ["runner.workers=1", "runner.shard=0",
                                                                "runner.num_shards=2"]
