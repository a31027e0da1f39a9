"""MAM (Matting Anything, Li, Jain & Shi 2023) behind the benchmark's method protocol.

Source: SHI-Labs/Matting-Anything @ eb01e1c1f0016e2a4d00615b115f3b5ddcd031e4 (MIT). Data flow of the vendored
``segment_anything/modeling/sam.py:Sam.forward_m2m_inference`` + ``networks/generator_m2m.py:sam_m2m`` and the
post-processing of ``inference_benchmark.py:single_ms_inference`` (= ``gradio_app.py``):

1. SAM's encoder on the resized (long side ``image_size``), normalised, zero-padded image → embeddings (OS16).
2. SAM's decoder with the target's prompt (:func:`methods.sam.sam_prompt`: box of a mask prompt, the points,
   or points sampled from a scribble), ``multimask_output=True``, the mask with the highest predicted IoU; its
   low-res logits binarised at 0 → the guidance mask; its full-resolution binarised mask → ``post_mask``.
3. The M2M head (:mod:`.m2m`) on embeddings, model input and guidance → ``alpha_os8/os4/os1``.
4. Each alpha: padding cropped, resized bilinearly to the image size.
5. Refinement (:func:`refine_alpha`), official widths 10 / 20 / 10 (kernel = width // 2):
   ``guidance_mode=mask`` (``--maskguide``): SAM's mask, its one-sided outer band replaced by ``alpha_os8``;
   ``box`` (``--postprocess``, and ``gradio_app.py``'s default ``guidance_mode='alpha'``): ``alpha_os8`` with
   SAM's mask pasted outside the mask's bounding box; ``none`` (neither flag, the bare argparse default):
   ``alpha_os8``. Then the uncertain band of the running estimate is replaced by ``alpha_os4`` and then by
   ``alpha_os1``. Default ``box``: GETTING_STARTED.md evaluates every semantic/portrait benchmark (PPM-100,
   AM2K, PM-10K, RWP636) with ``--postprocess`` and only the instance/referring ones (HIM2K, RefMatte-RW100)
   with ``--maskguide``; ICM-57 has one instance category per image.

The official scripts hard-code ``.cuda()`` and 1024; here the device is a parameter and the size is SAM's
``image_size``. One target at a time (SAM prompts per image), so batches give the same mattes. Deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from methods._hub import content_fingerprint, weight_file
from methods.base import BaseMethod, MethodError, MethodInfo, Prediction, Target
from methods.sam import SamResult, SamSegmenter, sam_prompt

from .m2m import load_m2m, m2m_state, sam_decoder_deep

log = logging.getLogger(__name__)

GUIDANCE_MODES = ("box", "mask", "none")
#: ``inference_benchmark.py`` defaults ``--os8_width 10 --os4_width 20 --os1_width 10`` (= ``gradio_app.py``).
OS8_WIDTH, OS4_WIDTH, OS1_WIDTH = 10, 20, 10
#: ``utils/util.py``: a prediction below 1/255 is background, above 1 - 1/255 foreground.
LOW, HIGH = 1.0 / 255.0, 1.0 - 1.0 / 255.0


# ----------------------------------------------------------------------------- the official band functions
def ellipse(width: int) -> np.ndarray:
    """The structuring element of ``utils/util.py``'s eval mode: ``Kernels[width // 2]``, an OpenCV ellipse of
    size ``width // 2`` (even sizes are anchored at their centre ``size // 2``, as ``cv2`` does)."""
    import cv2

    size = width // 2
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def band_from_mask_oneside(mask: np.ndarray, width: int = OS8_WIDTH) -> np.ndarray:
    """``get_unknown_tensor_from_mask_oneside`` (eval): background pixels within the kernel's reach of the mask
    (everything but the mask and the background eroded by :func:`ellipse`), bool."""
    import cv2

    m = np.asarray(mask).astype(np.uint8)
    bg_core = cv2.erode(1 - m, ellipse(width))
    return (m != 1) & (bg_core != 1)


def band_from_pred_oneside(pred: np.ndarray, width: int) -> np.ndarray:
    """``get_unknown_tensor_from_pred_oneside`` (eval): the not-background pixels (>= 1/255) dilated by
    :func:`ellipse`, minus the foreground ones (> 1 - 1/255), bool."""
    import cv2

    p = np.asarray(pred, np.float32)
    unknown = cv2.dilate((p >= np.float32(LOW)).astype(np.uint8), ellipse(width))
    return (unknown == 1) & ~(p > np.float32(HIGH))


def outside_mask_box(mask: np.ndarray) -> np.ndarray:
    """``get_unknown_box_from_mask``: True outside ``[y_min:y_max, x_min:x_max]`` of the mask's foreground (the
    official end-exclusive slice, so the last foreground row and column count as outside). An empty mask (the
    official code fails on it) has no box: everything is outside."""
    out = np.ones(mask.shape, bool)
    ys, xs = np.nonzero(mask)
    if ys.size:
        out[ys.min():ys.max(), xs.min():xs.max()] = False
    return out


def refine_alpha(post_mask: np.ndarray, os8: np.ndarray, os4: np.ndarray, os1: np.ndarray,
                 mode: str = "box") -> np.ndarray:
    """``single_ms_inference``'s one-sided progressive refinement of the three M2M outputs (all H×W)."""
    mask = np.asarray(post_mask, np.float32)
    if mode == "mask":
        alpha = np.where(band_from_mask_oneside(mask, OS8_WIDTH), os8, mask)
    elif mode == "box":
        alpha = np.where(outside_mask_box(mask), mask, os8)
    elif mode == "none":
        alpha = np.array(os8, np.float32)
    else:
        raise ValueError(f"mam: guidance_mode must be one of {GUIDANCE_MODES}, got {mode!r}")
    alpha = np.where(band_from_pred_oneside(alpha, OS4_WIDTH), os4, alpha)
    alpha = np.where(band_from_pred_oneside(alpha, OS1_WIDTH), os1, alpha)
    return alpha.astype(np.float32)


# ----------------------------------------------------------------------------- the method
class MamMethod(BaseMethod):
    """SAM + MAM's M2M head on each target's own prompt (peers.md §9; ``methods/peers/mam.md``).

    ``sam_variant``/``sam_checkpoint``: the SAM the M2M head was trained on (ViT-B for ``mam_vitb.pth``);
    ``m2m_checkpoint``: ``mam_vitb.pth`` (GitHub/Google Drive) or ``mam_sam_vitb.pth`` (Hugging Face);
    ``sam_arch``: SAM architecture overrides (tiny test models only); ``guidance_mode``: box | mask | none
    (module docstring); ``max_points``: points sampled from a scribble prompt."""

    info = MethodInfo(
        name="mam",
        guidance="prompt",
        prompt_kinds=frozenset({"points", "mask", "scribble"}),
        description="Matting Anything (MAM): SAM mask + features → M2M head (OS8/OS4/OS1), official refinement",
        runtime_params=frozenset({"sam_checkpoint", "m2m_checkpoint", "device"}),
    )

    def __init__(self, sam_variant: str = "vit_b", sam_checkpoint: str | None = None,
                 m2m_checkpoint: str | None = None, sam_arch: Mapping[str, Any] | None = None,
                 guidance_mode: str = "box", max_points: int = 10, device: str = "auto") -> None:
        super().__init__()
        if guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"mam: guidance_mode must be one of {GUIDANCE_MODES}, got {guidance_mode!r}")
        if sam_variant != "vit_b":
            log.warning("mam: the released mam_vitb.pth was trained on SAM ViT-B; %s needs its own M2M weights",
                        sam_variant)
        self.guidance_mode, self.max_points = guidance_mode, int(max_points)
        self.m2m_file = weight_file(m2m_checkpoint, method="mam", what="M2M checkpoint (mam_vitb.pth)")
        state = m2m_state(self.m2m_file)
        self.sam = SamSegmenter(sam_variant, sam_checkpoint, arch=sam_arch, device=device, method="mam")
        self.m2m = sam_decoder_deep(256)
        load_m2m(self.m2m, state, path=self.m2m_file)
        self.m2m = self.m2m.to(self.sam.device).eval()
        self._fingerprint: str | None = None

    def predict_one(self, target: Target) -> Prediction | MethodError:
        prompt = target.prompt
        if prompt is None:
            return MethodError(f"mam: target '{target.sample_id}' has no prompt (guidance=prompt)")
        if prompt.kind not in self.info.prompt_kinds:
            return MethodError(f"mam: prompt kind '{prompt.kind}' not supported "
                               f"(supports {sorted(self.info.prompt_kinds)})")
        try:
            points, box = sam_prompt(prompt, max_points=self.max_points)
        except MethodError as exc:
            return MethodError(f"mam: target '{target.sample_id}': {exc}")
        self.sam.set_image(target.image)
        seg = self.sam.segment(points, box, multimask=True)
        os8, os4, os1 = self._m2m_alphas(seg, target.image.shape[:2])
        alpha = np.clip(refine_alpha(seg.mask, os8, os4, os1, self.guidance_mode), 0.0, 1.0)
        extras: dict[str, Any] = {"sam_mask": seg.mask}
        if points:
            extras["points"] = [[y, x, fg] for y, x, fg in points]
        if box is not None:
            extras["box"] = list(box)
        return Prediction(alpha, extras)

    def _m2m_alphas(self, seg: SamResult, size: tuple[int, int]) -> list[np.ndarray]:
        """The M2M head's os8/os4/os1 for the current SAM image and mask, cropped and resized to ``size``."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            guide = torch.from_numpy(seg.logits > self.sam.model.mask_threshold).float()[None, None]
            pred = self.m2m(self.sam.embeddings, self.sam.model_input, guide.to(self.sam.device))
            h, w = self.sam.predictor.input_size
            out = []
            for key in ("alpha_os8", "alpha_os4", "alpha_os1"):
                a = F.interpolate(pred[key][..., :h, :w], size, mode="bilinear", align_corners=False)
                out.append(a[0, 0].float().cpu().numpy())
        return out

    def fingerprint(self) -> str:
        """SAM's content hash and the M2M file's (paths and device do not enter)."""
        if self._fingerprint is None:
            m2m = content_fingerprint([self.m2m_file], {"model": "mam-m2m", "layers": "sam_decoder_deep"})
            self._fingerprint = f"{self.sam.fingerprint()}:{m2m}"
        return self._fingerprint

    def close(self) -> None:
        self.sam.close()
        self.m2m = None
