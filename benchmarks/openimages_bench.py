"""Open Images aggregation at scale: rows/s and peak memory of ``python -m data_tools openimages`` per CSV size.

For each size N (default 100,000 and 1,000,000 rows) a synthetic replica is generated in a temporary folder:
``train-annotations-object-segmentation.csv`` with the official header and N rows (three instance rows per
image, each of one of ``--classes`` classes drawn at random, PredictedIoU uniform in [0.3, 1]), a headerless
``class-descriptions-boxable.csv``, sixteen ``train-masks-<hex>.zip`` shards holding one member per row, and
an ``images`` folder with one ``<ImageID>.jpg`` per image. ImageIDs are 16 hex digits spread over the shards
(``j · 0x9E3779B97F4A7C15 mod 2⁶⁴``, a bijection).

Generation stays fast by reusing contents, not names: every MaskPath is unique, as in the real data, but the
members' bytes come from a pool of 32 small 16×16 1-bit PNG masks (some 1 px, which ``--min-area`` rejects),
written ZIP_STORED with :mod:`zipfile` (about 17 µs a member); the images are hard links to a pool of tiny
JPEGs (16×16, and 20×20 so masks get resized; at least eight, and at most 50,000 links each, under ext4's limit),
so 333,000 images cost no disk blocks. The CSV is written in blocks of formatted lines. One million rows take
about 30 s on 2 cores (the time is printed).

Each size then runs as its own ``python -m data_tools openimages`` (``--max-per-group 50 --min-iou 0.5
--min-area 0.02``, so every class group is capped in both sizes) under a small wrapper that prints the command's
wall time and ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the peak RSS of the command, which is a single process:
its decoding workers are threads). Rows/s is given twice: the command's own first-pass rate (CSV streaming,
from its summary line) and rows / whole-command wall time (start-up, mask decoding and writing included).
Target: peak RSS at 1 M rows within 20 % of the peak at 100 k rows. Prints a Markdown table.

Usage: python benchmarks/openimages_bench.py [--rows 100000 1000000] [--classes 40] [--cap 50] [--workers 0]
       [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import WRAPPER  # noqa: E402

HEADER = "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
ROWS_PER_IMAGE = 3
MASK_POOL, IMAGE_POOL = 32, 8
MAX_LINKS = 50_000       # hard links per pool file (ext4 allows 65,000 per inode)
RSS_TARGET = 1.20
GOLDEN = 0x9E3779B97F4A7C15
BLOCK = 50_000



# --------------------------------------------------------------------------- data
def image_id(j: int) -> str:
    """The j-th ImageID: 16 hex digits, spread over the 16 shards."""
    return f"{(j * GOLDEN) % (1 << 64):016x}"


def mask_pool(rng: np.random.Generator) -> list[bytes]:
    """Small 16×16 1-bit PNG masks: rectangles of random size, every eighth a single pixel."""
    pool = []
    for k in range(MASK_POOL):
        m = np.zeros((16, 16), dtype=bool)
        if k % 8 == 0:
            m[7, 7] = True
        else:
            y, x = rng.integers(0, 8, 2)
            m[y:y + rng.integers(4, 9), x:x + rng.integers(4, 9)] = True
        buf = io.BytesIO()
        Image.fromarray(m).save(buf, format="PNG")
        pool.append(buf.getvalue())
    return pool


def image_pool(folder: Path, rng: np.random.Generator, images: int) -> list[Path]:
    """A few tiny JPEGs (16×16 and 20×20) that every image links to (enough that none has too many links)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(max(IMAGE_POOL, -(-images // MAX_LINKS))):
        side = 16 if k % 2 else 20
        p = folder / f"pool{k}.jpg"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(p, quality=90)
        out.append(p)
    return out


def generate(root: Path, rows: int, classes: int, seed: int = 0) -> dict[str, Path]:
    """The synthetic replica of ``rows`` annotation rows under ``root`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    mids = [f"/m/0bench{c:03d}" for c in range(classes)]
    (root / "class-descriptions-boxable.csv").write_text("".join(f"{m},Class {c:03d}\n" for c, m in enumerate(mids)))
    masks = mask_pool(rng)
    pool = image_pool(root / "pool", rng, -(-rows // ROWS_PER_IMAGE))
    label_of = rng.integers(0, classes, rows)
    ious = rng.uniform(0.3, 1.0, rows)
    images = root / "images"
    images.mkdir()
    zdir = root / "zips"
    zdir.mkdir()
    shards = {f"{d:x}": zipfile.ZipFile(zdir / f"train-masks-{d:x}.zip", "w", zipfile.ZIP_STORED) for d in range(16)}
    csv_path = root / "train-annotations-object-segmentation.csv"
    with open(csv_path, "w", buffering=1 << 20) as fh:
        fh.write(HEADER)
        for start in range(0, rows, BLOCK):
            lines = []
            for i in range(start, min(rows, start + BLOCK)):
                j = i // ROWS_PER_IMAGE
                iid = image_id(j)
                if i % ROWS_PER_IMAGE == 0:
                    os.link(pool[j % len(pool)], images / f"{iid}.jpg")
                mid = mids[label_of[i]]
                name = f"{iid}_{mid[3:]}_{i:08x}.png"
                shards[iid[0]].writestr(name, masks[i % MASK_POOL])
                lines.append(f"{name},{iid},{mid},{i:08x},0.1,0.9,0.2,0.8,{ious[i]:.5f},\n")
            fh.write("".join(lines))
    for zf in shards.values():
        zf.close()
    return {"csv": csv_path, "classes": root / "class-descriptions-boxable.csv", "zips": zdir, "images": images}


# --------------------------------------------------------------------------- run
def run_command(paths: dict[str, Path], out: Path, log: Path, args: argparse.Namespace) -> dict:
    """``python -m data_tools openimages`` under the wrapper: wall time, peak RSS and its summary line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "data_tools", "openimages", "--annotations", str(paths["csv"]),
           "--classes", str(paths["classes"]), "--masks", str(paths["zips"]), "--images", str(paths["images"]),
           "--out", str(out), "--max-per-group", str(args.cap), "--min-iou", "0.5", "--min-area", "0.02",
           "--workers", str(args.workers)]
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(log), *cmd], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    res = json.loads(done.stdout.strip().splitlines()[-1])
    text = log.read_text()
    if res["rc"] != 0:
        raise SystemExit(f"command failed (rc {res['rc']}): {' '.join(cmd)}\n{text[-3000:]}")
    m = re.search(r"([\d,]+) rows in ([\d.]+) s \(([\d,]+) rows/s.*?(\d+) pass\(es\); kept ([\d,]+) samples", text)
    if not m:
        raise SystemExit(f"no summary line in the command's output:\n{text[-3000:]}")
    res.update(rows=int(m.group(1).replace(",", "")), scan_s=float(m.group(2)),
               scan_rate=int(m.group(3).replace(",", "")), passes=int(m.group(4)),
               kept=int(m.group(5).replace(",", "")))
    return res


def table(results: dict[int, dict]) -> str:
    """The Markdown table of the measurements."""
    lines = ["| rows | generate (s) | command wall (s) | first pass (s) | rows/s (first pass) | rows/s (whole command) "
             "| passes | samples kept | peak RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in sorted(results.items()):
        lines.append(f"| {n:,} | {r['generate_s']:.1f} | {r['wall_s']:.1f} | {r['scan_s']:.1f} | {r['scan_rate']:,} "
                     f"| {n / r['wall_s']:,.0f} | {r['passes']} | {r['kept']:,} | {r['maxrss_kib'] / 1024:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--cap", type=int, default=50, help="--max-per-group of the command")
    parser.add_argument("--workers", type=int, default=0, help="--workers of the command (0: the usable CPUs)")
    parser.add_argument("--keep", type=Path, help="generate under this folder and keep it")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="openimages-bench-"))
    results: dict[int, dict] = {}
    try:
        for n in sorted(set(args.rows)):
            t0 = time.perf_counter()
            paths = generate(work / f"r{n}", n, args.classes)
            gen = time.perf_counter() - t0
            print(f"generated {n:,} rows in {gen:.1f} s under {work / f'r{n}'}", flush=True)
            res = run_command(paths, work / f"out{n}", work / f"r{n}.log", args)
            res["generate_s"] = gen
            results[n] = res
            print(f"  {n:,} rows: {res['wall_s']:.1f} s, {res['scan_rate']:,} rows/s first pass, "
                  f"peak RSS {res['maxrss_kib'] / 1024:.1f} MiB", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(results))
    sizes = sorted(results)
    if len(sizes) >= 2:
        ratio = results[sizes[-1]]["maxrss_kib"] / results[sizes[0]]["maxrss_kib"]
        ok = ratio <= RSS_TARGET
        print(f"\npeak RSS {sizes[-1]:,} / {sizes[0]:,} rows = {ratio:.3f} (target ≤ {RSS_TARGET:.2f}): "
              f"{'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
