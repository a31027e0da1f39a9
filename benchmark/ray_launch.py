"""Run every shard of one benchmark configuration as a Ray task, then merge them into one leaderboard.

Usage::

    python -m benchmark.ray_launch --address auto --num-shards 8 --out runs/icm57-iconmatting \\
        -- method=iconmatting dataset=icm57 dataset.root=/data/ICM57 dataset.groups=/data/ICM57/ICM57.json

``--address`` is ``auto`` (the Ray cluster this machine belongs to, e.g. after ``ray start``),
``HOST:PORT`` or ``ray://HOST:PORT`` (a given cluster), or ``local`` (start a private Ray
instance on this machine). Shard ``i`` is composed exactly like the command line
``python -m benchmark OVERRIDES runner.shard=i runner.num_shards=N`` and written to
``OUT/shard<i>of<N>``; then ``OUT/leaderboard.csv`` and ``.md`` merge every shard that finished
and the Markdown table is printed. Re-running the same command resumes every shard.

Every node needs the same icmbench install (or ``--runtime-env``), and the data and ``--out``
must be on a file system that every node sees under the same path. A task runs in the driver's
working directory when that folder exists on its node, so relative paths mean what they mean here.

Exit status, as with ``python -m benchmark``: 0 every shard finished; 1 a shard failed (each
failure is reported with its shard) or some targets ended as error rows (``runner.on_error=ignore``
exits 0 for those); 2 bad arguments or a configuration that does not compose (nothing submitted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import compose_run_config

RESERVED_KEYS = ("runner.shard", "runner.num_shards")


@dataclass(frozen=True)
class ShardResult:
    """What one finished shard reports back to the driver."""

    shard: int
    out_dir: str
    errors: int
    seconds: float


def shard_dir(out: Path, shard: int, num_shards: int) -> Path:
    return out / f"shard{shard}of{num_shards}"


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def shard_overrides(overrides: Sequence[str], shard: int, num_shards: int, workers: int) -> list[str]:
    """The overrides of one shard; ``runner.workers`` follows the task's CPUs unless given."""
    extra = [f"runner.shard={shard}", f"runner.num_shards={num_shards}"]
    if not any(_key(o) == "runner.workers" for o in overrides):
        extra.append(f"runner.workers={workers}")
    return [*overrides, *extra]


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    """Run in ``path`` when it exists on this node (a shared file system), else where we are."""
    before = os.getcwd()
    if os.path.isdir(path):
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_shard(overrides: list[str], shard: int, out_dir: str, cwd: str) -> ShardResult:
    """The body of one Ray task: compose the shard's config and run it into ``out_dir``."""
    from benchmark.runner import Runner

    start = time.perf_counter()
    with _working_dir(cwd):
        stats = Runner(compose_run_config(overrides), out_dir).run()
    return ShardResult(shard, out_dir, int(stats.errors), time.perf_counter() - start)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.ray_launch",
        description="Run the shards of one benchmark configuration as Ray tasks (one task per shard, "
                    "OUT/shard<i>of<N>), wait for all, then write the merged OUT/leaderboard.csv and .md.",
        epilog="Example: python -m benchmark.ray_launch --address auto --num-shards 8 --gpus-per-shard 1 "
               "--out runs/icm57 -- method=iconmatting dataset=icm57 dataset.root=/data/ICM57")
    parser.add_argument("--address", required=True,
                        help="auto (the cluster of this machine), HOST:PORT or ray://HOST:PORT, "
                             "or local (start a private Ray instance here)")
    parser.add_argument("--num-shards", type=int, required=True, help="number of shards (= Ray tasks)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, on a file system every node sees")
    parser.add_argument("--cpus-per-shard", type=float, default=1.0,
                        help="CPUs Ray reserves per task (default 1); also runner.workers unless given")
    parser.add_argument("--gpus-per-shard", type=float, default=0.0, help="GPUs Ray reserves per task (default 0)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="with --address local only: CPUs of the private instance (default: all)")
    parser.add_argument("--runtime-env", type=json.loads, default=None, metavar="JSON",
                        help='Ray runtime environment for the tasks, e.g. \'{"working_dir": "."}\'')
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra overrides after --, as for python -m benchmark (not runner.shard/num_shards)")
    args = parser.parse_args(argv)
    args.overrides = [o for o in args.overrides if o != "--"]
    if args.num_shards < 1:
        parser.error("--num-shards must be at least 1")
    if args.num_cpus is not None and args.address != "local":
        parser.error("--num-cpus only applies to --address local")
    reserved = [o for o in args.overrides if _key(o) in RESERVED_KEYS]
    if reserved:
        parser.error(f"the launcher sets runner.shard and runner.num_shards itself; drop {reserved}")
    return args


def _connect(args: argparse.Namespace) -> None:
    import ray

    if args.address == "local":
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, runtime_env=args.runtime_env)
    else:
        ray.init(address=args.address, runtime_env=args.runtime_env)


def _submit(args: argparse.Namespace, out: Path) -> dict[Any, int]:
    """One Ray task per shard; returns {object ref: shard}."""
    import ray

    from benchmark import ray_launch  # by reference, also when this file runs as __main__

    task = ray.remote(ray_launch.run_shard).options(num_cpus=args.cpus_per_shard, num_gpus=args.gpus_per_shard)
    workers = max(1, int(args.cpus_per_shard))
    refs = {}
    for i in range(args.num_shards):
        overrides = shard_overrides(args.overrides, i, args.num_shards, workers)
        refs[task.remote(overrides, i, str(shard_dir(out, i, args.num_shards)), os.getcwd())] = i
    return refs


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}".strip()


def _wait(refs: Mapping[Any, int], num_shards: int) -> tuple[list[ShardResult], dict[int, str]]:
    """Wait for every task, reporting each as it ends; returns (finished shards, {shard: error})."""
    import ray

    done: list[ShardResult] = []
    failed: dict[int, str] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        shard = refs[ready[0]]
        try:
            result: ShardResult = ray.get(ready[0])
        except Exception as exc:  # a RayTaskError (the runner raised) or a lost worker or node
            failed[shard] = _describe(exc)
            print(f"shard {shard}/{num_shards} FAILED: {failed[shard]}", file=sys.stderr)
            continue
        done.append(result)
        print(f"shard {shard}/{num_shards}: {result.errors} error rows, {result.seconds:.1f} s → {result.out_dir}",
              file=sys.stderr)
    return sorted(done, key=lambda r: r.shard), dict(sorted(failed.items()))


def _merge(out: Path, done: Sequence[ShardResult]) -> None:
    from benchmark.leaderboard import to_markdown, write_leaderboard

    board = write_leaderboard([r.out_dir for r in done], out / "leaderboard.csv")
    sys.stdout.write(to_markdown(board))


def _exit_status(done: Sequence[ShardResult], failed: Mapping[int, str], num_shards: int, on_error: str) -> int:
    for shard, error in failed.items():
        print(f"error: shard {shard}/{num_shards} failed: {error}", file=sys.stderr)
    errors = sum(r.errors for r in done)
    if errors and on_error != "ignore":
        print(f"{errors} error rows (see the 'error' column of each shard's results.csv); exit status 1 "
              "(runner.on_error=ignore exits 0)", file=sys.stderr)
    return 1 if failed or (errors and on_error != "ignore") else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    try:  # fail before anything is submitted when the overrides do not compose
        cfg = compose_run_config(shard_overrides(args.overrides, 0, args.num_shards, 1))
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    _connect(args)
    try:
        done, failed = _wait(_submit(args, out), args.num_shards)
    finally:
        ray.shutdown()
    if done:
        _merge(out, done)
    return _exit_status(done, failed, args.num_shards, str(cfg["runner"].get("on_error", "continue")))


if __name__ == "__main__":
    from benchmark.ray_launch import main as _main  # the importable module, so Ray pickles by reference

    raise SystemExit(_main())
