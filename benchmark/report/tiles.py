"""The report's thumbnails of one target, reference or prediction, drawn by :mod:`.figures` and cached by
:mod:`.thumbs`. Each tile links to its full-resolution file where it lies (the dataset's image and matte,
the run folder's prediction) or, for an error map, to a larger drawing of it; a file that cannot be read
gives a tile that says why instead of an image.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.prompts import load_prompt
from benchmark.report import figures
from benchmark.report.data import Run
from benchmark.report.thumbs import Thumbs
from benchmark.types import Dataset, Episode, Sample
from benchmark.views import SampleView, load_view

FAILURES = (OSError, ValueError, KeyError)


@dataclass(frozen=True)
class Tile:
    """A thumbnail (``src``) linking to ``href``, with caption lines; ``problem`` replaces a failed image."""

    caption: tuple[str, ...]
    src: Path | None = None
    href: Path | None = None
    problem: str | None = None


@dataclass
class TileMaker:
    """Tiles of one build: each dataset loaded once, each view decoded at most once while it is in use."""

    thumbs: Thumbs
    size: int = 256
    zoom: int = 1024
    _datasets: dict[str, Dataset | Exception] = field(default_factory=dict)
    _views: OrderedDict[tuple[str, str, str], SampleView] = field(default_factory=OrderedDict)

    # ------------------------------------------------------------------ sources
    def dataset(self, run: Run) -> Dataset:
        key = json.dumps(run.plan.config.get("dataset", {}), sort_keys=True, default=str)
        if key not in self._datasets:
            try:
                self._datasets[key] = run.rd.load_dataset(run.plan)
            except FAILURES as exc:
                self._datasets[key] = exc
        found = self._datasets[key]
        if isinstance(found, Exception):
            raise ValueError(f"dataset not loadable: {found}")
        return found

    def sample(self, run: Run, sample_id: str) -> Sample:
        samples = self.dataset(run).samples
        if sample_id not in samples:
            raise KeyError(f"'{sample_id}' is no longer in the dataset")
        return samples[sample_id]

    def view(self, run: Run, sample_id: str) -> SampleView:
        resolution = run.plan.runner["resolution"]
        key = (json.dumps(run.plan.config.get("dataset", {}), sort_keys=True, default=str), sample_id, resolution)
        if key in self._views:
            self._views.move_to_end(key)
            return self._views[key]
        view = load_view(self.sample(run, sample_id), resolution)
        self._views[key] = view
        while len(self._views) > 8:
            self._views.popitem(last=False)
        return view

    # ------------------------------------------------------------------ tiles
    def _safe(self, caption: tuple[str, ...], make: Callable[[], Tile]) -> Tile:
        try:
            return make()
        except FAILURES as exc:
            return Tile(caption, problem=f"{type(exc).__name__}: {exc}")

    def image(self, run: Run, sample_id: str, caption: tuple[str, ...]) -> Tile:
        def make() -> Tile:
            s = self.sample(run, sample_id)
            src = self.thumbs.get("image", [s.image_path], lambda: figures.downscale(
                self.view(run, sample_id).image, self.size), (run.plan.runner["resolution"], self.size), "jpg")
            return Tile(caption, src, s.image_path)
        return self._safe(caption, make)

    def truth(self, run: Run, sample_id: str, caption: tuple[str, ...] = ("ground truth",)) -> Tile:
        def make() -> Tile:
            s = self.sample(run, sample_id)
            if s.alpha_path is None:
                raise ValueError("no ground truth (an unlabelled frame)")
            src = self.thumbs.get("truth", [s.alpha_path], lambda: figures.downscale(
                figures.gray(self.view(run, sample_id).alpha), self.size), (run.plan.runner["resolution"], self.size))
            return Tile(caption, src, s.alpha_path)
        return self._safe(caption, make)

    def reference(self, run: Run, episode: Episode, ref: str, caption: tuple[str, ...]) -> Tile:
        def make() -> Tile:
            s = self.sample(run, ref)
            prompt = run.rd.prompt_file(episode.key, ref)

            def draw() -> np.ndarray:
                img = self.view(run, ref).image
                if prompt.is_file():
                    img = figures.overlay_prompt(img, load_prompt(prompt).labels())
                return figures.downscale(img, self.size)
            src = self.thumbs.get("reference", [s.image_path, prompt], draw, (run.plan.runner["resolution"],
                                                                             self.size), "jpg")
            return Tile(caption, src, s.image_path)
        return self._safe(caption, make)

    def target_prompt(self, run: Run, episode: Episode, target: str) -> Tile | None:
        """An interactive method's prompt drawn on the target itself, when the run stored one."""
        prompt = run.rd.prompt_file(episode.key, target, "target")
        if not prompt.is_file():
            return None
        caption = ("prompt on the target",)

        def make() -> Tile:
            s = self.sample(run, target)
            src = self.thumbs.get("prompt", [s.image_path, prompt], lambda: figures.downscale(figures.overlay_prompt(
                self.view(run, target).image, load_prompt(prompt).labels()), self.size),
                (run.plan.runner["resolution"], self.size), "jpg")
            return Tile(caption, src, s.image_path)
        return self._safe(caption, make)

    def prediction(self, run: Run, round_index: int, target: str, caption: tuple[str, ...]) -> Tile:
        path = run.rd.prediction_file(round_index, target)

        def make() -> Tile:
            if not path.is_file():
                raise FileNotFoundError("no prediction saved")
            src = self.thumbs.get("pred", [path], lambda: figures.downscale(
                figures.gray(figures.read_alpha(path)), self.size), (self.size,))
            return Tile(caption, src, path)
        return self._safe(caption, make)

    def error(self, run: Run, round_index: int, target: str, caption: tuple[str, ...] = ("error map",)) -> Tile:
        path = run.rd.prediction_file(round_index, target)

        def make() -> Tile:
            s = self.sample(run, target)
            if not path.is_file() or s.alpha_path is None:
                raise FileNotFoundError("no prediction saved" if not path.is_file() else "no ground truth")
            sources, res = [path, s.alpha_path], run.plan.runner["resolution"]
            err: list[np.ndarray] = []  # computed once, on the first miss, for both sizes

            def heat(size: int) -> Callable[[], Image.Image]:
                def draw() -> Image.Image:
                    if not err:
                        err.append(figures.error_map(figures.read_alpha(path), self.view(run, target).alpha))
                    return figures.heat_image(figures.downscale(err[0], size))  # area-averaged, then coloured
                return draw
            big = self.thumbs.get("zoom", sources, heat(self.zoom), (res, self.zoom))
            return Tile(caption, self.thumbs.get("error", sources, heat(self.size), (res, self.size)), big)
        return self._safe(caption, make)

    def side(self, run: Run, round_index: int, target: str) -> Tile | None:
        """A method's side outputs drawn on the target, when the run kept any."""
        folder = run.rd.extras_dir(round_index, target)
        if not folder.is_dir():
            return None
        caption = ("side outputs", ", ".join(sorted(p.stem for p in folder.iterdir())))

        def make() -> Tile:
            s = self.sample(run, target)
            files = sorted(folder.iterdir())
            src = self.thumbs.get("side", [s.image_path, *files], lambda: figures.downscale(figures.side_outputs(
                self.view(run, target).image, run.rd.read_extras(round_index, target)), self.size),
                (run.plan.runner["resolution"], self.size, *(f.name for f in files)), "jpg")
            return Tile(caption, src, folder)
        return self._safe(caption, make)
