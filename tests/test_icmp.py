"""ICMP (DINOv2 point propagation → SAM → pseudo-trimap → ViTMatte) and MatAny on tiny random models:
the propagation rule by hand, reference features once per episode, side outputs kept and drawn, the
DINOv2 loader's strictness, and both adapters end to end through the runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.runner import Runner
from benchmark.types import Episode, Prompt
from benchmark.visualize import main as visualize_main
from methods import build_method
from methods.base import MethodError, Prediction, Reference, Target
from methods.dinov2 import Dinov2Features, save_random_dinov2
from methods.icmp import IcmpMethod, patch_centre, patch_of
from methods.pseudo_trimap import pseudo_trimap, trimap_levels
from methods.sam_matting import unknown_inside
from tests.conftest import make_folder_dataset, soft_disc
from tests.runner_helpers import compose_config, read_rows
from tests.tiny_dinov2 import ARCH, tiny_dinov2
from tests.tiny_hf import tiny_vitmatte
from tests.tiny_sam import tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("icmp")
    ckpt, arch = tiny_sam(tmp / "sam")
    return {**tiny_dinov2(tmp / "dinov2"), "sam_checkpoint": str(ckpt), "sam_arch": arch,
            "vitmatte_path": str(tiny_vitmatte(tmp / "vitmatte")), "device": "cpu"}


def scene(shape=(42, 56), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    alpha = soft_disc(*shape, shape[0] / 2, shape[1] / 2, min(shape) / 3)
    image = (alpha[..., None] * 200 + rng.integers(0, 50, (*shape, 3))).astype(np.uint8)
    return image, alpha


def points_ref(image: np.ndarray) -> Reference:
    h, w = image.shape[:2]
    return Reference("ref", image, Prompt("points", (h, w), points=((h // 2, w // 2, True), (1, 1, False))))


# ----------------------------------------------------------------------------- the propagation rule
def test_patch_cells_and_centres_round_trip():
    shape, grid = (42, 56), (3, 4)
    for r in range(3):
        for c in range(4):
            assert patch_of(patch_centre((r, c), shape, grid), shape, grid) == (r, c)
    assert patch_of((41, 55), shape, grid) == (2, 3) and patch_of((0, 0), shape, grid) == (0, 0)


def test_nearest_propagation_picks_the_most_similar_patch_per_reference_point(parts):
    method: IcmpMethod = build_method("icmp", **parts)  # type: ignore[assignment]
    e = np.eye(4, dtype=np.float32)
    method._fg, method._bg = np.stack([e[0], e[1]]), np.stack([e[3]])
    feats = np.zeros((2, 3, 4), np.float32)
    feats[1, 2] = e[0]  # matches the first foreground point
    feats[0, 1] = e[1]  # matches the second
    feats[1, 0] = e[3]  # matches the background point
    points, sim = method.propagate(feats, (20, 30))
    assert points == [(*patch_centre((1, 2), (20, 30), (2, 3)), True), (*patch_centre((0, 1), (20, 30), (2, 3)), True),
                      (*patch_centre((1, 0), (20, 30), (2, 3)), False)]
    assert sim.shape == (2, 3) and sim[1, 2] == 1.0 and sim[1, 0] == 0.0
    method.propagation, method.num_points, method.num_negative = "topk", 1, 1
    points, _ = method.propagate(feats, (20, 30))
    assert [p[2] for p in points] == [True, False] and points[0][:2] == patch_centre((0, 1), (20, 30), (2, 3))


def test_reference_features_are_computed_once_per_episode_and_side_outputs_returned(parts):
    method: IcmpMethod = build_method("icmp", **parts)  # type: ignore[assignment]
    image, _ = scene()
    method.prepare([points_ref(image)], seed=0, episode=Episode("g", 0, ("ref",), ("a", "b", "c")))
    outputs = method.predict([Target(t, scene(seed=i + 1)[0]) for i, t in enumerate("abc")])
    assert method.reference_encodings == 1
    for out in outputs:
        assert isinstance(out, Prediction) and out.alpha.shape == image.shape[:2]
        assert out.extras["sam_mask"].shape == image.shape[:2] and out.extras["sam_mask"].dtype == bool
        assert out.extras["points"] and all(len(p) == 3 for p in out.extras["points"])
        assert out.extras["similarity"].dtype == np.uint8
    method.prepare([points_ref(image), points_ref(image)], seed=0)
    assert method.reference_encodings == 3


def test_a_reference_without_foreground_points_is_refused(parts):
    method = build_method("icmp", **parts)
    image, _ = scene()
    ref = Reference("ref", image, Prompt("points", image.shape[:2], points=((1, 1, False),)))
    with pytest.raises(MethodError, match="no foreground point"):
        method.prepare([ref], seed=0)


def test_icmp_settings_are_checked(parts):
    with pytest.raises(ValueError, match="propagation"):
        build_method("icmp", **{**parts, "propagation": "knn"})
    with pytest.raises(ValueError, match="num_points"):
        build_method("icmp", **{**parts, "num_points": 0})


# ----------------------------------------------------------------------------- DINOv2 loading
def test_dinov2_reads_meta_files_and_refuses_a_renamed_key(tmp_path):
    path = save_random_dinov2(tmp_path / "timm.pth", "vits14", ARCH)
    state = torch.load(path, weights_only=True)
    meta = dict(state, mask_token=torch.zeros(1, ARCH["embed_dim"]))  # Meta's files carry the iBOT mask token
    torch.save(meta, tmp_path / "dinov2_vits14_pretrain.pth")
    image = scene()[0]
    a = Dinov2Features("vits14", str(path), image_size=56, arch=ARCH, device="cpu").features(image)
    b = Dinov2Features("vits14", str(tmp_path / "dinov2_vits14_pretrain.pth"), image_size=56, arch=ARCH,
                       device="cpu").features(image)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, atol=1e-5)
    renamed = {("blocks.0.attn.qkv.weightX" if k == "blocks.0.attn.qkv.weight" else k): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight"):
        Dinov2Features("vits14", str(tmp_path / "renamed.pth"), image_size=56, arch=ARCH, device="cpu")
    with pytest.raises(ValueError, match="dinov2 model"):
        Dinov2Features("resnet50", str(path))


# ----------------------------------------------------------------------------- the matting half
def test_pseudo_trimap_follows_matte_anything():
    mask = np.zeros((60, 60), bool)
    mask[20:40, 20:40] = True
    tri = pseudo_trimap(mask, 3, 3, 2)  # a 3×3 kernel twice grows/shrinks the square by 2 px
    assert (tri[22:38, 22:38] == 255).all() and tri[21, 30] == 128 and tri[18, 30] == 128 and tri[17, 30] == 0
    assert set(np.unique(tri)) == {0, 128, 255}
    assert trimap_levels(np.array([0, 84, 85, 128, 169, 170, 255])).tolist() == [0, 0, 0.5, 0.5, 0.5, 1, 1]
    boxed = unknown_inside(tri, [(0, 0, 30, 60)])
    assert (boxed[22:38, 22:30] == 128).all() and (boxed[22:38, 30:38] == 255).all()


def test_matany_uses_each_targets_prompt_and_keeps_its_mask(parts):
    params = {k: v for k, v in parts.items() if not k.startswith("dinov2")}
    method = build_method("matany", **params)
    image, _ = scene()
    prompt = Prompt("points", image.shape[:2], points=((21, 28, True),))
    method.prepare([], seed=0)
    out, missing = method.predict([Target("a", image, prompt=prompt), Target("b", image)])
    assert isinstance(out, Prediction) and out.alpha.shape == image.shape[:2]
    assert set(out.extras) == {"sam_mask", "trimap"} and isinstance(missing, MethodError)
    assert "no prompt" in str(missing)


# ----------------------------------------------------------------------------- through the runner
@pytest.mark.slow
@pytest.mark.parametrize("name", ["icmp", "matany"])
def test_end_to_end_through_the_runner_with_side_outputs_drawn(name, parts, tmp_path):
    data = make_folder_dataset(tmp_path / "data", groups=2, per_group=3, size=(40, 56))
    params = {k: v for k, v in parts.items() if name == "icmp" or not k.startswith("dinov2")}
    cfg = compose_config(f"method={name}", "dataset=folder", f"dataset.root={data}", "prompt=points",
                         "runner.rounds=1", "runner.workers=1", "runner.progress=off", "runner.regions=[whole]")
    cfg["method"].update(params)
    out = tmp_path / "out"
    stats = Runner(cfg, out).run()
    rows = read_rows(out / "results.csv")
    assert stats.errors == 0, [r["error"] for r in rows if r["error"]]
    assert len(rows) == (4 if name == "icmp" else 6)
    extras = sorted((out / "extras").rglob("*"))
    names = {p.name for p in extras if p.is_file()}
    assert {"sam_mask.png", "trimap.png"} <= names
    if name == "icmp":
        assert "points.json" in names
        first = next(p for p in extras if p.name == "points.json")
        assert all(len(p) == 3 for p in json.loads(first.read_text()))
    assert visualize_main([str(out)]) == 0
    figures = list((out / "figures").glob("*.png"))
    assert figures
    from PIL import Image

    from benchmark.report.figures import grid_height

    assert Image.open(figures[0]).size[1] == grid_height(5)  # image, prediction, truth, error, side outputs


def test_missing_parts_are_named(parts, tmp_path):
    with pytest.raises(FileNotFoundError, match="dinov2_checkpoint"):
        build_method("icmp", **{**parts, "dinov2_checkpoint": None})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "vm")):
        build_method("icmp", **{**parts, "vitmatte_path": str(tmp_path / "vm")})


def test_fingerprint_follows_the_weights_not_their_place(parts, tmp_path):
    a = build_method("icmp", **parts).fingerprint()
    moved = tmp_path / "moved.pth"
    moved.write_bytes(Path(parts["dinov2_checkpoint"]).read_bytes())
    assert build_method("icmp", **{**parts, "dinov2_checkpoint": str(moved)}).fingerprint() == a
    other = save_random_dinov2(tmp_path / "other.pth", "vits14", ARCH, seed=1)
    assert build_method("icmp", **{**parts, "dinov2_checkpoint": str(other)}).fingerprint() != a


def test_matany_transparency_makes_foreground_inside_detected_boxes_unknown(parts, tmp_path):
    from tests.tiny_gdino import tiny_grounding_dino

    params = {k: v for k, v in parts.items() if not k.startswith("dinov2")}
    gdino = tiny_grounding_dino(tmp_path / "gdino")
    method = build_method("matany", **params, transparency=True, grounding_dino_path=str(gdino),
                          box_threshold=0.0, text_threshold=0.0,  # a random detector: keep every box
                          erode_kernel=3, dilate_kernel=3, iterations=2)  # keep a foreground core at 42×56
    image, alpha = scene()
    mask = alpha > 0.5
    boxes = method.matting.transparency.boxes(image)
    assert boxes and all(len(b) == 4 for b in boxes)
    trimap = method.matting.trimap(image, mask)
    plain = pseudo_trimap(mask, 3, 3, 2)
    for x0, y0, x1, y1 in boxes:
        inside = trimap[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
        assert not (inside == 255).any()
    assert ((plain == 255) & (trimap == 128)).any() and not ((plain != 255) & (trimap != plain)).any()
    assert method.fingerprint() != build_method("matany", **params).fingerprint()
