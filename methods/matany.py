"""Matte Anything (hustvl/Matte-Anything): SAM from an interaction on the image → pseudo-trimap →
ViTMatte, with GroundingDINO's transparency step optional.

As in the paper's Table 4, every target gets its own interaction (``guidance="prompt"``): points,
a scribble (points sampled from its strokes) or a mask (its bounding box), drawn from that target's
ground truth by the runner and saved with the run. The official app uses SAM ViT-H and ViTMatte-B
trained on Distinctions-646 (``matte_anything.py``, commit 874951a); those are the defaults of
``conf/method/matany.yaml``. The SAM mask and the trimap are kept beside the predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from methods.base import BaseMethod, MethodError, MethodInfo, Prediction, Target
from methods.pseudo_trimap import ITERATIONS, KERNEL
from methods.sam import SamSegmenter, sam_prompt
from methods.sam_matting import TRANSPARENT_CAPTION, MaskToMatte, TransparencyDetector
from methods.vitmatte import VitMatte

VITMATTE_B_DIS = "hustvl/vitmatte-base-distinctions-646"  # Matte Anything's ViTMatte-B (DIS)


class MatAnyMethod(BaseMethod):
    """SAM + pseudo-trimap + ViTMatte on a per-target interaction."""

    info = MethodInfo(
        name="matany",
        guidance="prompt",
        prompt_kinds=frozenset({"points", "scribble", "mask"}),
        description="Matte Anything: SAM on each target's own prompt, pseudo-trimap, ViTMatte (per-image)",
        runtime_params=frozenset({"sam_checkpoint", "vitmatte_path", "grounding_dino_path", "device"}),
    )

    def __init__(self, sam_variant: str = "vit_h", sam_checkpoint: str | None = None,
                 sam_arch: Mapping[str, Any] | None = None, vitmatte_path: str = VITMATTE_B_DIS,
                 normalization: str = "processor", erode_kernel: int = KERNEL, dilate_kernel: int = KERNEL,
                 iterations: int = ITERATIONS, max_points: int = 10, transparency: bool = False,
                 grounding_dino_path: str | None = "IDEA-Research/grounding-dino-tiny",
                 transparency_caption: str = TRANSPARENT_CAPTION, box_threshold: float = 0.5,
                 text_threshold: float = 0.25, device: str = "auto") -> None:
        super().__init__()
        self.max_points = int(max_points)
        self.sam = SamSegmenter(sam_variant, sam_checkpoint, arch=sam_arch, device=device, method="matany")
        detector = TransparencyDetector(grounding_dino_path, caption=transparency_caption, box_threshold=box_threshold,
                                        text_threshold=text_threshold, device=device) if transparency else None
        self.matting = MaskToMatte(VitMatte(vitmatte_path, device=device, normalization=normalization,
                                            method="matany"), erode_kernel, dilate_kernel, iterations, detector)

    def predict_one(self, target: Target) -> Prediction | MethodError:
        if target.prompt is None:
            return MethodError(f"matany: target '{target.sample_id}' has no prompt (guidance=prompt)")
        if target.prompt.kind not in self.info.prompt_kinds:
            return MethodError(f"matany: prompt kind '{target.prompt.kind}' not supported "
                               f"(supports {sorted(self.info.prompt_kinds)})")
        points, box = sam_prompt(target.prompt, max_points=self.max_points)
        self.sam.set_image(target.image)
        mask = self.sam.segment(points, box, multimask=False).mask  # the official app: one mask
        alpha, trimap = self.matting(target.image, mask)
        return Prediction(alpha, {"sam_mask": mask, "trimap": trimap})

    def fingerprint(self) -> str:
        return f"{self.sam.fingerprint()}:{self.matting.fingerprint()}"

    def close(self) -> None:
        self.sam.close()
        self.matting.close()

