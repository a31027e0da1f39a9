"""Mask → pseudo-trimap → ViTMatte, the matting half of Matte Anything, shared by MatAny and ICMP.

hustvl/Matte-Anything ``matte_anything.py`` (commit 874951a), ``run_inference``: SAM's first mask
(``multimask_output=False``) → ``generate_trimap`` (kernel 10, 5 iterations; :mod:`methods.pseudo_trimap`)
→ optionally, inside every box GroundingDINO finds for the transparency caption, foreground becomes
unknown (``convert_pixels``) → ViTMatte on the image and that trimap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from methods._hub import (
    content_fingerprint,
    folder_files,
    load_pretrained,
    model_dir,
    resolve_device,
)
from methods.pseudo_trimap import ITERATIONS, KERNEL, pseudo_trimap
from methods.vitmatte import VitMatte

#: Matte Anything's transparency caption and UI defaults (box 0.5, text 0.25).
TRANSPARENT_CAPTION = "glass. lens. crystal. diamond. bubble. bulb. web. grid."
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels


def unknown_inside(trimap: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Foreground (255) inside each box becomes unknown (128): transparent objects are not opaque."""
    out = trimap.copy()
    for x0, y0, x1, y1 in boxes:
        region = out[max(0, int(y0)):max(0, int(y1)), max(0, int(x0)):max(0, int(x1))]
        region[region == 255] = 128
    return out


class TransparencyDetector:
    """GroundingDINO (transformers' port of Swin-T OGC) boxes for the transparency caption."""

    def __init__(self, model_path: str, *, caption: str = TRANSPARENT_CAPTION, box_threshold: float = 0.5,
                 text_threshold: float = 0.25, device: str = "auto", method: str = "matany") -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        self.root = model_dir(model_path, method=method, what="GroundingDINO folder (grounding_dino_path)")
        self.device = resolve_device(device)
        self.processor = load_pretrained(AutoProcessor, self.root)
        self.model = load_pretrained(GroundingDinoForObjectDetection, self.root, self.device)
        self.caption, self.box_threshold, self.text_threshold = caption, float(box_threshold), float(text_threshold)

    def boxes(self, image: np.ndarray) -> list[Box]:
        import torch

        inputs = self.processor(images=image, text=self.caption, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        (result,) = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[image.shape[:2]])
        return [tuple(round(float(v)) for v in box) for box in result["boxes"]]

    def fingerprint(self) -> str:
        return content_fingerprint(folder_files(self.root), {"caption": self.caption, "box": self.box_threshold,
                                                             "text": self.text_threshold})


@dataclass
class MaskToMatte:
    """A binary mask (SAM's) to an alpha: pseudo-trimap, optional transparency, ViTMatte."""

    vitmatte: VitMatte
    erode_kernel: int = KERNEL
    dilate_kernel: int = KERNEL
    iterations: int = ITERATIONS
    transparency: TransparencyDetector | None = None

    def trimap(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        trimap = pseudo_trimap(mask, self.erode_kernel, self.dilate_kernel, self.iterations)
        if self.transparency is not None:
            trimap = unknown_inside(trimap, self.transparency.boxes(image))
        return trimap

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 alpha in [0, 1], the uint8 trimap it was computed from)."""
        trimap = self.trimap(image, mask)
        return self.vitmatte.matte(image, trimap), trimap

    def fingerprint(self) -> str:
        parts = [self.vitmatte.fingerprint(), self.transparency.fingerprint() if self.transparency else ""]
        return content_fingerprint([], {"parts": parts, "kernels": [self.erode_kernel, self.dilate_kernel,
                                                                    self.iterations]})

    def close(self) -> None:
        self.vitmatte.close()
        self.transparency = None
