"""The run folder: the only code that knows its layout.

::

    RUN/
      .lock                          held while a run writes here (benchmark.run_lock)
      .hydra/                        the resolved configuration, written once the run is accepted
      run.json                       identity, configuration, plan (per episode: its prompt and
                                     prediction files), skipped groups, dataset problems
      prompts/<episode,ref>.npz      reference prompts, stored before use
      predictions/r<round>/<id>.png  8-bit predictions, exactly what was scored
      extras/r<round>/<id>/<name>.*  a method's side outputs (PNG images, JSON values), e.g. ICMP's
                                     propagated points and SAM mask
      episodes/<episode>.csv         one file per finished episode (the resume unit)
      episodes/_dataset_problems.csv dataset entries without usable files, as error rows
      results.csv, leaderboard.*     rebuilt from the episode files at the end of every run
      run.log                        warnings of the runs into this folder
      figures/                       written by benchmark.visualize

Every id becomes a file name only through :mod:`benchmark.safe_names`, so nothing a dataset
contains can place a file outside the folder. Result rows have one CSV schema,
:data:`RESULT_COLUMNS`. The leaderboard, rescore, visualize, video and everything later read run
folders only through :class:`RunDir`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.io import atomic_write_text, write_png
from benchmark.run_lock import RunLock
from benchmark.safe_names import escape, file_name, hashed_name
from benchmark.scoring import METRIC_NAMES
from benchmark.types import Dataset, Episode

RESULT_COLUMNS = (
    "method", "method_hash", "dataset", "dataset_hash", "protocol", "prompt", "guidance", "round", "group",
    "references", "target", "self_reference", "resolution", "metric_protocol", "region", "trimap_source",
    *METRIC_NAMES, "seconds", "status", "error",
)
DATASET_PROBLEMS = "_dataset_problems"
#: What ``runner.overwrite=true`` removes (run.json and .hydra/ are rewritten by the new run).
RESULT_ENTRIES = ("episodes", "prompts", "predictions", "extras", "figures", "results.csv", "leaderboard.csv",
                  "leaderboard.md", "run.log")


class RunDirError(ValueError):
    """A run folder is missing or its ``run.json`` is unreadable (the message names the file)."""


def fmt_value(x: float) -> str:
    """A metric value as stored in result rows (full precision, ``nan`` for undefined)."""
    return "nan" if x != x else repr(float(x))


#: Identity keys added later, with the value a run that lacks them had.
IDENTITY_DEFAULTS = {"runner.max_references": None, "runner.guidance": "group"}


def identity_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two run identities, in words (dataset, method weights, which setting)."""
    a = {**IDENTITY_DEFAULTS, **_flatten(old)}
    b = {**IDENTITY_DEFAULTS, **_flatten(new)}
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if key == "dataset.fingerprint":
            out.append(f"the dataset changed (fingerprint {a.get(key)} → {b.get(key)}: its files, sizes or grouping)")
        else:
            name = key.replace("method.settings.", "method.")
            out.append(f"{name}: {a.get(key, '(unset)')} → {b.get(key, '(unset)')}")
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass(frozen=True)
class RunPlan:
    """The content of ``run.json``: what a run is (identity, config) and what it does (episodes)."""

    identity: dict[str, Any]
    config: dict[str, Any]
    episodes: tuple[Episode, ...]
    method_hash: str | None = None
    skipped_groups: tuple[dict[str, str], ...] = ()
    dataset_problems: tuple[dict[str, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runner(self) -> dict[str, Any]:
        return self.config["runner"]

    @property
    def shard(self) -> tuple[int, int]:
        """(shard, num_shards) of this run."""
        r = self.identity["runner"]
        return int(r["shard"]), int(r["num_shards"])

    @property
    def planned_targets(self) -> int:
        return sum(len(e.targets) for e in self.episodes)


class RunDir:
    """Paths, plan, result rows and lock of one run folder."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # ------------------------------------------------------------------ layout
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def leaderboard_md(self) -> Path:
        return self.root / "leaderboard.md"

    @property
    def log_file(self) -> Path:
        return self.root / "run.log"

    @property
    def problems_file(self) -> Path:
        return self.episodes_dir / f"{DATASET_PROBLEMS}.csv"

    @property
    def episodes_dir(self) -> Path:
        return self.root / "episodes"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    def episode_file(self, key: str) -> Path:
        return self.episodes_dir / hashed_name(key, ".csv")

    def prompt_file(self, key: str, sample: str, role: str = "reference") -> Path:
        """The prompt drawn on ``sample`` in episode ``key``: as its reference, or (interactive
        methods) on a target itself."""
        name = f"{key}|{escape(sample)}" if role == "reference" else f"{key}|{role}|{escape(sample)}"
        return self.root / "prompts" / hashed_name(name, ".npz")

    def prediction_file(self, round_index: int | str, target: str) -> Path:
        return self.root / "predictions" / f"r{int(round_index)}" / file_name(target, ".png")

    def extras_dir(self, round_index: int | str, target: str) -> Path:
        return self.root / "extras" / f"r{int(round_index)}" / file_name(target)

    def write_extras(self, round_index: int | str, target: str, extras: Mapping[str, Any]) -> None:
        """Save a method's side outputs: 2-D arrays as 8-bit PNGs (bool as 0/255), the rest as JSON."""
        folder = self.extras_dir(round_index, target)
        for name, value in extras.items():
            if isinstance(value, np.ndarray) and value.ndim == 2:
                img = value.astype(np.uint8) * 255 if value.dtype == bool else np.asarray(value, np.uint8)
                write_png(folder / file_name(name, ".png"), img)
            else:
                atomic_write_text(folder / file_name(name, ".json"), json.dumps(value, default=_json_default) + "\n")

    def read_extras(self, round_index: int | str, target: str) -> dict[str, Any]:
        """The side outputs saved for ``target`` (name → uint8 array or JSON value); {} when none."""
        from urllib.parse import unquote

        from benchmark.io import read_alpha

        folder = self.extras_dir(round_index, target)
        out: dict[str, Any] = {}
        for f in sorted(folder.glob("*")) if folder.is_dir() else ():
            if f.suffix == ".png":
                out[unquote(f.stem)] = read_alpha(f)
            elif f.suffix == ".json":
                out[unquote(f.stem)] = json.loads(f.read_text())
        return out

    def figure_file(self, key: str) -> Path:
        return self.figures_dir / hashed_name(key, ".png")

    def lock(self) -> RunLock:
        return RunLock(self.root / ".lock")

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # ------------------------------------------------------------------ plan
    def has_plan(self) -> bool:
        return self.run_json.is_file()

    def read_plan(self) -> RunPlan:
        """The plan in ``run.json``; :class:`RunDirError` names the file when it is missing or broken."""
        try:
            doc = json.loads(self.run_json.read_text())
            episodes = tuple(Episode(e["group"], int(e["round"]), tuple(e["references"]), tuple(e["targets"]),
                                     bool(e.get("self_reference", False))) for e in doc["episodes"])
            known = {"identity", "config", "episodes", "method_hash", "skipped_groups", "dataset_problems"}
            return RunPlan(doc["identity"], doc["config"], episodes, doc.get("method_hash"),
                           tuple(doc.get("skipped_groups", ())), tuple(doc.get("dataset_problems", ())),
                           {k: v for k, v in doc.items() if k not in known})
        except FileNotFoundError as exc:
            raise RunDirError(f"{self.root} is not a run folder: no run.json") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{self.run_json}: unreadable run plan ({type(exc).__name__}: {exc})") from exc

    def write_plan(self, plan: RunPlan) -> None:
        """Write ``run.json`` atomically, listing each episode's prompt and prediction files."""
        episodes = [{
            "key": e.key, "group": e.group, "round": e.round, "references": list(e.references),
            "targets": list(e.targets), "self_reference": e.self_reference,
            "prompts": {r: self.relative(self.prompt_file(e.key, r)) for r in e.references},
            "predictions": {t: self.relative(self.prediction_file(e.round, t)) for t in e.targets},
            "file": self.relative(self.episode_file(e.key)),
        } for e in plan.episodes]
        doc = {"identity": plan.identity, "config": plan.config, "method_hash": plan.method_hash, **plan.extra,
               "episodes": episodes, "skipped_groups": list(plan.skipped_groups),
               "dataset_problems": list(plan.dataset_problems)}
        atomic_write_text(self.run_json, json.dumps(doc, indent=1, default=str) + "\n")

    def load_dataset(self, plan: RunPlan | None = None) -> Dataset:
        """The run's dataset, loaded from the (absolute) dataset configuration in ``run.json``."""
        from benchmark.datasets import load_dataset

        params = dict((plan or self.read_plan()).config["dataset"])
        return load_dataset(params.pop("name"), **params)

    # ------------------------------------------------------------------ rows
    @staticmethod
    def read_rows(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    @staticmethod
    def write_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buf.getvalue())

    def episode_rows(self, key: str) -> list[dict[str, str]] | None:
        """The rows of a finished episode, or None when it has not finished."""
        path = self.episode_file(key)
        return self.read_rows(path) if path.is_file() else None

    def finished(self, key: str) -> bool:
        return self.episode_file(key).is_file()

    def write_episode(self, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.write_rows(self.episode_file(key), rows)

    def write_dataset_problems(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.write_rows(self.problems_file, rows)
        else:
            self.problems_file.unlink(missing_ok=True)

    def collect_rows(self, episodes: Iterable[Episode]) -> Iterator[dict[str, str]]:
        """The rows of the finished episodes in plan order, then the dataset-problem rows (streamed)."""
        for path in [*(self.episode_file(e.key) for e in episodes), self.problems_file]:
            if path.is_file():
                with path.open(newline="") as fh:
                    yield from csv.DictReader(fh)

    def results_frame(self, columns: Iterable[str]) -> Any:
        """These columns of ``results.csv`` as a pandas DataFrame of strings (pandas' C parser, no row
        dicts; a column the file lacks, from a folder written before it existed, is empty)."""
        import pandas as pd

        if not self.results_csv.is_file():
            raise RunDirError(f"no results.csv in {self.root}")
        wanted = sorted(set(columns))
        df = pd.read_csv(self.results_csv, dtype=str, keep_default_na=False, usecols=lambda c: c in wanted)
        return df.reindex(columns=wanted, fill_value="")

    def write_results(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Write ``results.csv`` from (streamed) rows; returns the number of error rows."""
        errors = 0

        def counted() -> Iterator[Mapping[str, Any]]:
            nonlocal errors
            for row in rows:
                errors += row["status"] == "error"
                yield row

        self.write_rows(self.results_csv, counted())
        return errors

    # ------------------------------------------------------------------ lifecycle
    def clear_results(self) -> None:
        """Remove every result of an earlier run (``runner.overwrite=true``)."""
        for name in RESULT_ENTRIES:
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def write_hydra_files(self, files: Mapping[str, str]) -> None:
        """Write Hydra's ``.hydra/<name>`` files (config, overrides) once the run has been accepted."""
        for name, text in files.items():
            atomic_write_text(self.root / ".hydra" / file_name(name), text)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)
