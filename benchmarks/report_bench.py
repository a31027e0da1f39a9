"""Report build time: 57 synthetic groups × 5 method settings, 3 rounds, both regions.

The run folders are made with the runner and the fast weight-free methods (``constant`` at three values
under their own labels, ``reference_mask`` under the paper and the fixed protocol), then the report is
built twice into the same folder: the first build draws every thumbnail, the second finds them cached.
Prints the time of each build (target: well under a minute) and the thumbnail counts.

Usage: python benchmarks/report_bench.py [--keep DIR] [--size H W] [--groups 57]
(``--keep`` keeps the run folders there and reuses them on the next call.)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.report.build import build_report  # noqa: E402
from benchmark.runner import Runner  # noqa: E402
from tests.runner_helpers import compose_config  # noqa: E402

METHODS = {
    "constant": ["method=constant"],
    "constant25": ["method=constant", "method.value=0.25", "+method.label=constant_0.25"],
    "constant75": ["method=constant", "method.value=0.75", "+method.label=constant_0.75"],
    "refmask": ["method=reference_mask"],
    "refmask_fixed": ["method=reference_mask", "runner.protocol=fixed"],
}


def make_runs(base: Path, groups: int, size: tuple[int, int]) -> list[Path]:
    data = ["dataset=synthetic", f"dataset.root={base / 'data'}", f"dataset.num_groups={groups}",
            "dataset.images_per_group=4", f"dataset.size=[{size[0]},{size[1]}]"]
    runs = []
    for name, overrides in METHODS.items():
        out = base / name
        if not (out / "results.csv").is_file():
            t0 = time.perf_counter()
            cfg = compose_config(*overrides, *data, "runner.rounds=3", "runner.workers=1", "runner.progress=off")
            stats = Runner(cfg, out).run()
            print(f"  run {name}: {stats.targets} targets in {time.perf_counter() - t0:.1f} s", flush=True)
        runs.append(out)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the run folders here")
    parser.add_argument("--groups", type=int, default=57)
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="report_bench-"))
    try:
        print(f"run folders in {base}")
        runs = make_runs(base, args.groups, tuple(args.size))
        out = base / "report"
        shutil.rmtree(out, ignore_errors=True)
        for label in ("first build (draws every thumbnail)", "second build (thumbnails cached)"):
            t0 = time.perf_counter()
            stats = build_report(runs, out)
            wall = time.perf_counter() - t0
            print(f"{label}: {wall:.1f} s — {stats.group_pages} group pages, {stats.thumbs_made} thumbnails drawn, "
                  f"{stats.thumbs_reused} reused", flush=True)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"report: {out} ({size / 1e6:.1f} MB)")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
