"""Helpers shared by the stand-in drivers (standalone: numpy and Pillow only, like an external env)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from PIL import Image


def load(spec_path: str) -> dict:
    with open(spec_path) as fh:
        return json.load(fh)


def size_of(path: str) -> tuple[int, int]:
    """(height, width) of an image file."""
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def write_level(path: str, shape: tuple[int, int], level: int) -> None:
    Image.fromarray(np.full(shape, level, np.uint8)).save(path)


def describe_file(path: str | None) -> dict | None:
    """Shape, mode and a digest of the decoded pixels of a PNG the spec names."""
    if path is None:
        return None
    with Image.open(path) as im:
        arr = np.asarray(im)
        return {"shape": list(arr.shape), "mode": im.mode, "sha": hashlib.sha256(arr.tobytes()).hexdigest(),
                "values": sorted(int(v) for v in np.unique(arr))[:8]}


def record(spec_path: str, spec: dict) -> None:
    """Append what the spec says (and what its files hold) to $ICM_TEST_RECORD, when set."""
    out = os.environ.get("ICM_TEST_RECORD")
    if not out:
        return
    files = {}
    for entry in spec["references"] + spec["targets"]:
        for key in ("image", "prompt", "guidance"):
            if entry.get(key):
                files[entry[key]] = describe_file(entry[key])
    doc = {"spec_path": spec_path, "spec": spec, "files": files,
           "outputs_dir_exists": all(os.path.isdir(os.path.dirname(t["output"])) for t in spec["targets"])}
    with open(out, "a") as fh:
        fh.write(json.dumps(doc) + "\n")
