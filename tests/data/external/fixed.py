"""Writes one grey level (default 128) everywhere for every target: ``fixed.py SPEC [LEVEL]``."""

import sys

from _common import load, record, size_of, write_level

spec_path = sys.argv[1]
level = int(sys.argv[2]) if len(sys.argv) > 2 else 128
spec = load(spec_path)
record(spec_path, spec)
for target in spec["targets"]:
    write_level(target["output"], size_of(target["image"]), level)
