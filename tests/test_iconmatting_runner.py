"""IconMatting through the benchmark runner, on a tiny random SD-shaped model (no downloads)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from methods.iconmatting.tiny import save_tiny_sd
from tests.conftest import make_folder_dataset
from tests.runner_helpers import read_rows
from tests.test_runner import run


@pytest.mark.slow
def test_iconmatting_end_to_end_through_runner_and_resume(tmp_path):
    sd = save_tiny_sd(tmp_path / "sd", seed=0)
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=2, size=(72, 96))
    overrides = ("method=iconmatting", f"method.sd_path={sd}", "+method.allow_random_decoder=true",
                 "method.input_size=128", "method.ensemble_size=1", "method.device=cpu",
                 f"method.prompt_embeds_file={tmp_path / 'embeds.safetensors'}",
                 "dataset=folder", f"dataset.root={data}", "runner.rounds=2")
    stats = run(tmp_path / "out", *overrides)
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert stats.errors == 0, [r["error"] for r in rows if r["error"]]
    assert len(rows) == 2 * 2 * 1 * 2  # groups × rounds × targets × regions
    assert all(float(r["SAD"]) >= 0 and r["method_hash"] for r in rows)
    assert (tmp_path / "embeds.safetensors").is_file()  # the text encoder ran once, its output is cached
    before = (tmp_path / "out" / "results.csv").read_bytes()
    again = run(tmp_path / "out", *overrides)
    assert again.episodes_resumed == 4 and again.targets == 0
    assert (tmp_path / "out" / "results.csv").read_bytes() == before
