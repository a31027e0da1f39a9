"""Runner overhead and worker scaling: ``method=constant`` on icm58-dev, 3 rounds, whole + unknown.

Prints the wall time split into decode / method / metrics / writing for 1 and 2 metric workers,
the runner's own overhead (wall − decode − method − metrics; writing counts as overhead) as a
share of the wall time, the 2-worker / 1-worker wall ratio, and the time of a resumed run with
nothing left to do (the whole ``python -m benchmark`` command, interpreter start included).

Usage: python benchmarks/runner_bench.py [--data ../shared/data/icm58-dev]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.runner import Runner  # noqa: E402
from tests.runner_helpers import compose_config  # noqa: E402


def overrides(data: Path, workers: int) -> list[str]:
    return ["method=constant", "dataset=icm57", f"dataset.root={data}", f"dataset.groups={data / 'icm58-dev.json'}",
            "runner.rounds=3", "runner.regions=[whole,unknown]", f"runner.workers={workers}", "runner.progress=off"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "icm58-dev")
    args = parser.parse_args()
    # Warm-up (imports, numba JIT cache) so both timed runs start equal.
    with tempfile.TemporaryDirectory() as tmp:
        Runner(compose_config(*overrides(args.data, 1), "runner.rounds=1"), Path(tmp) / "warm").run()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            cfg = compose_config(*overrides(args.data, workers))
            t0 = time.perf_counter()
            stats = Runner(cfg, out).run()
            wall = time.perf_counter() - t0
            results[workers] = (stats, wall, out)
        print(f"{'workers':>7} {'wall s':>8} {'decode':>8} {'method':>8} {'metrics':>8} {'writing':>8} "
              f"{'overhead':>9} {'ovh %':>6} targets")
        for workers, (s, wall, _) in results.items():
            metrics = s.metrics_s if workers == 1 else float("nan")
            overhead = wall - s.decode_s - s.method_s - s.metrics_s if workers == 1 else float("nan")
            print(f"{workers:>7} {wall:>8.2f} {s.decode_s:>8.2f} {s.method_s:>8.3f} {metrics:>8.2f} "
                  f"{s.write_s:>8.2f} {overhead:>9.3f} {100 * overhead / wall:>6.1f} {s.targets}")
        print("(2 workers: metrics in 2 processes, decoding in 2 background threads; decode/metrics seconds overlap)")
        print(f"metric seconds summed over the 2 workers: {results[2][0].metrics_s:.2f}")
        ratio = results[2][1] / results[1][1]
        print(f"2-worker wall / 1-worker wall = {ratio:.2f} (target ≤ 0.70)")
        out = results[1][2]
        cmd = [sys.executable, "-m", "benchmark", *overrides(args.data, 1), f"hydra.run.dir={out}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
        print(f"resumed run with nothing left: {time.perf_counter() - t0:.2f} s for the whole command (target ≤ 3 s)")


if __name__ == "__main__":
    main()
