"""``derive MANIFEST``: store the benchmark's derived trimaps and each round's reference prompts beside the data.

Both come from the runner's own code, so a regenerated dataset and a benchmark run agree bit for bit:

- trimaps: :func:`benchmark.scoring.trimap_for` on each matte with ``runner.trimap_radius_fraction``
  (what the runner uses for a sample without a trimap file), as ``derived/trimaps/<id>.png``;
- prompts: the references of :func:`benchmark.episodes.plan_episodes` (the protocol's choice) and
  :func:`benchmark.prompts.make_prompt` with the runner's arguments (``seed=runner.seed``, the episode's
  group, its round — round 0 under ``protocol=fixed`` — and the reference id, plus ``conf/prompt/<kind>.yaml``),
  stored with :func:`benchmark.prompts.save_prompt` as ``derived/prompts/r<round>/<kind>/<id>.npz``.

Defaults come from the composed run config (``conf/``), so they follow the runner's. Files are listed with
checksums under ``meta.derived`` of the manifest, which is rewritten canonically (the dataset fingerprint
does not change: it does not hash ``meta``). Re-running skips files already in place.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.datasets.manifest import canonical_json, load_manifest, read_document
from benchmark.episodes import plan_episodes
from benchmark.io import atomic_write_text
from benchmark.prompts import PromptError, make_prompt, prompt_bytes
from benchmark.safe_names import file_name
from benchmark.scoring import trimap_for
from benchmark.types import PROMPT_KINDS, Dataset, Sample
from data_tools.build import DatasetBuilder, default_workers, parallel_map, png_bytes
from data_tools.records import manifest_path
from metrics.io import AlphaDecodeError, read_alpha

TRIMAP_DIR = "derived/trimaps"
PROMPT_DIR = "derived/prompts"


def trimap_rel(sid: str) -> str:
    return f"{TRIMAP_DIR}/{file_name(sid, '.png')}"


def prompt_rel(round_index: int, kind: str, sid: str) -> str:
    return f"{PROMPT_DIR}/r{int(round_index)}/{kind}/{file_name(sid, '.npz')}"


def runner_settings(overrides: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The composed ``runner`` section and each prompt kind's parameters (``conf/prompt/<kind>.yaml``)."""
    from benchmark.config import compose_run_config

    runner: dict[str, Any] = {}
    prompts: dict[str, dict[str, Any]] = {}
    for kind in PROMPT_KINDS:
        cfg = compose_run_config([f"prompt={kind}", *overrides])
        runner = dict(cfg["runner"])
        params = dict(cfg["prompt"])
        params.pop("kind")
        prompts[kind] = params
    return runner, prompts


def prompt_npz(prompt: Any) -> bytes:
    """The bytes :func:`benchmark.prompts.save_prompt` writes for ``prompt`` (equal prompts, equal bytes)."""
    return prompt_bytes(prompt)


@dataclass(frozen=True)
class Draw:
    """One prompt to draw: the episode's round and group, the round it is drawn for, and the kind."""

    round: int
    group: str
    draw_round: int
    kind: str


def plan_draws(ds: Dataset, runner: Mapping[str, Any], kinds: Sequence[str]) -> tuple[dict[str, list[Draw]], list]:
    """Reference id → its draws, from the runner's episode plan (guidance=group), and the skipped groups."""
    episodes, skipped = plan_episodes(ds, runner["protocol"], runner["rounds"], runner["references"], runner["seed"],
                                      runner["singletons"], runner.get("max_references"), "group")
    draws: dict[str, list[Draw]] = {}
    for e in episodes:
        draw_round = 0 if runner["protocol"] == "fixed" else e.round
        for ref in e.references:
            for kind in kinds:
                d = Draw(e.round, e.group, draw_round, kind)
                if d not in draws.setdefault(ref, []):
                    draws[ref].append(d)
    return draws, skipped


@dataclass
class _Done:
    trimap: dict[str, Any] | None
    prompts: list[dict[str, Any]]
    errors: list[dict[str, Any]]


def _derive_one(b: DatasetBuilder, s: Sample, draws: Sequence[Draw], runner: Mapping[str, Any],
                params: Mapping[str, Mapping[str, Any]]) -> _Done:
    done = _Done(None, [], [])
    if s.alpha_path is None:
        return done
    try:
        alpha = read_alpha(s.alpha_path)
    except AlphaDecodeError as exc:
        done.errors.append({"sample": s.id, "error": str(exc)})
        return done
    trimap, source = trimap_for(alpha, None, runner["trimap_radius_fraction"])
    rel = b.write_bytes(png_bytes(trimap), trimap_rel(s.id))
    done.trimap = {"path": rel, "source": source, "has_trimap_file": s.trimap_path is not None}
    for d in draws:
        where = {"round": d.round, "group": d.group, "reference": s.id, "kind": d.kind}
        try:
            prompt = make_prompt(d.kind, alpha, seed=runner["seed"], group=d.group, round_index=d.draw_round,
                                 reference=s.id, **params[d.kind])
        except PromptError as exc:
            done.errors.append({**where, "error": str(exc)})
            continue
        done.prompts.append({**where, "path": b.write_bytes(prompt_npz(prompt), prompt_rel(d.round, d.kind, s.id))})
    return done


def derive(manifest: str | Path, kinds: Sequence[str] = PROMPT_KINDS, overrides: Sequence[str] = (),
           workers: int = 0) -> dict[str, Any]:
    """Write the derived files of ``manifest`` and record them in its ``meta.derived``; returns that record."""
    path = manifest_path(manifest)
    doc = read_document(path)
    ds = load_manifest(path=path)
    runner, params = runner_settings(overrides)
    draws, skipped = plan_draws(ds, runner, kinds)
    b = DatasetBuilder(path.parent, ds.name, created_by="")
    samples = sorted(ds.samples.values(), key=lambda s: s.id)
    done = parallel_map(lambda s: _derive_one(b, s, draws.get(s.id, []), runner, params), samples,
                        workers or default_workers(), desc="derive")

    def with_digest(entry: dict[str, Any]) -> dict[str, Any]:
        sha, size = b.digest(entry["path"])  # every file this run wrote or found in place
        return {**entry, "sha256": sha, "bytes": size}

    trimaps = {s.id: with_digest(d.trimap) for s, d in zip(samples, done, strict=True) if d.trimap is not None}
    prompts = sorted((with_digest(p) for d in done for p in d.prompts),
                     key=lambda p: (p["round"], p["kind"], p["group"], p["reference"]))
    record = {
        "created_by": "python -m data_tools derive",
        "trimaps": {"rule": "benchmark.scoring.trimap_for", "radius_fraction": runner["trimap_radius_fraction"],
                    "files": trimaps},
        "prompts": {"protocol": runner["protocol"], "rounds": runner["rounds"], "seed": runner["seed"],
                    "references": runner["references"], "max_references": runner.get("max_references"),
                    "singletons": runner["singletons"], "kinds": {k: params[k] for k in kinds}, "files": prompts,
                    "skipped_groups": [{"group": g.group, "reason": g.reason} for g in skipped]},
        "errors": [e for d in done for e in d.errors],
    }
    doc.setdefault("meta", {})["derived"] = record
    atomic_write_text(path, canonical_json(doc))
    return record


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("manifest", help="manifest.json, or the folder holding it (its meta gains 'derived')")
    parser.add_argument("--kinds", nargs="+", choices=PROMPT_KINDS, default=list(PROMPT_KINDS), help="prompt kinds")
    parser.add_argument("--rounds", type=int, help="rounds (default: runner.rounds)")
    parser.add_argument("--seed", type=int, help="runner.seed the prompts and references are drawn with")
    parser.add_argument("--protocol", choices=("paper", "fixed", "official"), help="default: runner.protocol")
    parser.add_argument("--references", type=int, help="references per episode (default: runner.references)")
    parser.add_argument("--max-references", type=int, help="runner.max_references")
    parser.add_argument("--singletons", choices=("skip", "self"), help="default: runner.singletons")
    parser.add_argument("--trimap-radius-fraction", type=float, help="default: runner.trimap_radius_fraction")
    parser.add_argument("--workers", type=int, default=0, help="threads (default: the CPUs this process may use)")
    parser.epilog = "Example: python -m data_tools derive data/mine/manifest.json --rounds 3 --seed 0 --kinds mask"


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The ``runner.*`` Hydra overrides given on the command line."""
    keys = {"rounds": "rounds", "seed": "seed", "protocol": "protocol", "references": "references",
            "max_references": "max_references", "singletons": "singletons",
            "trimap_radius_fraction": "trimap_radius_fraction"}
    return [f"runner.{k}={getattr(args, a)}" for a, k in keys.items() if getattr(args, a, None) is not None]


def run(args: argparse.Namespace) -> int:
    record = derive(args.manifest, args.kinds, overrides_of(args), args.workers)
    n_t, n_p = len(record["trimaps"]["files"]), len(record["prompts"]["files"])
    print(f"{manifest_path(args.manifest)}: {n_t} trimap(s), {n_p} prompt(s) in derived/", file=sys.stderr)
    for e in record["errors"]:
        print(f"{e.get('reference', e.get('sample'))}: {e['error']}")
    return 1 if record["errors"] else 0


__all__ = ["derive", "plan_draws", "prompt_npz", "prompt_rel", "runner_settings", "trimap_rel"]
