"""Compare ``classical`` with the floors and the trimap upper reference on a small grouped dataset.

Protocol (ICM-style, three rounds): in every group of ≥ 2 images, round r takes the r-th
image (cycled) as the reference, prompts it with its ground-truth mask (alpha > 0.5, full
resolution) and predicts every other image of the group. Predictions are quantised to uint8
by rounding; SAD = Σ|p − g| / 255 / 1000 and MSE = mean(((p − g) / 255)²) over the whole
image; means go over targets within (group, round), then over groups, then over rounds.

Usage::

    .venv/bin/python benchmarks/classical_eval.py --dataset icm58-dev [--skip-large]
    .venv/bin/python benchmarks/classical_eval.py --dataset synthetic
    .venv/bin/python benchmarks/classical_eval.py --methods classical --param long_side=384

Self-contained on purpose (own tiny loaders) so it runs while the runner is being built.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.trimaps import derive_trimap
from benchmark.types import Prompt
from methods import build_method
from methods.base import Method, Reference, Target

ICM58_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "icm58-dev"  # ../shared from the root
LARGE_PIXELS = 8_000_000  # images above this are skipped with --skip-large
Image.MAX_IMAGE_PIXELS = 400_000_000


@dataclass(frozen=True)
class Item:
    """One image of the evaluated dataset."""

    id: str
    image: Path
    alpha: Path


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_alpha(path: Path) -> np.ndarray:
    """uint8 matte, via ``metrics.io.read_alpha`` when it exists, else the documented channel rules."""
    try:
        from metrics.io import read_alpha as project_read_alpha
    except ImportError:
        project_read_alpha = None
    if project_read_alpha is not None:
        a = np.asarray(project_read_alpha(path))
        return a if a.dtype == np.uint8 else np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.dtype == np.uint16 or arr.dtype == np.int32 or (arr.ndim == 2 and arr.max() > 255):
        return np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    if arr.ndim == 2:
        return arr.astype(np.uint8)
    if arr.shape[2] == 4 and arr[..., 3].min() != arr[..., 3].max():
        return arr[..., 3]  # RGBA with a varying A: the matte is A (RGB constant or not)
    return arr[..., 0]  # equal RGB channels, or RGBA with a constant A


def icm58_groups(root: Path) -> dict[str, list[Item]]:
    """Group key (``class-sub_class-HalfOrFull``) → items, in the grouping file's order."""
    info = json.loads((root / "icm58-dev.json").read_text())
    images = {p.stem: p for p in (root / "image").iterdir()}
    groups: dict[str, list[Item]] = defaultdict(list)
    for stem, d in info.items():
        key = f"{d['class']}-{d['sub_class']}-{d['HalfOrFull']}"  # None → "None" as in the official code
        groups[key].append(Item(stem, images[stem], root / "alpha" / f"{stem}.png"))
    return dict(groups)


def synthetic_groups() -> dict[str, list[Item]]:
    from benchmark.datasets.synthetic import load_synthetic

    ds = load_synthetic()
    return {k: [Item(s.id, s.image_path, s.alpha_path) for s in ds.group_samples(k)] for k in ds.groups}


def scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(SAD/1000, MSE) of a float prediction against a uint8 matte, after uint8 rounding."""
    p = np.rint(np.clip(pred, 0, 1) * 255.0).astype(np.float64)
    d = np.abs(p - gt.astype(np.float64)) / 255.0
    return float(d.sum() / 1000.0), float(np.mean(d * d))


def reference_prompt(kind: str, alpha: np.ndarray, group: str, round_index: int, ref_id: str) -> Prompt:
    """The protocol's mask (alpha > 0.5), or the project's seeded scribble/points prompt."""
    if kind == "mask":
        return Prompt(kind="mask", shape=alpha.shape, mask=alpha > 127)
    from benchmark.prompts import make_prompt

    return make_prompt(kind, alpha, seed=0, group=group, round_index=round_index, reference=ref_id)


def evaluate(groups: dict[str, list[Item]], methods: dict[str, Callable[[], Method]],
             rounds: int = 3, skip_large: bool = False, prompt: str = "mask") -> tuple[dict, list]:
    """Per method (SAD, MSE) means and per-target rows (method, target, seconds, SAD, MSE)."""
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(item: Item) -> tuple[np.ndarray, np.ndarray]:
        if item.id not in cache:
            cache[item.id] = (read_image(item.image), read_alpha(item.alpha))
        return cache[item.id]

    per_round: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    rows: list[tuple[str, str, float, float, float]] = []
    for key, items in groups.items():
        if skip_large:
            items = [it for it in items if np.prod(Image.open(it.image).size) <= LARGE_PIXELS]
        if len(items) < 2:
            continue
        for r in range(rounds):
            ref_item = items[r % len(items)]
            ref_img, ref_a = load(ref_item)
            ref = Reference(ref_item.id, ref_img, reference_prompt(prompt, ref_a, key, r, ref_item.id))
            targets = [it for it in items if it.id != ref_item.id]
            for mname, factory in methods.items():
                method = factory()
                if prompt not in method.info.prompt_kinds and method.info.guidance == "in_context":
                    continue
                method.prepare([ref])
                sads, mses = [], []
                for it in targets:
                    img, gt = load(it)
                    guide = derive_trimap(gt) if method.info.guidance == "trimap" else None
                    t0 = time.perf_counter()
                    (pred,) = method.predict([Target(it.id, img, guide)])
                    dt = time.perf_counter() - t0
                    assert pred.shape == gt.shape and pred.dtype == np.float32, (mname, it.id)
                    sad, mse = scores(pred, gt)
                    sads.append(sad)
                    mses.append(mse)
                    rows.append((mname, f"{key}/r{r}/{it.id}", dt, sad, mse))
                per_round[mname][r].append((float(np.mean(sads)), float(np.mean(mses))))
    table = {}
    for mname, by_round in per_round.items():
        means = [np.mean(v, axis=0) for _, v in sorted(by_round.items())]
        table[mname] = tuple(np.mean(means, axis=0))
    return table, rows


def time_large(groups: dict[str, list[Item]], methods: dict[str, Callable[[], Method]]) -> list:
    """Seconds per prediction on every image over LARGE_PIXELS (even in a size-1 group), scored too.

    The reference is the first image of the first other group (only time is meaningful for
    ``classical`` there; ``trimap_matting`` uses the image's own derived trimap).
    """
    out = []
    items = [it for its in groups.values() for it in its]
    for it in items:
        with Image.open(it.image) as im:
            if np.prod(im.size) <= LARGE_PIXELS:
                continue
        img, gt = read_image(it.image), read_alpha(it.alpha)
        ref_item = next(r for r in items if r.id != it.id)
        ref_img, ref_a = read_image(ref_item.image), read_alpha(ref_item.alpha)
        ref = Reference(ref_item.id, ref_img, Prompt(kind="mask", shape=ref_a.shape, mask=ref_a > 127))
        for mname, factory in methods.items():
            method = factory()
            method.prepare([ref])
            guide = derive_trimap(gt) if method.info.guidance == "trimap" else None
            t0 = time.perf_counter()
            (pred,) = method.predict([Target(it.id, img, guide)])
            dt = time.perf_counter() - t0
            assert pred.shape == gt.shape and pred.dtype == np.float32
            out.append((mname, f"{it.id} ({img.shape[1]}×{img.shape[0]})", dt, *scores(pred, gt)))
    return out


def parse_params(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs:
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="icm58-dev", choices=["icm58-dev", "synthetic"])
    ap.add_argument("--root", type=Path, default=ICM58_DEV)
    ap.add_argument("--methods", default="constant,reference_mask,classical,trimap_matting")
    ap.add_argument("--param", action="append", default=[], help="classical kwarg, e.g. long_side=384")
    ap.add_argument("--skip-large", action="store_true", help=f"skip images over {LARGE_PIXELS} px")
    ap.add_argument("--prompt", default="mask", choices=["mask", "scribble", "points"],
                    help="reference prompt (scribble/points: benchmark.prompts defaults, seed 0)")
    ap.add_argument("--rows", action="store_true", help="print per-target rows")
    ap.add_argument("--time-large", action="store_true",
                    help=f"also time every method on each image over {LARGE_PIXELS} px (e.g. statue_01)")
    args = ap.parse_args(argv)
    groups = icm58_groups(args.root) if args.dataset == "icm58-dev" else synthetic_groups()
    params = parse_params(args.param)
    methods = {m: (lambda m=m: build_method(m, **(params if m == "classical" else {})))
               for m in args.methods.split(",")}
    t0 = time.perf_counter()
    table, rows = evaluate(groups, methods, skip_large=args.skip_large, prompt=args.prompt)
    if args.rows:
        for r in rows:
            print(f"{r[0]:15s} {r[1]:45s} {r[2]:7.2f}s  SAD {r[3]:8.2f}  MSE {r[4]:.4f}")
    print(f"\n{args.dataset}, {args.prompt} prompt ({len(groups)} groups, {time.perf_counter() - t0:.0f}s)")
    print("| method | SAD | MSE | mean s/target | max s/target |\n|---|---|---|---|---|")
    for mname, (sad, mse) in table.items():
        ts = [r[2] for r in rows if r[0] == mname]
        print(f"| {mname} | {sad:.2f} | {mse:.4f} | {np.mean(ts):.2f} | {np.max(ts):.2f} |")
    if args.time_large:
        print("\n| method | large image | seconds | SAD | MSE |\n|---|---|---|---|---|")
        for mname, what, dt, sad, mse in time_large(groups, methods):
            print(f"| {mname} | {what} | {dt:.2f} | {sad:.2f} | {mse:.4f} |")


if __name__ == "__main__":
    main()
