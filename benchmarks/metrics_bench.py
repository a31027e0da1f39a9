"""Time ``metrics.evaluate`` on three 24-megapixel pairs against a straightforward scipy baseline.

Cases, all from ``statue_01`` of icm58-dev (4000×6000), deterministic (``--seed``):

- ``clean``: the ground-truth matte (background exactly 0, foreground exactly 255), a
  Gaussian-blurred copy (σ = 4, rounded to uint8) as the prediction, and its trimap;
- ``noisy``: the same prediction plus uniform integer noise in [−2, 2], clipped to 0..255, as a
  network's output has: the noise fragments every threshold set of Conn and leaves no window of
  the prediction constant for Grad;
- ``unknown``: most of the image unknown. The ground truth is the matte blurred with σ ≈ 192 px
  (σ = 24 at 1/8 scale, upsampled bilinearly); the prediction is a σ ≈ 160 px blur plus the same
  noise; the trimap is 128 wherever the ground truth is strictly between 0 and 255.

Both implementations score all four metrics on both regions (whole image and ``trimap == 128``),
single-threaded, and must give the same numbers (relative difference ≤ 1e-9).

- ``evaluate``: the package (numba kernels when installed); the median of ``--repeat`` runs,
  then each metric on its own (its sums over both regions). One-time JIT compilation is
  measured separately on a small crop; by default numba compiles into a fresh temporary cache,
  so that number is the real compile time (``--reuse-cache`` uses the normal cache).
- baseline: plain numpy SAD/MSE, ``ndimage.convolve`` with the 9×9 kernel for Grad, one
  ``ndimage.label`` per threshold for Conn, all in float64, timed per metric.

Memory is the peak resident-set-size increase during the call (Linux: VmHWM after resetting
it through ``/proc/self/clear_refs``, minus VmRSS before), which also counts allocations
made inside compiled code. The script re-runs itself with ``MALLOC_MMAP_THRESHOLD_`` fixed, so
that memory freed by an earlier call is returned to the system and cannot hide a later peak. Usage::

    .venv/bin/python benchmarks/metrics_bench.py [--repeat 3] [--cases clean,noisy,unknown]
        [--numpy-backend] [--float] [--no-icm] [--reuse-cache]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metrics import METRIC_NAMES, evaluate, numba_available, read_alpha, read_trimap  # noqa: E402
from metrics._inputs import make_pair as metric_pair  # noqa: E402
from metrics._inputs import unknown_mask  # noqa: E402
from metrics.connectivity import conn_sums  # noqa: E402
from metrics.gradient import grad_sums  # noqa: E402
from metrics.sad_mse import diff_sums  # noqa: E402

ICM58 = Path(__file__).resolve().parents[2] / "shared" / "data" / "icm58-dev"
CASES = ("clean", "noisy", "unknown")
#: case -> (time target in s, speed-up target over the baseline or None)
TARGETS: dict[str, tuple[float, float | None]] = {"clean": (0.3, None), "noisy": (0.5, 30.0),
                                                  "unknown": (0.5, 30.0)}
MEMORY_TARGET_MB = 300.0
SAME_RTOL = 1e-9
PARTS = {"SAD+MSE": ("SAD", "MSE"), "Grad": ("Grad",), "Conn": ("Conn",)}

Scores = dict[str, dict[str, float]]
Case = tuple[np.ndarray, np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- cases


def _blur_u8(a: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(np.rint(ndimage.gaussian_filter(a.astype(np.float32), sigma)), 0, 255).astype(np.uint8)


def _noise(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = rng.integers(-2, 3, a.shape, dtype=np.int16)
    return np.clip(a.astype(np.int16) + n, 0, 255).astype(np.uint8)


def _soft(gt: np.ndarray, sigma8: float) -> np.ndarray:
    """The matte blurred with σ = sigma8 at 1/8 scale, upsampled bilinearly to full size."""
    small = ndimage.gaussian_filter(gt[::8, ::8].astype(np.float32), sigma8)
    big = ndimage.zoom(small, 8, order=1)[: gt.shape[0], : gt.shape[1]]
    big = np.pad(big, [(0, gt.shape[0] - big.shape[0]), (0, gt.shape[1] - big.shape[1])], mode="edge")
    return np.clip(np.rint(big), 0, 255).astype(np.uint8)


def make_cases(names: tuple[str, ...], seed: int = 0) -> dict[str, Case]:
    gt = read_alpha(ICM58 / "alpha" / "statue_01.png")
    trimap = read_trimap(ICM58 / "trimap" / "statue_01.png")
    rng = np.random.default_rng(seed)
    clean = _blur_u8(gt, 4.0)
    out: dict[str, Case] = {}
    if "clean" in names:
        out["clean"] = (clean, gt, trimap)
    if "noisy" in names:
        out["noisy"] = (_noise(clean, rng), gt, trimap)
    if "unknown" in names:
        soft_gt = _soft(gt, 24.0)
        tri = np.where((soft_gt > 0) & (soft_gt < 255), 128, soft_gt).astype(np.uint8)
        out["unknown"] = (_noise(_soft(gt, 20.0), rng), soft_gt, tri)
    return out


# --------------------------------------------------------------------------- baseline


def _kernel_9x9(sigma: float = 1.4, eps: float = 0.01) -> np.ndarray:
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * eps)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    hx = np.outer(g, -u * g / sigma**2)
    return hx / np.sqrt((hx**2).sum())


def _baseline_amp(a: np.ndarray, hx: np.ndarray) -> np.ndarray:
    x = a.astype(np.float64)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else np.clip(x, 0, 1)  # mat2gray
    gx = ndimage.convolve(x, hx, mode="nearest")
    gy = ndimage.convolve(x, hx.T, mode="nearest")
    return np.sqrt(gx**2 + gy**2)


def _baseline_round_down(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    p10, g10 = 10 * pred.astype(np.int32), 10 * gt.astype(np.int32)
    level = np.full(pred.shape, -1.0)
    for i in range(1, 11):
        both = (p10 >= 255 * i) & (g10 >= 255 * i)  # exact k/255 >= i/10
        lab, n = ndimage.label(both.T)  # transposed: column-major numbering, as bwconncomp
        omega = np.zeros(pred.shape, bool)
        if n:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            omega = (lab == np.argmax(sizes)).T
        level[(level == -1) & ~omega] = (i - 1) / 10
    level[level == -1] = 1.0
    return level


def _regions(trimap: np.ndarray) -> dict[str, np.ndarray]:
    return {"whole": np.ones(trimap.shape, bool), "unknown": trimap == 128}


def baseline_part(part: str, pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> Scores:
    """One part (``SAD+MSE``, ``Grad`` or ``Conn``) of the straightforward float64 dim protocol."""
    p, g = pred / 255.0, gt / 255.0
    out: Scores = {}
    if part == "SAD+MSE":
        e = p - g
        for name, m in _regions(trimap).items():
            n = int(m.sum())
            out[name] = {"SAD": float(np.abs(e[m]).sum()) / 1000,
                         "MSE": float((e[m] ** 2).sum()) / n if n else math.nan}
    elif part == "Grad":
        hx = _kernel_9x9()
        err = (_baseline_amp(pred, hx) - _baseline_amp(gt, hx)) ** 2
        out = {name: {"Grad": float(err[m].sum()) / 1000} for name, m in _regions(trimap).items()}
    else:
        level = _baseline_round_down(pred, gt)
        dp, dg = p - level, g - level
        err = np.abs((1 - dp * (dp >= 0.15)) - (1 - dg * (dg >= 0.15)))
        out = {name: {"Conn": float(err[m].sum()) / 1000} for name, m in _regions(trimap).items()}
    return out


# --------------------------------------------------------------------------- measurement


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """(seconds, peak RSS increase in MB or None, result) of one call."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        rss0 = _status_kb("VmRSS")
    except OSError:
        rss0 = None
    t0 = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    peak = (hwm - rss0) / 1024 if rss0 is not None and hwm is not None else None
    return dt, peak, res


def max_rel_diff(a: Scores, b: Scores) -> float:
    worst = 0.0
    for region in b:
        for k in b[region]:
            x, y = a[region][k], b[region][k]
            if math.isnan(x) and math.isnan(y):
                continue
            worst = max(worst, abs(x - y) / max(abs(y), 1e-300))
    return worst


def part_times(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray, protocol: str = "dim") -> dict[str, float]:
    """Seconds per metric part, each over both regions, as ``evaluate`` computes them."""
    pair = metric_pair(pred, gt, protocol)
    mask = unknown_mask(trimap, pred.shape)
    fns = {"SAD+MSE": diff_sums, "Grad": grad_sums, "Conn": conn_sums}
    return {k: measure(lambda f=f: f(pair, mask))[0] for k, f in fns.items()}


def _fmt_mb(mb: float | None) -> str:
    return "n/a" if mb is None else f"{mb:.0f} MB"


def _merge(parts: list[Scores]) -> Scores:
    out: Scores = {}
    for s in parts:
        for region, vals in s.items():
            out.setdefault(region, {}).update(vals)
    return {r: {k: v[k] for k in METRIC_NAMES} for r, v in out.items()}


def run_case(name: str, case: Case, args: argparse.Namespace) -> dict[str, Any]:
    pred, gt, trimap = case
    unknown = int((trimap == 128).sum())
    print(f"\n## {name}: {pred.shape[1]}×{pred.shape[0]}, unknown region {unknown / 1e6:.2f} Mpx "
          f"({unknown / trimap.size:.0%})")
    runs = [measure(lambda: evaluate(pred, gt, trimap)) for _ in range(max(1, args.repeat))]
    times = [r[0] for r in runs]
    peaks = [r[1] for r in runs if r[1] is not None]
    ours = runs[-1][2]
    med = statistics.median(times)
    peak = max(peaks) if peaks else None
    print(f"evaluate (dim), all four metrics, both regions: {' '.join(f'{t:.3f}' for t in times)} s "
          f"-> median {med:.3f} s; peak RSS increase {_fmt_mb(peak)}")
    ours_parts = part_times(pred, gt, trimap)
    base_parts: dict[str, float] = {}
    base_scores = []
    base_peak = 0.0
    for part in PARTS:
        t, mb, s = measure(lambda part=part: baseline_part(part, pred, gt, trimap))
        base_parts[part] = t
        base_scores.append(s)
        base_peak = max(base_peak, mb or 0.0)
    base = _merge(base_scores)
    base_t = sum(base_parts.values())
    print(f"{'part':<8} {'evaluate s':>11} {'baseline s':>11} {'speed-up':>9}")
    for part in PARTS:
        print(f"{part:<8} {ours_parts[part]:>11.3f} {base_parts[part]:>11.3f} "
              f"{base_parts[part] / ours_parts[part]:>8.1f}×")
    ratio = base_t / med
    print(f"{'total':<8} {med:>11.3f} {base_t:>11.3f} {ratio:>8.1f}×   (baseline peak RSS increase "
          f"{base_peak:.0f} MB)")
    diff = max_rel_diff(ours, base)
    same = diff <= SAME_RTOL
    print(f"same numbers as the baseline: {'yes' if same else 'NO'} (max relative difference {diff:.1e})")
    print(f"{'region':<8} " + " ".join(f"{k:>20}" for k in METRIC_NAMES))
    for region, vals in ours.items():
        print(f"{region:<8} " + " ".join(f"{vals[k]:>20.12g}" for k in METRIC_NAMES))
    if args.icm:
        icm_t, icm_peak, _ = measure(lambda: evaluate(pred, gt, trimap, protocol="icm"))
        icm_parts = part_times(pred, gt, trimap, "icm")
        print(f"evaluate(protocol='icm'): {icm_t:.3f} s ("
              + ", ".join(f"{k} {v:.3f}" for k, v in icm_parts.items())
              + f"); peak RSS increase {_fmt_mb(icm_peak)}")
    if args.float:
        pf = (pred / np.float32(255)).astype(np.float32)
        f_t, f_peak, _ = measure(lambda: evaluate(pf, gt, trimap))
        print(f"evaluate with a float32 prediction: {f_t:.3f} s; peak RSS increase {_fmt_mb(f_peak)}")
    if args.numpy_backend:
        np_t, np_peak, np_res = measure(lambda: evaluate(pred, gt, trimap, backend="numpy"))
        print(f"evaluate(backend='numpy') (fallback without numba): {np_t:.3f} s; peak RSS increase "
              f"{_fmt_mb(np_peak)}; max relative difference to numba {max_rel_diff(np_res, ours):.1e}")
    t_target, r_target = TARGETS[name]
    checks = {f"time ≤ {t_target:g} s": med <= t_target,
              f"memory ≤ {MEMORY_TARGET_MB:g} MB": peak is not None and peak <= MEMORY_TARGET_MB,
              "same numbers": same}
    if r_target is not None:
        checks[f"speed-up ≥ {r_target:g}×"] = ratio >= r_target
    print("targets: " + "; ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in checks.items()))
    return {"ok": all(checks.values()), "median": med, "ratio": ratio, "peak": peak}


def _exact_peaks() -> None:
    """Re-run this script with glibc's mmap threshold fixed, so that every large array is
    returned to the system when freed: otherwise memory kept from an earlier call hides part of
    a later call's peak."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
        os.execv(sys.executable, [sys.executable, *sys.argv])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of evaluate per case (default 3)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    ap.add_argument("--reuse-cache", action="store_true", help="use numba's normal on-disk cache")
    ap.add_argument("--numpy-backend", action="store_true", help="also time evaluate(backend='numpy')")
    ap.add_argument("--no-icm", dest="icm", action="store_false", help="skip evaluate(protocol='icm')")
    ap.add_argument("--float", action="store_true",
                    help="also time a float32 prediction in [0, 1] (what methods output)")
    args = ap.parse_args(argv)
    if argv is None:
        _exact_peaks()
    names = tuple(c for c in args.cases.split(",") if c)
    if bad := [c for c in names if c not in CASES]:
        ap.error(f"unknown case(s) {bad}; expected some of {CASES}")
    if not ICM58.is_dir():
        print(f"shared dev set not found at {ICM58}", file=sys.stderr)
        return 2
    if not args.reuse_cache:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="metrics-bench-numba-")

    backend = "numba" if numba_available() else "numpy"
    versions = f"numpy {np.__version__}, scipy {scipy.__version__}"
    if backend == "numba":
        import numba

        versions = f"numba {numba.__version__}, " + versions
    print(f"one thread (NUMBA/OMP/MKL/OPENBLAS_NUM_THREADS=1); {versions}; evaluate backend: {backend}")
    print("building the cases (a few seconds) …", flush=True)
    cases = make_cases(names, args.seed)
    crop = (slice(0, 64), slice(0, 64))
    pred, gt, trimap = next(iter(cases.values()))
    t0 = time.perf_counter()
    for protocol in ("dim", "icm"):
        evaluate(pred[crop].copy(), gt[crop].copy(), trimap[crop].copy(), protocol=protocol)
        if args.float:
            evaluate((pred[crop] / np.float32(255)).astype(np.float32), gt[crop].copy(), trimap[crop].copy(),
                     protocol=protocol)
    first = time.perf_counter() - t0
    cache = "normal cache" if args.reuse_cache else "empty cache"
    kinds = "uint8 and float32, " if args.float else ""
    print(f"first calls on a 64×64 crop, {kinds}both protocols (JIT compilation, {cache}): {first:.2f} s "
          "(excluded below)")
    results = {name: run_case(name, case, args) for name, case in cases.items()}
    print("\n## summary")
    for name, r in results.items():
        print(f"{name:<8} median {r['median']:.3f} s, {r['ratio']:.1f}× the baseline, peak "
              f"{_fmt_mb(r['peak'])}: {'PASS' if r['ok'] else 'FAIL'}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
