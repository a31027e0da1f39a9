"""Regenerate a golden decoder case from the seeds in its manifest (our implementation of the documented rule).

A case folder holds ``manifest.json`` (``generation.weights`` / ``generation.inputs``: seeds
and rules) and the official outputs; ``decoder_keys.tsv`` sits in its parent folder. The
rules (golden README, "Generation procedure"):

- weights: one ``torch.Generator().manual_seed(seed)``; one ``randn(shape)`` per TSV row in
  file order (``num_batches_tracked``: no draw, 0), transformed by the row's ``kind``;
- inputs: one generator, draws in a fixed order, then an RNG-free soft guidance mask.

The manifest's checksums are verified so a wrong regeneration is reported, not compared.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class KeyRow:
    """One row of ``decoder_keys.tsv``."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    kind: str


def read_keys(path: str | Path) -> list[KeyRow]:
    """Rows of a ``decoder_keys.tsv`` in file order (= official state_dict order)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for r in rows:
        shape = () if r["shape"] == "scalar" else tuple(int(s) for s in r["shape"].split("x"))
        out.append(KeyRow(r["key"], shape, r["dtype"], r["kind"]))
    return out


def make_weights(rows: list[KeyRow], seed: int, conv_gain: float) -> dict[str, torch.Tensor]:
    """Seeded decoder weights keyed like the official checkpoint (with prefix)."""
    g = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for r in rows:
        if r.kind == "bn_num_batches_tracked":
            out[r.key] = torch.tensor(0, dtype=torch.int64)
            continue
        z = torch.randn(r.shape, generator=g, dtype=torch.float32)
        if r.kind == "conv_weight":
            v = z * (conv_gain / math.sqrt(math.prod(r.shape[1:])))
        elif r.kind in ("ln_weight", "bn_weight"):
            v = 1.0 + 0.1 * z
        elif r.kind in ("ln_bias", "bn_bias", "conv_bias", "bn_running_mean"):
            v = 0.1 * z
        elif r.kind == "bn_running_var":
            v = torch.exp(0.2 * z)
        else:
            raise ValueError(f"unknown kind {r.kind!r} for {r.key}")
        out[r.key] = v.contiguous()
    return out


def guidance_mask(size: int, shapes: list[dict[str, Any]], band_px: float = 8.0) -> torch.Tensor:
    """Soft [1, 1, size, size] mask: pixel-wise max of ellipse/rect ramps, 0.5 exactly on each edge."""
    y = torch.arange(size, dtype=torch.float64).view(size, 1).expand(size, size)
    x = torch.arange(size, dtype=torch.float64).view(1, size).expand(size, size)
    m = torch.zeros(size, size, dtype=torch.float64)
    for s in shapes:
        if s["type"] == "ellipse":
            r = torch.sqrt(((y - s["cy"]) / s["ry"]) ** 2 + ((x - s["cx"]) / s["rx"]) ** 2)
            v = 0.5 + (1.0 - r) * min(s["ry"], s["rx"]) / band_px
        elif s["type"] == "rect":
            d = torch.minimum(torch.minimum(y - s["y0"], s["y1"] - y), torch.minimum(x - s["x0"], s["x1"] - x))
            v = 0.5 + d / band_px
        else:
            raise ValueError(f"unknown guidance shape {s['type']!r}")
        m = torch.maximum(m, v.clamp(0.0, 1.0))
    return m.to(torch.float32).view(1, 1, size, size)


def make_inputs(
    seed: int, shapes: list[dict[str, Any]], attn_temp: float, size: int, feat_ch: int
) -> dict[str, torch.Tensor]:
    """Seeded decoder inputs in the documented draw order."""
    g = torch.Generator().manual_seed(int(seed))
    hi, lo = size // 16, size // 32
    out = {
        "reference_feature": torch.randn(1, feat_ch, hi, hi, generator=g),
        "source_ft_cor": torch.randn(1, feat_ch, hi, hi, generator=g),
        "source_ft_matting_24": torch.randn(1, feat_ch, lo, lo, generator=g),
        "source_ft_matting_48": torch.randn(1, feat_ch, hi, hi, generator=g),
    }
    out["source_attn_24"] = torch.softmax(torch.randn(1, lo, lo, lo * lo, generator=g) * attn_temp, dim=-1)
    out["source_attn_48"] = torch.softmax(torch.randn(1, hi, hi, hi * hi, generator=g) * attn_temp, dim=-1)
    out["source_image"] = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    out["guidance"] = guidance_mask(size, shapes)
    return out


def checksum_problems(tensors: dict[str, torch.Tensor], expected: dict[str, Any], rtol: float = 1e-6) -> list[str]:
    """Differences between regenerated tensors and the manifest's checksums."""
    bad = []
    for name, exp in expected.items():
        if name not in tensors:
            bad.append(f"{name}: not regenerated")
            continue
        d = tensors[name].detach().to(torch.float64).reshape(-1)
        if list(tensors[name].shape) != list(exp["shape"]):
            bad.append(f"{name}: shape {list(tensors[name].shape)} != {exp['shape']}")
            continue
        got = {"sum": float(d.sum()), "abs_sum": float(d.abs().sum()), "sq_sum": float((d * d).sum())}
        for f, v in got.items():
            if abs(v - exp[f]) > rtol * max(abs(exp[f]), 1.0):
                bad.append(f"{name}: {f} {v} != {exp[f]}")
        first = [float(v) for v in d[:4]]
        if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(first, exp["first4"], strict=False)):
            bad.append(f"{name}: first values {first} != {exp['first4']}")
    return bad


@dataclass
class DecoderCase:
    """A regenerated decoder case: weights (prefixed keys), inputs and the manifest."""

    weights: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor]
    manifest: dict[str, Any]
    keys: list[KeyRow]


def load_decoder_case(case_dir: str | Path, verify: bool = True) -> DecoderCase:
    """Regenerate the case in ``case_dir`` (keys from ``case_dir/../decoder_keys.tsv``).

    Raises ``ValueError`` if the regenerated tensors do not match the manifest checksums.
    """
    case_dir = Path(case_dir)
    manifest = json.loads((case_dir / "manifest.json").read_text())
    keys = read_keys(case_dir.parent / "decoder_keys.tsv")
    gw, gi = manifest["generation"]["weights"], manifest["generation"]["inputs"]
    weights = make_weights(keys, gw["seed"], gw.get("conv_gain", math.sqrt(2.0)))
    inputs = make_inputs(gi["seed"], gi["guidance_shapes"], gi.get("attn_temp", 2.0), gi["size"], gi["feat_ch"])
    if verify:
        bad = checksum_problems(inputs, gi.get("checksums", {}))
        bad += checksum_problems(weights, gw.get("checksums", {}))
        if bad:
            raise ValueError(f"regeneration of {case_dir} does not match its manifest: {bad[:5]}")
    return DecoderCase(weights, inputs, manifest, keys)
