"""Video object matting through the runner: first frame as reference, every frame a target."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from benchmark.datasets import load_dataset
from benchmark.video import export
from tests.conftest import soft_disc
from tests.runner_helpers import read_rows
from tests.test_runner import run


@pytest.fixture()
def clip(tmp_path):
    """An 8-frame AVI of a disc moving right over noise, and the first frame's matte."""
    rng = np.random.default_rng(0)
    h, w = 48, 64
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    bg = rng.integers(0, 120, (h, w, 3)).astype(np.float32)
    for i in range(8):
        a = soft_disc(h, w, 24, 20 + 3 * i, 12)[..., None]
        frame = a * np.array([40, 200, 250]) + (1 - a) * bg
        writer.write(np.rint(frame).astype(np.uint8))
        if i == 0:
            Image.fromarray(np.rint(a[..., 0] * 255).astype(np.uint8)).save(tmp_path / "first.png")
    writer.release()
    return path, tmp_path / "first.png"


def test_video_dataset_and_run(tmp_path, clip):
    path, first = clip
    cache = tmp_path / "frames"
    ds = load_dataset("video", path=str(path), reference_alpha=str(first), cache=str(cache), stride=2)
    assert len(ds.samples) == 4 and ds.meta["fixed_reference"] == "00000"
    stats = run(tmp_path / "out", "method=reference_mask", "dataset=video", f"dataset.path={path}",
                f"dataset.reference_alpha={first}", f"dataset.cache={cache}", "runner.rounds=3")
    rows = read_rows(tmp_path / "out" / "results.csv")
    scored = [r for r in rows if r["status"] == "ok"]
    assert {r["target"] for r in scored} == {"00000"}  # only the first frame has a ground truth
    assert sum(r["status"] == "unscored" for r in rows) == 7 and stats.errors == 0
    assert len(list((tmp_path / "out" / "predictions" / "r0").glob("*.png"))) == 8
    n = export(tmp_path / "out", tmp_path / "comp.avi", tmp_path / "alpha.avi")
    assert n == 8
    cap = cv2.VideoCapture(str(tmp_path / "comp.avi"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 8
