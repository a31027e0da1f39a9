"""ViTMatte (hustvl/ViTMatte): trimap-based matting, as a reusable engine and as a benchmark method.

:class:`VitMatte` is the engine MatAny and ICMP call on their pseudo-trimaps; :class:`VitMatteMethod`
runs it on the trimap the runner derives from each target's ground truth (paper Table 3 style).
Facts from /work/shared/docs/peers.md §5 (ViTMatte):

- transformers port: ``VitMatteForImageMatting`` + ``VitMatteImageProcessor``; the processor rescales
  by 1/255, normalises the image with mean = std = 0.5 (its default and the value of every
  ``hustvl/vitmatte-*`` ``preprocessor_config.json``), adds the trimap as channel 4 and zero-pads
  bottom/right to a multiple of 32. The model returns ``alphas`` (B, 1, H_pad, W_pad), already a
  sigmoid, and does **not** crop the padding: we crop ``[:H, :W]``.
- the original code (``modeling/meta_arch/vitmatte.py``, ``preprocess_inputs``): RGB/255 normalised
  with ImageNet mean/std (123.675/255 …, 58.395/255 …), trimap channel in {0, 0.5, 1}, zeros padded
  bottom/right. Its padding rule pads *both* sides by ``32 - side % 32`` as soon as one side is not a
  multiple of 32 (a side already divisible then grows by a full 32); ``normalization="imagenet"``
  keeps that rule so its numbers are the original code's.
- trimap: 0 background, 128 unknown, 255 foreground; other greys are quantised first (<85 → 0,
  ≥170 → 1, else 0.5, :func:`methods.pseudo_trimap.trimap_levels`, the training code's rule). Both
  normalisations feed the quantised channel {0, 0.5, 1} (the processor gets it as 0/127.5/255 so its
  own 1/255 rescale lands on exactly 0.5; a uint8 128 would give 0.502).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from methods._hub import (
    content_fingerprint,
    folder_files,
    load_pretrained,
    model_dir,
    resolve_device,
    resolve_dtype,
)
from methods.base import BaseMethod, MethodError, MethodInfo, Target
from methods.pseudo_trimap import trimap_levels

#: ViTMatte-S trained on Composition-1k (Hugging Face port).
DEFAULT_MODEL = "hustvl/vitmatte-small-composition-1k"
NORMALIZATIONS = ("processor", "imagenet")
#: The original code's ``pixel_mean`` / ``pixel_std`` (configs/common/model.py), on RGB in [0, 1].
IMAGENET_MEAN = (123.675 / 255, 116.280 / 255, 103.530 / 255)
IMAGENET_STD = (58.395 / 255, 57.120 / 255, 57.375 / 255)
PAD_MULTIPLE = 32
#: Bumped when the engine's pre/post-processing changes the numbers (part of the fingerprint).
ENGINE_VERSION = "vitmatte-engine-v1"


def check_inputs(image: np.ndarray, trimap: np.ndarray, method: str = "vitmatte") -> None:
    """A uint8 H×W×3 image and an H×W trimap of the same size (ValueError otherwise)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{method}: image must be uint8 H×W×3, got {image.dtype} {image.shape}")
    if trimap.ndim != 2 or trimap.shape != image.shape[:2]:
        raise ValueError(f"{method}: trimap must be H×W {image.shape[:2]}, got {trimap.shape}")


def original_padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """The original ``preprocess_inputs`` padding: unchanged when both sides are multiples of 32,
    otherwise each side grows by ``32 - side % 32`` (so a divisible side gains a full 32)."""
    if height % multiple == 0 and width % multiple == 0:
        return height, width
    return height + multiple - height % multiple, width + multiple - width % multiple


def imagenet_inputs(image: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """1×4×H'×W' float32: ImageNet-normalised RGB/255 and the {0, 0.5, 1} trimap, zero-padded as the
    original code pads."""
    h, w = levels.shape
    rgb = (image.astype(np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    ph, pw = original_padded_size(h, w)
    out = np.zeros((1, 4, ph, pw), np.float32)
    out[0, :3, :h, :w] = rgb.transpose(2, 0, 1)
    out[0, 3, :h, :w] = levels
    return out


class VitMatte:
    """A ViTMatte model loaded offline from a folder or a cached Hub id; ``matte`` gives one alpha.

    ``normalization``: ``processor`` (the folder's ``VitMatteImageProcessor``; its defaults, mean =
    std = 0.5, when the folder has no preprocessor_config.json) or ``imagenet`` (the original code's).
    ``dtype``: fp32 (default) | fp16 | bf16 | auto (fp16 on CUDA); reduced precision needs CUDA.
    """

    def __init__(self, model_path: str, *, device: str = "auto", dtype: str = "fp32",
                 normalization: str = "processor", method: str = "vitmatte") -> None:
        import torch

        if normalization not in NORMALIZATIONS:
            raise ValueError(f"{method}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.method = method
        self.normalization = normalization
        self.root = model_dir(model_path, method=method)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, method)
        if self.dtype != torch.float32 and self.device.type != "cuda":
            raise ValueError(f"{method}: dtype {dtype} needs a CUDA device (got {self.device}); use fp32 on CPU")
        self.model: Any = self._load_model()
        self.processor: Any = self._load_processor() if normalization == "processor" else None
        self._fingerprint = content_fingerprint(
            folder_files(self.root), {"engine": ENGINE_VERSION, "normalization": normalization})

    def _load_model(self) -> Any:
        from transformers import VitMatteForImageMatting

        return load_pretrained(VitMatteForImageMatting, self.root, self.device, self.dtype)

    def _load_processor(self) -> Any:
        from transformers import VitMatteImageProcessor

        if (self.root / "preprocessor_config.json").is_file():
            return load_pretrained(VitMatteImageProcessor, self.root)
        return VitMatteImageProcessor()

    def inputs(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        """The 1×4×H'×W' float32 network input for ``image`` and ``trimap`` (padding included)."""
        check_inputs(image, trimap, self.method)
        levels = trimap_levels(trimap)
        if self.normalization == "imagenet":
            return imagenet_inputs(image, levels)
        # A writable copy: the runner's arrays are read-only, which torch.from_numpy warns about.
        batch = self.processor(images=np.array(image), trimaps=levels * np.float32(255.0), return_tensors="pt")
        return batch["pixel_values"].float().numpy()

    def matte(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        """float32 H×W alpha in [0, 1] for a uint8 RGB image and its 0/128/255 trimap."""
        import torch

        h, w = trimap.shape[:2]
        x = torch.from_numpy(self.inputs(image, trimap)).to(self.device, self.dtype)
        with torch.inference_mode():
            alpha = self.model(pixel_values=x).alphas[0, 0, :h, :w].float().clamp(0.0, 1.0)
        return alpha.cpu().numpy().astype(np.float32)

    def fingerprint(self) -> str:
        """Content hash of the folder's config/weights/processor files and the normalisation."""
        return self._fingerprint

    def close(self) -> None:
        """Drop the model (and the CUDA cache when it ran there)."""
        import torch

        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class VitMatteMethod(BaseMethod):
    """ViTMatte on each target's ground-truth-derived trimap (the runner passes it as ``guidance``).

    Parameters: ``model_path`` (folder or cached Hub id; methods/peers/vitmatte.md), ``normalization``
    (``processor`` | ``imagenet``), ``device``, ``dtype``.
    """

    info = MethodInfo(
        name="vitmatte",
        guidance="trimap",
        runtime_params=frozenset({"model_path", "device"}),
        description="ViTMatte (hustvl) on the ground-truth-derived trimap, transformers port",
    )

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, normalization: str = "processor",
                 device: str = "auto", dtype: str = "fp32") -> None:
        super().__init__()
        self.engine = VitMatte(str(model_path), device=device, dtype=dtype, normalization=normalization)

    def predict_one(self, target: Target) -> np.ndarray | MethodError:
        """The alpha of one target, or a MethodError when its trimap is missing or mis-shaped."""
        if target.guidance is None:
            return MethodError("vitmatte: target has no trimap guidance")
        trimap = np.asarray(target.guidance)
        if trimap.dtype == bool:
            return MethodError("vitmatte: guidance is a boolean mask; ViTMatte needs a 0/128/255 trimap")
        if trimap.shape != target.image.shape[:2]:
            return MethodError(f"vitmatte: trimap shape {trimap.shape} != image shape {target.image.shape[:2]}")
        return self.engine.matte(target.image, trimap)

    def fingerprint(self) -> str:
        return self.engine.fingerprint()

    def close(self) -> None:
        self.engine.close()
