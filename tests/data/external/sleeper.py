"""Starts a child that sleeps (its pid goes to $ICM_TEST_CHILD), then sleeps itself: a hung program."""

import os
import subprocess
import sys
import time

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(os.environ["ICM_TEST_CHILD"], "w") as fh:
    fh.write(str(child.pid))
print("sleeping past the timeout", file=sys.stderr, flush=True)
time.sleep(60)
