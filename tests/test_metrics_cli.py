"""The ``python -m metrics`` command: folder mode (CSV), single mode (text/JSON), errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics import METRIC_NAMES, evaluate
from metrics.cli import CSV_COLUMNS, main

ROOT = Path(__file__).resolve().parents[1]


def _matte(seed: int, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = np.clip((10 - np.hypot(yy - 12, xx - 16)) / 4 + 0.5 + rng.normal(0, 0.05, shape), 0, 1)
    return np.rint(a * 255).astype(np.uint8)


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("pred", "gt", "tri")}
    for p in d.values():
        p.mkdir()
    for i, stem in enumerate(("a", "b", "c")):
        gt = _matte(i)
        Image.fromarray(gt).save(d["gt"] / f"{stem}.png")
        Image.fromarray(_matte(10 + i)).save(d["pred"] / f"{stem}.png")
        tri = np.where(gt == 0, 0, np.where(gt == 255, 255, 128)).astype(np.uint8)
        Image.fromarray(tri).save(d["tri"] / f"{stem}.png")
    return d


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_mode_rows_match_evaluate(folders, tmp_path, capsys):
    out = tmp_path / "res" / "results.csv"
    rc = main(["--pred-dir", str(folders["pred"]), "--gt-dir", str(folders["gt"]),
               "--trimap-dir", str(folders["tri"]), "--out", str(out)])
    assert rc == 0
    rows = _read(out)
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["image"], r["region"]) for r in rows] == [(s, r) for s in "abc" for r in ("whole", "unknown")]
    for r in rows:
        stem = r["image"]
        res = evaluate(np.asarray(Image.open(folders["pred"] / f"{stem}.png")),
                       np.asarray(Image.open(folders["gt"] / f"{stem}.png")),
                       np.asarray(Image.open(folders["tri"] / f"{stem}.png")))[r["region"]]
        assert r["error"] == ""
        for k in METRIC_NAMES:
            assert float(r[k]) == res[k]  # repr round-trips exactly
    printed = capsys.readouterr().out
    assert "whole" in printed and "unknown" in printed
    assert [p.name for p in out.parent.iterdir()] == ["results.csv"]  # no temp file left behind


def test_folder_mode_records_errors_and_exits_nonzero(folders, tmp_path, capsys):
    (folders["pred"] / "b.png").unlink()  # missing partner
    Image.fromarray(_matte(20)).save(folders["pred"] / "d.png")  # no ground truth
    (folders["gt"] / "c.png").write_bytes(b"garbage")  # unreadable
    Image.fromarray(_matte(21, (10, 10))).save(folders["gt"] / "e.png")
    Image.fromarray(_matte(22, (12, 10))).save(folders["pred"] / "e.jpg.png")  # stem 'e.jpg', unpaired
    Image.fromarray(_matte(23, (12, 10))).save(folders["pred"] / "e.tif")  # size mismatch with gt e
    (folders["tri"] / "a.png").unlink()  # missing trimap: whole is scored, unknown is an error
    out = tmp_path / "results.csv"
    rc = main(["--pred-dir", str(folders["pred"]), "--gt-dir", str(folders["gt"]),
               "--trimap-dir", str(folders["tri"]), "--out", str(out)])
    assert rc == 1
    rows = {(r["image"], r["region"]): r for r in _read(out)}
    assert rows[("a", "whole")]["error"] == "" and float(rows[("a", "whole")]["SAD"]) > 0
    assert "missing trimap" in rows[("a", "unknown")]["error"]
    assert "missing prediction" in rows[("b", "whole")]["error"] and rows[("b", "whole")]["SAD"] == ""
    assert "c.png" in rows[("c", "whole")]["error"]
    assert "missing ground truth" in rows[("d", "whole")]["error"]
    assert "differs" in rows[("e", "whole")]["error"] and "e.tif" in rows[("e", "whole")]["error"]
    assert "missing ground truth" in rows[("e.jpg", "whole")]["error"]
    assert "error" in capsys.readouterr().err


def test_folder_mode_whole_only_and_icm(folders, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["--pred-dir", str(folders["pred"]), "--gt-dir", str(folders["gt"]), "--out", str(out),
                 "--protocol", "icm", "--backend", "numpy"]) == 0
    rows = _read(out)
    assert [r["region"] for r in rows] == ["whole"] * 3
    p = np.asarray(Image.open(folders["pred"] / "a.png"))
    g = np.asarray(Image.open(folders["gt"] / "a.png"))
    assert float(rows[0]["Conn"]) == evaluate(p, g, protocol="icm")["whole"]["Conn"]


def test_existing_csv_replaced_atomically_and_kept_on_bad_folder(folders, tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("old")
    assert main(["--pred-dir", str(tmp_path / "nope"), "--gt-dir", str(folders["gt"]), "--out", str(out)]) == 2
    assert out.read_text() == "old"
    assert main(["--pred-dir", str(folders["pred"]), "--gt-dir", str(folders["gt"]), "--out", str(out)]) == 0
    assert out.read_text().startswith("image,region,SAD")


def test_single_mode_json_and_text(folders, capsys):
    args = ["--pred", str(folders["pred"] / "a.png"), "--gt", str(folders["gt"] / "a.png")]
    assert main([*args, "--trimap", str(folders["tri"] / "a.png"), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = evaluate(np.asarray(Image.open(folders["pred"] / "a.png")), np.asarray(Image.open(folders["gt"] / "a.png")),
                    np.asarray(Image.open(folders["tri"] / "a.png")))
    assert got == want
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["region", *METRIC_NAMES]


def test_single_mode_empty_region_nan_is_null(folders, tmp_path, capsys):
    tri = tmp_path / "zero.png"
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(tri)
    assert main(["--pred", str(folders["pred"] / "a.png"), "--gt", str(folders["gt"] / "a.png"),
                 "--trimap", str(tri), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["unknown"]["MSE"] is None and got["unknown"]["SAD"] == 0.0
    assert not math.isnan(got["whole"]["MSE"])


def test_single_mode_error_names_file(folders, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    rgba = np.dstack([_matte(1), _matte(2), _matte(3), _matte(4)])
    Image.fromarray(rgba).save(bad)
    assert main(["--pred", str(bad), "--gt", str(folders["gt"] / "a.png")]) == 1
    assert "bad.png" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],
    ["--pred-dir", "x"],
    ["--pred", "x"],
    ["--pred", "x", "--gt", "y", "--pred-dir", "z"],
    ["--pred-dir", "x", "--gt-dir", "y", "--out", "o", "--trimap", "t"],
    ["--pred", "x", "--gt", "y", "--out", "o"],
])
def test_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_help_via_python_m():
    out = subprocess.run([sys.executable, "-m", "metrics", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    for needle in ("--pred-dir", "--trimap-dir", "trimap == 128", "multiple of 257", "ambiguous", "icm"):
        assert needle in out.stdout
