"""Prints 30 numbered lines and a traceback-like message to stderr, then exits with status 3."""

import sys

for i in range(30):
    print(f"log line {i}", file=sys.stderr)
print("RuntimeError: boom (stand-in crash)", file=sys.stderr)
sys.exit(3)
