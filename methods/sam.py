"""The one SAM wrapper of the project (MatAny, MAM and ICMP use it), on Meta's ``segment-anything`` package.

The model is built here from ``segment_anything.modeling`` classes exactly as
``segment_anything/build_sam.py:_build_sam`` builds it (facebookresearch/segment-anything, PyPI 1.0), so that
the official checkpoints (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``: plain
state dicts) load **strictly**, and so that an ``arch`` mapping can shrink the image encoder for tiny test
models. Prompting goes through ``SamPredictor`` (resize the long side to ``image_size``, normalise, pad, encode
once per image; prompts transformed with the same resize). Nothing is downloaded: a missing file is a
:class:`~methods._hub.WeightsNotFound` naming where it was expected (``methods/peers/sam.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.types import BACKGROUND, FOREGROUND, Prompt
from methods._hub import content_fingerprint, read_state_dict, resolve_device, state_problems, weight_file
from methods.base import MethodError

#: The official checkpoint file of each variant (dl.fbaipublicfiles.com/segment_anything/<name>).
SAM_CHECKPOINTS = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}

#: ``build_sam.py``: ``build_sam_vit_b`` / ``_vit_l`` / ``_vit_h`` (``image_size`` is 1024 for all three).
SAM_ARCHS: dict[str, dict[str, Any]] = {
    "vit_b": {"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
              "encoder_global_attn_indexes": [2, 5, 8, 11], "image_size": 1024},
    "vit_l": {"encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [5, 11, 17, 23], "image_size": 1024},
    "vit_h": {"encoder_embed_dim": 1280, "encoder_depth": 32, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [7, 15, 23, 31], "image_size": 1024},
}
ARCH_KEYS = frozenset(SAM_ARCHS["vit_b"])
#: SAM's input normalisation on 0-255 RGB (``build_sam.py``).
PIXEL_MEAN, PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


class CheckpointMismatch(ValueError):
    """A checkpoint's keys or shapes do not match the module it is loaded into."""


@dataclass(frozen=True)
class SamResult:
    """One chosen SAM mask: ``mask`` (bool, image size), its predicted IoU ``score`` and its low-res ``logits``
    (float32, ``image_size / 4`` square: 256×256 for the official models)."""

    mask: np.ndarray
    score: float
    logits: np.ndarray


def sam_arch(variant: str, arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The architecture of ``variant`` with ``arch``'s overrides (JSON-able values; unknown keys refused)."""
    if variant not in SAM_ARCHS:
        raise ValueError(f"SAM variant must be one of {sorted(SAM_ARCHS)}, got {variant!r}")
    extra = set(arch or {}) - ARCH_KEYS
    if extra:
        raise ValueError(f"unknown SAM arch key(s) {sorted(extra)} (known: {sorted(ARCH_KEYS)})")
    out = {**SAM_ARCHS[variant], **dict(arch or {})}
    out["encoder_global_attn_indexes"] = [int(i) for i in out["encoder_global_attn_indexes"]]
    for key in ARCH_KEYS - {"encoder_global_attn_indexes"}:
        out[key] = int(out[key])
    if out["image_size"] % 16:
        raise ValueError(f"SAM image_size must be a multiple of the patch size 16, got {out['image_size']}")
    return out


def build_sam(arch: Mapping[str, Any]) -> Any:
    """A ``segment_anything.modeling.Sam`` built as ``build_sam.py:_build_sam`` does (prompt dim 256, patch 16,
    window 14, relative positions, 3 multimask outputs), from ``arch`` (see :func:`sam_arch`); eval mode."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    prompt_dim, patch, size = 256, 16, int(arch["image_size"])
    encoder = ImageEncoderViT(
        depth=int(arch["encoder_depth"]), embed_dim=int(arch["encoder_embed_dim"]), img_size=size, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=int(arch["encoder_num_heads"]),
        patch_size=patch, qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=tuple(arch["encoder_global_attn_indexes"]), window_size=14, out_chans=prompt_dim)
    prompts = PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(size // patch, size // patch),
                            input_image_size=(size, size), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8),
                          transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256)
    sam = Sam(image_encoder=encoder, prompt_encoder=prompts, mask_decoder=decoder, pixel_mean=PIXEL_MEAN,
              pixel_std=PIXEL_STD)
    return sam.eval()


def load_strict(module: Any, state: Mapping[str, Any], *, method: str, what: str, path: Path | str,
                assign: bool = False) -> None:
    """Load ``state`` into ``module`` strictly: every missing, unexpected or mis-shaped key is listed in a
    :class:`CheckpointMismatch` (a renamed key shows up as one missing and one unexpected name). ``assign``
    takes the file's tensors as the parameters (a module built on the meta device)."""
    problems = state_problems(module, state)
    if problems:
        raise CheckpointMismatch(f"{method}: the {what} {path} does not match the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True, assign=assign)


def _load_sam(arch: Mapping[str, Any], path: Path, method: str) -> Any:
    """SAM with the checkpoint's weights, built on the meta device: no random init, one copy of the weights."""
    import torch

    state = read_state_dict(path, method=method, strip="")
    with torch.device("meta"):
        model = build_sam(arch)
    load_strict(model, state, method=method, what="SAM checkpoint", path=path, assign=True)
    model.pixel_mean = torch.tensor(PIXEL_MEAN).view(-1, 1, 1)  # non-persistent buffers: not in the file
    model.pixel_std = torch.tensor(PIXEL_STD).view(-1, 1, 1)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{method}: SAM tensors not set by the checkpoint: {left}")
    return model.eval()


def _rgb8(image: np.ndarray, method: str) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise MethodError(f"{method}: SAM needs a uint8 H×W×3 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


class SamSegmenter:
    """SAM on one image at a time: ``set_image`` encodes it once, ``segment`` answers prompts on it.

    ``variant``: vit_b | vit_l | vit_h; ``checkpoint``: the official ``.pth`` of that variant (required);
    ``arch``: overrides of the architecture (tiny test models); ``method``: the adapter named in errors."""

    def __init__(self, variant: str = "vit_b", checkpoint: str | None = None, *, arch: Mapping[str, Any] | None = None,
                 device: str = "auto", method: str = "sam") -> None:
        import torch
        from segment_anything import SamPredictor

        self.method, self.variant = method, variant
        self.arch = sam_arch(variant, arch)
        what = f"SAM {variant} checkpoint ({SAM_CHECKPOINTS[variant]})"
        self.checkpoint = weight_file(checkpoint, method=method, what=what)
        self.device = resolve_device(device)
        self.model = _load_sam(self.arch, self.checkpoint, method).to(self.device)
        self.predictor = SamPredictor(self.model)
        self._input: torch.Tensor | None = None
        self._fingerprint: str | None = None

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` (uint8 H×W×3 RGB) once; later ``segment`` calls prompt on it.

        Same maths as ``SamPredictor.set_image``; the normalised, padded model input is kept as
        :attr:`model_input` (MAM's M2M module takes it, ``forward_m2m_inference``'s ``image``)."""
        import torch

        image = _rgb8(image, self.method)
        with torch.inference_mode():
            resized = self.predictor.transform.apply_image(image)
            x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
            self.predictor.set_torch_image(x, image.shape[:2])
            self._input = self.model.preprocess(x)

    def segment(self, points: Sequence[tuple[int, int, bool]] = (), box: tuple[int, int, int, int] | None = None,
                *, multimask: bool = False) -> SamResult:
        """The mask for ``points`` ((y, x, is_foreground), like :class:`~benchmark.types.Prompt`) and/or ``box``
        ((x0, y0, x1, y1)) on the current image; ``multimask`` keeps the highest-IoU of SAM's three masks,
        otherwise SAM's single-mask output."""
        import torch

        if not self.predictor.is_image_set:
            raise MethodError(f"{self.method}: SAM segment() called before set_image()")
        if not points and box is None:
            raise MethodError(f"{self.method}: SAM needs points or a box")
        coords = np.array([[x, y] for y, x, _ in points], np.float64) if points else None
        labels = np.array([1 if fg else 0 for _, _, fg in points], np.int64) if points else None
        box_xyxy = np.array(box, np.float64) if box is not None else None
        with torch.inference_mode():
            masks, scores, logits = self.predictor.predict(coords, labels, box_xyxy, multimask_output=multimask)
        i = int(np.argmax(scores)) if multimask else 0
        return SamResult(np.asarray(masks[i], bool), float(scores[i]), np.asarray(logits[i], np.float32))

    @property
    def embeddings(self) -> Any:
        """The image encoder's output for the current image, (1, 256, image_size/16, image_size/16)."""
        if not self.predictor.is_image_set:
            raise MethodError(f"{self.method}: SAM embeddings read before set_image()")
        return self.predictor.features

    @property
    def model_input(self) -> Any:
        """The current image as the encoder saw it: resized, normalised, zero-padded, (1, 3, S, S)."""
        if self._input is None:
            raise MethodError(f"{self.method}: SAM model input read before set_image()")
        return self._input

    def fingerprint(self) -> str:
        """Content hash of the checkpoint and the architecture (not of the path or device)."""
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint([self.checkpoint], {"model": "sam", "arch": self.arch})
        return self._fingerprint

    def close(self) -> None:
        """Drop the image state and the model (and CUDA's cache when it ran there); the segmenter is unusable after."""
        self.predictor.reset_image()
        self._input = None
        self.model = self.predictor.model = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- prompts
def _even_pick(ys: np.ndarray, xs: np.ndarray, k: int, fg: bool) -> list[tuple[int, int, bool]]:
    """``k`` pixels evenly spaced along the raster order of (ys, xs) (ends included)."""
    if k <= 0 or ys.size == 0:
        return []
    idx = np.unique(np.rint(np.linspace(0, ys.size - 1, min(k, ys.size))).astype(int))
    return [(int(ys[i]), int(xs[i]), fg) for i in idx]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a mask's foreground, max inclusive as MAM's ``generator_tensor_dict``; None if empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def sam_prompt(prompt: Prompt, *, max_points: int = 10) -> tuple[list[tuple[int, int, bool]],
                                                                   tuple[int, int, int, int] | None]:
    """SAM's inputs for one of our prompts: (points as (y, x, fg), box as (x0, y0, x1, y1) or None).

    - ``points``: the points themselves;
    - ``mask``: the mask's bounding box (peers.md §8: the box of the ground truth is a reproducible per-image
      prompt; MAM's benchmark script prompts with it);
    - ``scribble``: up to ``max_points`` stroke pixels, evenly spaced along each label's raster order, half of
      them (``max_points // 2``) at most for the background when it is marked.

    A prompt that marks no foreground is a :class:`MethodError`."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if prompt.kind == "mask":
        box = mask_box(prompt.mask if prompt.mask is not None else np.zeros(prompt.shape, bool))
        if box is None:
            raise MethodError("SAM prompt: the mask prompt is empty")
        return [], box
    if prompt.kind == "points":
        points = [(int(y), int(x), bool(fg)) for y, x, fg in prompt.points]
        if not any(fg for _, _, fg in points):
            raise MethodError("SAM prompt: no foreground point")
        return points, None
    if prompt.kind == "scribble":
        labels = prompt.labels()
        fy, fx = np.nonzero(labels == FOREGROUND)
        by, bx = np.nonzero(labels == BACKGROUND)
        if fy.size == 0:
            raise MethodError("SAM prompt: the scribble marks no foreground")
        n_bg = min(by.size, max_points // 2)
        n_fg = min(fy.size, max_points - n_bg)
        return _even_pick(fy, fx, n_fg, True) + _even_pick(by, bx, n_bg, False), None
    raise MethodError(f"SAM prompt: unknown prompt kind {prompt.kind!r}")
