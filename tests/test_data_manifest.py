"""Manifest v2: the builder writes it canonically and resumably, the benchmark reads it (v1 still read),
the fingerprint comes from its checksums, and ``python -m data_tools`` dispatches lazily."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets import load_dataset
from benchmark.datasets.common import fingerprint
from benchmark.datasets.manifest import canonical_json, write_manifest
from benchmark.runner import Runner
from data_tools.__main__ import COMMANDS, HELP, main
from data_tools.build import DatasetBuilder, FileEntry, file_entry, png_bytes
from tests.conftest import make_folder_dataset
from tests.data_helpers import build_v2
from tests.runner_helpers import compose_config, read_rows


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "src", groups=2, per_group=3, size=(24, 32))


@pytest.fixture()
def built(tmp_path: Path, folder: Path) -> Path:
    return build_v2(load_dataset("folder", root=str(folder)), tmp_path / "v2", name="tiny")


def test_builder_writes_canonical_v2_that_the_loader_maps_onto_the_value_types(built: Path):
    text = built.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert text == canonical_json(doc) == json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    assert doc["format"] == "icmbench-dataset" and doc["version"] == 2
    assert [(s["group"], s["id"]) for s in doc["samples"]] == sorted((s["group"], s["id"]) for s in doc["samples"])
    s0 = doc["samples"][0]
    img = s0["image"]
    data = (built.parent / img["path"]).read_bytes()
    assert img["sha256"] == hashlib.sha256(data).hexdigest() and img["bytes"] == len(data)
    assert (img["width"], img["height"]) == (32, 24)
    assert set(doc["groups"]["g0"]) == {"type", "class", "references", "prompt_seed", "meta"}

    ds = load_dataset("manifest", root=str(built.parent))
    assert len(ds.samples) == 6 and list(ds.groups) == ["g0", "g1"]
    sample = ds.samples[s0["id"]]
    assert {k: sample.meta[k] for k in ("class", "source", "licence", "split")} == {
        "class": s0["class"], "source": s0["source"], "licence": s0["licence"], "split": "test"}
    assert ds.groups["g0"].meta["type"] == "category" and ds.groups["g0"].meta["prompt_seed"] == 0


def test_two_builds_are_byte_identical_and_a_rebuild_resumes(tmp_path: Path, folder: Path):
    ds = load_dataset("folder", root=str(folder))
    a, b = build_v2(ds, tmp_path / "a"), build_v2(ds, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.png")}
    builder = DatasetBuilder(tmp_path / "a", "x", created_by="t")
    for p in before:
        builder.place(p, p.relative_to(tmp_path / "a").as_posix())
    assert builder.placed == 0 and builder.skipped == len(before)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten


def test_v2_fingerprint_hashes_the_stored_checksums_and_v1_is_unchanged(tmp_path: Path, built: Path, folder: Path):
    root = built.parent
    ds = load_dataset("manifest", root=str(root))
    doc = json.loads(built.read_text())
    doc["samples"][0]["image"]["sha256"] = "0" * 64
    built.write_text(canonical_json(doc))
    assert load_dataset("manifest", root=str(root)).fingerprint != ds.fingerprint

    v1 = load_dataset("folder", root=str(folder))
    assert fingerprint(v1.name, v1.samples, v1.groups, v1.root) == _v1_fingerprint(v1) == v1.fingerprint
    write_manifest(folder, "m", list(v1.samples.values()))
    m1 = load_dataset("manifest", root=str(folder))
    assert m1.fingerprint == _v1_fingerprint(m1)


def _v1_fingerprint(ds) -> str:
    """The fingerprint as it was before manifest v2 (ids, groups, relative paths, sizes)."""
    def rel(p):
        return None if p is None else [str(p.relative_to(ds.root)), p.stat().st_size]
    payload = {"name": ds.name,
               "samples": [[s.id, s.group, rel(s.image_path), rel(s.alpha_path), rel(s.trimap_path)]
                           for s in sorted(ds.samples.values(), key=lambda s: s.id)],
               "groups": {k: list(g.sample_ids) for k, g in sorted(ds.groups.items())}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("rel", ["../x.png", "/abs/x.png", "a//b.png", "./a.png", "a/../b.png", "a\\b.png", "", "a\n"])
def test_paths_must_stay_inside_the_output(tmp_path: Path, rel: str):
    b = DatasetBuilder(tmp_path / "out", "x", created_by="t")
    with pytest.raises(ValueError):
        b.write_bytes(b"x", rel)
    with pytest.raises(ValueError):
        b.add_sample("s", "g", image=rel or "", alpha=None)


def test_a_symlink_out_of_the_output_is_refused(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "link")
    with pytest.raises(ValueError, match="outside"):
        DatasetBuilder(tmp_path / "out", "x", created_by="t").write_bytes(b"x", "link/a.png")


def test_write_checks_the_grouping(tmp_path: Path):
    png = png_bytes(np.zeros((4, 5), np.uint8))

    def builder() -> DatasetBuilder:
        b = DatasetBuilder(tmp_path / "o", "x", created_by="t")
        b.write_bytes(png, "a.png")
        return b

    b = builder()
    b.add_sample("s", "g", image="a.png", alpha="a.png")
    with pytest.raises(ValueError, match="duplicate sample id"):
        b.add_sample("s", "g", image="a.png", alpha=None)
    with pytest.raises(ValueError, match=r"'g'.*not added"):
        b.write()
    b.add_group("g", type="instance", references=["nope"])
    with pytest.raises(ValueError, match="references"):
        b.write()
    with pytest.raises(ValueError, match="type"):
        b.add_group("h", type="other")
    b = builder()
    b.add_group("empty", type="category")
    with pytest.raises(ValueError, match="no samples"):
        b.write()
    b = builder()
    b.add_group("g", type="instance", class_name="dog", references=["s"], prompt_seed=4)
    b.add_sample("s", "g", image="a.png", alpha="a.png")
    doc = json.loads(b.write().read_text())
    assert doc["samples"][0]["class"] == "dog"  # inherited from the group
    assert doc["samples"][0]["alpha"] == doc["samples"][0]["image"] == \
        {"path": "a.png", "sha256": hashlib.sha256(png).hexdigest(), "bytes": len(png), "width": 5, "height": 4}
    assert file_entry(tmp_path / "o", "a.png") == FileEntry("a.png", hashlib.sha256(png).hexdigest(), len(png), 5, 4)


def test_png_bytes_is_deterministic_and_lossless():
    a = np.random.default_rng(0).integers(0, 256, (17, 23), dtype=np.uint8)
    assert png_bytes(a) == png_bytes(a.copy())
    import io

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(a)))), a)


def test_outside_paths_in_a_v2_manifest_stay_contained(built: Path):
    doc = json.loads(built.read_text())
    doc["samples"][0]["image"]["path"] = "../src/g0/image/s0.png"
    built.write_text(canonical_json(doc))
    with pytest.warns(UserWarning, match="outside"):
        ds = load_dataset("manifest", root=str(built.parent))
    assert doc["samples"][0]["id"] not in ds.samples
    assert ds.meta["problems"][0]["sample"] == doc["samples"][0]["id"]


def test_a_v2_manifest_runs_through_the_benchmark_with_designated_references(tmp_path: Path, folder: Path):
    b = DatasetBuilder(tmp_path / "d", "tiny", created_by="t")
    ds = load_dataset("folder", root=str(folder))
    for g in ds.groups:
        b.add_group(g, type="category", references=[f"{g}/s2"])
    for s in ds.samples.values():
        b.add_sample(s.id, s.group, image=b.place(s.image_path, f"image/{s.group}_{s.image_path.name}"),
                     alpha=b.place(s.alpha_path, f"alpha/{s.group}_{s.alpha_path.name}"))
    b.write()
    cfg = compose_config("dataset=manifest", f"dataset.root={tmp_path / 'd'}", "method=constant",
                         "runner.protocol=fixed", "runner.rounds=2", "runner.workers=1", "runner.progress=off")
    stats = Runner(cfg, tmp_path / "run").run()
    rows = read_rows(tmp_path / "run" / "results.csv")
    assert stats.errors == 0 and rows and all(r["status"] == "ok" for r in rows)
    assert {r["references"] for r in rows} == {"g0/s2", "g1/s2"}
    assert {r["dataset_hash"] for r in rows} == {load_dataset("manifest", root=str(tmp_path / "d")).fingerprint}


def test_cli_lists_every_command_and_dispatches_lazily(capsys, tmp_path: Path):
    assert set(HELP) == set(COMMANDS)
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["validate", str(tmp_path / "missing.json")]) == 2  # bad input
    assert main(["stats", "--help"]) == 0
    assert "--format" in capsys.readouterr().out
