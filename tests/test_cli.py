"""The command lines as a user types them: the main job, --help, the leaderboard and rescore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_main_job_on_synthetic_then_resume(tmp_path):
    cmd = ["-m", "benchmark", "method=constant", "dataset=synthetic", "dataset.num_groups=2",
           "dataset.images_per_group=3", "dataset.size=[48,64]", f"dataset.root={tmp_path / 'data'}",
           f"hydra.run.dir={tmp_path / 'run'}", "runner.rounds=2"]
    first = sh(*cmd)
    assert first.returncode == 0, first.stderr
    assert "| constant | synthetic | mask | in_context | 1 | paper | whole |" in first.stdout
    for name in ("results.csv", "leaderboard.csv", "leaderboard.md", ".hydra/config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    results = (tmp_path / "run" / "results.csv").read_bytes()
    again = sh(*cmd)
    assert again.returncode == 0 and "(4 resumed), 0 new targets" in again.stdout
    assert (tmp_path / "run" / "results.csv").read_bytes() == results
    board = sh("-m", "benchmark.leaderboard", str(tmp_path / "run"), "--out", str(tmp_path / "b.csv"))
    assert board.returncode == 0 and (tmp_path / "b.csv").read_text().startswith("method,dataset")
    assert sh("-m", "benchmark.rescore", str(tmp_path / "run")).returncode == 0
    assert (tmp_path / "run" / "results.csv").read_bytes() == results


def test_help_explains_groups_and_examples():
    out = sh("-m", "benchmark", "--help")
    assert out.returncode == 0
    for text in ("method: ", "dataset: ", "prompt: ", "classical", "icm57", "runner", "Examples"):
        assert text in out.stdout, text


def test_unknown_method_and_missing_root_are_clear_errors(tmp_path):
    out = sh("-m", "benchmark", "method=constant", "dataset=icm57", f"dataset.root={tmp_path / 'nope'}",
             f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0 and "dataset root folder not found" in out.stderr
    out = sh("-m", "benchmark", "method=clasical", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0 and "classical" in out.stderr
