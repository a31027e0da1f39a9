"""Runner scale and overhead: memory and resume time at 10,000 targets, and the runner's own share of wall time.

Scale (``--skip-scale`` to leave out): generates a grouped ``manifest`` dataset of 64×64 soft discs over noise
(PNG RGB images + PNG alpha mattes, groups of 5, no trimaps, so the ``unknown`` region's trimap is derived) and
runs ``method=constant`` with ``runner.rounds=1 runner.workers=1`` on a ``--small`` and a ``--targets`` sized copy,
each as its own ``python -m benchmark … hydra.run.dir=…`` command. A *target* here is one target evaluation: one
(round, target image) pair, scored for every region; with 1 round and groups of 5 (1 reference + 4 targets) a
dataset of G groups has 4·G targets, so G = targets / 4 (the count is checked against ``results.csv``).
Each command runs as the only child of a small ``python -c`` wrapper that prints the command's wall time and
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the peak RSS of the largest single process it waited for); with
``runner.workers=1`` there are no scoring worker processes, so that is the whole run's peak. Targets: peak RSS
at the large size within 20 % of the small one; a resumed run with nothing left to do ≤ 5 s for the whole
command (interpreter start included). The in-process ``Runner(cfg, out).run()`` time of that resume is printed too.

Share (``--skip-share`` to leave out): ``method=trimap_matting`` on icm58-dev (ICM-57 layout), ``runner.workers=1``
so every timer in the returned RunStats is in-process and additive, after a warm-up run on a tiny generated set
(imports, numba JIT). Runner share = (wall − decode − method − metrics − write) / wall, target ≤ 5 %; the share
with ``write`` counted as overhead is printed too. ``write_s`` covers PNG encoding of the predictions *and* the
CSV files (episode files, results.csv); where the runner module calls ``write_png`` by that name, the PNG part is
timed separately by wrapping it.

Usage: python benchmarks/runner_scale.py [--targets 10000] [--small 1000] [--data ../shared/data/icm58-dev]
       [--keep DIR] [--skip-share] [--skip-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import benchmark.runner as runner_module  # noqa: E402
from benchmark.datasets.manifest import write_manifest  # noqa: E402
from benchmark.runner import Runner  # noqa: E402
from benchmark.types import Sample  # noqa: E402
from benchmarks.runner_bench import overrides as icm58_overrides  # noqa: E402
from tests.conftest import soft_disc  # noqa: E402
from tests.runner_helpers import compose_config, read_rows  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import WRAPPER  # noqa: E402

GROUP_SIZE = 5           # 1 reference + 4 targets per group and round
SIZE = 64                # image side in pixels
RSS_TARGET = 1.20        # large-size peak RSS / small-size peak RSS
RESUME_TARGET_S = 5.0
SHARE_TARGET = 0.05
WORKERS = 1



# --------------------------------------------------------------------------- data
def generate_dataset(root: Path, groups: int, seed: int = 0) -> Path:
    """A manifest dataset at ``root``: ``groups`` × GROUP_SIZE 64×64 soft discs over noise, PNG images and mattes.

    The same seed gives the same images, so a smaller set is the first groups of a larger one. Each set holds
    its own files: the loaders leave out samples whose files lie outside the dataset root."""
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "alpha").mkdir(parents=True, exist_ok=True)
    samples = []
    for g in range(groups):
        colour = rng.integers(0, 256, 3)
        for i in range(GROUP_SIZE):
            sid = f"g{g:05d}_s{i}"
            a = soft_disc(SIZE, SIZE, SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6),
                          rng.uniform(SIZE / 5, SIZE / 3))
            bg = rng.integers(0, 256, (SIZE, SIZE, 3))
            img = a[..., None] * colour + (1 - a[..., None]) * bg
            image, alpha = root / "image" / f"{sid}.png", root / "alpha" / f"{sid}.png"
            Image.fromarray(img.astype(np.uint8)).save(image, compress_level=1)
            Image.fromarray(np.rint(a * 255).astype(np.uint8)).save(alpha, compress_level=1)
            samples.append(Sample(id=sid, group=f"g{g:05d}", image_path=image, alpha_path=alpha))
    write_manifest(root, root.name, samples, {f"g{g:05d}": {"size": SIZE} for g in range(groups)})
    return root


# --------------------------------------------------------------------------- scale
def scale_overrides(root: Path) -> list[str]:
    return ["method=constant", "dataset=manifest", f"dataset.root={root}", "runner.rounds=1",
            f"runner.workers={WORKERS}", "runner.progress=off"]


def run_command(root: Path, out: Path, log: Path) -> dict:
    """``python -m benchmark`` on ``root`` into ``out`` under the wrapper: wall time, peak RSS, its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmark", *scale_overrides(root), f"hydra.run.dir={out}"]
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(log), *cmd], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    res = json.loads(done.stdout.strip().splitlines()[-1])
    res["log"] = log.read_text()
    if res["rc"] != 0:
        raise SystemExit(f"command failed (rc {res['rc']}): {' '.join(cmd)}\n{res['log'][-3000:]}")
    m = re.search(r"([\d.]+) s →", res["log"])  # the runner's own wall time, as `python -m benchmark` prints it
    res["runner_wall_s"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) new targets scored", res["log"])
    res["new_targets"] = int(m.group(1)) if m else None
    return res


def count_targets(out: Path) -> tuple[int, int]:
    """(target evaluations with an ok row, error rows) in ``results.csv``."""
    rows = read_rows(out / "results.csv")
    ok = {(r["round"], r["group"], r["target"]) for r in rows if r["status"] == "ok"}
    return len(ok), sum(r["status"] == "error" for r in rows)


def scale(args: argparse.Namespace, work: Path) -> list[tuple[str, bool]]:
    sizes = sorted({args.small, args.targets})
    if any(n % (GROUP_SIZE - 1) for n in sizes):
        raise SystemExit(f"--targets and --small must be multiples of {GROUP_SIZE - 1} (targets per group)")
    t0 = time.perf_counter()
    roots = {n: generate_dataset(work / f"t{n}", n // (GROUP_SIZE - 1)) for n in sizes}
    warm = generate_dataset(work / "warmup", 2)
    images = sum(sizes) // (GROUP_SIZE - 1) * GROUP_SIZE
    print(f"generated {images} images ({SIZE}×{SIZE} PNG + alpha PNG, groups of {GROUP_SIZE}; sizes {sizes}) "
          f"in {time.perf_counter() - t0:.1f} s under {work}")

    # Warm-up: the numba cache and the OS file cache start equal for every measured command.
    run_command(warm, work / "out-warmup", work / "warmup.log")
    results = {}
    for n in sizes:
        out = work / f"out-t{n}"
        res = run_command(roots[n], out, work / f"t{n}.log")
        res["targets"], res["errors"] = count_targets(out)
        res["resume"] = run_command(roots[n], out, work / f"t{n}-resume.log")
        results[n] = res

    # The large run's resume in-process: this process already has the benchmark modules imported.
    big = max(sizes)
    t0 = time.perf_counter()
    cfg = compose_config(*scale_overrides(roots[big]))
    compose_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = Runner(cfg, work / f"out-t{big}").run()
    inproc_s = time.perf_counter() - t0

    print(f"\nScale: method=constant, dataset=manifest ({SIZE}×{SIZE}), runner.rounds=1, "
          f"runner.workers={WORKERS} (in-process scoring, no worker processes)")
    print("target = one (round, target image) evaluation, scored for regions whole + unknown; "
          "peak RSS = ru_maxrss of the `python -m benchmark` process")
    print(f"{'targets':>8} {'groups':>7} {'ok':>7} {'errors':>6} {'cmd wall s':>10} {'runner s':>9} "
          f"{'targets/s':>9} {'peak RSS MiB':>12} {'resume cmd s':>12} {'resume RSS MiB':>14}")
    for n, r in results.items():
        rw = f"{r['runner_wall_s']:.1f}" if r["runner_wall_s"] is not None else "n/a"
        print(f"{n:>8} {n // (GROUP_SIZE - 1):>7} {r['targets']:>7} {r['errors']:>6} {r['wall_s']:>10.1f} {rw:>9} "
              f"{r['targets'] / r['wall_s']:>9.0f} {r['maxrss_kib'] / 1024:>12.1f} {r['resume']['wall_s']:>12.2f} "
              f"{r['resume']['maxrss_kib'] / 1024:>14.1f}")
    checks = []
    for n, r in results.items():
        if r["targets"] != n or r["errors"]:
            print(f"WARNING: size {n}: results.csv holds {r['targets']} ok targets and {r['errors']} error rows")
        if r["resume"]["new_targets"] not in (0, None):
            print(f"WARNING: size {n}: the resume scored {r['resume']['new_targets']} new targets")
    small, large = results[min(sizes)], results[big]
    ratio = large["maxrss_kib"] / small["maxrss_kib"]
    ok = ratio <= RSS_TARGET
    checks.append((f"peak RSS {big} / {min(sizes)} targets = {ratio:.3f} (target ≤ {RSS_TARGET:.2f})", ok))
    resume = large["resume"]["wall_s"]
    checks.append((f"resume of {big} targets, nothing left: {resume:.2f} s whole command, interpreter start "
                   f"included (target ≤ {RESUME_TARGET_S:.0f} s)", resume <= RESUME_TARGET_S))
    resumed_all = stats.episodes_resumed == stats.episodes_total
    print(f"in-process resume of {big} targets: Runner.run() {inproc_s:.2f} s (RunStats.wall_s {stats.wall_s:.2f}, "
          f"{stats.episodes_resumed}/{stats.episodes_total} episodes resumed{'' if resumed_all else ' — NOT all'}); "
          f"compose_config {compose_s:.2f} s")
    return checks


# --------------------------------------------------------------------------- share
class _TimedWritePng:
    """Wraps the runner module's ``write_png`` to time PNG encoding apart from the CSV files."""

    def __init__(self) -> None:
        self.original = getattr(runner_module, "write_png", None)
        self.seconds, self.calls = 0.0, 0

    def __call__(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return self.original(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def __enter__(self) -> _TimedWritePng:
        if self.original is not None:
            runner_module.write_png = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self.original is not None:
            runner_module.write_png = self.original


def share_overrides(data: Path, rounds: int) -> list[str]:
    base = [o for o in icm58_overrides(data, WORKERS) if not o.startswith(("method=", "runner.rounds="))]
    return ["method=trimap_matting", *base, f"runner.rounds={rounds}"]


def share(args: argparse.Namespace, work: Path) -> list[tuple[str, bool]]:
    if not (args.data / "icm58-dev.json").is_file():
        raise SystemExit(f"icm58-dev not found at {args.data} (give --data DIR or --skip-share)")
    # Warm-up on 2 tiny generated groups: imports of the method and scoring, numba JIT.
    warm = generate_dataset(work / "share-warmup", 2, seed=1)
    warm_cfg = compose_config("method=trimap_matting", "dataset=manifest", f"dataset.root={warm}",
                              "runner.rounds=1", f"runner.workers={WORKERS}", "runner.progress=off")
    Runner(warm_cfg, work / "share-warmup-out").run()

    cfg = compose_config(*share_overrides(args.data, args.share_rounds))
    with _TimedWritePng() as png:
        t0 = time.perf_counter()
        s = Runner(cfg, work / "share-out").run()
        outer = time.perf_counter() - t0
    wall = s.wall_s
    own = wall - s.decode_s - s.method_s - s.metrics_s - s.write_s
    png_ok = png.original is not None and png.calls >= s.targets > 0

    def line(label: str, secs: float) -> None:
        print(f"  {label:<58} {secs:>9.3f} s {100 * secs / wall:>7.2f} %")

    print(f"\nShare: method=trimap_matting on {args.data.name} ({s.targets} targets, {s.episodes_total} episodes, "
          f"{args.share_rounds} round(s), regions whole + unknown), runner.workers={WORKERS}, after a warm-up run")
    line("wall (RunStats.wall_s)", wall)
    line("decode", s.decode_s)
    line("method", s.method_s)
    line("metrics", s.metrics_s)
    line("write (PNG encoding + CSV files)", s.write_s)
    if png_ok:
        line(f"  of which PNG encoding (write_png, {png.calls} calls)", png.seconds)
        line("  of which CSV files and the rest", s.write_s - png.seconds)
    else:
        print("  (PNG/CSV split not measured: the runner module does not call write_png by that name here)")
    line("runner's own = wall − decode − method − metrics − write", own)
    line("runner's own + write (write counted as overhead)", own + s.write_s)
    if png_ok:
        line("runner's own + CSV part of write (PNG counted as work)", own + s.write_s - png.seconds)
    print(f"  (Runner.run() measured outside: {outer:.3f} s; errors: {s.errors})")
    return [(f"runner's own share {100 * own / wall:.2f} % of wall (target ≤ {100 * SHARE_TARGET:.0f} %; "
             f"{100 * (own + s.write_s) / wall:.2f} % with write as overhead)", own / wall <= SHARE_TARGET)]


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10000,
                        help="large size, in target evaluations (default: %(default)s)")
    parser.add_argument("--small", type=int, default=1000,
                        help="small size, in target evaluations (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "icm58-dev",
                        help="icm58-dev folder (ICM-57 layout) for the share measurement (default: %(default)s)")
    parser.add_argument("--share-rounds", type=int, default=3, help="rounds of the share run (default: %(default)s)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="generate data and run outputs here and keep them (default: a temporary folder, removed)")
    parser.add_argument("--skip-share", action="store_true", help="leave out the runner-share measurement")
    parser.add_argument("--skip-scale", action="store_true", help="leave out the 10,000-target measurement")
    args = parser.parse_args()
    t_start = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        work, cleanup = args.keep.resolve(), None
    else:
        cleanup = tempfile.mkdtemp(prefix="runner_scale-")
        work = Path(cleanup)
    checks: list[tuple[str, bool]] = []
    try:
        if not args.skip_scale:
            checks += scale(args, work)
        if not args.skip_share:
            checks += share(args, work)
    finally:
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)
    print("\nTargets:")
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    print(f"total time of this script: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
