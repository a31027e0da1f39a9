"""The dataset converters of ``python -m data_tools``: ICM-57 import/export, AIM-500, folders, Dreambooth.

Each source format is replicated in a tmp folder with its exact file names; every manifest built is run
through the benchmark, and building twice gives byte-identical manifests.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets.icm57 import load_icm57
from benchmark.datasets.manifest import load_manifest, read_document
from benchmark.io import read_alpha
from benchmark.runner import Runner
from benchmark.scoring import trimap_for
from data_tools.__main__ import main
from data_tools.icm57 import half_or_full
from tests.conftest import soft_disc
from tests.runner_helpers import compose_config, read_rows

pytestmark = pytest.mark.filterwarnings("ignore:.*groups, the paper's ICM-57 has 57")


# -- replicas ------------------------------------------------------------------------------------------------
def write_pair(image: Path, alpha: Path | None, seed: int, size: tuple[int, int] = (36, 48),
               trimap: Path | None = None) -> np.ndarray:
    """A soft disc over noise: the image (format from its suffix), its matte and optionally a trimap."""
    rng = np.random.default_rng(seed)
    h, w = size
    a = soft_disc(h, w, h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3), min(h, w) / 3)
    img = a[..., None] * rng.integers(0, 256, 3) + (1 - a[..., None]) * rng.integers(0, 256, (h, w, 3))
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(image)
    a8 = np.rint(a * 255).astype(np.uint8)
    if alpha is not None:
        alpha.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a8).save(alpha)
    if trimap is not None:
        trimap.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(trimap_for(a8, None, 0.05)[0]).save(trimap)
    return a8


AIM_LABELS = {"o_0a1b2c3d": ("animal", "STM"), "o_1b2c3d4e": ("animal", "SO"), "o_2c3d4e5f": ("animal", "STM"),
              "p_3d4e5f6a": ("plant", "NS"), "p_4e5f6a7b": ("plant", "SO"), "f_5f6a7b8c": ("fruit", "SO")}


def make_aim500(root: Path) -> Path:
    """AIM-500: original/*.jpg, mask/*.png, trimap/*.png, usr/*.png, aim_category_type.json; 'fruit' has one image."""
    (root / "usr").mkdir(parents=True)
    for i, stem in enumerate(AIM_LABELS):
        write_pair(root / "original" / f"{stem}.jpg", root / "mask" / f"{stem}.png", i,
                   trimap=root / "trimap" / f"{stem}.png")
        Image.fromarray(np.zeros((36, 48), np.uint8)).save(root / "usr" / f"{stem}.png")
    labels = {stem: {"type": t, "category": c} for stem, (c, t) in AIM_LABELS.items()}
    (root / "aim_category_type.json").write_text(json.dumps(labels))
    return root


def make_dreambooth(base: Path) -> tuple[Path, Path]:
    """google/dreambooth ``dataset/`` (dog, dog2, cat without mattes, backpack alone in its class) + mattes."""
    images, alphas = base / "dataset", base / "mattes"
    subjects = {"dog": ("00", "01"), "dog2": ("00", "01", "02"), "cat": ("00", "01"), "backpack": ("00", "01")}
    for s, (subject, stems) in enumerate(subjects.items()):
        for i, stem in enumerate(stems):
            matte = None if subject == "cat" or (subject, stem) == ("dog2", "02") else alphas / subject / f"{stem}.png"
            write_pair(images / subject / f"{stem}.jpg", matte, 10 * s + i)
    (images / "prompts_and_classes.txt").write_text(
        "Classes\n\nsubject_name,class\nbackpack,backpack\ncat,cat\ndog,dog\ndog2,dog\nteapot,teapot\n\n"
        "Prompts\n\nObject Prompts\n\nprompt_list = [\n'a {0} {1} in the jungle'.format(unique_token, class_token),\n"
        "]\n\nLive Subject Prompts\n\nprompt_list = [\n'a {0} {1} in the snow'.format(unique_token, class_token)\n]\n")
    return images, alphas


def make_folders(root: Path) -> Path:
    """Both layouts of benchmark/datasets/folder.py, plus one image without a matte."""
    for i in range(3):
        write_pair(root / "bottle" / "image" / f"b{i}.jpg", root / "bottle" / "alpha" / f"b{i}.png", i,
                   trimap=root / "bottle" / "trimap" / f"b{i}.png" if i == 0 else None)
        write_pair(root / "glass" / f"g{i}.jpg", root / "glass" / f"g{i}_alpha.png", 10 + i)
    write_pair(root / "glass" / "g9.jpg", None, 99)
    return root


# -- helpers -------------------------------------------------------------------------------------------------
def run_benchmark(dataset: Path, out: Path) -> list[dict[str, str]]:
    cfg = compose_config("method=constant", "dataset=manifest", f"dataset.root={dataset}", "runner.workers=1",
                         "runner.progress=off", "runner.rounds=1")
    Runner(cfg, out).run()
    rows = read_rows(out / "results.csv")
    assert rows and all(r["status"] != "error" for r in rows), [r["error"] for r in rows if r["status"] == "error"]
    return rows


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def canonical(path: Path) -> str:
    return json.dumps(json.loads(path.read_text()), sort_keys=True)


def twice(args: list[str], out: Path, tmp: Path) -> bytes:
    """Run a converter into ``out``, again into ``out`` (resumed) and into a fresh folder: same manifest bytes."""
    assert main([*args, "--out", str(out)]) in (0, 1)
    first = (out / "manifest.json").read_bytes()
    assert main([*args, "--out", str(out)]) in (0, 1)
    other = tmp / "again"
    assert main([*args, "--out", str(other)]) in (0, 1)
    assert (out / "manifest.json").read_bytes() == first == (other / "manifest.json").read_bytes()
    return first


# -- ICM-57 --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def icm58_manifest(icm58_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("icm58") / "manifest"
    code = main(["icm57-import", "--root", str(icm58_dev), "--groups", str(icm58_dev / "icm58-dev.json"),
                 "--out", str(out), "--workers", "2"])
    assert code == 0
    return out


def test_icm57_import_groups_types_and_meta(icm58_manifest: Path, icm58_dev: Path, tmp_path: Path) -> None:
    doc = read_document(icm58_manifest / "manifest.json")
    source = json.loads((icm58_dev / "icm58-dev.json").read_text())
    assert {s["id"] for s in doc["samples"]} == set(source)
    assert doc["groups"]["doll-blonde-half"]["type"] == "instance"
    assert doc["groups"]["doll-None-half"]["type"] == "category"
    assert doc["groups"]["plush_toy-bird-full"]["type"] == "category"  # the file's own 'type' wins over sub_class
    sample = next(s for s in doc["samples"] if s["id"] == "teddy_bear_01")
    assert sample["meta"]["icm57"] == source["teddy_bear_01"] and sample["class"] == "teddy_bear"
    assert sample["group"] == "teddy_bear-None-full" and sample["trimap"]["path"] == "trimap/teddy_bear_01.png"
    ours, theirs = load_manifest(icm58_manifest), load_icm57(icm58_dev, icm58_dev / "icm58-dev.json")
    assert {k: g.sample_ids for k, g in ours.groups.items()} == {k: g.sample_ids for k, g in theirs.groups.items()}
    twice(["icm57-import", "--root", str(icm58_dev), "--groups", str(icm58_dev / "icm58-dev.json")],
          icm58_manifest, tmp_path)
    run_benchmark(icm58_manifest, tmp_path / "run")


def test_icm57_round_trip_gives_the_same_json_and_files(icm58_manifest: Path, icm58_dev: Path, tmp_path: Path) -> None:
    out = tmp_path / "ICM57"
    assert main(["icm57-export", str(icm58_manifest), "--out", str(out), "--keep-extension",
                 "--no-derive-trimaps"]) == 0
    assert canonical(out / "ICM57.json") == canonical(icm58_dev / "icm58-dev.json")
    exported = files_of(out)
    original = {k: v for k, v in files_of(icm58_dev).items() if k.split("/")[0] in ("image", "alpha", "trimap")}
    assert {k: v for k, v in exported.items() if k != "ICM57.json"} == original


def test_icm57_export_refuses_non_jpeg_then_reencodes_and_derives(icm58_manifest: Path, icm58_dev: Path,
                                                                  tmp_path: Path, capsys) -> None:
    out = tmp_path / "ICM57"
    assert main(["icm57-export", str(icm58_manifest / "manifest.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "3 image(s) are not JPEG" in err and "doll_02.png" in err and "--reencode" in err
    assert not out.exists()
    assert main(["icm57-export", str(icm58_manifest), "--out", str(out), "--reencode", "--normalise-mattes"]) == 0
    table = json.loads((out / "ICM57.json").read_text())
    for name in table:  # what the official loader opens, for every entry
        for rel in (f"image/{name}.jpg", f"alpha/{name}.png", f"trimap/{name}.png"):
            assert (out / rel).is_file(), rel
    assert (out / "image/doll_01.jpg").read_bytes() == (icm58_dev / "image/doll_01.jpg").read_bytes()
    assert Image.open(out / "image/doll_02.jpg").format == "JPEG"
    assert (out / "trimap/doll_01.png").read_bytes() == (icm58_dev / "trimap/doll_01.png").read_bytes()
    derived = np.asarray(Image.open(out / "trimap/doll_02.png"))
    assert np.array_equal(derived, trimap_for(read_alpha(icm58_dev / "alpha/doll_02.png"), None, 0.01)[0])
    import cv2  # the official loader reads mattes with cv2.IMREAD_GRAYSCALE: teddy_bear_02 (RGBA) is rewritten

    official = cv2.imread(str(out / "alpha/teddy_bear_02.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(official, read_alpha(icm58_dev / "alpha/teddy_bear_02.png"))
    assert (out / "alpha/plant_02.png").read_bytes() == (icm58_dev / "alpha/plant_02.png").read_bytes()


def test_half_or_full_is_the_notebook_rule() -> None:
    a = np.zeros((10, 20), np.uint8)
    a[3:7, 5:15] = 255
    assert half_or_full(a) == "full"
    a[0, 0] = 1  # border sum 2 (corner counted twice) < (10 + 20) * 2 / 200 = 0.3 is false
    assert half_or_full(a) == "half"


# -- AIM-500 -------------------------------------------------------------------------------------------------
def test_aim500_categories_edited_matte_and_export(tmp_path: Path, capsys) -> None:
    root = make_aim500(tmp_path / "AIM-500")
    edited = tmp_path / "edited"
    edited_alpha = write_pair(tmp_path / "scratch.jpg", None, 77)
    edited_alpha[:, 0] = 255  # the edited object touches the frame: HalfOrFull 'half'
    edited.mkdir()
    Image.fromarray(edited_alpha).save(edited / "o_1b2c3d4e.png")
    out = tmp_path / "aim"
    twice(["aim500", "--root", str(root), "--edited", str(edited)], out, tmp_path)
    doc = read_document(out / "manifest.json")
    assert {k: g["type"] for k, g in doc["groups"].items()} == dict.fromkeys(("animal", "fruit", "plant"), "category")
    by_id = {s["id"]: s for s in doc["samples"]}
    assert [s for s in by_id.values() if s["group"] == "fruit"] == [by_id["f_5f6a7b8c"]]
    e = by_id["o_1b2c3d4e"]
    assert e["meta"] == {"HalfOrFull": "half", "TransparentOrOpaque": "SO", "matte": "edited"} and e["trimap"] is None
    assert np.array_equal(read_alpha(out / e["alpha"]["path"]), edited_alpha)
    o = by_id["o_0a1b2c3d"]
    assert o["meta"] == {"HalfOrFull": "full", "TransparentOrOpaque": "STM", "matte": "original"}
    assert o["trimap"]["path"] == "trimap/o_0a1b2c3d.png" and o["source"] == "AIM-500" and o["class"] == "animal"
    assert doc["meta"]["edited"] == ["o_1b2c3d4e"]
    rows = run_benchmark(out, tmp_path / "run")
    assert {r["group"] for r in rows} == {"animal", "plant"}  # 'fruit' (one image) is skipped, not an error
    assert any("o_1b2c3d4e" in (r["target"], r["references"]) for r in rows)

    exported = tmp_path / "ICM57"
    assert main(["icm57-export", str(out), "--out", str(exported)]) == 0
    assert "manifest group 'animal' splits into official groups" in capsys.readouterr().err
    table = json.loads((exported / "ICM57.json").read_text())
    assert table["p_3d4e5f6a"] == {"dataset_name": "ICM57", "class": "plant", "sub_class": None,
                                   "HalfOrFull": "full", "TransparentOrOpaque": "NS"}
    assert set(load_icm57(exported).groups) == {"animal-None-full", "animal-None-half", "plant-None-full",
                                                "fruit-None-full"}
    assert main(["icm57-export", str(out), "--out", str(tmp_path / "kept"), "--keep-groups"]) == 0
    assert set(load_icm57(tmp_path / "kept").groups) == {"animal-None-full", "plant-None-full", "fruit-None-full"}
    assert main(["aim500", "--root", str(root), "--edited", str(edited), "--out", str(tmp_path / "official"),
                 "--group-by", "official"]) == 0
    assert set(read_document(tmp_path / "official" / "manifest.json")["groups"]) == set(load_icm57(exported).groups)


def test_aim500_bad_label_names_the_file_and_key(tmp_path: Path, capsys) -> None:
    root = make_aim500(tmp_path / "AIM-500")
    labels = json.loads((root / "aim_category_type.json").read_text())
    labels["o_0a1b2c3d"]["type"] = "XX"
    (root / "aim_category_type.json").write_text(json.dumps(labels))
    assert main(["aim500", "--root", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "aim_category_type.json" in err and "o_0a1b2c3d" in err and "'XX'" in err


# -- folders -------------------------------------------------------------------------------------------------
def test_folders_both_layouts(tmp_path: Path, capsys) -> None:
    root = make_folders(tmp_path / "rm1k")
    out = tmp_path / "out"
    twice(["folders", "--root", str(root)], out, tmp_path)
    assert main(["folders", "--root", str(root), "--out", str(out)]) == 1  # the image without a matte
    assert "g9.jpg: no matte found" in capsys.readouterr().err
    doc = read_document(out / "manifest.json")
    assert {k: (g["type"], g["class"]) for k, g in doc["groups"].items()} == {
        "bottle": ("category", "bottle"), "glass": ("category", "glass")}
    by_id = {s["id"]: s for s in doc["samples"]}
    assert sorted(by_id) == ["bottle/b0", "bottle/b1", "bottle/b2", "glass/g0", "glass/g1", "glass/g2"]
    assert by_id["glass/g0"]["alpha"]["path"] == "glass/g0_alpha.png"
    assert by_id["bottle/b0"]["trimap"]["path"] == "bottle/trimap/b0.png" and by_id["bottle/b1"]["trimap"] is None
    run_benchmark(out, tmp_path / "run")
    assert main(["folders", "--root", str(root), "--out", str(root / "inside")]) == 2


# -- Dreambooth ----------------------------------------------------------------------------------------------
def test_dreambooth_levels_worklist_and_reports(tmp_path: Path, capsys) -> None:
    images, alphas = make_dreambooth(tmp_path)
    out = tmp_path / "instance"
    twice(["dreambooth", "--images", str(images), "--alphas", str(alphas)], out, tmp_path)
    err = capsys.readouterr().err
    assert "subject 'cat' has no mattes" in err and "'teapot'" in err
    doc = read_document(out / "manifest.json")
    assert {k: (g["type"], g["class"]) for k, g in doc["groups"].items()} == {
        "backpack": ("instance", "backpack"), "dog": ("instance", "dog"), "dog2": ("instance", "dog")}
    assert doc["meta"]["categories"] == {"backpack": ["backpack"], "dog": ["dog", "dog2"]}
    assert sorted(s["id"] for s in doc["samples"]) == ["backpack/00", "backpack/01", "dog/00", "dog/01",
                                                       "dog2/00", "dog2/01"]
    with (out / "worklist.csv").open(newline="") as fh:
        assert list(csv.reader(fh)) == [["subject", "image", "reason"], ["cat", "cat/00.jpg", "subject without mattes"],
                                        ["cat", "cat/01.jpg", "subject without mattes"],
                                        ["dog2", "dog2/02.jpg", "no matte"]]
    run_benchmark(out, tmp_path / "run-instance")

    cat = tmp_path / "category"
    assert main(["dreambooth", "--images", str(images), "--alphas", str(alphas), "--out", str(cat),
                 "--level", "category"]) == 0
    doc = read_document(cat / "manifest.json")
    assert {k: (g["type"], g["meta"]) for k, g in doc["groups"].items()} == {
        "dog": ("category", {"members": ["dog", "dog2"]})}
    assert doc["meta"]["left_out_classes"] == ["backpack"]
    assert sorted(s["id"] for s in doc["samples"]) == ["dog/00", "dog/01", "dog2/00", "dog2/01"]
    run_benchmark(cat, tmp_path / "run-category")


def test_dreambooth_bad_classes_file(tmp_path: Path, capsys) -> None:
    images, alphas = make_dreambooth(tmp_path)
    (images / "prompts_and_classes.txt").write_text("Classes\n\nsubject_name,class\ndog dog\n")
    assert main(["dreambooth", "--images", str(images), "--alphas", str(alphas), "--out", str(tmp_path / "o")]) == 2
    assert "prompts_and_classes.txt line 4" in capsys.readouterr().err
