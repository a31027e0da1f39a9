"""Shared fixtures: the read-only shared data folder and tiny datasets built in tmp folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
ICM58 = SHARED / "data" / "icm58-dev"


@pytest.fixture(scope="session")
def icm58_dev() -> Path:
    if not ICM58.is_dir():
        pytest.skip(f"shared data not found at {ICM58}")
    return ICM58


def soft_disc(h: int, w: int, cy: float, cx: float, r: float, ramp: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / ramp + 0.5, 0, 1)


def make_folder_dataset(root: Path, groups: int = 2, per_group: int = 3, size: tuple[int, int] = (40, 56),
                        seed: int = 0) -> Path:
    """Groups of discs with soft edges over noise, in the ``folder`` layout (image/ + alpha/)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for g in range(groups):
        colour = rng.integers(0, 256, 3)
        for i in range(per_group):
            gdir = root / f"g{g}"
            (gdir / "image").mkdir(parents=True, exist_ok=True)
            (gdir / "alpha").mkdir(parents=True, exist_ok=True)
            a = soft_disc(h, w, h / 2 + rng.uniform(-4, 4), w / 2 + rng.uniform(-4, 4), min(h, w) / 3)
            bg = rng.integers(0, 256, (h, w, 3))
            img = a[..., None] * colour + (1 - a[..., None]) * bg
            Image.fromarray(img.astype(np.uint8)).save(gdir / "image" / f"s{i}.png")
            Image.fromarray(np.rint(a * 255).astype(np.uint8)).save(gdir / "alpha" / f"s{i}.png")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a test module: on 2 shared cores, spinning OpenMP threads
    made the IconMatting tests about 10× slower. The previous setting is restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD-2.1-shaped model folder (methods/iconmatting/tiny.py), once per test module."""
    from methods.iconmatting.tiny import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd", seed=0)


@pytest.fixture(scope="module")
def embeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny model's empty-prompt embedding is cached, once per test module."""
    return tmp_path_factory.mktemp("emb") / "prompt_embeds.safetensors"


@pytest.fixture()
def folder_dataset(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "data")
