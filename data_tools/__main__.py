"""``python -m data_tools <command> ...``: build, convert, derive and check grouped matting datasets.

Each command lives in the module named in :data:`COMMANDS`, which exposes
``add_arguments(parser, command)`` and ``run(args) -> int`` (``args.command`` names the command). A module
is imported only when its command is chosen, so a missing or broken converter does not break the others;
``--help`` lists every command from the static :data:`HELP` table.

Exit codes: 0 ok, 1 problems found (e.g. ``validate``), 2 bad input (arguments, unreadable manifest, …).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "validate": "data_tools.validate",
    "stats": "data_tools.stats",
    "derive": "data_tools.derived",
    "icm57-import": "data_tools.icm57",
    "icm57-export": "data_tools.icm57",
    "aim500": "data_tools.aim500",
    "folders": "data_tools.folders",
    "dreambooth": "data_tools.dreambooth",
    "openimages": "data_tools.openimages",
}

HELP: dict[str, str] = {
    "validate": "check a manifest: files, checksums, sizes, matte decoding, duplicates, groups (exit 1 on problems)",
    "stats": "group sizes, resolutions, foreground and unknown-band fractions (text or JSON)",
    "derive": "store the benchmark's derived trimaps and each round's reference prompts beside the data",
    "icm57-import": "official ICM-57 layout (image/, alpha/, trimap/, ICM57.json) → manifest v2",
    "icm57-export": "manifest v2 → official ICM-57 layout, readable by the official code",
    "aim500": "AIM-500 (original/, mask/, trimap/, aim_category_type.json) → category groups",
    "folders": "a tree of group folders (RM-1K style) → manifest v2",
    "dreambooth": "Dreambooth subjects + matte folder → instance and category groups (worklist.csv for the rest)",
    "openimages": "Open Images instance masks → one matte per class and image, category groups",
}

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first non-option word), if it is one of :data:`COMMANDS`."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its arguments (ImportError propagates)."""
    parser = argparse.ArgumentParser(
        prog="python -m data_tools", description="Build, convert, derive and check grouped matting datasets "
                                               "(manifest v2, data_tools/README.md).",
        epilog="Run 'python -m data_tools <command> --help' for a command's options. "
               "Exit codes: 0 ok, 1 problems found, 2 bad input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == command:
            importlib.import_module(COMMANDS[name]).add_arguments(p, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _chosen(argv)
    try:
        parser = build_parser(command)
    except ImportError as exc:
        print(f"data_tools {command}: not available ({exc})", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_BAD_INPUT
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args))
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError: bad input, named in the message
        print(f"data_tools {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"data_tools {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
