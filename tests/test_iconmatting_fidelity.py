"""IconMatting fidelity: per-image noise seeds, the official preset (stretch + truncation), fp32
attention in reduced precision (upcast_attention), combining several references, fp32 default."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers.models.attention_processor import Attention  # noqa: E402

from benchmark.io import quantize_alpha  # noqa: E402
from benchmark.types import Prompt  # noqa: E402
from methods.base import MethodError, Reference, Target  # noqa: E402
from methods.iconmatting import attention as attention_mod  # noqa: E402
from methods.iconmatting.attention import CaptureAttnProcessor  # noqa: E402
from methods.iconmatting.decoder import DecoderConfig, DecoderOutput, InContextDecoder  # noqa: E402
from methods.iconmatting.features import image_seed  # noqa: E402
from methods.iconmatting.method import IconMattingMethod  # noqa: E402
from methods.iconmatting.preprocess import alpha_from_frame, make_frame, truncate_levels  # noqa: E402
from tests.test_iconmatting_method import SIZE, make, mask_ref, scene, targets  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def method(tiny_sd: Path, embeds: Path) -> IconMattingMethod:
    return make(tiny_sd, embeds)


class NoiseLog:
    """Wraps ``extractor.draw_noise`` and records (seeds, ε, noise) of every draw."""

    def __init__(self, method: IconMattingMethod) -> None:
        self.calls: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []
        self._orig = method.extractor.draw_noise
        self._ext = method.extractor

    def __enter__(self) -> NoiseLog:
        def spy(seeds, latent_hw):
            eps, noise = self._orig(seeds, latent_hw)
            self.calls.append((list(seeds), eps, noise))
            return eps, noise

        self._ext.draw_noise = spy
        return self

    def __exit__(self, *exc) -> None:
        del self._ext.draw_noise  # back to the class method


# --------------------------------------------------------------------------- 1. noise per image and role
def test_image_seed_is_sha256_of_its_parts() -> None:
    text = "\x1f".join(["iconmatting", "noise", "3", "17", "target", "cat/001"])
    expected = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    assert image_seed(3, 17, "target", "cat/001") == expected  # no Python hash(): same in every process
    seeds = {image_seed(n, e, r, s) for n in (0, 1) for e in (0, 1) for r in ("reference", "target") for s in "ab"}
    assert len(seeds) == 16  # every part matters
    assert image_seed(0, 0, "target", "a") != image_seed(0, 0, "target", "a", stream="interpolation")


def test_reference_and_target_noise_differ(method: IconMattingMethod) -> None:
    img, mask = scene(0)
    with NoiseLog(method) as log:
        method.prepare([Reference("same", img, Prompt("mask", mask.shape, mask=mask))], seed=4)
        method.predict([Target("same", img)])  # the reference is its own target (singleton group)
    (ref_seeds, ref_eps, ref_noise), (tgt_seeds, tgt_eps, tgt_noise) = log.calls
    assert ref_seeds == [image_seed(0, 4, "reference", "same")] and tgt_seeds == [image_seed(0, 4, "target", "same")]
    assert ref_eps.shape == tgt_eps.shape
    assert not torch.equal(ref_noise, tgt_noise) and not torch.equal(ref_eps, tgt_eps)
    assert abs(float(torch.corrcoef(torch.stack([ref_noise.flatten(), tgt_noise.flatten()]))[0, 1])) < 0.05


def test_noise_reproducible_and_episode_seed_dependent(method: IconMattingMethod, tiny_sd: Path,
                                                        embeds: Path) -> None:
    tgts = targets()[:2]
    method.prepare([mask_ref()], seed=7)
    with NoiseLog(method) as log:
        first = method.predict(tgts)
    fresh = make(tiny_sd, embeds)  # another instance: the same (noise_seed, round seed, id, role) → same bits
    fresh.prepare([mask_ref()], seed=7)
    with NoiseLog(fresh) as log2:
        again = fresh.predict(tgts)
    for a, b in zip(log.calls, log2.calls, strict=True):
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    fresh.prepare([mask_ref()], seed=8)  # the next round
    with NoiseLog(fresh) as log3:
        other = fresh.predict(tgts)
    assert all(not torch.equal(a[2], c[2]) for a, c in zip(log.calls, log3.calls, strict=True))
    assert max(float(np.abs(x - y).max()) for x, y in zip(first, other, strict=True)) > 1e-4


def test_noise_independent_of_batch_order(method: IconMattingMethod, tiny_sd: Path, embeds: Path) -> None:
    tgts = targets()
    method.prepare([mask_ref()], seed=2)
    with NoiseLog(method) as log:
        single = method.predict(tgts)  # batch_size 1
    batched = make(tiny_sd, embeds, batch_size=3)
    batched.prepare([mask_ref()], seed=2)
    with NoiseLog(batched) as blog:
        backwards = batched.predict(tgts[::-1])  # one batch, reversed order
    e = method.settings.ensemble_size
    [(seeds, _, noise)] = blog.calls
    for i, t in enumerate(tgts[::-1]):
        j = tgts.index(t)
        assert seeds[i] == log.calls[j][0][0] == image_seed(0, 2, "target", t.sample_id)
        assert torch.equal(noise[i * e : (i + 1) * e], log.calls[j][2])  # the same draw whatever the batch
    for x, y in zip(single, backwards[::-1], strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)  # batched convolutions differ only in rounding


# --------------------------------------------------------------------------- 2. the official preset
def test_official_config_sets_the_official_choices() -> None:
    default = yaml.safe_load((CONF / "iconmatting.yaml").read_text())
    preset = yaml.safe_load((CONF / "iconmatting_official.yaml").read_text())  # a _global_ package
    official = dict(preset["method"])
    assert official.pop("label") == "iconmatting_official"
    assert preset["runner"] == {"protocol": "official", "resolution": "official768"}
    assert official["name"] == default["name"] == "iconmatting"
    assert set(official) == set(default)  # every key set explicitly, none unknown
    expected = {"preprocess": "official768", "input_size": 768, "interpolation": "official_random",
                "crop_fill": "stretch", "quantize": "truncate", "dtype": "fp32", "attention_impl": "math",
                "ensemble_size": 4, "timestep": 200, "posterior": "sample", "roi_combine": "sum", "batch_size": 1}
    assert {k: official[k] for k in expected} == expected
    assert default["dtype"] == "fp32" and default["upcast_attention"] is True  # faithful defaults
    assert default["quantize"] == "round" and default["roi_combine"] == "sum"


def test_stretch_and_truncation_by_hand() -> None:
    # A 3×6 (non-square) image; the working square is 4×4 (official768: the centre 3×3 crop).
    # pred[y, x] = r[y] + c[x] with linear r, c, so torch's bilinear (align_corners=False) resize to
    # 3×6 is r(sy) + c(sx) at the source coordinates s = (d + 0.5)·in/out − 0.5 (clamped to [0, 3]):
    #   rows: sy = 1/6, 3/2, 17/6 → r = 0.12·sy = 0.02, 0.18, 0.34
    #   cols: sx = 0, 1/2, 7/6, 11/6, 5/2, 3 → c = 0.101 + 0.12·sx = .101 .161 .241 .321 .401 .461
    # ×255 then truncated (official ``validation_step_end``): e.g. (0.02 + 0.101)·255 = 30.855 → 30.
    r = np.array([0.0, 0.12, 0.24, 0.36], np.float32)
    c = np.array([0.101, 0.221, 0.341, 0.461], np.float32)
    pred = r[:, None] + c[None, :]
    frame = make_frame((3, 6), 4, "official768")
    assert frame.src == (0, 1, 3, 3)  # the model saw only columns 1..3; stretch spreads it over all 6
    expected = np.array([[30, 46, 66, 86, 107, 122],
                         [71, 86, 107, 127, 148, 163],
                         [112, 127, 148, 168, 188, 204]], np.uint8)
    out = alpha_from_frame(pred, frame, "stretch", "truncate")
    assert out.shape == (3, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(quantize_alpha(out), expected)  # the runner's rounding keeps the truncation
    rounded = quantize_alpha(alpha_from_frame(pred, frame, "stretch", "round"))
    assert (rounded.astype(int) - expected).max() == 1 and (rounded != expected).sum() == 10


def test_truncated_levels_survive_the_runner_quantiser() -> None:
    levels = np.arange(256, dtype=np.float32) / np.float32(255)
    np.testing.assert_array_equal(quantize_alpha(truncate_levels(levels)), np.arange(256))
    x = np.random.default_rng(0).random((64, 48), dtype=np.float32)
    np.testing.assert_array_equal(quantize_alpha(truncate_levels(x)), np.floor(x.astype(np.float64) * 255))
    frame = make_frame((50, 40), 32, "official768")
    for fill in ("edge", "zero"):
        out = alpha_from_frame(x[:32, :32], frame, fill, "truncate")
        np.testing.assert_array_equal(out, truncate_levels(alpha_from_frame(x[:32, :32], frame, fill)))


class FixedDecoder(torch.nn.Module):
    """Stands in for the decoder: a known smooth alpha on the working square."""

    def __init__(self, size: int) -> None:
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.alpha = (0.5 + 0.45 * torch.sin(yy / 9.0) * torch.cos(xx / 13.0)).float()[None, None]

    def forward(self, image, *args) -> DecoderOutput:
        a = self.alpha.expand(image.shape[0], -1, -1, -1)
        return DecoderOutput(alpha=a, inter_similarity=a, att_look=a, intra=[], fused=a)


def bilinear_reference(src: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Independent float64 bilinear resize with torch's align_corners=False convention."""
    def axis(n_in: int, n_out: int):
        s = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(s).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), s - i0

    y0, y1, ly = axis(src.shape[0], shape[0])
    x0, x1, lx = axis(src.shape[1], shape[1])
    top = src[y0][:, x0] * (1 - lx) + src[y0][:, x1] * lx
    bottom = src[y1][:, x0] * (1 - lx) + src[y1][:, x1] * lx
    return top * (1 - ly[:, None]) + bottom * ly[:, None]


def test_method_official_back_mapping_on_a_non_square_target(tiny_sd: Path, embeds: Path) -> None:
    m = make(tiny_sd, embeds, crop_fill="stretch", quantize="truncate", ensemble_size=1)
    m.decoder = FixedDecoder(SIZE)
    m.prepare([mask_ref()])
    target = Target("wide", scene(9, (90, 250))[0])
    out = m.predict([target])[0]
    assert out.shape == (90, 250)
    ours = quantize_alpha(out)  # what the runner saves and scores
    exact = bilinear_reference(m.decoder.alpha[0, 0].double().numpy() * 255.0, (90, 250))
    clear = np.abs(exact - np.rint(exact)) > 1e-3  # away from an integer, float32 cannot flip the floor
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(ours[clear], np.floor(exact[clear]).astype(np.uint8))
    assert np.abs(ours.astype(int) - np.floor(exact)).max() <= 1
    m_round = make(tiny_sd, embeds, crop_fill="stretch", ensemble_size=1)
    m_round.decoder = FixedDecoder(SIZE)
    m_round.prepare([mask_ref()])
    assert (quantize_alpha(m_round.predict([target])[0]) != ours).mean() > 0.3  # rounding differs often


def test_official_preset_builds_and_predicts(tiny_sd: Path, embeds: Path) -> None:
    params = dict(yaml.safe_load((CONF / "iconmatting_official.yaml").read_text())["method"])
    params.pop("name"), params.pop("label")
    params.update(sd_path=str(tiny_sd), checkpoint=None, allow_random_decoder=True, input_size=SIZE,
                  device="cpu", prompt_embeds_file=str(embeds), ensemble_size=1)
    m = IconMattingMethod(**params)
    m.prepare([mask_ref()], seed=1)
    for a, t in zip(m.predict(targets()), targets(), strict=True):
        assert a.shape == t.image.shape[:2]
        np.testing.assert_array_equal(a, truncate_levels(a))  # already on the k/255 levels
    assert m.fingerprint() != make(tiny_sd, embeds, ensemble_size=1).fingerprint()


# --------------------------------------------------------------------------- 3. upcast_attention
class SdpaLog:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dtypes: list[torch.dtype] = []
        orig = torch.nn.functional.scaled_dot_product_attention

        def spy(q, k, v, *a, **kw):
            self.dtypes.append(q.dtype)
            return orig(q, k, v, *a, **kw)

        monkeypatch.setattr(attention_mod.F, "scaled_dot_product_attention", spy)


def bf16_attention(upcast_attention: bool) -> Attention:
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8, upcast_attention=upcast_attention)
    with torch.no_grad():
        attn.to_q.weight.mul_(6)
        attn.to_k.weight.mul_(6)
    return attn.eval()


@pytest.mark.parametrize("autocast", [False, True])
def test_upcast_attention_runs_sdpa_in_fp32(monkeypatch: pytest.MonkeyPatch, autocast: bool) -> None:
    x = torch.randn(2, 40, 32)
    log = SdpaLog(monkeypatch)

    def run(attn: Attention, upcast: bool) -> torch.Tensor:
        attn.set_processor(CaptureAttnProcessor(None, upcast=upcast))
        with torch.no_grad():
            if autocast:  # fp32 weights, bf16 compute (what the method does)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return attn(x)
            return attn.to(torch.bfloat16)(x.bfloat16())

    up = run(bf16_attention(True), upcast=True)
    assert log.dtypes == [torch.float32]  # scores, softmax and weighted sum in fp32 (autocast is off inside)
    fast = run(bf16_attention(True), upcast=False)
    no_cfg = run(bf16_attention(False), upcast=True)
    assert log.dtypes[1:] == [torch.bfloat16, torch.bfloat16]  # opt-out, or a model that does not ask
    assert up.dtype == fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast, no_cfg, atol=0, rtol=0)
    assert not torch.equal(up, fast)


def test_upcast_sdpa_is_fp32_attention_rounded_once() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 50, 8, generator=g).mul(4).bfloat16() for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.35)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would cast fp32 inputs back to bf16
        up = attention_mod.sdpa(q, k, v, None, 0.35, upcast=True)
        fast = attention_mod.sdpa(q, k, v, None, 0.35, upcast=False)
    assert up.dtype == fast.dtype == torch.bfloat16
    torch.testing.assert_close(up, exact.bfloat16(), atol=0, rtol=0)  # fp32 maths, one rounding at the end
    # (torch's CPU bf16 kernel accumulates in fp32 too, so ``fast`` is close here; CUDA kernels differ)
    torch.testing.assert_close(fast.float(), exact, atol=0.1, rtol=0.02)


def test_bf16_method_upcasts_every_unet_attention(method: IconMattingMethod, tiny_sd: Path, embeds: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert method.dtype == torch.float32  # the default (faithful) dtype, also on CPU
    method.prepare([mask_ref()])
    fp32 = method.predict(targets()[:1])[0]
    bf16 = make(tiny_sd, embeds, dtype="bf16")
    fast = make(tiny_sd, embeds, dtype="bf16", upcast_attention=False)
    assert bf16.dtype == torch.bfloat16 and bf16.extractor.attention_fp32 and not fast.extractor.attention_fp32
    log = SdpaLog(monkeypatch)
    bf16.prepare([mask_ref()])
    up = bf16.predict(targets()[:1])[0]
    assert log.dtypes and set(log.dtypes) == {torch.float32}  # the tiny UNet's config has upcast_attention
    log.dtypes.clear()
    fast.prepare([mask_ref()])
    fast_out = fast.predict(targets()[:1])[0]
    assert torch.bfloat16 in log.dtypes
    assert 0 < float(np.abs(up - fp32).max()) < 0.5 and float(np.abs(fast_out - fp32).max()) > 0
    # identity: dtype and the precision the attention really runs in; the flag alone changes nothing in fp32
    assert len({method.fingerprint(), bf16.fingerprint(), fast.fingerprint()}) == 3
    assert make(tiny_sd, embeds, upcast_attention=False).fingerprint() == method.fingerprint()


# --------------------------------------------------------------------------- 4. several references
def test_roi_weights_give_the_mean_of_per_reference_maps() -> None:
    torch.manual_seed(0)
    dec = InContextDecoder(DecoderConfig.for_input(128, (8, 8))).eval()
    target = torch.randn(1, 8, 8, 8)
    a, b = torch.randn(5, 8), torch.randn(3, 8)
    sim = dec.in_context_fusion.attn_module
    with torch.no_grad():
        s_a, s_b = sim(a, target), sim(b, target)
        both = torch.cat([a, b])
        torch.testing.assert_close(sim(both, target), s_a + s_b)  # sum: one softmax-and-sum over all tokens
        mean = sim(both, target, torch.full((8,), 0.5))
        torch.testing.assert_close(mean, (s_a + s_b) / 2)  # mean of the per-reference (official) sums
    assert float(mean.sum()) == pytest.approx((5 + 3) / 2, rel=1e-5)


def test_roi_combine_in_the_method(method: IconMattingMethod, tiny_sd: Path, embeds: Path) -> None:
    refs = [mask_ref(0), mask_ref(5, (200, 150))]
    mean = make(tiny_sd, embeds, roi_combine="mean")
    method.prepare(refs)
    mean.prepare(refs)
    assert method._roi_weights is None
    torch.testing.assert_close(mean._roi_tokens, method._roi_tokens, atol=0, rtol=0)  # same tokens
    assert mean._roi_weights is not None and torch.all(mean._roi_weights == 0.5)
    assert float(np.abs(mean.predict(targets()[:1])[0] - method.predict(targets()[:1])[0]).max()) > 1e-4
    method.prepare(refs[:1])
    mean.prepare(refs[:1])  # one reference: mean is the official sum, bit for bit
    assert mean._roi_weights is None
    np.testing.assert_array_equal(mean.predict(targets()[:1])[0], method.predict(targets()[:1])[0])
    assert mean.fingerprint() != method.fingerprint()
    assert make(tiny_sd, embeds, quantize="truncate").fingerprint() != method.fingerprint()
    with pytest.raises(ValueError, match="roi_combine"):
        make(tiny_sd, embeds, roi_combine="max")
    with pytest.raises(ValueError, match="quantize"):
        make(tiny_sd, embeds, quantize="floor")


# --------------------------------------------------------------------------- settings and close
def test_settings_and_close(tiny_sd: Path, embeds: Path) -> None:
    info = IconMattingMethod.info
    assert not {"quantize", "roi_combine", "dtype", "upcast_attention"} & info.runtime_params
    m = make(tiny_sd, embeds)
    s = m.settings_dict()
    assert s["dtype"] == "fp32" and s["attention_precision"] == "fp32" and s["noise"].startswith("v2")
    assert s["quantize"] == "round" and s["roi_combine"] == "sum"
    fp = m.fingerprint()
    m.close()
    assert m.fingerprint() == fp
    with pytest.raises(MethodError, match="closed"):
        m.prepare([mask_ref()])
    with pytest.raises(MethodError, match="closed"):
        m.predict(targets()[:1])
    m.close()  # idempotent
