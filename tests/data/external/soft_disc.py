"""A stand-in external method for the contract test: alpha = the target's grey level (spec v1)."""

import json
import sys

import numpy as np
from PIL import Image

spec = json.loads(open(sys.argv[1]).read())
assert spec["version"] == 1, spec
for target in spec["targets"]:
    grey = np.asarray(Image.open(target["image"]).convert("L"))
    Image.fromarray(grey).save(target["output"])
