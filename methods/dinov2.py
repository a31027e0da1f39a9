"""DINOv2 patch features through timm, from a local weight file (ICMP's correspondence step).

timm's ``vit_{small,base,large,giant}_patch14_dinov2`` are built without pretrained weights and the
local file is loaded strictly after timm's own ``checkpoint_filter_fn``, which reads both timm's
files (``model.safetensors`` of ``timm/vit_small_patch14_dinov2.lvd142m``) and Meta's original
``dinov2_vits14_pretrain.pth`` (facebookresearch/dinov2 ``hubconf.py``; timm converts its keys and
resamples the position embedding). Nothing is downloaded.

Images are resized so that the long side is ``image_size`` (518, DINOv2's native size, by default),
each side rounded to a multiple of the patch (14), normalised with ImageNet mean/std, and the
prefix tokens (CLS, registers) are dropped: one L2-normalised feature per 14×14 patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from methods._hub import content_fingerprint, read_state_dict, resolve_device, weight_file

#: Short names → timm architectures (peers.md §12).
DINOV2_MODELS = {
    "vits14": "vit_small_patch14_dinov2", "vitb14": "vit_base_patch14_dinov2",
    "vitl14": "vit_large_patch14_dinov2", "vitg14": "vit_giant_patch14_dinov2",
}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def grid_size(shape: tuple[int, int], image_size: int, patch: int) -> tuple[int, int]:
    """Patches per column and row once the long side is ``image_size`` (each side ≥ one patch)."""
    h, w = shape
    scale = image_size / max(h, w)
    return max(1, round(h * scale / patch)), max(1, round(w * scale / patch))


class Dinov2Features:
    """A DINOv2 backbone that maps an image to its grid of patch features."""

    def __init__(self, model: str = "vits14", checkpoint: str | None = None, *, image_size: int = 518,
                 arch: Mapping[str, Any] | None = None, device: str = "auto", method: str = "dinov2") -> None:
        import timm
        import torch
        from timm.models.vision_transformer import checkpoint_filter_fn

        self.method = method
        self.arch_name = DINOV2_MODELS.get(model, model)
        if not self.arch_name.startswith("vit_") or "dinov2" not in self.arch_name:
            raise ValueError(f"{method}: dinov2 model must be one of {sorted(DINOV2_MODELS)} or a timm "
                             f"'vit_*_dinov2' name, got {model!r}")
        self.checkpoint = weight_file(checkpoint, method=method, what="DINOv2 checkpoint (dinov2_checkpoint)")
        self.image_size = int(image_size)
        self.arch = dict(arch or {})
        self.device = resolve_device(device)
        net = timm.create_model(self.arch_name, pretrained=False, img_size=self.image_size, dynamic_img_size=True,
                                num_classes=0, **self.arch)
        state = checkpoint_filter_fn(read_state_dict(self.checkpoint, method=method), net)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{method}: {self.checkpoint} does not match {self.arch_name}: missing "
                             f"{list(missing)}, unexpected {list(unexpected)}")
        self.net = net.eval().to(self.device)
        self.patch = int(net.patch_embed.patch_size[0])
        self._torch = torch

    def grid(self, shape: tuple[int, int]) -> tuple[int, int]:
        return grid_size(shape, self.image_size, self.patch)

    def features(self, image: np.ndarray) -> np.ndarray:
        """float32 (gh, gw, C) L2-normalised patch features of a uint8 RGB image."""
        gh, gw = self.grid(image.shape[:2])
        x = cv2.resize(image, (gw * self.patch, gh * self.patch), interpolation=cv2.INTER_CUBIC)
        x = (x.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
            tokens = self.net.forward_features(t)[0, self.net.num_prefix_tokens:]
            tokens = torch.nn.functional.normalize(tokens.float(), dim=-1)
        return tokens.reshape(gh, gw, -1).cpu().numpy()

    def fingerprint(self) -> str:
        return content_fingerprint([self.checkpoint], {"arch": self.arch_name, **self.arch,
                                                       "image_size": self.image_size})

    def close(self) -> None:
        self.net = None


def save_random_dinov2(path: Path, model: str = "vits14", arch: Mapping[str, Any] | None = None,
                       seed: int = 0) -> Path:
    """Save a random-weight DINOv2 of this architecture (tests and speed measurements; no download)."""
    import timm
    import torch

    torch.manual_seed(seed)
    net = timm.create_model(DINOV2_MODELS.get(model, model), pretrained=False, num_classes=0, **dict(arch or {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
