"""Episodes, prompts, loaders and registries: the deterministic parts of the protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets import DATASETS, load_dataset
from benchmark.datasets.common import DatasetError
from benchmark.datasets.manifest import load_manifest, write_manifest
from benchmark.episodes import plan_episodes, shard_groups
from benchmark.prompts import PromptError, load_prompt, make_prompt, save_prompt
from benchmark.registry import UnknownNameError
from benchmark.trimaps import derive_trimap
from benchmark.types import BACKGROUND, FOREGROUND
from methods import METHODS
from tests.conftest import make_folder_dataset, soft_disc


@pytest.fixture()
def dataset(tmp_path):
    root = make_folder_dataset(tmp_path / "d", groups=3, per_group=4)
    # add a singleton group and a pair
    make_folder_dataset(tmp_path / "single", groups=1, per_group=1, seed=5)
    (tmp_path / "single" / "g0").rename(root / "solo")
    make_folder_dataset(tmp_path / "pair", groups=1, per_group=2, seed=6)
    (tmp_path / "pair" / "g0").rename(root / "pair")
    return load_dataset("folder", root=str(root))


def test_paper_protocol_fixed_distinct_references(dataset):
    eps, skipped = plan_episodes(dataset, "paper", rounds=3, seed=0)
    assert [s.group for s in skipped] == ["solo"]
    g0 = [e for e in eps if e.group == "g0"]
    assert [e.round for e in g0] == [0, 1, 2]
    assert len({e.references for e in g0}) == 3  # ≥ 3 images: different references
    for e in g0:
        assert set(e.targets) | set(e.references) == set(dataset.groups["g0"].sample_ids)
        assert not set(e.targets) & set(e.references)
    pair = [e for e in eps if e.group == "pair"]
    assert len({e.references for e in pair}) == 2
    assert plan_episodes(dataset, "paper", rounds=3, seed=0)[0] == eps
    assert plan_episodes(dataset, "paper", rounds=3, seed=1)[0] != eps


def test_singletons_self_and_multi_reference(dataset):
    eps, skipped = plan_episodes(dataset, "paper", rounds=1, singletons="self")
    solo = [e for e in eps if e.group == "solo"]
    assert not skipped and solo[0].self_reference and solo[0].references == solo[0].targets
    eps, skipped = plan_episodes(dataset, "paper", rounds=2, references=3)
    assert {s.group for s in skipped} == {"solo", "pair"}
    assert all(len(e.references) == 3 and len(e.targets) == 1 for e in eps)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        plan_episodes(dataset, references=5)


def test_official_protocol_excludes_self_only_in_groups_above_two(dataset):
    eps, _ = plan_episodes(dataset, "official", rounds=2, seed=3)
    for e in eps:
        n = len(dataset.groups[e.group].sample_ids)
        if n > 2:
            assert e.references[0] not in e.targets
    per_round = {}
    for e in eps:
        for t in e.targets:
            per_round.setdefault(e.round, []).append(t)
    assert all(sorted(v) == sorted(dataset.samples) for v in per_round.values())


def test_shards_partition_groups():
    groups = [f"g{i}" for i in range(7)]
    parts = [shard_groups(groups, i, 3) for i in range(3)]
    assert set().union(*parts) == set(groups) and sum(map(len, parts)) == 7


def test_prompts_are_seeded_inside_the_right_region(tmp_path):
    alpha = np.rint(soft_disc(120, 160, 60, 80, 40) * 255).astype(np.uint8)
    kw = dict(seed=0, group="g", round_index=1, reference="r")
    mask = make_prompt("mask", alpha, **kw)
    assert mask.mask.sum() == (alpha > 127).sum()
    scrib = make_prompt("scribble", alpha, **kw)
    lab = scrib.labels()
    assert (lab == FOREGROUND).any() and (lab == BACKGROUND).any()
    assert (alpha[lab == FOREGROUND] == 255).all() and (alpha[lab == BACKGROUND] == 0).all()
    pts = make_prompt("points", alpha, num_bg=2, **kw)
    assert sum(p[2] for p in pts.points) == 5 and sum(not p[2] for p in pts.points) == 2
    assert all(alpha[y, x] > 127 if fg else alpha[y, x] == 0 for y, x, fg in pts.points)
    assert make_prompt("points", alpha, **kw).points == make_prompt("points", alpha, **kw).points
    assert make_prompt("points", alpha, **{**kw, "round_index": 2}).points != pts.points[:5]
    for p in (mask, scrib, pts):
        save_prompt(tmp_path / "p.npz", p)
        q = load_prompt(tmp_path / "p.npz")
        assert q.kind == p.kind and q.points == p.points and np.array_equal(q.labels(), p.labels())


def test_empty_prompt_is_a_clear_error():
    tiny = np.zeros((100, 100), np.uint8)
    tiny[50, 50] = 255
    with pytest.raises(PromptError, match="too small"):
        make_prompt("scribble", tiny, seed=0, group="g", round_index=0, reference="r")
    with pytest.raises(PromptError, match="no pixel"):
        make_prompt("mask", np.zeros((8, 8), np.uint8), seed=0, group="g", round_index=0, reference="r")


def test_derived_trimap_rule():
    alpha = np.zeros((60, 60), np.uint8)
    alpha[10:50, 10:50] = 255
    alpha[30, 30] = 100
    t = derive_trimap(alpha, radius=2)
    assert set(np.unique(t)) == {0, 128, 255}
    assert t[30, 30] == 128 and t[28, 30] == 128 and t[27, 30] == 255
    assert t[0, 0] == 0 and t[8, 30] == 128 and t[7, 30] == 0


def test_manifest_round_trip_and_fingerprint(tmp_path):
    root = make_folder_dataset(tmp_path / "d", groups=2, per_group=2)
    ds = load_dataset("folder", root=str(root))
    write_manifest(root, "mine", list(ds.samples.values()), {g: {"type": "category"} for g in ds.groups})
    again = load_manifest(root=str(root))
    assert again.name == "mine" and list(again.samples) == list(ds.samples)
    assert again.groups["g0"].meta == {"type": "category"}
    fp = again.fingerprint
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(root / "g0" / "alpha" / "s0.png", compress_level=0)
    assert load_manifest(root=str(root)).fingerprint != fp  # a file's size changed
    doc = json.loads((root / "manifest.json").read_text())
    doc["samples"][0]["image"] = "nope.png"
    (root / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"nope\.png"):
        load_manifest(root=str(root))


def test_folder_paired_names_and_aim500(tmp_path):
    g = tmp_path / "paired" / "cats"
    g.mkdir(parents=True)
    img = np.zeros((20, 30, 3), np.uint8)
    for i in range(2):
        Image.fromarray(img).save(g / f"c{i}.jpg")
        Image.fromarray(img[..., 0]).save(g / f"c{i}_alpha.png")
    ds = load_dataset("folder", root=str(tmp_path / "paired"))
    assert sorted(ds.samples) == ["cats/c0", "cats/c1"]
    aim = tmp_path / "aim"
    for sub in ("original", "mask", "trimap"):
        (aim / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(img).save(aim / "original" / f"p_{i}.jpg")
        Image.fromarray(img[..., 0]).save(aim / "mask" / f"p_{i}.png")
    (aim / "groups.csv").write_text("image,group\np_0.jpg,a\np_1.jpg,a\np_2.jpg,b\np_3.jpg,b\n")
    with pytest.warns(UserWarning):
        ds = load_dataset("aim500", root=str(aim), groups=str(aim / "groups.csv"))
    assert {k: len(v.sample_ids) for k, v in ds.groups.items()} == {"a": 2, "b": 1}
    assert ds.meta["problems"][0]["sample"] == "p_3"


def test_icm58_dev_loads_with_official_group_keys(icm58_dev):
    ds = load_dataset("icm57", root=str(icm58_dev), groups=str(icm58_dev / "icm58-dev.json"))
    assert len(ds.samples) == 27 and len(ds.groups) == 11
    assert "teddy_bear-None-full" in ds.groups and len(ds.groups["plush_toy-None-full"].sample_ids) == 7
    assert sum(s.trimap_path is not None for s in ds.samples.values()) == 13
    with pytest.raises(DatasetError, match="grouping JSON not found"):
        load_dataset("icm57", root=str(icm58_dev), groups=str(icm58_dev / "missing.json"))


def test_registries_suggest_close_names():
    with pytest.raises(UnknownNameError, match=r"did you mean 'classical'"):
        METHODS.get("clasical")
    with pytest.raises(UnknownNameError, match="available: aim500"):
        DATASETS.get("zzz")


def test_ls_lists_one_name_per_line():
    out = subprocess.run([sys.executable, "-m", "benchmark.ls", "methods", "--names"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == sorted(METHODS.names())
    assert {"classical", "constant", "reference_mask", "trimap_matting", "iconmatting"} <= set(out)


def test_ls_methods_says_guidance_and_why_quoted_only():
    out = subprocess.run([sys.executable, "-m", "benchmark.ls", "methods"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in out}
    assert set(rows) == set(METHODS.names())
    for name in ("seggpt", "vitmatte", "matany", "mam", "icmp", "external", "precomputed", "mgmiw", "lf"):
        assert name in rows
    assert rows["vitmatte"][0] == "trimap" and rows["seggpt"][0] == "in_context" and rows["mam"][0] == "prompt"
    assert "quoted only" in " ".join(rows["mgmiw"]) and "quoted only" in " ".join(rows["lf"])
