"""A persistent driver: spec paths on stdin, one JSON answer per line on stdout.

Its pid is appended to $ICM_TEST_STARTS when it starts. The N-th spec of a process (1-based) can be made to
fail: $ICM_TEST_FAIL_ON answers ok=false, $ICM_TEST_DIE_ON exits with status 5, $ICM_TEST_HANG_ON sleeps.
Other lines on stdout (a model loading message) must be ignored by the adapter."""

import json
import os
import sys
import time

from _common import load, record, size_of, write_level


def on(name: str, n: int) -> bool:
    return os.environ.get(name, "") == str(n)


with open(os.environ["ICM_TEST_STARTS"], "a") as fh:
    fh.write(f"{os.getpid()}\n")
print("loading model... done", flush=True)
n = 0
for line in sys.stdin:
    path = line.strip()
    if not path:
        continue
    n += 1
    if on("ICM_TEST_DIE_ON", n):
        print(f"fatal: dying on spec {n}", file=sys.stderr, flush=True)
        sys.exit(5)
    if on("ICM_TEST_HANG_ON", n):
        time.sleep(60)
    if on("ICM_TEST_FAIL_ON", n):
        print(json.dumps({"ok": False, "error": f"cannot handle spec {n}"}), flush=True)
        continue
    spec = load(path)
    record(path, spec)
    for target in spec["targets"]:
        write_level(target["output"], size_of(target["image"]), 128)
    print(f"done {path}", flush=True)  # noise
    print(json.dumps({"ok": True}), flush=True)
