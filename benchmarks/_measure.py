"""Shared by the benchmark scripts: run one command as the only child of a small wrapper process, so its
wall time and peak RSS are its own."""

# Runs one command as its only child; prints its wall time and peak RSS (KiB on Linux) as JSON.
WRAPPER = """\
import json, resource, subprocess, sys, time
with open(sys.argv[1], "w") as log:
    t0 = time.perf_counter()
    rc = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": wall, "maxrss_kib": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime}))
"""
