"""Predictions made elsewhere, scored under this protocol: a run folder's predictions/ reproduce its scores,
flat folders, missing and wrong-size files as error rows, ids that cannot leave the folder, fingerprints."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.io import quantize_alpha, write_png
from benchmark.runner import Runner
from benchmark.safe_names import file_name
from benchmark.types import Episode
from methods.base import MethodError, Target
from methods.precomputed import PrecomputedMethod
from tests.runner_helpers import compose_config, read_rows

FAST = ("runner.workers=1", "runner.progress=off")
METRICS = ("SAD", "MSE", "Grad", "Conn")


def run(out: Path, dataset: Path, *overrides: str):
    cfg = compose_config(*FAST, "dataset=folder", f"dataset.root={dataset}", *overrides)
    return Runner(cfg, out).run()


def precomputed(out: Path, dataset: Path, path: Path, *overrides: str):
    return run(out, dataset, "method=precomputed", f"method.path={path}", *overrides)


def keyed(path: Path) -> dict[tuple, dict]:
    return {(r["round"], r["group"], r["target"], r["region"]): r for r in read_rows(path / "results.csv")}


@pytest.mark.parametrize("method", [("method=constant",), ("method=classical", "method.long_side=64")])
def test_a_run_folders_predictions_reproduce_its_scores(tmp_path, folder_dataset, method):
    run(tmp_path / "cls", folder_dataset, *method)
    original = keyed(tmp_path / "cls")
    for source in (tmp_path / "cls" / "predictions", tmp_path / "cls"):  # predictions/ or the run folder itself
        out = tmp_path / f"pre-{source.name}"
        stats = precomputed(out, folder_dataset, source, "+method.label=classical_again")
        again = keyed(out)
        assert stats.errors == 0 and again.keys() == original.keys() and len(again) == 24
        for key, row in original.items():
            assert all(row[m] == again[key][m] for m in METRICS), key
        assert {r["method"] for r in again.values()} == {"classical_again"}
        assert {r["guidance"] for r in again.values()} == {"none"}
    if method[0] == "method=classical":  # its rounds differ (another reference each round): r<round>/ mattered
        by_target: dict[tuple, set] = {}
        for (_, group, target, region), row in original.items():
            by_target.setdefault((group, target, region), set()).add(row["SAD"])
        assert any(len(v) > 1 for v in by_target.values())


def test_every_8_bit_value_survives_the_round_trip(tmp_path):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write_png(tmp_path / "pred" / "x.png", values)
    method = PrecomputedMethod(str(tmp_path / "pred"))
    method.prepare([], seed=0, episode=Episode("g", 0, (), ("x",)))
    (alpha,) = method.predict([Target("x", np.zeros((16, 16, 3), np.uint8))])
    assert alpha.dtype == np.float32
    np.testing.assert_array_equal(quantize_alpha(alpha), values)


def test_flat_layout_serves_every_round_and_missing_or_wrong_size_files_are_error_rows(tmp_path, folder_dataset):
    flat = tmp_path / "flat"
    flat.mkdir()
    for alpha_file in sorted(folder_dataset.rglob("alpha/*.png")):  # the ground truth as predictions
        shutil.copy(alpha_file, flat / file_name(f"{alpha_file.parents[1].name}/{alpha_file.stem}", ".png"))
    (flat / file_name("g0/s1", ".png")).unlink()
    big = np.zeros((41, 56), np.uint8)
    Image.fromarray(big).save(flat / file_name("g1/s2", ".png"))
    out = tmp_path / "run"
    precomputed(out, folder_dataset, flat)
    rows = read_rows(out / "results.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    errors = {(r["round"], r["target"]): r["error"] for r in rows if r["status"] == "error"}
    assert ok and all(float(r["SAD"]) == 0.0 and float(r["MSE"]) == 0.0 for r in ok)  # the ground truth itself
    assert {t for _, t in errors} == {"g0/s1", "g1/s2"}
    missing = [e for (_, t), e in errors.items() if t == "g0/s1"]
    assert missing and all(str(flat / file_name("g0/s1", ".png")) in e and "no prediction" in e for e in missing)
    wrong = [e for (_, t), e in errors.items() if t == "g1/s2"]
    assert wrong and all("(41, 56)" in e and "(40, 56)" in e for e in wrong)
    assert {r["round"] for r in ok} == {"0", "1", "2"}


def test_rounds_layout_prefers_the_rounds_folder_and_names_it_when_missing(tmp_path):
    root = tmp_path / "pred"
    write_png(root / "t.png", np.full((4, 5), 10, np.uint8))
    write_png(root / "r1" / "t.png", np.full((4, 5), 200, np.uint8))
    target = Target("t", np.zeros((4, 5, 3), np.uint8))
    auto = PrecomputedMethod(str(root))
    for rnd, level in ((0, 10), (1, 200)):  # r0/ does not exist: auto falls back to the flat file
        auto.prepare([], seed=0, episode=Episode("g", rnd, (), ("t",)))
        (alpha,) = auto.predict([target])
        assert quantize_alpha(alpha).max() == level
    rounds = PrecomputedMethod(str(root), layout="rounds")
    rounds.prepare([], seed=0, episode=Episode("g", 0, (), ("t",)))
    (error,) = rounds.predict([target])
    assert isinstance(error, MethodError) and str(root / "r0" / "t.png") in str(error)
    flat = PrecomputedMethod(str(root), layout="flat")
    flat.prepare([], seed=0, episode=Episode("g", 1, (), ("t",)))
    assert quantize_alpha(flat.predict([target])[0]).max() == 10
    with pytest.raises(ValueError, match="layout"):
        PrecomputedMethod(str(root), layout="nested")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        PrecomputedMethod(str(tmp_path / "nowhere"))


def test_ids_never_reach_outside_the_folder(tmp_path):
    root = tmp_path / "deep" / "pred"
    outside = np.full((3, 3), 255, np.uint8)
    write_png(tmp_path / "deep" / "secret.png", outside)  # what "../secret" would name
    write_png(tmp_path / "secret.png", outside)
    root.mkdir(parents=True)
    method = PrecomputedMethod(str(root))
    method.prepare([], seed=0, episode=Episode("g", 0, (), ("../secret",)))
    for evil in ("../secret", "../../secret", str(tmp_path / "secret")):
        (error,) = method.predict([Target(evil, np.zeros((3, 3, 3), np.uint8))])
        assert isinstance(error, MethodError)
        assert str(root / file_name(evil, ".png")) in str(error) and "/" not in file_name(evil)
    write_png(root / file_name("../secret", ".png"), np.full((3, 3), 7, np.uint8))  # its own escaped name
    (alpha,) = method.predict([Target("../secret", np.zeros((3, 3, 3), np.uint8))])
    assert quantize_alpha(alpha).max() == 7


def test_fingerprint_follows_the_predictions_not_their_place(tmp_path):
    root = tmp_path / "a"
    write_png(root / "r0" / "t.png", np.full((4, 5), 10, np.uint8))
    write_png(root / "u.png", np.full((4, 5), 20, np.uint8))
    fp = PrecomputedMethod(str(root)).fingerprint()
    assert fp == PrecomputedMethod(str(root)).fingerprint()
    shutil.copytree(root, tmp_path / "b")
    assert PrecomputedMethod(str(tmp_path / "b")).fingerprint() == fp
    write_png(tmp_path / "b" / "r0" / "t.png", np.full((4, 5), 11, np.uint8))  # same size, other content
    assert PrecomputedMethod(str(tmp_path / "b")).fingerprint() != fp
    write_png(tmp_path / "b" / "r1" / "v.png", np.full((4, 5), 11, np.uint8))
    assert PrecomputedMethod(str(tmp_path / "b"), layout="flat").fingerprint() == \
        PrecomputedMethod(str(root), layout="flat").fingerprint()  # flat reads only DIR/*.png
    info = PrecomputedMethod.describe(path="x")
    assert info.guidance == "none" and info.runtime_params == {"path"}
