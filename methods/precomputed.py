"""Predictions made elsewhere, scored under this toolkit's protocol (``method=precomputed method.path=DIR``).

``DIR`` holds one 8-bit (or 16-bit) grey PNG per target, named by :func:`benchmark.safe_names.file_name`
of the target id, either per round, ``DIR/r<round>/<name>.png`` (a run folder's ``predictions/`` as is),
or flat, ``DIR/<name>.png`` (the same prediction in every round). A run folder itself (``run.json`` and
``predictions/``) is accepted too. The method needs no guidance: the runner gives it neither references
nor trimaps. See ``methods/peers/precomputed.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from benchmark.io import read_alpha_float
from benchmark.safe_names import file_name
from benchmark.types import PROMPT_KINDS
from methods._hub import WeightsNotFound, sampled_digest
from methods.base import BaseMethod, MethodError, MethodInfo, Output, Target
from metrics.io import AlphaDecodeError

LAYOUTS = ("auto", "flat", "rounds")
_ROUND_DIR = re.compile(r"r[0-9]+$")


class PrecomputedMethod(BaseMethod):
    """Reads ``path/[r<round>/]<file_name(id)>.png`` per target.

    ``layout``: ``rounds`` (always ``r<round>/``), ``flat`` (always ``DIR/``) or ``auto`` (``r<round>/``
    when that folder exists, else flat). A missing file or a wrong size is that target's error row."""

    info = MethodInfo(
        name="precomputed",
        guidance="none",
        prompt_kinds=frozenset(PROMPT_KINDS),
        max_references=4,
        description="predictions read from a folder (made elsewhere), scored under this protocol",
        runtime_params=frozenset({"path"}),
    )

    def __init__(self, path: str, layout: str = "auto") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"precomputed: layout must be one of {LAYOUTS}, got {layout!r}")
        if path in (None, ""):
            raise WeightsNotFound("precomputed: no path configured (method.path=DIR; see methods/peers/precomputed.md)")
        root = Path(str(path)).expanduser().resolve()
        if (root / "run.json").is_file() and (root / "predictions").is_dir():
            root = root / "predictions"  # a run folder
        if not root.is_dir():
            raise WeightsNotFound(f"precomputed: {root} is not a folder (see methods/peers/precomputed.md)")
        self.root = root
        self.layout = layout

    @property
    def round(self) -> int:
        return int(self.episode.round) if self.episode is not None else 0

    def folder(self) -> Path:
        """Where this round's predictions are read from."""
        rounds = self.root / f"r{self.round}"
        if self.layout == "rounds" or (self.layout == "auto" and rounds.is_dir()):
            return rounds
        return self.root

    def predict(self, targets: Sequence[Target]) -> list[Output]:
        folder = self.folder()
        return [self._read(folder, t) for t in targets]

    def _read(self, folder: Path, target: Target) -> Output:
        tid = target.sample_id
        path = folder / file_name(tid, ".png")  # one plain path component: never outside the folder
        if path.parent != folder or not path.is_file():
            hint = "" if self.layout != "auto" or folder != self.root else f" (and no r{self.round}/ folder)"
            return MethodError(f"precomputed: no prediction for target '{tid}' at {path}{hint}")
        try:
            return read_alpha_float(path, target.image.shape[:2])
        except AlphaDecodeError as exc:
            return MethodError(f"precomputed: unreadable prediction for target '{tid}': {exc}")
        except ValueError as exc:
            return MethodError(f"precomputed: prediction for target '{tid}': {exc}")

    def fingerprint(self) -> str:
        """Hash of the prediction files' names, sizes and (sampled) contents, not of where they live:
        changed predictions change it, a moved folder keeps it."""
        listing = [(name, p.stat().st_size, sampled_digest(p)) for name, p in self._files()]
        doc = {"layout": self.layout, "files": listing}
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]

    def _files(self) -> list[tuple[str, Path]]:
        """The PNGs this layout may read: ``DIR/*.png`` and/or ``DIR/r<k>/*.png``, sorted by name."""
        out = []
        if self.layout in ("auto", "flat"):
            out += [(p.name, p) for p in self.root.glob("*.png") if p.is_file()]
        if self.layout in ("auto", "rounds"):
            for d in self.root.iterdir():
                if d.is_dir() and _ROUND_DIR.match(d.name):
                    out += [(f"{d.name}/{p.name}", p) for p in d.glob("*.png") if p.is_file()]
        return sorted(out)
