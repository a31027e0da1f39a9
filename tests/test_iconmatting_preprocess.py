"""IconMatting working frame: official centre crop, letterbox, back-mapping, seeded interpolation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from methods.iconmatting.preprocess import (
    OFFICIAL_INTERPS,
    alpha_from_frame,
    alpha_to_frame,
    image_to_frame,
    labels_to_frame,
    make_frame,
    pick_interpolation,
)


def test_official_centre_crop_geometry() -> None:
    # official CropResize: rows [(h-w)//2, (h-w)//2 + w) for portrait, columns likewise for landscape
    assert make_frame((300, 200), 64, "official768").src == (50, 0, 200, 200)
    assert make_frame((200, 301), 64, "official768").src == (0, 50, 200, 200)
    assert make_frame((64, 64), 64, "official768").src == (0, 0, 64, 64)


def test_image_scaling_and_crop_content() -> None:
    img = np.zeros((300, 200, 3), np.uint8)
    img[50:250] = 255  # exactly the crop window is white
    out = image_to_frame(img, make_frame(img.shape[:2], 64, "official768"), cv2.INTER_CUBIC)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0)
    black = image_to_frame(np.zeros((10, 10, 3), np.uint8), make_frame((10, 10), 64, "official768"), 1)
    np.testing.assert_allclose(black, -1.0)


def test_letterbox_keeps_whole_image() -> None:
    frame = make_frame((100, 200), 64, "full")
    assert frame.src == (0, 0, 100, 200) and frame.dst == (16, 0, 32, 64)
    img = np.full((100, 200, 3), 255, np.uint8)
    out = image_to_frame(img, frame, cv2.INTER_LINEAR)
    assert np.all(out[:, 16:48] == 1.0) and np.all(out[:, :16] == 0.0) and np.all(out[:, 48:] == 0.0)
    alpha = alpha_to_frame(np.ones((100, 200), np.float32), frame, cv2.INTER_LINEAR)
    assert alpha[:16].max() == 0 and alpha[16:48].min() == 1


def test_full_round_trip_is_aligned() -> None:
    frame = make_frame((120, 90), 64, "full")
    alpha = np.zeros((120, 90), np.float32)
    alpha[30:90, 20:70] = 1
    back = alpha_from_frame(alpha_to_frame(alpha, frame, cv2.INTER_LINEAR), frame)
    assert back.shape == (120, 90)
    assert np.abs(back - alpha).mean() < 0.03


@pytest.mark.parametrize("fill", ["edge", "zero", "stretch"])
def test_official_back_mapping(fill: str) -> None:
    frame = make_frame((100, 50), 32, "official768")  # crop rows 25..75
    pred = np.zeros((32, 32), np.float32)
    pred[0, :] = 1.0  # top row of the square is foreground
    out = alpha_from_frame(pred, frame, fill)
    assert out.shape == (100, 50) and out.dtype == np.float32
    if fill == "edge":
        assert out[:25].min() > 0.9  # the cut-off top repeats the window's top row
        assert out[80:].max() == 0
    elif fill == "zero":
        assert out[:25].max() == 0 and out[25].min() > 0.9
    else:  # the square stretched over the whole frame (official)
        assert out[0].min() > 0.9 and out[50].max() == 0


def test_sparse_labels_survive_downscaling() -> None:
    labels = np.zeros((1000, 1000), np.uint8)
    labels[500, 500] = 2
    labels[10, 990] = 1
    out = labels_to_frame(labels, make_frame(labels.shape, 64, "official768"))
    assert (out == 2).sum() == 1 and (out == 1).sum() == 1
    assert out[32, 32] == 2


def test_interpolation_choice_is_seeded() -> None:
    assert pick_interpolation("image", "fixed", None) == cv2.INTER_CUBIC
    assert pick_interpolation("alpha", "fixed", None) == cv2.INTER_LINEAR
    a = [pick_interpolation("image", "official_random", np.random.default_rng(5)) for _ in range(3)]
    b = [pick_interpolation("image", "official_random", np.random.default_rng(5)) for _ in range(3)]
    assert a == b and set(a) <= set(OFFICIAL_INTERPS)
    many = {pick_interpolation("image", "official_random", np.random.default_rng(i)) for i in range(40)}
    assert many == set(OFFICIAL_INTERPS)
    with pytest.raises(ValueError):
        pick_interpolation("image", "official_random", None)
