"""SegGPT (BAAI, baaivision/Painter ``SegGPT/``) as an in-context matting peer, transformers port.

Facts from /work/shared/docs/peers.md §1 (SegGPT):

- ``SegGptForImageSegmentation`` + ``SegGptImageProcessor`` (``BAAI/seggpt-vit-large``). The
  processor resizes every image to 448×448 (bicubic; masks nearest), rescales by 1/255 and normalises
  with ImageNet mean/std, the prompt mask too. A binary mask with ``num_labels=1`` becomes RGB through
  the palette (0 → black, 1 → white). The model stacks prompt above target (896×448) and predicts
  the masked bottom half.
- ``pred_masks`` is (B, 3, 2·448, 448); only the bottom half is the prediction. The processor's
  ``post_process_semantic_segmentation`` un-normalises, resizes **nearest** and returns class maps
  (``output=hard``). For a soft alpha (``output=soft``, the default, since matting is scored on soft
  values and thresholding throws the edges away) we un-normalise the bottom half, average the three
  channels, clip to [0, 1] and resize **bilinearly** to the target's own size (not the 448 square:
  that would distort the aspect ratio).
- several references: one (target, prompt_i) pair per reference in one batch with
  ``feature_ensemble=True`` (the encoder averages the target half over the batch), and the first
  element of the batch is the answer, as Painter's ``run_one_image`` takes ``y[0]``. Because the
  ensemble averages over the *whole* batch, a forward then holds one target only; with one reference
  ``batch_size`` targets share a forward (``feature_ensemble=False``: samples never mix).

Images reach the processor as writable copies (the runner's arrays are read-only, which torch.from_numpy
warns about). The references' processor output (images and masks at 448² normalised) is computed once per episode
in ``prepare`` and reused by every ``predict``. Evaluation mode and no sampling: deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmark.types import Episode
from methods._hub import (
    content_fingerprint,
    folder_files,
    load_pretrained,
    model_dir,
    resolve_device,
    resolve_dtype,
)
from methods.base import BaseMethod, MethodError, MethodInfo, Reference, Target

DEFAULT_MODEL = "BAAI/seggpt-vit-large"
OUTPUTS = ("soft", "hard")
EMBEDDING_TYPES = ("instance", "semantic")
#: Bumped when the adapter's pre/post-processing changes the numbers (part of the fingerprint).
ADAPTER_VERSION = "seggpt-adapter-v1"


def _square_size(processor: Any) -> tuple[int, int]:
    size = processor.size
    return int(size["height"]), int(size["width"])


def _check_sizes(model: Any, processor: Any) -> None:
    """The model's canvas (prompt above target) must be two processor images stacked."""
    h, w = _square_size(processor)
    canvas = tuple(int(v) for v in model.config.image_size)
    if canvas != (2 * h, w):
        raise ValueError(f"seggpt: model image_size {list(canvas)} is not two {h}×{w} processor images stacked "
                         "(check preprocessor_config.json against config.json)")


class SegGptMethod(BaseMethod):
    """SegGPT: the target is painted from the reference image(s) and their mask prompts.

    Parameters: ``model_path`` (folder or cached Hub id; methods/peers/seggpt.md), ``output``
    (``soft`` | ``hard``), ``embedding_type`` (``instance`` | ``semantic``: SegGPT's type token),
    ``device``, ``dtype`` (fp32 | fp16 | bf16 | auto; reduced precision needs CUDA), ``batch_size``
    (targets per forward with one reference).
    """

    info = MethodInfo(
        name="seggpt",
        guidance="in_context",
        prompt_kinds=frozenset({"mask"}),
        max_references=8,
        runtime_params=frozenset({"model_path", "device", "batch_size"}),
        description="SegGPT (BAAI) in-context segmentation, soft bottom-half map as alpha, transformers port",
    )

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, output: str = "soft", embedding_type: str = "instance",
                 device: str = "auto", dtype: str = "fp32", batch_size: int = 4) -> None:
        import torch

        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"seggpt: output must be one of {OUTPUTS}, got {output!r}")
        if embedding_type not in EMBEDDING_TYPES:
            raise ValueError(f"seggpt: embedding_type must be one of {EMBEDDING_TYPES}, got {embedding_type!r}")
        if int(batch_size) < 1:
            raise ValueError(f"seggpt: batch_size must be ≥ 1, got {batch_size}")
        self.output, self.embedding_type, self.batch_size = output, embedding_type, int(batch_size)
        self.root = model_dir(model_path, method="seggpt")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, "seggpt")
        if self.dtype != torch.float32 and self.device.type != "cuda":
            raise ValueError(f"seggpt: dtype {dtype} needs a CUDA device (got {self.device}); use fp32 on CPU")
        self.model: Any = self._load_model()
        self.processor: Any = self._load_processor()
        _check_sizes(self.model, self.processor)
        self._fingerprint = content_fingerprint(folder_files(self.root), {"adapter": ADAPTER_VERSION})
        #: how many times reference images were encoded (once per ``prepare``)
        self.reference_encodings = 0
        self._prompt: dict[str, Any] | None = None

    # -- loading ---------------------------------------------------------------------------------

    def _load_model(self) -> Any:
        from transformers import SegGptForImageSegmentation

        return load_pretrained(SegGptForImageSegmentation, self.root, self.device, self.dtype)

    def _load_processor(self) -> Any:
        """The folder's processor; without preprocessor_config.json, the defaults at the model's half-canvas."""
        from transformers import SegGptImageProcessor

        if (self.root / "preprocessor_config.json").is_file():
            return load_pretrained(SegGptImageProcessor, self.root)
        h, w = self.model.config.image_size
        return SegGptImageProcessor(size={"height": int(h) // 2, "width": int(w)})

    # -- episode ---------------------------------------------------------------------------------

    def prepare(self, references: Sequence[Reference], *, seed: int = 0, episode: Episode | None = None) -> None:
        """Check the references (BaseMethod: mask prompts only, at most 8) and encode them once."""
        self._prompt = None  # a failed prepare must not leave the previous episode's references behind
        super().prepare(references, seed=seed, episode=episode)
        self._prompt = self._encode_references(self.references)
        self.reference_encodings += 1

    def _encode_references(self, references: Sequence[Reference]) -> dict[str, Any]:
        """Processor output for the reference images and their binary masks (palette 0 → black, 1 → white)."""
        masks = [np.asarray(r.prompt.mask, dtype=bool).astype(np.uint8) for r in references]
        batch = self.processor(images=None, prompt_images=[np.array(r.image) for r in references], prompt_masks=masks,
                               num_labels=1, return_tensors="pt")
        return {k: batch[k].to(self.device, self.dtype) for k in ("prompt_pixel_values", "prompt_masks")}

    # -- prediction ------------------------------------------------------------------------------

    def predict(self, targets: Sequence[Target]) -> list[Any]:
        """Alphas at each target's size: ``batch_size`` targets per forward (one per forward with
        several references, whose feature ensemble averages over the batch)."""
        if self._prompt is None:
            raise MethodError("seggpt: predict() called before prepare()")
        step = self.batch_size if len(self.references) == 1 else 1
        out: list[Any] = []
        for start in range(0, len(targets), step):
            out.extend(self._predict_chunk(list(targets[start:start + step])))
        return out

    def _predict_chunk(self, targets: list[Target]) -> list[np.ndarray]:
        import torch

        assert self._prompt is not None
        pixels = self.processor(images=[np.array(t.image) for t in targets], return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.dtype)
        k = len(self.references)
        with torch.inference_mode():
            if k == 1:
                n = len(targets)
                masks = self._forward(pixels, self._prompt["prompt_pixel_values"].expand(n, -1, -1, -1),
                                      self._prompt["prompt_masks"].expand(n, -1, -1, -1), ensemble=False)
            else:
                masks = self._forward(pixels.expand(k, -1, -1, -1), self._prompt["prompt_pixel_values"],
                                      self._prompt["prompt_masks"], ensemble=True)[:1]
            return [self._alpha(masks[i:i + 1], t.image.shape[:2]) for i, t in enumerate(targets)]

    def _forward(self, pixels: Any, prompt_pixels: Any, prompt_masks: Any, *, ensemble: bool) -> Any:
        """``pred_masks`` (B, 3, 2h, w) for B (target, prompt) pairs."""
        outputs = self.model(pixel_values=pixels, prompt_pixel_values=prompt_pixels, prompt_masks=prompt_masks,
                             feature_ensemble=ensemble, embedding_type=self.embedding_type)
        return outputs.pred_masks.float()

    def _alpha(self, pred_masks: Any, size: tuple[int, int]) -> np.ndarray:
        """float32 alpha at ``size`` from one (1, 3, 2h, w) prediction: soft or the processor's hard map."""
        if self.output == "hard":
            seg = self.processor.post_process_semantic_segmentation(
                SimpleNamespace(pred_masks=pred_masks), target_sizes=[size], num_labels=1)[0]
            return seg.cpu().numpy().astype(np.float32)
        return soft_alpha(pred_masks, self.processor.image_mean, self.processor.image_std, size)

    def fingerprint(self) -> str:
        """Content hash of the folder's config, weights and processor files."""
        return self._fingerprint

    def close(self) -> None:
        import torch

        self.model, self._prompt = None, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def soft_alpha(pred_masks: Any, mean: Sequence[float], std: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """Bottom half of a (1, 3, 2h, w) ``pred_masks``, un-normalised with the processor's mean/std,
    averaged over channels, clipped to [0, 1], resized bilinearly to ``size`` (antialiased when
    shrinking): float32 H×W."""
    import torch
    import torch.nn.functional as F

    half = pred_masks[:, :, pred_masks.shape[2] // 2:, :].float()
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=half.device).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=half.device).view(1, 3, 1, 1)
    alpha = (half * std_t + mean_t).mean(dim=1, keepdim=True).clamp(0.0, 1.0)
    alpha = F.interpolate(alpha, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return alpha[0, 0].clamp(0.0, 1.0).cpu().numpy().astype(np.float32)
