"""Writes an output for the first target of each spec only, saying so on stderr for the others."""

import sys

from _common import load, size_of, write_level

spec = load(sys.argv[1])
for i, target in enumerate(spec["targets"]):
    if i == 0:
        write_level(target["output"], size_of(target["image"]), 128)
    else:
        print(f"skipped {target['id']}: stand-in failure", file=sys.stderr)
