"""A small synthetic grouped matting dataset, generated deterministically on first use.

Each group is a *category*: its foregrounds share a shape family, a colour palette and a
texture (``blob`` with fur-like hair strands, ``ring`` with soft edges, ``leaf`` plants
with thin stems and branches, semi-transparent ``glass``), varied per image in placement,
size, pose and colour, and composited over varied backgrounds (gradients, noise textures,
stripes, bokeh) whose colours differ from the palette but not trivially. Alpha is known by
construction (rendered at 4× and area-downsampled, so edges and hair are genuinely soft),
quantised to uint8, and the image is composited with exactly that quantised matte.

Files go to ``root`` (default ``${ICMBENCH_CACHE:-~/.cache/icmbench}/synthetic-<hash>``,
the hash covering the parameters and :data:`GENERATOR_VERSION`) as ``image/<id>.png``,
``alpha/<id>.png``, ``trimap/<id>.png`` (every other image, so loaders exercise both the
stored and the derived trimap path) and ``manifest.json``. The folder is generated in a
temporary sibling and renamed into place, so a reader never sees a partial dataset; an
existing complete folder is reused. Same parameters → byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from benchmark.datasets.common import DatasetError
from benchmark.datasets.manifest import MANIFEST_NAME, load_manifest, write_manifest
from benchmark.trimaps import derive_trimap
from benchmark.types import Dataset, Sample

#: Bump whenever the rendered pixels change, so cached folders are regenerated.
GENERATOR_VERSION = 1
FAMILIES: tuple[str, ...] = ("blob", "ring", "leaf", "glass")
SUPERSAMPLE = 4

Rng = np.random.Generator


# ---------------------------------------------------------------------------- colour helpers
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float in [0, 1] of a hue in degrees, saturation and value in [0, 1]."""
    px = np.array([[[h % 360.0, np.clip(s, 0, 1), np.clip(v, 0, 1)]]], np.float32)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]


def _value_noise(rng: Rng, size: tuple[int, int], cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth multi-octave noise in [0, 1] (random grids upsampled with bicubic interpolation)."""
    h, w = size
    out = np.zeros(size, np.float32)
    total = 0.0
    for o in range(octaves):
        n = cells * 2**o
        grid = rng.random((n + 1, max(2, round(n * w / h)) + 1)).astype(np.float32)
        out += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / 2**o
        total += 1 / 2**o
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo + 1e-6)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]


# ---------------------------------------------------------------------------- backgrounds
def _background(rng: Rng, size: tuple[int, int], palette_hue: float) -> tuple[np.ndarray, str]:
    """An H×W×3 float background whose main hue avoids the foreground palette by 30–330 degrees.

    Bokeh backgrounds add out-of-focus spots in colours close to the palette: distractors
    that a colour-only model confuses with the foreground.
    """
    h, w = size
    hue = palette_hue + rng.uniform(30, 330)
    c1 = _hsv(hue, rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.9))
    c2 = _hsv(hue + rng.uniform(-60, 60), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.95))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = ("gradient", "noise", "stripes", "bokeh")[int(rng.integers(4))]
    if kind == "gradient":
        ang = rng.uniform(0, np.pi)
        t = (np.cos(ang) * xx / w + np.sin(ang) * yy / h)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        bg = _mix(c1, c2, t)
    elif kind == "noise":
        bg = _mix(c1, c2, _value_noise(rng, size, int(rng.integers(3, 8)), octaves=4))
    elif kind == "stripes":
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(0.05, 0.2) * max(h, w)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(ang) * xx + np.sin(ang) * yy) / period)
        bg = _mix(c1, c2, cv2.GaussianBlur(t, (0, 0), 1.0))
    else:
        base = _mix(c1, c2, yy / h)
        spots = np.zeros(size, np.float32)
        for _ in range(int(rng.integers(6, 14))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(0.03, 0.12) * max(h, w)
            spots = np.maximum(spots, ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) * rng.uniform(0.3, 0.8))
        spot_colour = _hsv(palette_hue + rng.uniform(-40, 40), rng.uniform(0.3, 0.6), rng.uniform(0.6, 0.95))
        bg = _mix(np.zeros(3, np.float32), spot_colour, cv2.GaussianBlur(spots, (0, 0), 3.0)) + base * (
            1 - cv2.GaussianBlur(spots, (0, 0), 3.0)[..., None])
    bg += rng.normal(0, 0.015, bg.shape).astype(np.float32)
    return np.clip(bg, 0, 1).astype(np.float32), kind


# ---------------------------------------------------------------------------- foreground shapes
# Each renderer returns (alpha at SUPERSAMPLE× resolution, foreground colour at output resolution).
def _grid(hs: int, ws: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:hs, 0:ws].astype(np.float32)


def _blob(rng: Rng, size: tuple[int, int], look: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A furry blob: wobbly body plus hundreds of thin, semi-opaque hair strands."""
    h, w = size
    S = SUPERSAMPLE
    hs, ws = h * S, w * S
    yy, xx = _grid(hs, ws)
    cy, cx = hs * rng.uniform(0.42, 0.58), ws * rng.uniform(0.4, 0.6)
    r0 = min(hs, ws) * rng.uniform(0.22, 0.3)
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.full_like(theta, r0)
    for k in (2, 3, 5):
        radius += r0 * rng.uniform(0.02, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    dist = np.hypot(yy - cy, xx - cx)
    body = (dist < radius).astype(np.float32)
    hair = np.zeros((hs, ws), np.uint8)
    n = int(look["strands"] * rng.uniform(0.8, 1.2))
    for _ in range(n):
        a = rng.uniform(0, 2 * np.pi)
        length = r0 * rng.uniform(0.1, 0.35)
        bend = rng.uniform(-0.6, 0.6)
        start = r0 * rng.uniform(0.85, 1.0)
        t = np.linspace(0, 1, 8)
        ang = a + bend * t * length / r0
        rr = start + t * length
        pts = np.stack([cx + rr * np.cos(ang), cy + rr * np.sin(ang)], 1).round().astype(np.int32)
        cv2.polylines(hair, [pts], False, int(rng.integers(150, 256)), thickness=int(rng.integers(1, 3)))
    alpha = np.maximum(body, hair.astype(np.float32) / 255.0)
    hue = look["hue"] + rng.uniform(-12, 12)
    tex = _value_noise(rng, size, 12, octaves=3)
    streak = cv2.GaussianBlur(rng.random(size).astype(np.float32), (0, 0), sigmaX=0.7, sigmaY=3.0)
    t = np.clip(0.6 * tex + 0.8 * (streak - streak.mean()) + 0.2, 0, 1)
    fg = _mix(_hsv(hue, look["sat"], 0.35), _hsv(hue + 8, look["sat"] * 0.7, 0.85), t)
    return alpha, fg


def _ring(rng: Rng, size: tuple[int, int], look: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """An elliptic ring (the background shows through its hole) with a soft, blurred rim."""
    h, w = size
    S = SUPERSAMPLE
    hs, ws = h * S, w * S
    yy, xx = _grid(hs, ws)
    cy, cx = hs * rng.uniform(0.4, 0.6), ws * rng.uniform(0.4, 0.6)
    r_out = min(hs, ws) * rng.uniform(0.28, 0.38)
    r_in = r_out * rng.uniform(0.45, 0.65)
    rot, aspect = rng.uniform(0, np.pi), rng.uniform(0.65, 1.0)
    u = (xx - cx) * np.cos(rot) + (yy - cy) * np.sin(rot)
    v = (-(xx - cx) * np.sin(rot) + (yy - cy) * np.cos(rot)) / aspect
    d = np.hypot(u, v)
    soft = S * rng.uniform(0.8, 2.5)  # rim blur, like motion or defocus
    alpha = np.clip((r_out - d) / soft + 0.5, 0, 1) * np.clip((d - r_in) / soft + 0.5, 0, 1)
    yo, xo = np.mgrid[0:h, 0:w].astype(np.float32)
    ro = np.hypot((xo - cx / S), (yo - cy / S))
    stripes = 0.5 + 0.5 * np.sin(ro / look["period"] * 2 * np.pi)
    hue = look["hue"] + rng.uniform(-10, 10)
    fg = _mix(_hsv(hue, look["sat"], 0.3), _hsv(hue - 10, look["sat"] * 0.5, 0.95), stripes)
    return alpha.astype(np.float32), fg


def _leaf(rng: Rng, size: tuple[int, int], look: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A small plant: a thin stem, thinner branches and veined elliptic leaves."""
    h, w = size
    S = SUPERSAMPLE
    hs, ws = h * S, w * S
    canvas = np.zeros((hs, ws), np.uint8)
    base = (int(ws * rng.uniform(0.4, 0.6)), hs - 1)
    top = (int(base[0] + ws * rng.uniform(-0.1, 0.1)), int(hs * rng.uniform(0.15, 0.3)))
    cv2.line(canvas, base, top, 255, thickness=int(S * rng.uniform(1.0, 2.0)))
    veins = np.zeros_like(canvas)
    for _ in range(int(look["leaves"] + rng.integers(-1, 2))):
        t = rng.uniform(0.2, 1.0)
        sx, sy = int(base[0] + t * (top[0] - base[0])), int(base[1] + t * (top[1] - base[1]))
        ang = rng.uniform(-np.pi * 0.9, -np.pi * 0.1)
        ln = min(hs, ws) * rng.uniform(0.15, 0.28)
        ex, ey = int(sx + ln * np.cos(ang)), int(sy + ln * np.sin(ang))
        cv2.line(canvas, (sx, sy), (ex, ey), 255, thickness=max(1, int(S * rng.uniform(0.3, 0.8))))
        axes = (int(ln * rng.uniform(0.35, 0.6)), int(ln * rng.uniform(0.1, 0.2)))
        centre = (int(ex + axes[0] * np.cos(ang)), int(ey + axes[0] * np.sin(ang)))
        cv2.ellipse(canvas, centre, axes, np.degrees(ang), 0, 360, 255, thickness=-1)
        cv2.line(veins, (ex, ey), (int(ex + 2 * axes[0] * np.cos(ang)), int(ey + 2 * axes[0] * np.sin(ang))),
                 255, thickness=max(1, S // 2))
    alpha = canvas.astype(np.float32) / 255.0
    hue = look["hue"] + rng.uniform(-10, 10)
    tex = _value_noise(rng, size, 8, octaves=2)
    vein = cv2.resize(veins, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    fg = _mix(_hsv(hue, look["sat"], 0.3), _hsv(hue + 15, look["sat"] * 0.8, 0.8), np.clip(tex - 0.5 * vein, 0, 1))
    return alpha, fg


def _glass(rng: Rng, size: tuple[int, int], look: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A see-through bottle: translucent body (alpha ≈ 0.3–0.65), denser rim, highlight, opaque stopper."""
    h, w = size
    S = SUPERSAMPLE
    hs, ws = h * S, w * S
    body = np.zeros((hs, ws), np.uint8)
    cy, cx = int(hs * rng.uniform(0.55, 0.65)), int(ws * rng.uniform(0.4, 0.6))
    ax = (int(min(hs, ws) * rng.uniform(0.16, 0.24)), int(hs * rng.uniform(0.22, 0.3)))
    cv2.ellipse(body, (cx, cy), ax, 0, 0, 360, 255, thickness=-1)
    neck_w = max(S, int(ax[0] * rng.uniform(0.25, 0.4)))
    cv2.rectangle(body, (cx - neck_w, int(hs * 0.1)), (cx + neck_w, cy), 255, thickness=-1)
    inside = body.astype(np.float32) / 255.0
    dist = cv2.distanceTransform(body, cv2.DIST_L2, 5)
    rim = np.clip(1.0 - dist / (S * rng.uniform(2.0, 4.0)), 0, 1) * inside
    alpha = inside * look["opacity"] * rng.uniform(0.8, 1.2) + rim * 0.6
    hl = np.zeros((hs, ws), np.uint8)
    cv2.ellipse(hl, (cx - ax[0] // 2, cy), (max(S, ax[0] // 8), ax[1] // 2), 0, 0, 360, 255, thickness=-1)
    alpha = np.maximum(alpha, cv2.GaussianBlur(hl.astype(np.float32) / 255.0, (0, 0), S) * 0.9 * inside)
    cap = np.zeros((hs, ws), np.uint8)  # an opaque stopper, as real glassware has opaque parts
    cap_top = int(hs * rng.uniform(0.04, 0.08))
    cv2.rectangle(cap, (cx - neck_w - S, cap_top), (cx + neck_w + S, int(hs * 0.1) + 3 * S), 255, thickness=-1)
    alpha = np.maximum(alpha, cap.astype(np.float32) / 255.0)
    hue = look["hue"] + rng.uniform(-8, 8)
    yo = np.mgrid[0:h, 0:w][0].astype(np.float32) / h
    fg = _mix(_hsv(hue, look["sat"], 0.7), _hsv(hue, look["sat"] * 0.3, 1.0), yo)
    cap_lo = cv2.resize(cap, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255.0
    fg = fg * (1 - cap_lo) + _hsv(hue + 180, 0.5, 0.35)[None, None, :] * cap_lo
    return np.clip(alpha, 0, 1).astype(np.float32), fg


RENDERERS: dict[str, Callable[[Rng, tuple[int, int], dict[str, Any]], tuple[np.ndarray, np.ndarray]]] = {
    "blob": _blob, "ring": _ring, "leaf": _leaf, "glass": _glass,
}


def _group_look(rng: Rng, family: str) -> dict[str, Any]:
    """Per-group appearance shared by all its images (the 'category')."""
    hues = {"blob": (15, 45), "ring": (190, 250), "leaf": (80, 140), "glass": (170, 200)}[family]
    return {
        "hue": float(rng.uniform(*hues)),
        "sat": float(rng.uniform(0.45, 0.8)) if family != "glass" else float(rng.uniform(0.15, 0.35)),
        "strands": int(rng.integers(250, 450)),
        "period": float(rng.uniform(3.0, 7.0)),
        "leaves": int(rng.integers(4, 8)),
        "opacity": float(rng.uniform(0.35, 0.55)),
    }


# ---------------------------------------------------------------------------- generation
def render_sample(seed: int, group_index: int, image_index: int, family: str,
                  size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(uint8 RGB image, uint8 alpha, meta) of one composite; a pure function of its arguments."""
    look = _group_look(np.random.default_rng([seed, group_index]), family)
    rng = np.random.default_rng([seed, group_index, image_index])
    alpha_hi, fg = RENDERERS[family](rng, size, look)
    alpha = cv2.resize(alpha_hi, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    alpha8 = np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8)
    bg, bg_kind = _background(rng, size, look["hue"])
    a = alpha8.astype(np.float32)[..., None] / 255.0
    comp = a * np.clip(fg, 0, 1) + (1 - a) * bg
    comp += rng.normal(0, 0.01, comp.shape).astype(np.float32)  # mild sensor noise
    image = np.rint(np.clip(comp, 0, 1) * 255).astype(np.uint8)
    return image, alpha8, {"family": family, "background": bg_kind}


def _params(num_groups: int, images_per_group: int, size: tuple[int, int], seed: int, name: str) -> dict:
    return {"generator_version": GENERATOR_VERSION, "num_groups": num_groups,
            "images_per_group": images_per_group, "size": list(size), "seed": seed, "name": name}


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def default_root(params: dict) -> Path:
    cache = Path(os.environ.get("ICMBENCH_CACHE") or Path.home() / ".cache" / "icmbench")
    return cache.expanduser() / f"synthetic-{params_hash(params)}"


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def generate(folder: Path, params: dict) -> None:
    """Write every image, matte, trimap and the manifest of ``params`` into ``folder``."""
    for sub in ("image", "alpha", "trimap"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    h, w = params["size"]
    samples: list[Sample] = []
    groups: dict[str, dict[str, Any]] = {}
    for g in range(params["num_groups"]):
        family = FAMILIES[g % len(FAMILIES)]
        key = family if g < len(FAMILIES) else f"{family}_{g // len(FAMILIES)}"
        groups[key] = {"type": "category", "family": family}
        for j in range(params["images_per_group"]):
            sid = f"{key}_{j:02d}"
            image, alpha, meta = render_sample(params["seed"], g, j, family, (h, w))
            _save_png(folder / "image" / f"{sid}.png", image)
            _save_png(folder / "alpha" / f"{sid}.png", alpha)
            trimap = None
            if j % 2 == 0:  # half the samples ship a trimap; the others exercise derived trimaps
                trimap = folder / "trimap" / f"{sid}.png"
                _save_png(trimap, derive_trimap(alpha))
            samples.append(Sample(id=sid, group=key, image_path=folder / "image" / f"{sid}.png",
                                  alpha_path=folder / "alpha" / f"{sid}.png", trimap_path=trimap,
                                  meta={**meta, "index": j}))
    write_manifest(folder, params["name"], samples, groups, meta={"generator": params})


def _is_complete(folder: Path, params: dict) -> bool:
    """The folder holds a manifest written for exactly ``params`` and all its files."""
    try:
        doc = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if doc.get("meta", {}).get("generator") != params:
        return False
    for s in doc.get("samples", []):
        for key in ("image", "alpha", "trimap"):
            if s.get(key) is not None and not (folder / s[key]).is_file():
                return False
    return bool(doc.get("samples"))


def _replaceable(folder: Path) -> bool:
    """An existing folder may be replaced only if it is empty or an earlier synthetic dataset."""
    if folder.is_dir() and not any(folder.iterdir()):
        return True
    try:
        doc = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(doc.get("meta"), dict) and "generator" in doc["meta"]


def load_synthetic(root: str | os.PathLike | None = None, num_groups: int = 4, images_per_group: int = 4,
                   size: tuple[int, int] | list[int] = (192, 256), seed: int = 0,
                   name: str = "synthetic") -> Dataset:
    """The synthetic dataset for these parameters, generated into ``root`` unless already there.

    ``size`` is (height, width). Generation takes well under a second for the defaults.
    """
    if num_groups < 1 or images_per_group < 1:
        raise DatasetError("synthetic: num_groups and images_per_group must be ≥ 1")
    h, w = (int(v) for v in size)
    if min(h, w) < 16:
        raise DatasetError(f"synthetic: size must be at least 16×16, got {h}×{w}")
    params = _params(int(num_groups), int(images_per_group), (h, w), int(seed), str(name))
    folder = Path(root).expanduser() if root is not None else default_root(params)
    if not _is_complete(folder, params):
        if folder.exists() and not _replaceable(folder):
            raise DatasetError(f"synthetic: {folder} exists and is not a synthetic dataset folder; "
                               "refusing to overwrite it")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
        try:
            generate(tmp, params)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is a normal folder
            if _is_complete(folder, params):  # another process finished first: keep its copy
                return load_manifest(root=folder, name=name)
            if folder.exists():  # stale or incomplete: move it aside, then swap the new one in
                stale = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
                os.replace(folder, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, folder)
        except OSError:
            if not _is_complete(folder, params):  # lost a race only if the winner's copy is complete
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_manifest(root=folder, name=name)
