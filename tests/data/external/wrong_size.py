"""Writes an output one row taller than each target."""

import sys

from _common import load, size_of, write_level

spec = load(sys.argv[1])
for target in spec["targets"]:
    h, w = size_of(target["image"])
    write_level(target["output"], (h + 1, w), 128)
