"""``python -m benchmark.report RUN_DIR... --out DIR``: see :func:`main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmark.datasets.common import DatasetError
from benchmark.leaderboard import LeaderboardError
from benchmark.rundir import RunDirError

DESCRIPTION = """\
Build a self-contained, offline HTML report of one or more run folders (several methods, shards,
protocols) into DIR: index.html (the merged leaderboard, sortable, both weightings, average rank over
groups, complete flags and error counts), plots.html (per-group SAD, spread over rounds, per-target
distributions, SAD against Grad and Conn), groups.html and one page per group (the reference with its
prompt, then every target's image and ground truth beside each method's prediction and error map,
labelled with SAD/MSE), failures.html (the worst targets per method, the targets where methods disagree
most) and runs.html (each run's identity, hashes, settings, skipped groups, dataset problems, error rows).
Links are relative and nothing is fetched from the network: open DIR/index.html from file:// or copy
DIR to any static host. Full-resolution files are linked where they lie (the run and dataset folders),
never copied. Thumbnails are cached by content hash, so rebuilding is fast. Exit status: 0 written,
2 unreadable or unmergeable run folders, or an --out that is not empty and holds no earlier report."""

EPILOG = """\
examples:
  python -m benchmark.report outputs/icm57/classical/mask-paper-original outputs/icm57/constant/mask-paper-original \\
      --out report/
  python -m benchmark.report multirun/icm57/classical/mask-paper-original/*/ --out report/ --quoted \\
      --weighting image --rounds 0 1 2"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.report", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders (holding run.json)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the report folder to write")
    p.add_argument("--quoted", action="store_true", help="add the paper's rows for the same dataset, prompt and "
                   "guidance to the leaderboard (marked quoted, never part of a mean or a rank)")
    p.add_argument("--weighting", choices=("group", "image"), default="group",
                   help="the leaderboard shown first: every group weighs the same (default) or every image")
    p.add_argument("--failures", type=int, default=8, metavar="N", help="worst targets per method, and targets "
                   "where methods disagree most, in the failure gallery (default: 8)")
    p.add_argument("--thumb", type=int, default=256, metavar="PX", help="thumbnail long side in px (default: 256)")
    p.add_argument("--zoom", type=int, default=1024, metavar="PX",
                   help="long side of the error maps opened by a click (default: 1024)")
    p.add_argument("--rounds", type=int, nargs="*", default=[0], metavar="R",
                   help="rounds drawn on the group pages (default: 0; give none for every round)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.thumb < 16 or args.zoom < args.thumb or args.failures < 0:
        print("error: need --thumb >= 16, --zoom >= --thumb and --failures >= 0", file=sys.stderr)
        return 2
    from benchmark.report.build import ReportError, build_report

    try:
        stats = build_report(args.run_dirs, args.out, quoted=args.quoted, weighting=args.weighting,
                             failures=args.failures, thumb=args.thumb, zoom=args.zoom,
                             rounds=args.rounds or None)
    except (RunDirError, LeaderboardError, DatasetError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'index.html'}: {stats.runs} run folder(s), {stats.entries} method setting(s), "
          f"{stats.group_pages} group pages, {stats.thumbs_made} thumbnails drawn, {stats.thumbs_reused} reused "
          f"({stats.seconds:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
