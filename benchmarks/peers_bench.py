"""Per-target CPU seconds and peak memory of every peer adapter at its real architecture size.

Random weights (nothing can be downloaded), real configurations: SegGPT ViT-L at 448² (896×448
canvas), ViTMatte-S and -B at 1024², SAM ViT-B at 1024, DINOv2 ViT-S/14 and B/14 at 518, and the
pipelines built from them (MAM, MatAny, ICMP). Each case runs in its own process, so its peak RSS
(``ru_maxrss``) is its own. For SegGPT and ICMP it also measures what the once-per-episode reference
cache saves: the seconds a target would cost if the reference were encoded again for it.

    python benchmarks/peers_bench.py                 # every case, a Markdown table on stdout
    python benchmarks/peers_bench.py --only sam_vitb_1024 --targets 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES: dict[str, Callable[[Path, int], dict]] = {}


def case(fn: Callable[[Path, int], dict]) -> Callable[[Path, int], dict]:
    CASES[fn.__name__] = fn
    return fn


def scene(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-sized synthetic image and its soft matte."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot((yy - h / 2) / (h / 3), (xx - w / 2) / (w / 3))
    alpha = np.clip((1.1 - d) * 5, 0, 1)
    image = (alpha[..., None] * rng.integers(120, 255, 3) + (1 - alpha[..., None]) * rng.integers(0, 255, (h, w, 3)))
    return image.astype(np.uint8), alpha


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


# ----------------------------------------------------------------------------- model folders
def vitmatte_folder(tmp: Path, size: str) -> Path:
    """hustvl/vitmatte-{small,base}-* configuration (VitDet backbone), random weights."""
    import torch
    from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting, VitMatteImageProcessor

    hidden, heads = {"small": (384, 6), "base": (768, 12)}[size]
    backbone = VitDetConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=12, mlp_ratio=4,
                            image_size=512, pretrain_image_size=224, patch_size=16, num_channels=4, qkv_bias=True,
                            drop_path_rate=0.0, window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10],
                            residual_block_indices=[2, 5, 8, 11], use_absolute_position_embeddings=True,
                            use_relative_position_embeddings=True, window_size=14, out_features=["stage12"])
    torch.manual_seed(0)
    # lists, not the config's tuple defaults (transformers 5 concatenates them to a list)
    model = VitMatteForImageMatting(VitMatteConfig(backbone_config=backbone, hidden_size=hidden,
                                                   convstream_hidden_sizes=[48, 96, 192],
                                                   fusion_hidden_sizes=[256, 128, 64, 32]))
    folder = tmp / f"vitmatte-{size}"
    model.save_pretrained(folder)
    VitMatteImageProcessor().save_pretrained(folder)
    return folder


def seggpt_folder(tmp: Path) -> Path:
    """SegGptConfig() is the released ViT-L model (peers.md §1); random weights."""
    import torch
    from transformers import SegGptConfig, SegGptForImageSegmentation, SegGptImageProcessor

    torch.manual_seed(0)
    folder = tmp / "seggpt"
    SegGptForImageSegmentation(SegGptConfig()).save_pretrained(folder)
    SegGptImageProcessor().save_pretrained(folder)
    return folder


def sam_file(tmp: Path, variant: str = "vit_b") -> Path:
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp / f"sam_{variant}.pth"
    torch.save(sam_model_registry[variant]().state_dict(), path)
    return path


def dinov2_file(tmp: Path, model: str) -> Path:
    from methods.dinov2 import save_random_dinov2

    return save_random_dinov2(tmp / f"dinov2_{model}.pth", model)


# ----------------------------------------------------------------------------- cases
def _method_case(name: str, params: dict, targets: int, guidance: str, ref_size=(768, 1024),
                 target_size=(768, 1024)) -> dict:
    from benchmark.prompts import make_prompt
    from benchmark.types import Episode
    from methods import build_method
    from methods.base import Reference, Target

    t0 = time.perf_counter()
    method = build_method(name, **params)
    load_s = time.perf_counter() - t0
    ref_img, ref_alpha = scene(*ref_size, 0)
    kind = "points" if name in ("icmp", "mam", "matany") else "mask"
    ref8 = np.rint(ref_alpha * 255).astype(np.uint8)
    refs = [Reference("ref", ref_img, make_prompt(kind, ref8, seed=0, group="g", round_index=0, reference="ref"))]
    tgts = []
    for i in range(targets):
        img, alpha = scene(*target_size, i + 1)
        a8 = np.rint(alpha * 255).astype(np.uint8)
        trimap = np.where(a8 > 250, 255, np.where(a8 < 5, 0, 128)).astype(np.uint8)
        prompt = make_prompt(kind, a8, seed=0, group="g", round_index=0, reference=f"t{i}")
        tgts.append(Target(f"t{i}", img, trimap if guidance == "trimap" else None,
                           prompt if guidance == "prompt" else None))
    episode = Episode("g", 0, ("ref",), tuple(t.sample_id for t in tgts))
    in_context = guidance == "in_context"
    prepare_s = timed(lambda: method.prepare(refs if in_context else [], seed=0, episode=episode), 1)
    t0 = time.perf_counter()
    for t in tgts:
        method.predict([t])
    per_target = (time.perf_counter() - t0) / targets
    out = {"load_s": load_s, "per_target_s": per_target, "prepare_s": prepare_s}
    if in_context:  # without the cache every target would encode the reference again
        out["cache_saving_s_per_target"] = prepare_s
        out["cache_saving_fraction"] = prepare_s / (prepare_s + per_target)
    return out


@case
def seggpt_vitl_448(tmp: Path, targets: int) -> dict:
    return _method_case("seggpt", {"model_path": str(seggpt_folder(tmp)), "device": "cpu"}, targets, "in_context")


@case
def vitmatte_s_1024(tmp: Path, targets: int) -> dict:
    return _method_case("vitmatte", {"model_path": str(vitmatte_folder(tmp, "small")), "device": "cpu"}, targets,
                        "trimap", target_size=(1024, 1024))


@case
def vitmatte_b_1024(tmp: Path, targets: int) -> dict:
    return _method_case("vitmatte", {"model_path": str(vitmatte_folder(tmp, "base")), "device": "cpu"}, targets,
                        "trimap", target_size=(1024, 1024))


@case
def sam_vitb_1024(tmp: Path, targets: int) -> dict:
    from methods.sam import SamSegmenter

    sam = SamSegmenter("vit_b", str(sam_file(tmp)), device="cpu")
    image, _ = scene(768, 1024, 1)

    def one() -> None:
        sam.set_image(image)
        sam.segment([(384, 512, True)])

    return {"per_target_s": timed(one, targets)}


def _dinov2_case(tmp: Path, targets: int, model: str) -> dict:
    from methods.dinov2 import Dinov2Features

    feats = Dinov2Features(model, str(dinov2_file(tmp, model)), image_size=518, device="cpu")
    image, _ = scene(768, 1024, 1)
    return {"per_target_s": timed(lambda: feats.features(image), targets)}


@case
def dinov2_s14_518(tmp: Path, targets: int) -> dict:
    return _dinov2_case(tmp, targets, "vits14")


@case
def dinov2_b14_518(tmp: Path, targets: int) -> dict:
    return _dinov2_case(tmp, targets, "vitb14")


@case
def mam_vitb(tmp: Path, targets: int) -> dict:
    from tests.tiny_sam import tiny_m2m  # the real M2M head (2.7 M parameters), random, in the official layout

    params = {"sam_variant": "vit_b", "sam_checkpoint": str(sam_file(tmp)), "m2m_checkpoint": str(tiny_m2m(tmp)),
              "device": "cpu"}
    return _method_case("mam", params, targets, "prompt")


@case
def matany_vitb(tmp: Path, targets: int) -> dict:
    params = {"sam_variant": "vit_b", "sam_checkpoint": str(sam_file(tmp)),
              "vitmatte_path": str(vitmatte_folder(tmp, "base")), "device": "cpu"}
    return _method_case("matany", params, targets, "prompt")


@case
def icmp_b14_vitb(tmp: Path, targets: int) -> dict:
    params = {"dinov2_model": "vitb14", "dinov2_checkpoint": str(dinov2_file(tmp, "vitb14")),
              "sam_variant": "vit_b", "sam_checkpoint": str(sam_file(tmp)),
              "vitmatte_path": str(vitmatte_folder(tmp, "base")), "device": "cpu"}
    return _method_case("icmp", params, targets, "in_context")


# ----------------------------------------------------------------------------- driver
def run_case(name: str, targets: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"peers-{name}-") as tmp:
        result = CASES[name](Path(tmp), targets)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to run (default: all)")
    parser.add_argument("--targets", type=int, default=2, help="timed targets per case (after one warm-up)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.targets)))
        return 0
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; random weights", file=sys.stderr)
    results = {}
    for name in args.only or list(CASES):
        print(f"running {name} …", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--case", name, "--targets", str(args.targets)],
                              capture_output=True, text=True)
        if proc.returncode:
            results[name] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        else:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("| case | s / target | prepare s | cache saves (s / target) | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | error: {r['error']} | | | |")
            continue
        saving = r.get("cache_saving_s_per_target")
        cache = "" if saving is None else f"{saving:.2f} ({100 * r['cache_saving_fraction']:.0f} %)"
        prepare = f"{r['prepare_s']:.2f}" if "prepare_s" in r else ""
        print(f"| {name} | {r['per_target_s']:.2f} | {prepare} | {cache} | {r['peak_rss_mib']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
