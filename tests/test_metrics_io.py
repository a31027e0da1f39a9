"""Matte and trimap decoding rules (metrics.io), on files made in tmp_path and the dev set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics import AlphaDecodeError, alpha_from_array, read_alpha, read_trimap

ICM58 = Path(__file__).resolve().parents[2] / "shared" / "data" / "icm58-dev"
needs_icm58 = pytest.mark.skipif(not ICM58.is_dir(), reason=f"shared dev set not found at {ICM58}")

MATTE = np.array([[0, 64, 128], [200, 255, 1]], np.uint8)


def _png(tmp_path: Path, name: str, arr: np.ndarray) -> Path:
    p = tmp_path / name
    Image.fromarray(arr).save(p)
    return p


def test_grey_8bit(tmp_path):
    out = read_alpha(_png(tmp_path, "a.png", MATTE))
    assert out.dtype == np.uint8 and np.array_equal(out, MATTE)


def test_grey_16bit_exact_multiple_of_257(tmp_path):
    p = _png(tmp_path, "a.png", MATTE.astype(np.uint16) * 257)
    assert Image.open(p).mode == "I;16"
    out = read_alpha(p)
    assert out.dtype == np.uint8 and np.array_equal(out, MATTE)


def test_grey_16bit_not_exact_gives_float(tmp_path):
    raw = MATTE.astype(np.uint16) * 257
    raw[0, 0] = 1000
    out = read_alpha(_png(tmp_path, "a.png", raw))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, raw / 65535.0, rtol=1e-6)


def test_rgb_equal_channels(tmp_path):
    out = read_alpha(_png(tmp_path, "a.png", np.repeat(MATTE[:, :, None], 3, axis=2)))
    assert out.dtype == np.uint8 and np.array_equal(out, MATTE)


def test_rgb_channels_differ_is_ambiguous(tmp_path):
    rgb = np.repeat(MATTE[:, :, None], 3, axis=2)
    rgb[0, 1, 2] = 3
    path = _png(tmp_path, "odd.png", rgb)
    with pytest.raises(AlphaDecodeError, match=r"odd\.png.*RGB channels differ"):
        read_alpha(path)


def test_rgba_matte_in_rgb_with_constant_alpha(tmp_path):
    rgba = np.dstack([MATTE, MATTE, MATTE, np.full_like(MATTE, 255)])
    assert np.array_equal(read_alpha(_png(tmp_path, "a.png", rgba)), MATTE)


def test_rgba_matte_in_alpha_with_constant_rgb(tmp_path):
    white = np.full_like(MATTE, 255)
    rgba = np.dstack([white, white, white, MATTE])
    assert np.array_equal(read_alpha(_png(tmp_path, "a.png", rgba)), MATTE)
    red = np.dstack([white, np.zeros_like(MATTE), np.zeros_like(MATTE), MATTE])  # constant, unequal colour
    assert np.array_equal(read_alpha(_png(tmp_path, "b.png", red)), MATTE)


def test_rgba_both_vary_is_ambiguous(tmp_path):
    rgba = np.dstack([MATTE, MATTE, MATTE, MATTE[::-1]])
    with pytest.raises(AlphaDecodeError, match=r"both\.png.*ambiguous"):
        read_alpha(_png(tmp_path, "both.png", rgba))


def test_rgba_constant_alpha_with_colour_is_ambiguous(tmp_path):
    rgba = np.dstack([MATTE, MATTE[::-1], MATTE, np.full_like(MATTE, 255)])
    with pytest.raises(AlphaDecodeError, match=r"col\.png.*colour channels differ"):
        read_alpha(_png(tmp_path, "col.png", rgba))


def test_la_alpha_matte(tmp_path):
    la = np.dstack([np.zeros_like(MATTE), MATTE])
    path = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(path)
    assert np.array_equal(read_alpha(path), MATTE)


def test_palette_and_bilevel(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(MATTE).convert("P").save(path)
    assert np.array_equal(read_alpha(path), MATTE)
    path1 = tmp_path / "b.png"
    Image.fromarray(MATTE > 100).save(path1)
    assert np.array_equal(read_alpha(path1), np.where(MATTE > 100, 255, 0))


def test_float_tiff(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray((MATTE / 255.0).astype(np.float32), "F").save(path)
    out = read_alpha(path)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, MATTE / 255.0, rtol=1e-6)
    Image.fromarray(np.full((2, 2), 3.0, np.float32), "F").save(tmp_path / "big.tif")
    with pytest.raises(AlphaDecodeError, match=r"big\.tif.*\[0, 1\]"):
        read_alpha(tmp_path / "big.tif")


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(AlphaDecodeError, match=r"broken\.png"):
        read_alpha(bad)
    with pytest.raises(AlphaDecodeError, match=r"nothing\.png.*not found"):
        read_alpha(tmp_path / "nothing.png")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(AlphaDecodeError, match=r"notes\.png"):
        read_trimap(text)


def test_unsupported_mode(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (3, 2)).save(path)
    with pytest.raises(AlphaDecodeError, match=r"c\.jpg.*mode 'CMYK'"):
        read_alpha(path)


def test_read_trimap_rules(tmp_path):
    tri = np.array([[0, 128, 255], [127, 129, 128]], np.uint8)
    assert np.array_equal(read_trimap(_png(tmp_path, "t.png", tri)), tri)
    assert np.array_equal(read_trimap(_png(tmp_path, "t16.png", tri.astype(np.uint16) * 257)), tri)
    with pytest.raises(AlphaDecodeError, match=r"t16b\.png.*not 8-bit exact"):
        read_trimap(_png(tmp_path, "t16b.png", tri.astype(np.uint16) * 257 + 1))


def test_alpha_from_array_rules():
    assert np.array_equal(alpha_from_array(MATTE[:, :, None]), MATTE)
    out = alpha_from_array(MATTE / 255.0)
    assert out.dtype == np.float32
    assert np.array_equal(alpha_from_array(MATTE > 0), np.where(MATTE > 0, 255, 0))
    with pytest.raises(AlphaDecodeError, match=r"<array>.*shape"):
        alpha_from_array(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(AlphaDecodeError, match=r"mine.*sample type int64"):
        alpha_from_array(np.zeros((2, 2), np.int64), name="mine")
    with pytest.raises(AlphaDecodeError, match="empty"):
        alpha_from_array(np.zeros((0, 3), np.uint8))
    with pytest.raises(AlphaDecodeError, match=r"\[0, 1\]"):
        alpha_from_array(np.full((2, 2), np.nan))
    assert issubclass(AlphaDecodeError, ValueError)


@needs_icm58
def test_dev_set_odd_encodings_decode_to_the_matte():
    for stem in ("flower_02", "plush_toy_03", "teddy_bear_02", "plant_02"):
        a = read_alpha(ICM58 / "alpha" / f"{stem}.png")
        assert a.dtype == np.uint8, stem
        assert a.min() == 0 and a.max() == 255 and len(np.unique(a)) > 10, stem  # a real matte, not constant
    raw16 = np.asarray(Image.open(ICM58 / "alpha" / "plant_02.png")).astype(np.uint32)
    assert np.array_equal(read_alpha(ICM58 / "alpha" / "plant_02.png").astype(np.uint32) * 257, raw16)
    rgba = np.asarray(Image.open(ICM58 / "alpha" / "teddy_bear_02.png"))
    assert np.array_equal(read_alpha(ICM58 / "alpha" / "teddy_bear_02.png"), rgba[:, :, 3])


@needs_icm58
def test_dev_set_every_matte_matches_its_image_size():
    images = {p.stem: p for p in (ICM58 / "image").iterdir()}
    for path in sorted((ICM58 / "alpha").glob("*.png")):
        if path.stem == "statue_01":
            continue  # 24 Mpx; decoded in the benchmark
        a = read_alpha(path)
        assert a.ndim == 2 and a.dtype == np.uint8, path.name
        with Image.open(images[path.stem]) as im:
            assert a.shape == (im.height, im.width), path.name
    for path in sorted((ICM58 / "trimap").glob("*.png")):
        if path.stem == "statue_01":
            continue
        t = read_trimap(path)
        assert set(np.unique(t)) <= {0, 128, 255}, path.name
