"""Training speed and memory of the IconMatting decoder trainer (``methods.iconmatting.train.loop.Trainer``).

    python benchmarks/train_bench.py                          # CPU: tiny pipeline, then SD-2.1 shapes at 768
    python benchmarks/train_bench.py --only tiny [--size 768 --batch 2 --steps 10]
    python benchmarks/train_bench.py --only sd21 [--steps 2]  # minutes on a CPU
    python benchmarks/train_bench.py --device cuda [--sd-path DIR --prompt-embeds FILE] [--batch 2 --steps 20]

Every measurement drives the real trainer (``Trainer.step``: decode + augment, frozen extractor with fresh noise,
decoder forward/backward, official loss, Adam + warm-up) on a synthetic grouped dataset, in its own child process,
so the peak resident memory (``ru_maxrss``) is that run's alone; the parent imports nothing heavy (a child
exec'ed from a large parent would inherit its high-water mark).

1. ``tiny``: the tiny random SD-2.1-shaped pipeline (``methods.iconmatting.tiny``): steps/s and peak RSS. The
   decoder is full size; only the UNet/VAE are tiny, so at 768 the decoder dominates.
2. ``sd21``: random weights in the real SD 2.1 UNet/VAE shapes (``benchmarks/iconmatting_bench.py``'s
   ``SD21_UNET``/``SD21_VAE``, diffusers classes), 768², batch 1: seconds per step and peak RSS.
3. ``cuda`` (``--device cuda``): the SD 2.1 shapes (random, or ``--sd-path``) at 768: steps/s and peak GPU memory
   (``torch.cuda.max_memory_allocated``) in fp32 and in bf16 autocast. Goal (issue 15): ≥ 2 steps/s at batch 2 on
   one H100-class GPU.

The first ``--warmup`` steps (model loading, first-call kernels) are excluded from the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- child side
def _make_model(kind: str, folder: Path) -> tuple[Path, Path | None]:
    """A model folder (and prompt-embedding file for the SD-2.1-shaped one, which has no text encoder)."""
    import torch
    from safetensors.torch import save_file

    if kind == "tiny":
        from methods.iconmatting.tiny import save_tiny_sd

        return save_tiny_sd(folder / "sd"), None
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from iconmatting_bench import random_sd21

    sd = random_sd21(folder / "sd21")
    emb = folder / "emb.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file({"prompt_embeds": torch.randn(1, 77, 1024)}, str(emb))
    return sd, emb


def _overrides(a: argparse.Namespace, data: Path, sd: str, emb: str | None) -> list[str]:
    out = [
        "dataset=synthetic", f"dataset.root={data}", "dataset.num_groups=2", "dataset.images_per_group=4",
        f"sd_path={sd}", f"check_sd21={'false' if a.model == 'tiny' and not a.sd_path else 'true'}",
        f"train.steps={a.steps}", f"train.image_size={a.size}", f"train.batch_size={a.batch}",
        f"train.dtype={a.dtype}", f"train.device={a.device}", f"train.num_workers={a.workers}",
        "train.progress=off", "train.tensorboard=false", f"train.checkpoint_every={10**9}",
    ]
    if emb:
        out.append(f"prompt_embeds_file={emb}")
    return out + list(a.override)


def child(a: argparse.Namespace) -> dict:
    """Run ``a.steps`` trainer steps; return per-step seconds, losses and peak memory."""
    import resource

    import torch

    from methods.iconmatting.train.loop import Trainer, compose_train_config

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        tmp_path = Path(tmp)
        if a.sd_path:
            sd, emb = a.sd_path, a.prompt_embeds
        else:
            sd_dir, emb_file = _make_model(a.model, tmp_path)
            sd, emb = str(sd_dir), (str(emb_file) if emb_file else None)
        cfg = compose_train_config(_overrides(a, tmp_path / "data", sd, emb))
        cuda = a.device.startswith("cuda")
        if cuda:
            torch.cuda.init()
            torch.cuda.reset_peak_memory_stats()
        seconds, losses = [], []
        with Trainer(cfg, tmp_path / "run") as trainer:
            for _ in range(a.steps):
                losses.append(trainer.step())
                if cuda:
                    torch.cuda.synchronize()
                seconds.append(trainer.last.seconds)
        out = {"seconds": seconds, "losses": losses,
               "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               "threads": torch.get_num_threads()}
        if cuda:
            out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
            out["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
            out["gpu"] = torch.cuda.get_device_name()
        return out


# --------------------------------------------------------------------------- parent side
def _spawn(argv: list[str], timeout: float | None) -> dict:
    return _spawn_raw(["--child", *argv], timeout)


def _spawn_raw(argv: list[str], timeout: float | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _rate(r: dict, warmup: int) -> tuple[float, float, float]:
    """(mean s/step, median s/step, steps/s from the mean) after the warm-up (all steps when there are no others)."""
    timed = sorted(r["seconds"][warmup:] or r["seconds"])
    sec = sum(timed) / len(timed)
    mid = len(timed) // 2
    median = timed[mid] if len(timed) % 2 else (timed[mid - 1] + timed[mid]) / 2
    return sec, median, 1.0 / sec


def _rows(label: str, r: dict, warmup: int) -> list[tuple[str, str]]:
    sec, median, rate = _rate(r, warmup)
    rows = [(label, ""), ("  s/step after warm-up (mean / median)", f"{sec:.3f} / {median:.3f}"),
            ("  steps/s (from the mean)", f"{rate:.3f}"),
            ("  every step's seconds", ", ".join(f"{s:.2f}" for s in r["seconds"])),
            ("  losses", ", ".join(f"{v:.1f}" for v in r["losses"])),
            ("  peak RSS", f"{r['peak_rss_gib']:.2f} GiB")]
    if "peak_gpu_gib" in r:
        rows += [("  peak GPU memory (allocated / reserved)",
                  f"{r['peak_gpu_gib']:.2f} / {r['peak_gpu_reserved_gib']:.2f} GiB")]
    return rows


def _common(a: argparse.Namespace, **kw) -> list[str]:
    v = {"size": a.size, "batch": a.batch, "steps": a.steps, "dtype": "fp32", "device": a.device,
         "workers": a.workers, "model": "tiny", **kw}
    out = [f"--{k}={x}" for k, x in v.items()]
    if a.sd_path:
        out.append(f"--sd-path={a.sd_path}")
    if a.prompt_embeds:
        out.append(f"--prompt-embeds={a.prompt_embeds}")
    return out + [f"--override={o}" for o in a.override]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("tiny", "sd21"), help="one CPU measurement (default: both)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--size", type=int, default=None, help="working size (default 256 tiny, 768 otherwise)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 2; 1 for sd21 on the CPU)")
    p.add_argument("--steps", type=int, default=None, help="steps per measurement (default 10; 2 for sd21 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="steps excluded from rates (default 1; 2 on CUDA)")
    p.add_argument("--workers", type=int, default=2, help="train.num_workers")
    p.add_argument("--sd-path", default=None, help="a real SD 2.1 folder instead of random weights")
    p.add_argument("--prompt-embeds", default=None, help="empty-prompt embedding file for --sd-path")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per child process")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    p.add_argument("--make-model", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(child(a)), flush=True)
        return 0
    if a.make_model:
        sd, emb = _make_model(a.model, Path(a.make_model))
        print("RESULT " + json.dumps({"sd": str(sd), "emb": str(emb)}), flush=True)
        return 0
    rows: list[tuple[str, str]] = []
    if a.device.startswith("cuda"):
        base = argparse.Namespace(**{**vars(a), "size": a.size or 768, "batch": a.batch or 2, "steps": a.steps or 20})
        warm = 2 if a.warmup is None else a.warmup
        what = "SD 2.1 weights" if a.sd_path else "random SD-2.1-shaped weights"
        with tempfile.TemporaryDirectory(prefix="train-bench-model-") as tmp:
            if not a.sd_path:  # one random model for both precisions (written once: 3.5 GB)
                made = _spawn_raw(["--make-model", tmp, "--model=sd21"], a.timeout)
                base.sd_path, base.prompt_embeds = made["sd"], made["emb"]
            for dtype in ("fp32", "bf16"):
                r = _spawn(_common(base, dtype=dtype, model="sd21"), a.timeout)
                rows += _rows(f"{r['gpu']}, {what}, {base.size}², batch {base.batch}, {dtype}", r, warm)
    else:
        warm = 1 if a.warmup is None else a.warmup
        if a.only in (None, "tiny"):
            base = argparse.Namespace(**{**vars(a), "size": a.size or 256, "batch": a.batch or 2,
                                         "steps": a.steps or 10})
            r = _spawn(_common(base, model="tiny"), a.timeout)
            rows += _rows(f"tiny SD, {base.size}², batch {base.batch}, CPU fp32, {r['threads']} threads", r, warm)
        if a.only in (None, "sd21"):
            base = argparse.Namespace(**{**vars(a), "size": a.size or 768, "batch": a.batch or 1,
                                         "steps": a.steps or 2})
            r = _spawn(_common(base, model="sd21"), a.timeout)
            rows += _rows(f"random SD-2.1-shaped model, {base.size}², batch {base.batch}, CPU fp32, "
                          f"{r['threads']} threads", r, warm)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
