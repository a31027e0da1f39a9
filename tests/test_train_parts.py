"""The training building blocks: the official loss, the lr schedule, the pair sampler and the augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.types import Dataset, Group, Sample
from methods.iconmatting.train import data as train_data
from methods.iconmatting.train.data import (
    INTERPOLATIONS,
    PairSampler,
    binarize_alpha,
    crop_resize,
    is_open_images,
    load_example,
    square_box,
)
from methods.iconmatting.train.loss import (
    TERMS,
    matting_loss,
    matting_loss_terms,
    sample_map_for,
    sample_map_from_trimap,
)
from methods.iconmatting.train.schedule import make_scheduler, warmup_lr

REFERENCE = Path(__file__).parent / "data" / "train" / "loss_reference.json"

# ----------------------------------------------------------------------------------------------------------- loss


def _soft(rng: np.random.Generator, b: int, h: int, w: int) -> np.ndarray:
    """Mattes with exact 0 and 1 regions and soft values in between."""
    return np.clip(rng.normal(0.5, 0.6, (b, 1, h, w)), 0.0, 1.0)


def _case(seed: int, h: int, w: int, kinds: list[str], maps: list[str]) -> tuple[torch.Tensor, ...]:
    """(sample_map, pred, target), float32 B×1×H×W, a pure function of the arguments (NumPy PCG64 streams are
    stable across platforms and versions)."""
    rng = np.random.default_rng(seed)
    b = len(kinds)
    target = _soft(rng, b, h, w)
    for i, kind in enumerate(kinds):
        if kind == "zeros":
            target[i] = 0.0
        elif kind == "ones":
            target[i] = 1.0
        elif kind == "binary":
            target[i] = (target[i] >= 0.5).astype(np.float64)
    pred = rng.uniform(0.0, 1.0, (b, 1, h, w))
    sample_map = (rng.uniform(0.0, 1.0, (b, 1, h, w)) < 0.3).astype(np.float64)
    for i, kind in enumerate(maps):
        if kind == "empty":
            sample_map[i] = 0.0
        elif kind == "full":
            sample_map[i] = 1.0
    return tuple(torch.from_numpy(a.astype(np.float32)) for a in (sample_map, pred, target))


def loss_cases() -> dict[str, tuple[torch.Tensor, ...]]:
    """The cases of ``loss_reference.json`` (also used by ``tests/data/train/make_loss_reference.py``)."""
    return {
        "mixed": _case(15, 64, 64, ["zeros", "ones", "soft", "soft"], ["random"] * 4),
        "empty_and_full_unknown": _case(16, 64, 64, ["soft", "soft", "zeros"], ["empty", "full", "empty"]),
        "odd_sizes": _case(17, 67, 75, ["soft", "binary"], ["random", "random"]),
        "single_96x80": _case(18, 96, 80, ["soft"], ["random"]),
        "all_segmentation": _case(19, 64, 72, ["zeros", "ones"], ["random", "empty"]),
    }


# fp32 throughout: our vectorised sums reduce in a different order than the official per-sample loop (and the
# official scale is a 0-dim tensor product), so values agree to a few fp32 ulps of the *sums* (~1e-7 relative per
# reduction of ≤ 10⁴ terms); 1e-5 relative leaves a margin of ~10× and still catches any wrong term (≥ 1e-3).
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("name", list(loss_cases()))
def test_loss_equals_official(name: str, reference: dict) -> None:
    ref = reference["cases"][name]
    sample_map, pred, target = loss_cases()[name]
    sums = [float(sample_map.sum()), float(pred.double().sum()), float(target.double().sum())]
    np.testing.assert_allclose(sums, ref["input_sums"], rtol=1e-12, err_msg="the seeded inputs changed")
    pred = pred.clone().requires_grad_(True)
    terms = {k: v.detach() for k, v in matting_loss_terms(sample_map, pred, target).items()}
    for key in TERMS:  # a key the official dict lacks (no sample produced it) is 0 here
        np.testing.assert_allclose(float(terms[key]), ref["terms"].get(key, 0.0), rtol=RTOL, atol=ATOL, err_msg=key)
    total = matting_loss(sample_map, pred, target)
    np.testing.assert_allclose(float(total.detach()), ref["total"], rtol=RTOL, atol=ATOL)
    total.backward()
    np.testing.assert_allclose(float(pred.grad.abs().sum()), ref["grad_abs_sum"], rtol=1e-4)


def test_reference_names_its_commit(reference: dict) -> None:
    assert reference["source"].startswith("tiny-smart/in-context-matting:icm/criterion/loss_function.py@d5197e0")


def test_loss_is_a_batch_sum_and_segmentation_switch() -> None:
    sample_map, pred, target = loss_cases()["mixed"]
    whole = matting_loss(sample_map, pred, target)
    parts = sum(matting_loss(sample_map[i:i + 1], pred[i:i + 1], target[i:i + 1]) for i in range(4))
    torch.testing.assert_close(whole, parts, rtol=1e-6, atol=0)
    seg = matting_loss_terms(sample_map[:1], pred[:1], target[:1])  # all-zero target: known smooth-ℓ1 only
    assert float(seg["unknown_l1_loss"]) == float(seg["loss_pha_laplacian"]) == 0.0
    assert float(seg["known_l1_loss"]) > 0


def test_loss_runs_in_fp32_under_bf16_inputs() -> None:
    sample_map, pred, target = loss_cases()["odd_sizes"]
    full = matting_loss(sample_map, pred, target)
    low = matting_loss(sample_map, pred.bfloat16(), target)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full, rtol=2e-2, atol=0)


def test_sample_map_from_trimap_thresholds() -> None:
    trimap = torch.tensor([0, 84, 85, 128, 169, 170, 255], dtype=torch.uint8).view(1, 1, 1, 7)
    assert sample_map_from_trimap(trimap).flatten().tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_sample_map_for_derives_a_band() -> None:
    alpha = torch.zeros(2, 1, 40, 40)
    alpha[:, :, 10:30, 10:30] = 1.0
    alpha[1, :, 10:30, 9] = 0.5
    m = sample_map_for(alpha, radius=2)
    assert m.shape == alpha.shape and set(m.unique().tolist()) == {0.0, 1.0}
    assert m[0, 0, 20, 20] == 0 and m[0, 0, 0, 0] == 0 and m[0, 0, 10, 20] == 1
    trimap = torch.full_like(alpha, 128)
    assert float(sample_map_for(alpha, trimap).mean()) == 1.0


# -------------------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(("step", "expected"), [
    (0, 4e-4 * 1e-6),
    (1, 4e-4 * ((1 - 1e-6) / 250 + 1e-6)),
    (125, 4e-4 * ((1 - 1e-6) / 2 + 1e-6)),
    (249, 4e-4 * ((1 - 1e-6) * 249 / 250 + 1e-6)),
    (250, 4e-4),
    (10000, 4e-4),
])
def test_schedule_matches_official_multiplier(step: int, expected: float) -> None:
    assert warmup_lr(step) == pytest.approx(expected, rel=1e-12, abs=0)


def test_schedule_absolute_start_lr_option() -> None:
    assert warmup_lr(0, start_lr=1e-6) == pytest.approx(1e-6, rel=1e-12)
    assert warmup_lr(125, start_lr=1e-6) == pytest.approx((4e-4 + 1e-6) / 2, rel=1e-12)
    assert warmup_lr(250, start_lr=1e-6) == 4e-4


def test_scheduler_follows_warmup_lr_and_resumes() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    sched = make_scheduler(opt)
    seen = []
    for _ in range(260):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(seen, [warmup_lr(n) for n in range(260)], rtol=1e-12)
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = make_scheduler(opt2)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr() == [4e-4]


# ---------------------------------------------------------------------------------------------------- pair sampler


def _dataset(name: str, group_sizes: list[int], meta: dict | None = None) -> Dataset:
    samples, groups = {}, {}
    for g, n in enumerate(group_sizes):
        ids = tuple(f"{name}-g{g}-{i}" for i in range(n))
        groups[f"g{g}"] = Group(f"g{g}", ids)
        for sid in ids:
            samples[sid] = Sample(sid, f"g{g}", Path(f"/nowhere/{sid}.png"), Path(f"/nowhere/{sid}.a.png"))
    return Dataset(name, Path("/nowhere"), samples, groups, fingerprint=f"fp-{name}-{group_sizes}", meta=meta or {})


def test_reference_is_another_member_of_the_group() -> None:
    ds = _dataset("d", [2, 3, 5, 1])
    sampler = PairSampler(ds, seed=3)
    singles = 0
    for i in range(2000):
        target, ref = sampler.pair(i)
        assert ref.group == target.group
        if len(ds.groups[target.group].sample_ids) >= 2:
            assert ref.id != target.id
        else:
            singles += 1
            assert ref.id == target.id and sampler.info(i).self_reference
    assert singles == 2000 // len(sampler)


def test_official_reference_rule_allows_self_in_pairs() -> None:
    sampler = PairSampler(_dataset("d", [2, 4]), seed=0, reference="official")
    infos = [sampler.info(i) for i in range(3000)]
    pair_group = [p for p in infos if p.target.group == "g0"]
    frac = np.mean([p.self_reference for p in pair_group])
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / len(pair_group))
    assert not any(p.self_reference for p in infos if p.target.group == "g1")


def test_every_target_once_per_epoch_and_determinism() -> None:
    ds = _dataset("d", [3, 4, 2])
    a, b = PairSampler(ds, seed=7), PairSampler(ds, seed=7)
    n = len(a)
    assert n == 9
    for epoch in range(3):
        ids = [a.pair(epoch * n + j)[0].id for j in range(n)]
        assert sorted(ids) == sorted(ds.samples)
    assert [p.id for i in range(40) for p in a.pair(i)] == [p.id for i in range(40) for p in b.pair(i)]
    other = PairSampler(ds, seed=8)
    assert [a.pair(i)[0].id for i in range(40)] != [other.pair(i)[0].id for i in range(40)]
    fixed = PairSampler(ds, seed=7, reshuffle=False)
    assert [fixed.pair(j)[0].id for j in range(n)] == [fixed.pair(n + j)[0].id for j in range(n)]


def test_mixing_ratios() -> None:
    big, small = _dataset("big", [5] * 20), _dataset("small", [3] * 2)
    sampler = PairSampler([(big, 1.0), (small, 3.0)], seed=1, epoch_size=400)
    sources = np.array([sampler.info(i).source for i in range(4000)])
    p = 3.0 / 4.0
    assert abs(np.mean(sources == 1) - p) < 4 * np.sqrt(p * (1 - p) / len(sources))
    for start in range(0, 4000, 400):  # stratified: exact per epoch
        assert np.sum(sources[start:start + 400] == 1) == 300
    window = sources[:40]
    assert 0 < np.sum(window == 1) < 40  # interleaved, not in blocks
    proportional = PairSampler([big, small], seed=1)
    assert len(proportional) == 106 and proportional.counts == [100, 6]


def test_resume_continues_the_sequence() -> None:
    ds = [(_dataset("a", [2, 3]), 2.0), (_dataset("b", [4]), 1.0)]
    straight = PairSampler(ds, seed=5)
    first = [next(straight) for _ in range(57)]
    rest = [next(straight) for _ in range(30)]
    resumed = PairSampler(ds, seed=5)
    state = json.loads(json.dumps(resumed.state_dict()))
    assert state["position"] == 0
    partial = PairSampler(ds, seed=5)
    assert [next(partial) for _ in range(57)] == first
    resumed.load_state_dict(json.loads(json.dumps(partial.state_dict())))
    assert [next(resumed) for _ in range(30)] == rest
    with pytest.raises(ValueError, match="changed"):
        PairSampler(ds, seed=6).load_state_dict(partial.state_dict())
    assert straight.rng(3).integers(1 << 30) == PairSampler(ds, seed=5).rng(3).integers(1 << 30)


def test_open_images_detection_sets_binarize() -> None:
    oi = _dataset("x", [2], meta={"source": "openimages"})
    sampler = PairSampler([oi, _dataset("open-images-test", [2]), _dataset("rm1k", [2])], seed=0)
    assert sampler.binarize == [True, True, False] and is_open_images(oi)
    assert PairSampler([oi], seed=0, binarize=False).binarize == [False]


# ---------------------------------------------------------------------------------------------------- augmentation


def test_crop_resize_centre_geometry_and_size() -> None:
    rng = np.random.default_rng(0)
    h, w = 60, 100
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 20:80] = 200  # exactly the centre square
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, 20:80] = 255
    for _ in range(8):
        img, a = crop_resize(image, alpha, 32, rng)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        assert a.shape == (32, 32) and a.dtype == np.float32
        assert np.all(img == 200) and np.allclose(a, 1.0, atol=1e-6)
    assert square_box((100, 60), rng) == (slice(20, 80), slice(0, 60))
    assert square_box((61, 60), rng) == (slice(0, 60), slice(0, 60))


def test_random_crop_stays_inside_and_varies() -> None:
    rng = np.random.default_rng(1)
    boxes = {(r.start, r.stop, c.start, c.stop) for r, c in (square_box((50, 90), rng, "random") for _ in range(50))}
    assert len(boxes) > 5
    for top, bottom, left, right in boxes:
        assert (top, bottom) == (0, 50) and left >= 0 and right <= 90 and right - left == 50


def test_interpolations_drawn_from_the_official_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert INTERPOLATIONS == (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
    seen: list[int] = []
    real = cv2.resize

    def spy(src, dsize, interpolation=cv2.INTER_LINEAR):
        seen.append(interpolation)
        return real(src, dsize, interpolation=interpolation)

    monkeypatch.setattr(train_data.cv2, "resize", spy)
    rng = np.random.default_rng(2)
    for _ in range(100):
        crop_resize(np.zeros((10, 12, 3), np.uint8), np.zeros((10, 12), np.float32), 8, rng)
    assert set(seen) == set(INTERPOLATIONS)
    image_draws, alpha_draws = seen[0::2], seen[1::2]
    assert image_draws != alpha_draws  # drawn independently
    seen.clear()
    crop_resize(np.zeros((10, 12, 3), np.uint8), np.zeros((10, 12), np.float32), 8, rng, interpolation="fixed")
    assert seen == [cv2.INTER_CUBIC, cv2.INTER_LINEAR]


def test_alpha_is_clipped_and_binarised() -> None:
    rng = np.random.default_rng(3)
    alpha = np.zeros((40, 40), np.float32)
    alpha[10:30, 10:30] = 1.0
    for _ in range(20):  # cubic/lanczos overshoot is clipped as the official ToTensor does
        _, a = crop_resize(np.zeros((40, 40, 3), np.uint8), alpha, 97, rng)
        assert a.min() >= 0.0 and a.max() <= 1.0
    u8 = np.array([[0, 127, 128, 255]], np.uint8)
    assert binarize_alpha(u8).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    ones = np.full((30, 47), 255, np.uint8)
    for k in range(20):  # a constant matte stays exactly constant (float64 resize), except Lanczos, as official
        draws = np.random.default_rng(k)
        interp = [train_data.draw_interpolation(draws) for _ in range(2)][1]  # image first, then alpha
        _, a = crop_resize(np.zeros((30, 47, 3), np.uint8), ones, 64, np.random.default_rng(k))
        assert a.dtype == np.float32 and (np.all(a == 1.0) or interp == cv2.INTER_LANCZOS4)


def _write_sample(root: Path, sid: str, h: int, w: int, seed: int, trimap: bool) -> Sample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 100
    Image.fromarray(image).save(root / f"{sid}.png")
    Image.fromarray(alpha).save(root / f"{sid}_a.png")
    tpath = None
    if trimap:
        Image.fromarray(np.where(alpha > 0, 128, 0).astype(np.uint8)).save(root / f"{sid}_t.png")
        tpath = root / f"{sid}_t.png"
    return Sample(sid, "g", root / f"{sid}.png", root / f"{sid}_a.png", tpath)


def test_load_example(tmp_path: Path) -> None:
    target = _write_sample(tmp_path, "t", 50, 70, 0, trimap=True)
    reference = _write_sample(tmp_path, "r", 80, 40, 1, trimap=False)
    ex = load_example(target, reference, size=32, rng=np.random.default_rng(0))
    assert ex.image.shape == ex.reference_image.shape == (32, 32, 3)
    assert ex.alpha.shape == ex.reference_alpha.shape == ex.trimap.shape == (32, 32)
    assert ex.alpha.dtype == ex.reference_alpha.dtype == np.float32 and ex.image.dtype == np.uint8
    assert ex.trimap_source == "file" and set(np.unique(ex.trimap)) <= {0, 128}
    assert (ex.target_id, ex.reference_id) == ("t", "r")
    assert 0.3 < ex.alpha.max() < 0.5  # 100/255 plus at most the cubic/Lanczos overshoot
    again = load_example(target, reference, size=32, rng=np.random.default_rng(0))
    assert np.array_equal(ex.image, again.image) and np.array_equal(ex.reference_alpha, again.reference_alpha)
    binar = load_example(target, reference, size=32, rng=np.random.default_rng(0), binarize_reference=True)
    assert binar.alpha.max() == 0.0 and binar.reference_alpha.max() == 0.0  # 100/255 < 0.5 → 0, both images
    derived = load_example(reference, target, size=32, rng=np.random.default_rng(0))
    assert derived.trimap_source.startswith("derived-r")
