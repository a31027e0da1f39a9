"""``validate`` and ``stats`` on icm58-dev (through a v2 manifest built from it): clean as built, and each
corruption of a copy reported by exactly one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets import load_dataset
from benchmark.datasets.manifest import canonical_json, write_manifest
from data_tools.__main__ import main
from data_tools.build import file_entry
from data_tools.stats import compute_stats
from data_tools.validate import validate
from tests.conftest import make_folder_dataset
from tests.data_helpers import ICM58_DEV, build_v2, icm58_dev

pytestmark = pytest.mark.skipif(not ICM58_DEV.is_dir(), reason="../shared/data/icm58-dev is not present")

SINGLETONS = {"pumpkin-None-full", "statue-None-full", "yarn-None-full"}


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Path:
    return build_v2(icm58_dev(), tmp_path_factory.mktemp("dev") / "icm58-dev")


def test_the_built_dev_set_is_clean_except_for_its_groups_of_one(dev: Path, capsys):
    assert main(["validate", str(dev)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(": warning: group of one" in line for line in lines)
    assert {line.split("groups[")[1].split("]")[0] for line in lines} == SINGLETONS
    assert main(["validate", "--strict", str(dev)]) == 1


def _set_file(doc: dict, sid: str, field: str, root: Path, rel: str | None = None) -> None:
    """Point ``sid``'s ``field`` at ``rel`` (default: its current path) with the file's true checksum and sizes."""
    s = next(s for s in doc["samples"] if s["id"] == sid)
    rel = rel or s[field]["path"]
    s[field] = file_entry(root, rel).to_json()


def test_each_corruption_is_reported_by_one_line(dev: Path, tmp_path: Path, capsys):
    root = tmp_path / "bad"
    shutil.copytree(dev.parent, root)
    doc = json.loads((root / "manifest.json").read_text())
    by_id = {s["id"]: s for s in doc["samples"]}
    expect: dict[str, str] = {}

    by_id["doll_01"]["image"]["sha256"] = "0" * 64  # wrong checksum
    expect["image/doll_01.jpg"] = "sha256 mismatch"

    (root / "alpha/doll_02.png").unlink()  # missing file
    expect["alpha/doll_02.png"] = "alpha file not found"

    by_id["flower_01"]["alpha"]["bytes"] += 1  # byte size differs from the manifest
    expect["alpha/flower_01.png"] = "byte size"

    by_id["flower_02"]["image"]["width"] += 1  # pixel size differs from the manifest
    expect["image/flower_02.jpg"] = "pixel size"

    small = np.asarray(Image.open(root / "alpha/flower_03.png").convert("L"))[:-3]  # matte smaller than its image
    Image.fromarray(small).save(root / "alpha/flower_03.png")
    _set_file(doc, "flower_03", "alpha", root)
    expect["alpha/flower_03.png"] = "its image is"

    (root / "alpha/plush_toy_01.png").write_bytes(b"not a png at all")  # undecodable matte
    _set_file_bytes(doc, "plush_toy_01", root)
    expect["alpha/plush_toy_01.png"] = "alpha does not decode"

    # an RGB matte whose channels differ: ambiguous encoding (metrics.io rules)
    a = np.asarray(Image.open(root / "alpha/plush_toy_02.png").convert("L"))
    rgb = np.stack([a, a // 2, a], axis=2)
    Image.fromarray(rgb).save(root / "alpha/plush_toy_02.png")
    _set_file(doc, "plush_toy_02", "alpha", root)
    expect["alpha/plush_toy_02.png"] = "RGB channels differ"

    shutil.copy(root / "image/plush_toy_03.jpg", root / "image/plush_copy.jpg")  # duplicate image
    shutil.copy(root / "alpha/plush_toy_03.png", root / "alpha/plush_copy.png")
    copy = json.loads(json.dumps(by_id["plush_toy_03"]))
    copy["id"] = "plush_copy"
    copy["image"]["path"], copy["alpha"]["path"] = "image/plush_copy.jpg", "alpha/plush_copy.png"
    doc["samples"].append(copy)
    expect["image/plush_copy.jpg"] = "same image as"

    outside = json.loads(json.dumps(by_id["plush_toy_04"]))  # a path outside the root
    outside["id"], outside["image"]["path"] = "escape", "../escape.jpg"
    shutil.copy(root / "image/plush_toy_04.jpg", tmp_path / "escape.jpg")
    doc["samples"].append(outside)
    expect["../escape.jpg"] = "outside the dataset root"

    t = np.asarray(Image.open(root / "trimap/teddy_bear_01.png").convert("L")).copy()  # trimap value 7
    t[0, 0] = 7
    Image.fromarray(t).save(root / "trimap/teddy_bear_01.png")
    _set_file(doc, "teddy_bear_01", "trimap", root)
    expect["trimap/teddy_bear_01.png"] = "other than 0/128/255"

    doc["groups"]["plant-potted-full"]["references"] = ["yarn_01"]  # a reference from another group
    expect["groups[plant-potted-full]"] = "reference 'yarn_01' is not a sample of this group"

    doc["samples"] = [s for s in doc["samples"] if s["id"] != "openwork_02"]  # a new group of one
    (root / "manifest.json").write_text(canonical_json(doc))

    assert main(["validate", str(root / "manifest.json")]) == 1
    lines = capsys.readouterr().out.splitlines()
    errors = [line for line in lines if ": warning: " not in line]
    for where, what in expect.items():
        hits = [line for line in errors if where in line.split(": ")[0] and what in line]
        assert len(hits) == 1, (where, what, errors)
    assert len(errors) == len(expect), errors
    warned = {line.split("groups[")[1].split("]")[0] for line in lines if "group of one" in line}
    assert warned == SINGLETONS | {"openwork-None-full"}


def _set_file_bytes(doc: dict, sid: str, root: Path) -> None:
    """Record the alpha file's true sha256 and bytes (it no longer decodes, so no pixel size)."""
    import hashlib

    s = next(s for s in doc["samples"] if s["id"] == sid)
    data = (root / s["alpha"]["path"]).read_bytes()
    s["alpha"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def test_validate_reads_v1_manifests_without_checksums(tmp_path: Path, capsys):
    root = make_folder_dataset(tmp_path / "f", groups=2, per_group=2, size=(16, 20))
    write_manifest(root, "m", list(load_dataset("folder", root=str(root)).samples.values()))
    assert validate(root / "manifest.json") == []
    (root / "g1/alpha/s0.png").write_bytes(b"junk")
    assert main(["validate", str(root)]) == 1
    assert capsys.readouterr().out.count("\n") == 1


def test_stats_reports_groups_resolutions_and_fractions(dev: Path, capsys):
    stats = compute_stats(str(dev))
    groups = {g["id"]: g for g in stats["groups"]}
    assert len(groups) == 11 and stats["total"]["n_samples"] == 27 and stats["total"]["groups_of_one"] == 3
    statue = groups["statue-None-full"]
    assert statue["type"] == "instance" and statue["class"] == "statue" and statue["n_samples"] == 1
    assert statue["resolution"]["width"]["max"] == 4000 and statue["resolution"]["height"]["max"] == 6000
    for g in groups.values():
        assert 0 < g["unknown_fraction"] < g["foreground_fraction"] < 1
    assert main(["stats", str(dev), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [g["id"] for g in out["groups"]] == sorted(groups) and set(out["groups"][0]) >= {
        "id", "type", "class", "n_samples", "resolution", "foreground_fraction", "unknown_fraction"}
    assert main(["stats", str(dev)]) == 0
    assert "teddy_bear-None-full" in capsys.readouterr().out


def test_stats_fractions_are_exact_on_a_known_matte(tmp_path: Path):
    from data_tools.build import DatasetBuilder, png_bytes

    b = DatasetBuilder(tmp_path / "k", "k", created_by="t")
    a = np.zeros((10, 10), np.uint8)
    a[:5] = 255
    a[5] = 100  # 10 % unknown, 60 % foreground
    b.add_group("g", type="instance")
    for i in range(2):
        b.add_sample(f"s{i}", "g", image=b.write_bytes(png_bytes(np.full((10, 10, 3), i, np.uint8)), f"i{i}.png"),
                     alpha=b.write_bytes(png_bytes(a), "a.png"))
    b.write()
    g = compute_stats(str(tmp_path / "k"))["groups"][0]
    assert g["foreground_fraction"] == pytest.approx(0.6) and g["unknown_fraction"] == pytest.approx(0.1)
