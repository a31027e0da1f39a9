"""A tiny random DINOv2 (timm's real class, small width and depth) saved to a file, for ICMP tests."""

from __future__ import annotations

from pathlib import Path

ARCH = {"embed_dim": 32, "depth": 2, "num_heads": 2}
IMAGE_SIZE = 56  # 4×4 patches of 14 px: enough for correspondence on a test scene


def tiny_dinov2(folder: Path) -> dict:
    """ICMP's DINOv2 parameters for a tiny random model saved under ``folder``."""
    from methods.dinov2 import save_random_dinov2

    path = save_random_dinov2(folder / "dinov2_tiny.pth", "vits14", ARCH, seed=0)
    return {"dinov2_model": "vits14", "dinov2_checkpoint": str(path), "dinov2_arch": dict(ARCH),
            "dinov2_size": IMAGE_SIZE}
