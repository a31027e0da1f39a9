"""``python -m benchmark.ls methods|datasets|prompts``: what is available, one name per line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchmark.datasets import DATASETS
from benchmark.types import PROMPT_KINDS
from methods import METHODS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.ls",
                                     description="List registered methods, datasets or prompt kinds.")
    parser.add_argument("what", choices=("methods", "datasets", "prompts"))
    args = parser.parse_args(argv)
    names = {"methods": METHODS.names(), "datasets": DATASETS.names(), "prompts": list(PROMPT_KINDS)}[args.what]
    sys.stdout.write("".join(f"{n}\n" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
