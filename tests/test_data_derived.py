"""``derive``: the stored trimaps and reference prompts are exactly what a benchmark run uses."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.datasets import load_dataset
from benchmark.episodes import plan_episodes
from benchmark.io import read_trimap
from benchmark.prompts import load_prompt
from benchmark.runner import Runner
from benchmark.views import load_view
from data_tools.__main__ import main
from data_tools.build import DatasetBuilder
from data_tools.derived import prompt_rel, trimap_rel
from tests.conftest import make_folder_dataset
from tests.runner_helpers import compose_config, read_rows

SEED, ROUNDS = 3, 2


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """Two groups of four (one with a designated reference) and one with a trimap file, as manifest v2."""
    src = make_folder_dataset(tmp_path / "src", groups=2, per_group=4, size=(64, 160))
    ds = load_dataset("folder", root=str(src))
    b = DatasetBuilder(tmp_path / "d", "tiny", created_by="test")
    b.add_group("g0", type="instance", references=["g0/s1"])
    b.add_group("g1", type="category")
    for s in ds.samples.values():
        name = s.id.replace("/", "_")
        trimap = None
        if s.id == "g1/s0":
            from benchmark.trimaps import derive_trimap
            from data_tools.build import png_bytes
            from metrics.io import read_alpha

            trimap = b.write_bytes(png_bytes(derive_trimap(read_alpha(s.alpha_path), radius=5)), "trimap/x.png")
        b.add_sample(s.id, s.group, image=b.place(s.image_path, f"image/{name}.png"),
                     alpha=b.place(s.alpha_path, f"alpha/{name}.png"), trimap=trimap)
    b.write()
    return tmp_path / "d"


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
        return {n: z.read(n) for n in z.namelist()}


def _same_prompt(run_file: Path, derived_file: Path) -> None:
    """Bit for bit: every array in the two .npz files has the same bytes, and they load the same."""
    assert _members(run_file) == _members(derived_file)
    a, b = load_prompt(run_file), load_prompt(derived_file)
    assert a.kind == b.kind and a.shape == b.shape and a.points == b.points and a.counts == b.counts
    for x, y in ((a.mask, b.mask), (a.scribble, b.scribble)):
        assert (x is None and y is None) or (x.dtype == y.dtype and np.array_equal(x, y))


@pytest.mark.parametrize(("protocol", "kind"), [("paper", "scribble"), ("fixed", "points"), ("official", "mask")])
def test_a_run_and_the_derived_files_agree_bit_for_bit(dataset: Path, tmp_path: Path, protocol: str, kind: str):
    argv = ["derive", str(dataset), "--rounds", str(ROUNDS), "--seed", str(SEED), "--protocol", protocol,
            "--kinds", kind, "--workers", "2"]
    assert main(argv) == 0
    cfg = compose_config("dataset=manifest", f"dataset.root={dataset}", "method=constant", f"prompt={kind}",
                         f"runner.protocol={protocol}", f"runner.rounds={ROUNDS}", f"runner.seed={SEED}",
                         "runner.workers=1", "runner.progress=off")
    runner = Runner(cfg, tmp_path / "run")
    assert runner.run().errors == 0
    ds = load_dataset("manifest", root=str(dataset))
    episodes, _ = plan_episodes(ds, protocol, ROUNDS, seed=SEED)
    record = json.loads((dataset / "manifest.json").read_text())["meta"]["derived"]
    listed = {(p["round"], p["reference"]) for p in record["prompts"]["files"]}
    compared = 0
    for e in episodes:
        for ref in e.references:
            _same_prompt(runner.rd.prompt_file(e.key, ref), dataset / prompt_rel(e.round, kind, ref))
            assert (e.round, ref) in listed
            compared += 1
    assert compared == len(listed) and compared >= ROUNDS * 2
    if protocol == "fixed":
        assert {e.references for e in episodes if e.group == "g0"} == {("g0/s1",)}

    rows = read_rows(tmp_path / "run" / "results.csv")
    sources = {r["target"]: r["trimap_source"] for r in rows if r["region"] == "unknown"}
    for sid, entry in record["trimaps"]["files"].items():
        sample = ds.samples[sid]
        derived = read_trimap(dataset / trimap_rel(sid))
        assert np.array_equal(load_view(sample, "original", record["trimaps"]["radius_fraction"]).trimap, derived) \
            or sample.trimap_path is not None  # the runner uses a trimap file where there is one
        assert entry["has_trimap_file"] == (sample.trimap_path is not None)
        if sid in sources and sample.trimap_path is None:
            assert sources[sid] == entry["source"]  # derived-r<R>: the same radius


def test_derive_is_reproducible_and_resumes(dataset: Path):
    manifest = dataset / "manifest.json"
    assert main(["derive", str(dataset), "--rounds", "2"]) == 0
    first = manifest.read_bytes()
    files = {p: p.read_bytes() for p in (dataset / "derived").rglob("*") if p.is_file()}
    assert main(["derive", str(dataset), "--rounds", "2"]) == 0
    assert manifest.read_bytes() == first
    assert {p: p.read_bytes() for p in files} == files
    record = json.loads(first)["meta"]["derived"]
    assert set(record["prompts"]["kinds"]) == {"mask", "scribble", "points"}
    assert len(record["trimaps"]["files"]) == 8
    assert load_dataset("manifest", root=str(dataset)).fingerprint  # still loads
    assert main(["validate", str(dataset)]) == 0


def test_a_runs_prompt_files_are_byte_identical_to_derived_ones():
    """save_prompt writes fixed zip timestamps: the same prompt gives the same bytes at any time."""
    import time

    from benchmark.prompts import load_prompt, prompt_bytes, save_prompt
    from benchmark.types import Prompt

    prompt = Prompt("points", (4, 5), points=((1, 2, True), (3, 0, False)))
    first = prompt_bytes(prompt)
    time.sleep(2.1)  # zip timestamps have a 2-second resolution
    assert prompt_bytes(prompt) == first
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        save_prompt(Path(tmp) / "p.npz", prompt)
        assert (Path(tmp) / "p.npz").read_bytes() == first
        assert load_prompt(Path(tmp) / "p.npz").points == prompt.points
