"""``python -m data_tools openimages`` on a miniature Open Images replica built in a temporary folder.

The replica has the official names and layout: ``train-annotations-object-segmentation.csv`` with the exact
header, a headerless ``class-descriptions-boxable.csv``, sixteen ``train-masks-<hex>.zip`` shards whose
members are ``<MaskPath>`` at the zip root, and ``<ImageID>.jpg`` images. Odd cases: an image with two
instances of one class, a mask whose size differs from its image, a class with one image, a corrupt PNG
inside a zip, a row naming a mask that is in no shard, a row whose image is missing, instances below
``--min-iou`` and a union below ``--min-area``.
"""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets.manifest import load_manifest
from benchmark.runner import Runner
from data_tools import openimages
from data_tools.__main__ import main as data_tools_main
from tests.runner_helpers import compose_config, read_rows

HEADER = ["MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
          "PredictedIoU", "Clicks"]
CLASSES = [("/m/01yrx", "Cat"), ("/m/0bt9lr", "Dog"), ("/m/015p6", "Bird"), ("/m/0k4j", "Car")]
W, H = 32, 24
CSV_NAME = "train-annotations-object-segmentation.csv"


def image_id(shard: str, n: int) -> str:
    return f"{shard}{n:015x}"


IDS = {name: image_id(shard, i) for i, (name, shard) in enumerate(
    [("c1", "0"), ("c2", "1"), ("c3", "2"), ("c4", "3"), ("c5", "4"), ("c6", "5"), ("c7", "6"), ("c8", "7"),
     ("d2", "8"), ("d3", "9"), ("d4", "a"), ("d5", "b"), ("d6", "c"), ("b1", "d")], 1)}


def rect(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def png(mask: np.ndarray, mode: str = "1") -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(mask) if mode == "1" else Image.fromarray(mask.astype(np.uint8) * 255)
    im.save(buf, format="PNG")
    return buf.getvalue()


# (key, label index, box id, PredictedIoU, mask bytes or None for "no such mask")
def instances() -> list[tuple[str, int, str, float, bytes | None]]:
    rows: list[tuple[str, int, str, float, bytes | None]] = [
        ("c1", 0, "a1", 0.9, png(rect(2, 10, 2, 10))),      # two cat instances: the union is both
        ("c1", 0, "a2", 0.8, png(rect(12, 20, 20, 30))),
        ("c1", 1, "a3", 0.9, png(rect(0, 24, 12, 16))),     # a dog in the same image
        ("c2", 0, "b1", 0.9, png(rect(3, 9, 4, 12, h=12, w=16), mode="L")),  # 16×12 mask on a 32×24 image
        ("c7", 0, "g1", 0.9, b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8),   # corrupt PNG inside a zip
        ("c8", 0, "h1", 0.9, png(rect(1, 5, 1, 5))),        # its image is missing
        ("d2", 1, "j1", 0.9, png(rect(0, 6, 0, 6))),
        ("d2", 1, "j2", 0.3, png(rect(18, 24, 26, 32))),    # below --min-iou 0.5: left out of the union
        ("d3", 1, "k1", 0.2, png(rect(0, 12, 0, 12))),      # only a low-IoU instance
        ("d4", 1, "l1", 0.9, png(rect(5, 6, 5, 6))),        # 1 px of 768: below --min-area 0.01
        ("d5", 1, "m1", 0.9, None),                         # a row naming a mask that is in no shard
        ("d6", 1, "n1", 0.9, png(rect(4, 20, 4, 28))),
        ("b1", 2, "o1", 0.9, png(rect(8, 16, 8, 16))),      # Bird: a class with one image
    ]
    for k, key in enumerate(["c3", "c4", "c5", "c6"]):
        rows.append((key, 0, f"p{k}", 0.7, png(rect(k, k + 8, 2 * k, 2 * k + 9))))
    return rows


def mask_path(key: str, label: int, box: str) -> str:
    return f"{IDS[key]}_{CLASSES[label][0].replace('/', '')}_{box}.png"


def make_replica(root: Path, shuffle: int | None = None) -> dict[str, Path]:
    """The replica under ``root``; ``shuffle`` permutes the CSV rows with that seed."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for key, iid in IDS.items():
        if key != "c8":
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{iid}.jpg")
    with open(root / "class-descriptions-boxable.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(CLASSES)
    rows, shards = [], {f"{d:x}": {} for d in range(16)}
    for key, label, box, iou, data in instances():
        name = mask_path(key, label, box)
        rows.append([name, IDS[key], CLASSES[label][0], box, "0.1", "0.9", "0.2", "0.8", f"{iou:.5f}",
                     "0.3 0.4 1;0.5 0.6 0"])
        if data is not None:
            shards[name[0]][name] = data
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
    with open(root / CSV_NAME, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    (root / "zips").mkdir()
    for digit, members in shards.items():
        with zipfile.ZipFile(root / "zips" / f"train-masks-{digit}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(members):
                zf.writestr(name, members[name])
    return {"csv": root / CSV_NAME, "classes": root / "class-descriptions-boxable.csv",
            "zips": root / "zips", "images": root / "images"}


def extract(zips: Path, out: Path) -> Path:
    """The shards' members as loose PNGs: shard 3 in a sub-folder (as unzipping one shard per folder gives)."""
    for z in sorted(zips.glob("*.zip")):
        target = out / z.stem if z.stem.endswith("-3") else out
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(z) as zf:
            zf.extractall(target)
    return out


def build(paths: dict[str, Path], out: Path, *extra: str, masks: list[Path] | None = None) -> int:
    masks = masks or sorted(paths["zips"].glob("*.zip"))
    return data_tools_main(["openimages", "--annotations", str(paths["csv"]), "--classes", str(paths["classes"]),
                            "--masks", *map(str, masks), "--images", str(paths["images"]), "--out", str(out),
                            "--workers", "2", *extra])


def samples_by_group(out: Path) -> dict[str, list[str]]:
    doc = json.loads((out / "manifest.json").read_text())
    groups: dict[str, list[str]] = {}
    for s in doc["samples"]:
        groups.setdefault(s["group"], []).append(s["meta"]["image_id"])
    return {k: sorted(v) for k, v in groups.items()}


def matte(out: Path, group: str, key: str) -> np.ndarray:
    doc = json.loads((out / "manifest.json").read_text())
    (s,) = [s for s in doc["samples"] if s["group"] == group and s["meta"]["image_id"] == IDS[key]]
    return np.asarray(Image.open(out / s["alpha"]["path"]))


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> dict[str, Path]:
    return make_replica(tmp_path_factory.mktemp("openimages"))


@pytest.fixture(scope="module")
def filtered(replica, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("filtered") / "out"
    return out, build(replica, out, "--min-iou", "0.5", "--min-area", "0.01", "--max-per-group", "0")


# --------------------------------------------------------------------------------------------- semantics
def test_groups_filters_and_reported_skips(replica, tmp_path, capsys):
    out = tmp_path / "out"
    assert build(replica, out, "--min-iou", "0.5", "--min-area", "0.01", "--max-per-group", "0") == 1
    err = capsys.readouterr().err
    expect = {"Cat": ["c1", "c2", "c3", "c4", "c5", "c6"], "Dog": ["c1", "d2", "d6"], "Bird": ["b1"]}
    assert samples_by_group(out) == {g: sorted(IDS[k] for k in keys) for g, keys in expect.items()}
    problems = [line for line in err.splitlines() if "skipped" in line and "rows in" not in line]
    assert len(problems) == 3, err
    corrupt, missing_mask, missing_image = (next(p for p in problems if mask_path(*k) in p or IDS[k[0]] in p)
                                            for k in [("c7", 0, "g1"), ("d5", 1, "m1"), ("c8", 0, "h1")])
    assert "PNG" in corrupt and f"{CSV_NAME}:" in corrupt
    assert "not found" in missing_mask
    assert "image" in missing_image and "missing" in missing_image
    summary = err.strip().splitlines()[-1]
    assert "17 rows" in summary and "rows/s" in summary and "kept 10 samples (9 images) in 3 groups" in summary
    assert "3 skipped" in summary
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["version"] == 2 and doc["created_by"] == "python -m data_tools openimages"
    assert {k: (g["type"], g["class"]) for k, g in doc["groups"].items()} == {
        "Cat": ("category", "Cat"), "Dog": ("category", "Dog"), "Bird": ("category", "Bird")}
    assert all(s["split"] == "train" and s["source"] == "openimages" and s["licence"] for s in doc["samples"])
    ds = load_manifest(out)
    assert sorted(len(g.sample_ids) for g in ds.groups.values()) == [1, 3, 6]


def test_union_resize_and_iou_exclusion(filtered):
    out, _ = filtered
    assert np.array_equal(matte(out, "Cat", "c1"), (rect(2, 10, 2, 10) | rect(12, 20, 20, 30)) * np.uint8(255))
    assert np.array_equal(matte(out, "Dog", "c1"), rect(0, 24, 12, 16) * np.uint8(255))
    small = Image.fromarray(rect(3, 9, 4, 12, h=12, w=16).astype(np.uint8) * 255)
    expected = np.asarray(small.resize((W, H), Image.Resampling.NEAREST))
    assert np.array_equal(matte(out, "Cat", "c2"), expected) and matte(out, "Cat", "c2").shape == (H, W)
    assert np.array_equal(matte(out, "Dog", "d2"), rect(0, 6, 0, 6) * np.uint8(255))  # j2 (IoU 0.3) left out
    img = Image.open(out / "image" / f"{IDS['c1']}.jpg")
    assert img.size == (W, H)


def test_without_filters_low_iou_and_small_samples_stay(replica, tmp_path):
    out = tmp_path / "out"
    assert build(replica, out, "--max-per-group", "0") == 1
    assert IDS["d3"] in samples_by_group(out)["Dog"] and IDS["d4"] in samples_by_group(out)["Dog"]
    assert np.array_equal(matte(out, "Dog", "d2"), (rect(0, 6, 0, 6) | rect(18, 24, 26, 32)) * np.uint8(255))


def test_two_builds_are_byte_identical_and_a_rerun_resumes(replica, filtered, tmp_path, capsys):
    out, _ = filtered
    other = tmp_path / "other"
    assert build(replica, other, "--min-iou", "0.5", "--min-area", "0.01", "--max-per-group", "0") == 1
    assert (other / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    stamp = (other / "image" / f"{IDS['c1']}.jpg").stat().st_mtime_ns
    assert build(replica, other, "--min-iou", "0.5", "--min-area", "0.01", "--max-per-group", "0") == 1
    assert (other / "image" / f"{IDS['c1']}.jpg").stat().st_mtime_ns == stamp  # identical file left in place
    assert (other / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()


def test_folder_masks_and_row_order_give_the_same_manifest(replica, filtered, tmp_path):
    out, _ = filtered
    folder = extract(replica["zips"], tmp_path / "masks")
    assert (folder / "train-masks-3").is_dir()
    loose = tmp_path / "loose"
    assert build(replica, loose, "--min-iou", "0.5", "--min-area", "0.01", "--max-per-group", "0",
                 masks=[folder]) == 1
    assert (loose / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    shuffled = make_replica(tmp_path / "shuffled", shuffle=3)
    assert shuffled["csv"].read_bytes() != replica["csv"].read_bytes()
    again = tmp_path / "again"
    assert build(shuffled, again, "--min-iou", "0.5", "--min-area", "0.01", "--max-per-group", "0",
                 masks=[shuffled["zips"]]) == 1  # a folder holding the shards
    assert (again / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()


# --------------------------------------------------------------------------------------------- sampling
CATS_OK = ["c1", "c2", "c3", "c4", "c5", "c6"]
CATS_ALL = [*CATS_OK, "c7", "c8"]


def expected_cats(seed: int, cap: int) -> list[str]:
    """The ``cap`` usable Cat images of lowest priority: what the command must pick."""
    order = sorted(CATS_OK, key=lambda k: openimages.priority(seed, IDS[k], CLASSES[0][0]))
    return sorted(IDS[k] for k in order[:cap])


def test_sampling_is_the_lowest_priorities_of_the_usable_keys(replica, tmp_path):
    # a seed whose 3 lowest-priority Cat keys include a broken one (c7 corrupt, c8 no image): the next is taken
    def lowest(seed: int) -> set[str]:
        return set(sorted(CATS_ALL, key=lambda k: openimages.priority(seed, IDS[k], CLASSES[0][0]))[:3])

    spill = next(s for s in range(100) if lowest(s) & {"c7", "c8"})
    other = next(s for s in range(100) if expected_cats(s, 3) != expected_cats(spill, 3))
    picked = {}
    for seed in (spill, other):
        out = tmp_path / f"s{seed}"
        status = build(replica, out, "--max-per-group", "3", "--seed", str(seed), "--classes-only", "Cat")
        assert status == (1 if lowest(seed) & {"c7", "c8"} else 0)  # a broken key is read only when sampled
        picked[seed] = samples_by_group(out)
        assert picked[seed] == {"Cat": expected_cats(seed, 3)}
    assert picked[spill] != picked[other]
    again = tmp_path / "again"
    assert build(replica, again, "--max-per-group", "3", "--seed", str(spill), "--classes-only", "Cat") == 1
    assert (again / "manifest.json").read_bytes() == (tmp_path / f"s{spill}" / "manifest.json").read_bytes()


def test_refill_passes_give_the_same_sample(replica, tmp_path, monkeypatch, capsys):
    """With no spare keys every rejection needs another CSV pass; the result must not change."""
    base = tmp_path / "base"
    args = ("--max-per-group", "2", "--min-area", "0.01", "--min-iou", "0.5", "--seed", "4")
    assert build(replica, base, *args) == 1
    assert " 1 pass(es)" in capsys.readouterr().err
    monkeypatch.setattr(openimages, "spare", lambda need: 0)
    tight = tmp_path / "tight"
    assert build(replica, tight, *args) == 1
    passes = int(capsys.readouterr().err.split(" pass(es)")[0].rsplit(" ", 1)[-1])
    assert passes > 1
    assert (tight / "manifest.json").read_bytes() == (base / "manifest.json").read_bytes()


def test_reservoir_keeps_the_lowest_priorities_in_bounded_memory():
    keys = [f"{i:016x}" for i in range(2000)]
    rows = [(k, j) for k in keys for j in range(3)]
    random.Random(1).shuffle(rows)
    res = openimages.Reservoir("/m/x", seed=7, capacity=25)
    for line, (k, j) in enumerate(rows):
        res.offer(line, k, f"{k}_{j}.png")
        assert len(res.kept) <= 25
    best = sorted(keys, key=lambda k: openimages.priority(7, k, "/m/x"))[:25]
    assert [c.image_id for c in res.ordered()] == best
    assert all(len(c.rows) == 3 for c in res.ordered()) and res.truncated


# --------------------------------------------------------------------------------------------- zips and input
def test_zip_index_reads_zip64_and_deflate(tmp_path):
    path = tmp_path / "train-masks-0.zip"
    names = [f"0{i:015x}_m0_{i}.png" for i in range(0x10000 + 5)]  # more entries than a 16-bit count holds
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for n in names[:-2]:
            zf.writestr(n, b"")
        zf.writestr(names[-2], b"payload" * 10, compress_type=zipfile.ZIP_DEFLATED)
        with zf.open(names[-1], "w", force_zip64=True) as fh:
            fh.write(b"forced zip64")
    with open(path, "rb") as fh:
        assert openimages.central_directory(fh)[1] == len(names)
    found = openimages.index_zip(path, {names[-2], names[-1], names[7], "absent.png"})
    assert set(found) == {names[-2], names[-1], names[7]}
    assert openimages.read_member(found[names[-2]]) == b"payload" * 10
    assert openimages.read_member(found[names[-1]]) == b"forced zip64"
    assert openimages.read_member(found[names[7]]) == b""
    extra = (0x0001).to_bytes(2, "little") + (16).to_bytes(2, "little") + (5 << 32).to_bytes(8, "little") * 2
    assert openimages._zip64_extra(extra, 0xFFFFFFFF, 0xFFFFFFFF, 12) == (5 << 32, 5 << 32, 12)


def test_bad_input_exits_2(replica, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageID,LabelName\nx,/m/01yrx\n")
    assert build({**replica, "csv": bad}, tmp_path / "o1") == 2
    assert "missing column" in capsys.readouterr().err
    assert build(replica, tmp_path / "o2", "--classes-only", "Unicorn") == 2
    assert "Unicorn" in capsys.readouterr().err
    assert build(replica, tmp_path / "o3", masks=[tmp_path / "nowhere"]) == 2
    assert build(replica, tmp_path / "o4", "--classes-only", "Car") == 2  # no rows: nothing to write
    assert not (tmp_path / "o4" / "manifest.json").exists()


# --------------------------------------------------------------------------------------------- benchmark
def test_the_manifest_runs_through_the_benchmark(filtered, tmp_path):
    out, _ = filtered
    cfg = compose_config("method=constant", "dataset=manifest", f"dataset.root={out}", "runner.workers=1",
                         "runner.progress=off", "runner.rounds=1")
    stats = Runner(cfg, tmp_path / "run").run()
    rows = read_rows(tmp_path / "run" / "results.csv")
    assert stats.errors == 0, [r["error"] for r in rows if r["error"]]
    assert {r["group"] for r in rows} == {"Cat", "Dog"}  # Bird has one image: the protocol skips it
    assert stats.targets == (6 - 1) + (3 - 1)
