"""Time ``metrics.evaluate`` on a 24-megapixel pair against a straightforward scipy baseline.

Pair: ``statue_01`` of icm58-dev (6000×4000): its ground-truth matte, a Gaussian-blurred
copy (σ = 4, rounded to uint8) as the prediction, and its trimap. Both implementations score
all four metrics on both regions (whole image and ``trimap == 128``), single-threaded.

- ``evaluate``: the package (numba kernels when installed). One-time JIT compilation is
  measured separately on a small crop; by default numba compiles into a fresh temporary
  cache, so that number is the real compile time (``--reuse-cache`` uses the normal cache).
- baseline: ``ndimage.convolve`` with the 9×9 kernel for Grad, one ``ndimage.label`` per
  threshold for Conn, plain numpy SAD/MSE, all in float64.

Memory is the peak resident-set-size increase during the call (Linux: VmHWM after resetting
it through ``/proc/self/clear_refs``, minus VmRSS before), which also counts allocations
made inside compiled code. Usage::

    .venv/bin/python benchmarks/metrics_bench.py [--repeat 3] [--numpy-backend] [--icm] [--reuse-cache]
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

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metrics import METRIC_NAMES, evaluate, numba_available, read_alpha, read_trimap  # noqa: E402

ICM58 = Path(__file__).resolve().parents[2] / "shared" / "data" / "icm58-dev"
TIME_TARGET_S = 1.0
SPEEDUP_TARGET = 5.0
MEMORY_TARGET_MB = 1536.0

Scores = dict[str, dict[str, float]]


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


def baseline_evaluate(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> Scores:
    """Straightforward float64 implementation of the dim protocol (uint8 inputs)."""
    p, g = pred / 255.0, gt / 255.0
    regions = {"whole": np.ones(pred.shape, bool), "unknown": trimap == 128}
    e = p - g
    hx = _kernel_9x9()
    grad_err = (_baseline_amp(pred, hx) - _baseline_amp(gt, hx)) ** 2
    level = _baseline_round_down(pred, gt)
    dp, dg = p - level, g - level
    conn_err = np.abs((1 - dp * (dp >= 0.15)) - (1 - dg * (dg >= 0.15)))
    out: Scores = {}
    for name, m in regions.items():
        n = int(m.sum())
        out[name] = {
            "SAD": float(np.abs(e[m]).sum()) / 1000,
            "MSE": float((e[m] ** 2).sum()) / n if n else math.nan,
            "Grad": float(grad_err[m].sum()) / 1000,
            "Conn": float(conn_err[m].sum()) / 1000,
        }
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


def measure(fn: Callable[[], Scores]) -> tuple[float, float | None, Scores]:
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
        for k in METRIC_NAMES:
            x, y = a[region][k], b[region][k]
            if math.isnan(x) and math.isnan(y):
                continue
            worst = max(worst, abs(x - y) / max(abs(y), 1e-300))
    return worst


def make_pair(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt = read_alpha(ICM58 / "alpha" / "statue_01.png")
    trimap = read_trimap(ICM58 / "trimap" / "statue_01.png")
    blurred = ndimage.gaussian_filter(gt.astype(np.float32), sigma)
    pred = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    return pred, gt, trimap


def _fmt_mb(mb: float | None) -> str:
    return "n/a" if mb is None else f"{mb:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of evaluate (default 3)")
    ap.add_argument("--sigma", type=float, default=4.0, help="blur of the prediction (default 4)")
    ap.add_argument("--reuse-cache", action="store_true", help="use numba's normal on-disk cache")
    ap.add_argument("--numpy-backend", action="store_true", help="also time evaluate(backend='numpy')")
    ap.add_argument("--icm", action="store_true", help="also time evaluate(protocol='icm')")
    args = ap.parse_args(argv)
    if not ICM58.is_dir():
        print(f"shared dev set not found at {ICM58}", file=sys.stderr)
        return 2
    if not args.reuse_cache:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="metrics-bench-numba-")

    pred, gt, trimap = make_pair(args.sigma)
    h, w = gt.shape
    unknown = int((trimap == 128).sum())
    backend = "numba" if numba_available() else "numpy"
    versions = f"numpy {np.__version__}, scipy {scipy.__version__}"
    if backend == "numba":
        import numba

        versions = f"numba {numba.__version__}, " + versions
    print(f"pair: statue_01 {w}×{h} ({h * w / 1e6:.1f} Mpx), prediction = GT blurred σ={args.sigma:g} "
          f"(uint8), unknown region {unknown / 1e6:.2f} Mpx")
    print(f"one thread (NUMBA/OMP/MKL/OPENBLAS_NUM_THREADS=1); {versions}; evaluate backend: {backend}")

    crop = (slice(0, 64), slice(0, 64))
    t0 = time.perf_counter()
    evaluate(pred[crop].copy(), gt[crop].copy(), trimap[crop].copy())
    first = time.perf_counter() - t0
    cache = "normal cache" if args.reuse_cache else "empty cache"
    print(f"first call on a 64×64 crop (JIT compilation, {cache}): {first:.2f} s (excluded below)")

    runs = [measure(lambda: evaluate(pred, gt, trimap)) for _ in range(max(1, args.repeat))]
    times = [r[0] for r in runs]
    peaks = [r[1] for r in runs if r[1] is not None]
    fast_peak = max(peaks) if peaks else None
    fast_med = statistics.median(times)
    ours = runs[-1][2]
    print(f"evaluate, all four metrics, both regions: {' '.join(f'{t:.3f}' for t in times)} s "
          f"-> median {fast_med:.3f} s, best {min(times):.3f} s; peak RSS increase {_fmt_mb(fast_peak)}")

    base_t, base_peak, base = measure(lambda: baseline_evaluate(pred, gt, trimap))
    print(f"baseline (ndimage.convolve 9×9, 10× ndimage.label, numpy SAD/MSE): {base_t:.3f} s; "
          f"peak RSS increase {_fmt_mb(base_peak)}")
    if args.icm:
        evaluate(pred[crop].copy(), gt[crop].copy(), trimap[crop].copy(), protocol="icm")  # compile
        icm_t, icm_peak, _ = measure(lambda: evaluate(pred, gt, trimap, protocol="icm"))
        print(f"evaluate(protocol='icm'): {icm_t:.3f} s; peak RSS increase {_fmt_mb(icm_peak)}")
    if args.numpy_backend:
        np_t, np_peak, np_res = measure(lambda: evaluate(pred, gt, trimap, backend="numpy"))
        print(f"evaluate(backend='numpy') (fallback without numba): {np_t:.3f} s; peak RSS increase "
              f"{_fmt_mb(np_peak)}; max relative difference to numba {max_rel_diff(np_res, ours):.1e}")

    ratio = base_t / fast_med
    diff = max_rel_diff(ours, base)
    same = diff <= 1e-9
    print(f"speed-up (baseline / median evaluate): {ratio:.1f}×")
    print(f"same numbers: {'yes' if same else 'NO'} (max relative difference {diff:.1e})")
    print(f"{'region':<8} " + " ".join(f"{k:>20}" for k in METRIC_NAMES))
    for region, vals in ours.items():
        print(f"{region:<8} " + " ".join(f"{vals[k]:>20.12g}" for k in METRIC_NAMES))
    ok_time = fast_med <= TIME_TARGET_S
    ok_ratio = ratio >= SPEEDUP_TARGET
    ok_mem = fast_peak is not None and fast_peak <= MEMORY_TARGET_MB
    print(f"targets: time ≤ {TIME_TARGET_S:g} s {'PASS' if ok_time else 'FAIL'}; "
          f"speed-up ≥ {SPEEDUP_TARGET:g}× {'PASS' if ok_ratio else 'FAIL'}; "
          f"memory ≤ {MEMORY_TARGET_MB / 1024:g} GB {'PASS' if ok_mem else 'FAIL'}")
    return 0 if (same and ok_time and ok_ratio and ok_mem) else 1


if __name__ == "__main__":
    sys.exit(main())
