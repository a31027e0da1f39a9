"""ICMP, the paper's in-context matting pipeline (supplement §10), re-implemented.

"DINOv2 features propagate the reference's prompt points to every target (semantic
correspondence); SAM turns the propagated points into a mask; morphological operations turn the mask
into a pseudo-trimap; ViTMatte predicts the alpha." The paper gives no further detail and no code was
released, so every choice is a documented setting (``conf/method/icmp.yaml``):

- ``propagation=nearest`` (default): each reference point goes to the target patch whose DINOv2
  feature is most similar (cosine) to the feature of the reference patch under it — one target point
  per reference point, duplicates merged; background points (when the prompt has any) become
  negative points the same way. ``propagation=topk``: the ``num_points`` target patches most similar
  to any reference foreground point, plus (``num_negative``) the least similar as negatives.
- Points sit at patch centres in target pixels; SAM predicts one mask (``multimask=false``, as Matte
  Anything) or the best of three.
- Pseudo-trimap and ViTMatte as Matte Anything (kernel 10, 5 iterations; ViTMatte-B DIS).

Reference features are computed once per episode (``prepare``). The propagated points, the
similarity map and the SAM mask are kept beside each prediction and drawn by ``benchmark.visualize``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from benchmark.types import Episode
from methods.base import BaseMethod, MethodError, MethodInfo, Prediction, Reference, Target
from methods.dinov2 import Dinov2Features
from methods.matany import VITMATTE_B_DIS
from methods.pseudo_trimap import ITERATIONS, KERNEL
from methods.sam import SamSegmenter
from methods.sam_matting import MaskToMatte
from methods.vitmatte import VitMatte

PROPAGATION = ("nearest", "topk")
Point = tuple[int, int, bool]


def patch_of(point: tuple[int, int], shape: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) patch of a pixel (y, x) of an image of ``shape`` split into ``grid`` patches."""
    (y, x), (h, w), (gh, gw) = point, shape, grid
    return min(gh - 1, int(y * gh / h)), min(gw - 1, int(x * gw / w))


def patch_centre(cell: tuple[int, int], shape: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The pixel (y, x) at the centre of patch ``cell``."""
    (r, c), (h, w), (gh, gw) = cell, shape, grid
    return min(h - 1, int((r + 0.5) * h / gh)), min(w - 1, int((c + 0.5) * w / gw))


class IcmpMethod(BaseMethod):
    """DINOv2 point propagation → SAM → pseudo-trimap → ViTMatte (in-context, points)."""

    info = MethodInfo(
        name="icmp",
        guidance="in_context",
        prompt_kinds=frozenset({"points"}),
        max_references=8,
        description="ICMP (paper supp. §10, re-implementation): DINOv2 point propagation, SAM, ViTMatte",
        runtime_params=frozenset({"dinov2_checkpoint", "sam_checkpoint", "vitmatte_path", "device"}),
    )

    def __init__(self, dinov2_model: str = "vitb14", dinov2_checkpoint: str | None = None,
                 dinov2_arch: Mapping[str, Any] | None = None, dinov2_size: int = 518,
                 sam_variant: str = "vit_h", sam_checkpoint: str | None = None,
                 sam_arch: Mapping[str, Any] | None = None, vitmatte_path: str = VITMATTE_B_DIS,
                 normalization: str = "processor", propagation: str = "nearest", num_points: int = 5,
                 num_negative: int = 0, multimask: bool = False, erode_kernel: int = KERNEL,
                 dilate_kernel: int = KERNEL, iterations: int = ITERATIONS, device: str = "auto") -> None:
        super().__init__()
        if propagation not in PROPAGATION:
            raise ValueError(f"icmp: propagation must be one of {PROPAGATION}, got {propagation!r}")
        if num_points < 1 or num_negative < 0:
            raise ValueError(f"icmp: num_points must be ≥ 1 and num_negative ≥ 0, got {num_points}, {num_negative}")
        self.propagation, self.num_points, self.num_negative = propagation, int(num_points), int(num_negative)
        self.multimask = bool(multimask)
        self.dinov2 = Dinov2Features(dinov2_model, dinov2_checkpoint, image_size=dinov2_size, arch=dinov2_arch,
                                     device=device, method="icmp")
        self.sam = SamSegmenter(sam_variant, sam_checkpoint, arch=sam_arch, device=device, method="icmp")
        self.matting = MaskToMatte(VitMatte(vitmatte_path, device=device, normalization=normalization,
                                            method="icmp"), erode_kernel, dilate_kernel, iterations)
        self.reference_encodings = 0  # DINOv2 passes over references (once per reference per episode)
        self._fg: np.ndarray | None = None
        self._bg: np.ndarray | None = None

    # ------------------------------------------------------------------ references
    def prepare(self, references: Sequence[Reference], *, seed: int = 0, episode: Episode | None = None) -> None:
        super().prepare(references, seed=seed, episode=episode)
        fg, bg = [], []
        for ref in references:
            feats = self.dinov2.features(ref.image)
            self.reference_encodings += 1
            grid = feats.shape[:2]
            for y, x, is_fg in ref.prompt.points:
                (fg if is_fg else bg).append(feats[patch_of((y, x), ref.image.shape[:2], grid)])
        if not fg:
            raise MethodError("icmp: the reference prompt has no foreground point to propagate")
        self._fg = np.stack(fg)
        self._bg = np.stack(bg) if bg else None

    # ------------------------------------------------------------------ targets
    def propagate(self, feats: np.ndarray, shape: tuple[int, int]) -> tuple[list[Point], np.ndarray]:
        """Target points (y, x, fg) and the foreground similarity map (gh, gw) in [-1, 1]."""
        assert self._fg is not None
        grid = feats.shape[:2]
        flat = feats.reshape(-1, feats.shape[-1])
        sim_fg = flat @ self._fg.T  # (cells, reference fg points): cosine, features are L2-normalised
        best = sim_fg.max(axis=1)
        if self.propagation == "nearest":
            pos = list(dict.fromkeys(int(i) for i in sim_fg.argmax(axis=0)))
            neg = [] if self._bg is None else list(dict.fromkeys(int(i) for i in (flat @ self._bg.T).argmax(axis=0)))
        else:
            order = np.argsort(-best, kind="stable")
            pos = [int(i) for i in order[:self.num_points]]
            neg = [int(i) for i in order[::-1][:self.num_negative]]
        neg = [i for i in neg if i not in pos]
        cells = [(divmod(i, grid[1]), True) for i in pos] + [(divmod(i, grid[1]), False) for i in neg]
        points = [(*patch_centre(cell, shape, grid), fg) for cell, fg in cells]
        return points, best.reshape(grid)

    def predict_one(self, target: Target) -> Prediction:
        if self._fg is None:
            raise MethodError("icmp: predict() called before prepare()")
        shape = target.image.shape[:2]
        points, similarity = self.propagate(self.dinov2.features(target.image), shape)
        self.sam.set_image(target.image)
        mask = self.sam.segment(points, None, multimask=self.multimask).mask
        alpha, trimap = self.matting(target.image, mask)
        sim8 = cv2.resize(np.rint((similarity + 1) * 127.5).astype(np.uint8), (shape[1], shape[0]),
                          interpolation=cv2.INTER_NEAREST)
        return Prediction(alpha, {"points": [[int(y), int(x), bool(fg)] for y, x, fg in points],
                                  "sam_mask": mask, "trimap": trimap, "similarity": sim8})

    def fingerprint(self) -> str:
        return f"{self.dinov2.fingerprint()}:{self.sam.fingerprint()}:{self.matting.fingerprint()}"

    def close(self) -> None:
        self.dinov2.close()
        self.sam.close()
        self.matting.close()
