"""``python -m benchmark.video RUN_DIR --composite OUT.mp4``: a composite clip from a video run.

Reads the run's frames and saved alpha predictions (``predictions/r0/<frame>.png``) and writes
``frame·α + background·(1−α)`` with OpenCV (``mp4v`` for .mp4, ``MJPG`` for .avi). ``--alpha OUT``
writes the mattes themselves as a grey clip.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmark.io import read_image
from benchmark.rundir import RunDir


def _writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise SystemExit(f"error: OpenCV cannot write {path}")
    return writer


def export(run_dir: Path, composite: Path | None, alpha_out: Path | None,
           background: tuple[int, int, int] = (0, 177, 64)) -> int:
    """Write the requested clips; returns the number of frames written."""
    rd = RunDir(run_dir)
    plan = rd.read_plan()
    dataset = rd.load_dataset(plan)
    fps = float(dataset.meta.get("fps", 25.0))
    frames = plan.episodes[0].targets
    writers: dict[str, cv2.VideoWriter] = {}
    n = 0
    for fid in frames:
        pred_path = rd.prediction_file(0, fid)
        if not pred_path.exists():
            print(f"warning: no prediction for frame {fid}; stopping there", file=sys.stderr)
            break
        a = np.asarray(Image.open(pred_path)).astype(np.float32)[..., None] / 255.0
        frame = read_image(dataset.samples[fid].image_path)
        if frame.shape[:2] != a.shape[:2]:
            frame = cv2.resize(frame, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
        size = (a.shape[1], a.shape[0])
        if composite is not None:
            w = writers.setdefault("c", _writer(composite, fps, size))
            comp = frame * a + np.array(background, np.float32) * (1 - a)
            w.write(cv2.cvtColor(np.rint(comp).astype(np.uint8), cv2.COLOR_RGB2BGR))
        if alpha_out is not None:
            w = writers.setdefault("a", _writer(alpha_out, fps, size))
            w.write(cv2.cvtColor(np.rint(a[..., 0] * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
        n += 1
    for w in writers.values():
        w.release()
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.video", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path, help="a run of dataset=video")
    parser.add_argument("--composite", type=Path, help="composite clip to write (.mp4 or .avi)")
    parser.add_argument("--alpha", type=Path, help="alpha clip to write (.mp4 or .avi)")
    parser.add_argument("--background", type=int, nargs=3, default=(0, 177, 64), metavar=("R", "G", "B"))
    args = parser.parse_args(argv)
    if not args.composite and not args.alpha:
        parser.error("give --composite and/or --alpha")
    n = export(args.run_dir, args.composite, args.alpha, tuple(args.background))
    print(f"wrote {n} frames", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
