"""``python -m benchmark.ls methods|datasets|prompts``: what is available.

``methods`` prints one line per registered method: its name, the guidance it takes (paper Tables
2-4: in-context, a per-image trimap/mask, a per-image prompt, none) and what it is. A method whose
dependencies are not installed says which; a quoted-only one (no public code or weights) says why.
``--names`` prints the names alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchmark.datasets import DATASETS
from benchmark.types import PROMPT_KINDS
from methods import METHODS


def method_line(name: str) -> str:
    """``name  guidance  description`` (or why it cannot run here)."""
    try:
        cls = METHODS.get(name)
    except ImportError as exc:
        return f"{name:<16}{'?':<12}needs a missing package ({exc.name or exc}); see README.md#installing"
    info = cls.info
    text = info.description
    if not getattr(cls, "available", True):
        text = f"quoted only: {getattr(cls, 'reason', '')}"
    return f"{name:<16}{info.guidance:<12}{text}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.ls",
                                     description="List registered methods, datasets or prompt kinds.")
    parser.add_argument("what", choices=("methods", "datasets", "prompts"))
    parser.add_argument("--names", action="store_true", help="names only, one per line")
    args = parser.parse_args(argv)
    if args.what == "methods" and not args.names:
        lines = [method_line(n) for n in METHODS.names()]
    else:
        lines = {"methods": METHODS.names(), "datasets": DATASETS.names(), "prompts": list(PROMPT_KINDS)}[args.what]
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
