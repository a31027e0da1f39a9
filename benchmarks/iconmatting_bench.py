"""IconMatting speed and memory benchmarks.

    python benchmarks/iconmatting_bench.py                      # CPU: tiny pipeline + attention memory
    python benchmarks/iconmatting_bench.py --only attention      # just the capture-memory table
    python benchmarks/iconmatting_bench.py --device cuda [--sd-path DIR --checkpoint CKPT]

1. ``tiny``: a tiny random SD-2.1-shaped pipeline (``methods.iconmatting.tiny``) through the
   method's ``prepare``/``predict``: seconds per target with the reference cache (prepare
   once, predict N targets) and without it (the official behaviour: the reference is
   re-encoded for every target).
2. ``attention``: one self-attention layer with SD 2.1's shapes at 48² (``up_blocks.2``'s
   ``attn1``: 640 channels, 10 heads of 64; E = 4 ensemble members; random weights): peak
   live tensor memory (exact, counted per aten op output by :class:`PeakTensorMemory`) and
   time of (a) the official capture, which materialises every head's score matrix
   ([E·heads, 2304, 2304] fp32) and averages afterwards, versus (b) our on-the-fly
   accumulation (one head and query chunk at a time into one [1, 2304, 2304] sum), and (c)
   no capture. All compute the layer output with SDPA.
   Memory is measured on one layer (the whole UNet: see ``sd21`` for time only).
3. ``sd21`` (``--only sd21``, minutes): a random SD-2.1-shaped model at 768 through
   ``prepare``/``predict`` of one target on the CPU: seconds of the reference pass and the
   target pass.
4. ``cuda`` (``--device cuda``): per-target latency and peak GPU memory of the method at
   768, bf16 autocast with the reference cache versus fp32 without it. Uses ``--sd-path``
   and ``--checkpoint`` when given, else a random SD-2.1-shaped model and random decoder.
5. ``precision`` (``--only precision [--device cuda]``): deviation of the reduced-precision
   paths (bf16/fp16 autocast, with and without ``upcast_attention``) from fp32, as the max and
   mean absolute alpha difference over the targets, on the tiny random model (not SD 2.1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.types import Prompt
from methods.base import Reference, Target

SD21_UNET = {
    "sample_size": 96,
    "block_out_channels": (320, 640, 1280, 1280),
    "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "upcast_attention": True,
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}
SD21_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}


def episode(n_targets: int, seed: int = 0) -> tuple[Reference, list[Target]]:
    """A synthetic reference (mask prompt) and ``n_targets`` targets of mixed shapes."""
    rng = np.random.default_rng(seed)

    def scene(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        img = rng.integers(0, 80, (*shape, 3), dtype=np.uint8)
        mask = np.zeros(shape, bool)
        mask[shape[0] // 5 : 4 * shape[0] // 5, shape[1] // 4 : 3 * shape[1] // 4] = True
        img[mask] = rng.integers(150, 255, (int(mask.sum()), 3), dtype=np.uint8)
        return img, mask

    img, mask = scene((600, 800))
    ref = Reference("ref", img, Prompt("mask", mask.shape, mask=mask))
    shapes = [(600, 800), (800, 600), (512, 512), (720, 1280)]
    return ref, [Target(f"t{i}", scene(shapes[i % len(shapes)])[0]) for i in range(n_targets)]


def timed_runs(method, ref: Reference, targets: list[Target], cache: bool, sync=lambda: None) -> float:
    """Seconds per target: prepare once + predict all (cache) or prepare + predict per target."""
    method.prepare([ref])
    method.predict(targets[:1])  # warm-up (kernel selection, allocator)
    sync()
    t0 = time.perf_counter()
    if cache:
        method.prepare([ref])
        method.predict(targets)
    else:
        for t in targets:
            method.prepare([ref])
            method.predict([t])
    sync()
    return (time.perf_counter() - t0) / len(targets)


# --------------------------------------------------------------------------- 1. tiny CPU
def bench_tiny(size: int, n_targets: int, batch_size: int) -> list[tuple[str, str]]:
    from methods.iconmatting.method import IconMattingMethod
    from methods.iconmatting.tiny import save_tiny_sd

    with tempfile.TemporaryDirectory() as tmp:
        sd = save_tiny_sd(Path(tmp) / "sd")
        m = IconMattingMethod(
            sd_path=str(sd), allow_random_decoder=True, input_size=size, device="cpu", batch_size=batch_size
        )
        ref, targets = episode(n_targets)
        cached = timed_runs(m, ref, targets, cache=True)
        uncached = timed_runs(m, ref, targets, cache=False)
    return [
        (f"tiny SD, {size}² frame, E=4, {n_targets} targets, batch {batch_size}, CPU fp32", ""),
        ("  s/target with reference cache", f"{cached:.3f}"),
        ("  s/target without cache (official)", f"{uncached:.3f}"),
        ("  speed-up", f"{uncached / cached:.2f}x"),
    ]


def bench_sd21_cpu(size: int) -> list[tuple[str, str]]:
    """Random SD-2.1-shaped UNet/VAE through prepare/predict of one target on the CPU (slow)."""
    from safetensors.torch import save_file

    from methods.iconmatting.method import IconMattingMethod

    with tempfile.TemporaryDirectory() as tmp:
        sd = random_sd21(Path(tmp) / "sd21")
        emb = str(Path(tmp) / "emb.safetensors")
        save_file({"prompt_embeds": torch.randn(1, 77, 1024)}, emb)
        m = IconMattingMethod(
            sd_path=str(sd), allow_random_decoder=True, prompt_embeds_file=emb, input_size=size, device="cpu"
        )
        ref, targets = episode(1)
        t0 = time.perf_counter()
        m.prepare([ref])
        t1 = time.perf_counter()
        m.predict(targets)
        t2 = time.perf_counter()
    return [
        (f"random SD-2.1-shaped model, {size}² frame, E=4, 1 target, CPU fp32", ""),
        ("  prepare (reference pass, stops after up block 1)", f"{t1 - t0:.1f} s"),
        ("  predict (target pass + capture + decoder)", f"{t2 - t1:.1f} s"),
        ("  s/target with cache / without (prepare + predict)", f"{t2 - t1:.1f} / {t2 - t0:.1f}"),
    ]


# --------------------------------------------------------------------------- 2. attention memory
class PeakTensorMemory(TorchDispatchMode):
    """Exact peak of live tensor storage created by aten ops inside the ``with`` block.

    Each op output's storage is counted once while any tensor object referring to it is
    alive. Tensors created before the block (weights, inputs) and kernel-internal scratch
    buffers are not counted. Independent of the allocator, unlike process RSS.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[key]

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def _attention_run(variant: str, chunk_mb: int, track: bool) -> tuple[float, float, float]:
    """(peak MiB or nan, seconds, map checksum) of one layer call."""
    from diffusers.models.attention_processor import Attention

    from methods.iconmatting.attention import AttentionCapture, CaptureAttnProcessor

    torch.manual_seed(0)
    e, t, dim, heads = 4, 48 * 48, 640, 10
    attn = Attention(query_dim=dim, heads=heads, dim_head=64, upcast_attention=True).eval()
    x = torch.randn(e, t, dim)
    cap = AttentionCapture(chunk_mb << 20)
    if variant == "official":
        proc = _OfficialStyleCapture(e)
    elif variant == "none":
        proc = CaptureAttnProcessor(None)
    else:
        cap.begin(e, ["layer"], ["keep-going"], stop_early=True)
        proc = CaptureAttnProcessor(cap, "layer", "g")
    attn.set_processor(proc)
    meter = PeakTensorMemory()
    with torch.no_grad():
        t0 = time.perf_counter()
        if track:
            with meter:
                attn(x)
        else:
            attn(x)
        dt = time.perf_counter() - t0
    if variant == "official":
        total = float(proc.result().sum())
    elif variant == "ours":
        total = float(cap.mean("g").sum())
    else:
        total = float("nan")
    return (meter.peak / 2**20 if track else float("nan")), dt, total


class _OfficialStyleCapture:
    """The official capture's memory pattern: full per-head maps, then two reshape-means."""

    def __init__(self, ensemble: int) -> None:
        self.ensemble, self.maps = ensemble, []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        import torch.nn.functional as F

        b, t, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        qh, kh = attn.head_to_batch_dim(q).contiguous(), attn.head_to_batch_dim(k).contiguous()
        sim = torch.einsum("b i d, b j d -> b i j", qh, kh) * attn.scale  # [E·heads, T, T]
        sim = sim / 1
        probs = sim.softmax(dim=-1)
        del sim
        m = probs.reshape(-1, self.ensemble, t, t).mean(dim=1)
        self.maps.append(m.reshape(-1, attn.heads, t, t).mean(dim=1))
        del probs, m
        d = q.shape[-1] // attn.heads
        qs, ks, vs = (z.view(b, -1, attn.heads, d).transpose(1, 2) for z in (q, k, v))
        out = F.scaled_dot_product_attention(qs, ks, vs, scale=attn.scale).transpose(1, 2).reshape(b, t, -1)
        return attn.to_out[1](attn.to_out[0](out))

    def result(self) -> torch.Tensor:
        return self.maps[0]


def bench_attention(chunk_mb: int) -> list[tuple[str, str]]:
    rows = [("1 self-attention layer, SD 2.1 up_blocks.2 attn1 @48² (640 ch, 10 heads), E=4, CPU fp32", "")]
    results = {}
    for variant in ("none", "official", "ours"):
        _attention_run(variant, chunk_mb, track=False)  # warm-up
        _, dt, _ = _attention_run(variant, chunk_mb, track=False)
        peak, _, total = _attention_run(variant, chunk_mb, track=True)
        results[variant] = (peak, dt, total)
    labels = {
        "none": "no capture (SDPA only)",
        "official": "official-style [E·heads,T,T] capture",
        "ours": f"on-the-fly capture ({chunk_mb} MB chunks)",
    }
    for variant, label in labels.items():
        mb, dt, _ = results[variant]
        rows.append((f"  {label}: peak live tensor memory", f"{mb:.0f} MiB"))
        rows.append((f"  {label}: time", f"{dt:.2f} s"))
    sums = f"{results['official'][2]:.2f} / {results['ours'][2]:.2f}"
    rows.append(("  map checksum (official / ours, should be 2304)", sums))
    return rows


# --------------------------------------------------------------------------- 3. CUDA
def random_sd21(folder: Path) -> Path:
    """A random SD-2.1-shaped folder (UNet, VAE, scheduler; no text encoder) for timing only."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from methods.iconmatting.tiny import SCHEDULER

    torch.manual_seed(0)
    UNet2DConditionModel(**SD21_UNET).save_pretrained(folder / "unet")
    AutoencoderKL(**SD21_VAE).save_pretrained(folder / "vae")
    DDIMScheduler(prediction_type="v_prediction", **SCHEDULER).save_pretrained(folder / "scheduler")
    return folder


def bench_cuda(sd_path: str | None, checkpoint: str | None, size: int, n_targets: int, batch_size: int):
    from safetensors.torch import save_file

    from methods.iconmatting.method import IconMattingMethod

    rows = [(f"method at {size}², E=4, {n_targets} targets, {torch.cuda.get_device_name()}", "")]
    with tempfile.TemporaryDirectory() as tmp:
        emb = None
        if sd_path is None:
            sd_path = str(random_sd21(Path(tmp) / "sd21"))
            emb = str(Path(tmp) / "emb.safetensors")
            save_file({"prompt_embeds": torch.randn(1, 77, 1024)}, emb)
            rows[0] = (rows[0][0] + " (random SD-2.1-shaped weights)", "")
        ref, targets = episode(n_targets)
        for dtype, cache in (("bf16", True), ("fp32", False), ("bf16", False), ("fp32", True)):
            m = IconMattingMethod(
                sd_path=sd_path,
                checkpoint=checkpoint,
                allow_random_decoder=checkpoint is None,
                prompt_embeds_file=emb,
                input_size=size,
                device="cuda",
                dtype=dtype,
                batch_size=batch_size if cache else 1,
            )
            torch.cuda.reset_peak_memory_stats()
            sec = timed_runs(m, ref, targets, cache, sync=torch.cuda.synchronize)
            peak = torch.cuda.max_memory_allocated() / 2**30
            label = f"{dtype}, {'with' if cache else 'without'} reference cache"
            rows += [(f"  {label}: s/target", f"{sec:.3f}"), (f"  {label}: peak GPU memory", f"{peak:.2f} GiB")]
            del m
            torch.cuda.empty_cache()
    return rows


def bench_precision(size: int, n_targets: int, device: str) -> list[tuple[str, str]]:
    """Max / mean |alpha − alpha_fp32| of the reduced-precision paths, tiny random model."""
    from methods.iconmatting.method import IconMattingMethod
    from methods.iconmatting.tiny import save_tiny_sd

    rows = [(f"tiny random SD (not SD 2.1), {size}² frame, E=4, {n_targets} targets, {device}: "
             "|alpha − alpha_fp32| max / mean", "")]
    ref, targets = episode(n_targets)
    with tempfile.TemporaryDirectory() as tmp:
        sd = save_tiny_sd(Path(tmp) / "sd")
        emb = str(Path(tmp) / "emb.safetensors")

        def run(**kw) -> list[np.ndarray]:
            m = IconMattingMethod(sd_path=str(sd), allow_random_decoder=True, prompt_embeds_file=emb,
                                  input_size=size, device=device, **kw)
            m.prepare([ref], seed=0)
            return m.predict(targets)

        base = run(dtype="fp32")
        variants = [("bf16, upcast_attention (default)", {"dtype": "bf16"}),
                    ("bf16, no upcast (fast path)", {"dtype": "bf16", "upcast_attention": False})]
        if device == "cuda":
            variants += [("fp16, upcast_attention", {"dtype": "fp16"}),
                         ("fp16, no upcast", {"dtype": "fp16", "upcast_attention": False})]
        for label, kw in variants:
            diffs = [np.abs(a - b) for a, b in zip(run(**kw), base, strict=True)]
            worst = max(float(d.max()) for d in diffs)
            mean = float(np.mean([d.mean() for d in diffs]))
            rows.append((f"  {label}", f"{worst:.4f} / {mean:.5f}"))
    return rows


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument(
        "--only",
        choices=("tiny", "attention", "sd21", "precision"),
        help="CPU: run one benchmark (sd21: random SD-2.1-shaped model at 768, minutes; not in the default set)",
    )
    ap.add_argument("--size", type=int, default=None, help="working size (CPU tiny: 256, CUDA: 768)")
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-mb", type=int, default=32)
    ap.add_argument("--sd-path")
    ap.add_argument("--checkpoint")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, str]] = []
    if args.only == "precision":
        rows += bench_precision(args.size or 256, args.targets, args.device)
    elif args.device == "cuda":
        rows += bench_cuda(args.sd_path, args.checkpoint, args.size or 768, args.targets, args.batch_size)
    else:
        if args.only in (None, "tiny"):
            rows += bench_tiny(args.size or 256, args.targets, args.batch_size)
        if args.only in (None, "attention"):
            rows += bench_attention(args.chunk_mb)
        if args.only == "sd21":
            rows += bench_sd21_cpu(args.size or 768)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
