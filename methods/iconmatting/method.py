"""IconMatting behind the benchmark's method protocol.

``prepare`` encodes the episode's reference(s) once (one SD pass per reference batch) and
keeps only their RoI tokens; ``predict`` runs the SD pass and the decoder on batches of
targets and maps each prediction back to the target's full resolution.

Randomness: every image's noise generator (and, for ``interpolation=official_random``, its
interpolation draw) is seeded by :func:`~.features.image_seed` from the configured seed, the
episode seed given to ``prepare``, the image's role (``reference``/``target``) and its sample id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.types import BACKGROUND, FOREGROUND, Episode
from methods._hub import file_digest, resolve_device
from methods._hub import resolve_dtype as _resolve_dtype
from methods.base import BaseMethod, MethodError, MethodInfo, Reference, Target

from .checkpoint import load_decoder_weights
from .decoder import DecoderConfig, InContextDecoder
from .features import SD21_REPO, ExtractorSettings, SDFeatureExtractor, folder_fingerprint, image_seed
from .preprocess import (
    CROP_FILLS,
    INTERPOLATIONS,
    MODES,
    QUANTIZE,
    alpha_from_frame,
    alpha_to_frame,
    image_to_frame,
    labels_to_frame,
    make_frame,
    pick_interpolation,
)
from .roi import EmptyRoIError, marked_cells, prompt_cells, roi_cells, tokens_from_cells
from .tiny import randomize_decoder_

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
ROI_COMBINE = ("sum", "mean")
#: Version of the seeding scheme, part of the fingerprint: runs made with another scheme (v1: one
#: ``noise_seed`` for every image and role) are not mixed with these.
NOISE_SCHEME = "v2: sha256(noise_seed, episode seed, role, sample id) per image"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """fp32 (default, official) | bf16 | fp16 (autocast, opt-in) | 'auto' (bf16 on CUDA, fp32 elsewhere).

    Reduced precision runs the UNet and decoder under autocast on any device (CPU bf16 autocast is
    slow and meant for tests and measurements); the VAE and the inter-similarity stay fp32."""
    return _resolve_dtype(dtype, device, "iconmatting", cuda_auto="bf16")


class IconMattingMethod(BaseMethod):
    """In-context matting with SD 2.1 features and the official in-context decoder.

    Key parameters (see ``conf/method/iconmatting.yaml`` and the package README):
    ``sd_path`` (local diffusers folder or cached Hub id), ``checkpoint`` (official ``.ckpt``,
    plain state dict or safetensors), ``preprocess`` (``official768`` | ``full``),
    ``input_size`` (working square, 768 official), ``ensemble_size``/``timestep``/
    ``noise_seed``/``posterior`` (feature extraction), ``batch_size`` (targets per SD pass),
    ``dtype`` (fp32 default; bf16/fp16 opt-in), ``upcast_attention`` (honour the UNet config's
    fp32 attention in bf16/fp16), ``roi_combine`` (``sum`` | ``mean`` over several references),
    ``quantize`` (``round`` | ``truncate``: the official ×255 uint8 truncation).
    ``checkpoint=None`` requires ``allow_random_decoder=True`` and is for tests only.
    """

    info = MethodInfo(
        name="iconmatting",
        guidance="in_context",
        prompt_kinds=frozenset({"mask", "scribble", "points"}),
        max_references=4,
        description="IconMatting (CVPR 2024): SD 2.1 features, inter/intra-similarity, ViTMatte-style decoder",
        # Where the weights are and how the same maths is scheduled; dtype stays result-changing.
        runtime_params=frozenset({"sd_path", "checkpoint", "prompt_embeds_file", "device", "batch_size", "compile",
                                  "attention_impl", "attn_chunk_mb", "check_sd21", "trust_checkpoint"}),
    )

    def __init__(
        self,
        sd_path: str | None = None,
        checkpoint: str | None = None,
        preprocess: str = "official768",
        input_size: int = 768,
        interpolation: str = "fixed",
        interp_seed: int = 0,
        crop_fill: str = "edge",
        quantize: str = "round",
        device: str = "auto",
        dtype: str = "fp32",
        upcast_attention: bool = True,
        ensemble_size: int = 4,
        timestep: int = 200,
        noise_seed: int = 0,
        posterior: str = "sample",
        batch_size: int = 1,
        compile: bool = False,
        prompt_embeds_file: str | None = None,
        check_sd21: bool = True,
        attention_impl: str = "sdpa",
        attn_chunk_mb: int = 32,
        prompt_top_m: int = 16,
        roi_combine: str = "sum",
        trust_checkpoint: bool = False,
        allow_random_decoder: bool = False,
        decoder_seed: int = 0,
    ) -> None:
        super().__init__()
        if preprocess not in MODES:
            raise ValueError(f"iconmatting: preprocess must be one of {MODES}, got {preprocess!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"iconmatting: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if crop_fill not in CROP_FILLS:
            raise ValueError(f"iconmatting: crop_fill must be one of {CROP_FILLS}, got {crop_fill!r}")
        if quantize not in QUANTIZE:
            raise ValueError(f"iconmatting: quantize must be one of {QUANTIZE}, got {quantize!r}")
        if roi_combine not in ROI_COMBINE:
            raise ValueError(f"iconmatting: roi_combine must be one of {ROI_COMBINE}, got {roi_combine!r}")
        if batch_size < 1:
            raise ValueError("iconmatting: batch_size must be >= 1")
        if checkpoint is None and not allow_random_decoder:
            raise ValueError(
                "iconmatting: a decoder checkpoint is required (checkpoint=...); "
                "allow_random_decoder=True builds random weights and is for tests only"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.preprocess, self.input_size, self.crop_fill = preprocess, int(input_size), crop_fill
        self.quantize, self.roi_combine = quantize, roi_combine
        self.interpolation, self.interp_seed = interpolation, int(interp_seed)
        self.batch_size, self.prompt_top_m = int(batch_size), int(prompt_top_m)
        self.settings = ExtractorSettings(
            timestep=int(timestep),
            ensemble_size=int(ensemble_size),
            posterior=posterior,
            noise_seed=int(noise_seed),
            attention_impl=attention_impl,
            attn_chunk_bytes=int(attn_chunk_mb) << 20,
            upcast_attention=bool(upcast_attention),
        )
        self.extractor = SDFeatureExtractor.from_pretrained(
            sd_path or SD21_REPO,
            self.settings,
            prompt_embeds_file=prompt_embeds_file,
            check_sd21=check_sd21,
            device=self.device,
            dtype=self.dtype,
        )
        cfg = DecoderConfig.for_input(self.input_size, self.extractor.feature_channels)
        self.decoder = self._build_decoder(cfg, checkpoint, trust_checkpoint, decoder_seed)
        self._checkpoint = checkpoint
        self._decoder_seed = int(decoder_seed) if checkpoint is None else None
        self._fingerprint: str | None = None
        self._roi_tokens: torch.Tensor | None = None
        self._roi_weights: torch.Tensor | None = None
        self._closed = False
        if compile:
            self._compile()

    # ------------------------------------------------------------------ construction
    def _build_decoder(self, cfg: DecoderConfig, checkpoint: str | None, trust: bool, seed: int) -> InContextDecoder:
        decoder = InContextDecoder(cfg)
        if checkpoint is not None:
            load_decoder_weights(decoder, checkpoint, trust_checkpoint=trust)
        else:
            randomize_decoder_(decoder, seed)
            log.warning("iconmatting: using a RANDOM decoder (allow_random_decoder=True): outputs are meaningless")
        return decoder.eval().to(self.device)

    def _compile(self) -> None:
        """Best effort: compile the decoder and the UNet's ResNet blocks (attention stays eager)."""
        self.decoder.compile()
        for module in self.extractor.unet.modules():
            if type(module).__name__ == "ResnetBlock2D":
                module.compile()

    # ------------------------------------------------------------------ helpers
    def noise_seed_for(self, sample_id: str, role: str) -> int:
        """Seed of this image's noise generator in the current episode (``prepare``'s seed)."""
        return image_seed(self.settings.noise_seed, self.seed, role, sample_id)

    def _rng(self, sample_id: str, role: str) -> np.random.Generator | None:
        if self.interpolation != "official_random":
            return None
        return np.random.default_rng(image_seed(self.interp_seed, self.seed, role, sample_id, stream="interpolation"))

    def _image(self, sample_id: str, image: np.ndarray, role: str):
        frame = make_frame(image.shape[:2], self.input_size, self.preprocess)
        rng = self._rng(sample_id, role)
        tensor = image_to_frame(image, frame, pick_interpolation("image", self.interpolation, rng))
        return frame, torch.from_numpy(tensor), rng

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=enabled)

    # ------------------------------------------------------------------ protocol
    def prepare(self, references: Sequence[Reference], *, seed: int = 0, episode: Episode | None = None) -> None:
        """Encode the reference(s) once and keep their RoI tokens for the episode."""
        self._check_open()
        super().prepare(references, seed=seed, episode=episode)
        self._roi_tokens = self._roi_weights = None
        images, prompts = [], []
        for ref in references:
            if ref.image.shape[:2] != tuple(ref.prompt.shape):
                raise MethodError(f"iconmatting: prompt shape {ref.prompt.shape} != image {ref.image.shape[:2]}")
            frame, tensor, rng = self._image(ref.sample_id, ref.image, "reference")
            images.append(tensor)
            if ref.prompt.kind == "mask":
                alpha = ref.prompt.foreground_mask().astype(np.float32)
                interp = pick_interpolation("alpha", self.interpolation, rng)
                prompts.append(torch.from_numpy(alpha_to_frame(alpha, frame, interp)))
            else:
                prompts.append(torch.from_numpy(labels_to_frame(ref.prompt.labels(), frame)))
        sparse = any(r.prompt.kind != "mask" for r in references)
        seeds = [self.noise_seed_for(r.sample_id, "reference") for r in references]
        ft, attn = self.extractor.reference_features(torch.stack(images), with_attention=sparse, seeds=seeds)
        grid = (ft.shape[-2], ft.shape[-1])
        tokens, report = [], []
        for i, ref in enumerate(references):
            p = prompts[i]
            if ref.prompt.kind == "mask":
                cells = roi_cells(p, grid)
            else:
                fg = marked_cells(p, grid, FOREGROUND)
                bg = marked_cells(p, grid, BACKGROUND)
                cells = prompt_cells(fg, bg, attn[i], self.prompt_top_m)
            tokens.append(tokens_from_cells(ft[i], cells))
            report.append(f"{ref.sample_id} ({ref.prompt.kind}): {int(cells.sum())} token(s)")
        k = sum(t.shape[0] for t in tokens)
        if k == 0:
            kernel = self.input_size // grid[0]
            raise EmptyRoIError(
                f"iconmatting: empty RoI — no {kernel}×{kernel} cell of the {self.input_size}² working frame is "
                f"fully inside the reference prompt ({'; '.join(report)}). Thin or small objects vanish under "
                "the official min-pooling; use a larger prompt, preprocess='full', or points/scribbles."
            )
        log.debug("iconmatting: RoI tokens %s", "; ".join(report))
        self._roi_tokens = torch.cat(tokens).to(self.device)
        self._roi_weights = self._token_weights([t.shape[0] for t in tokens])

    def _token_weights(self, counts: list[int]) -> torch.Tensor | None:
        """Weights of the token maps in the inter-similarity: ``None`` (plain sum over all tokens of
        all references) for ``roi_combine=sum`` or one reference; for ``mean``, 1/R per token, R =
        the references that have tokens, so the map is the mean of the per-reference (official) sums."""
        used = [k for k in counts if k > 0]
        if self.roi_combine == "sum" or len(used) < 2:
            return None
        return torch.full((sum(used),), 1.0 / len(used), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def predict(self, targets: Sequence[Target]) -> list[np.ndarray]:
        """Alpha (float32, [0, 1], target H×W) for every target; batches of ``batch_size``."""
        self._check_open()
        _ = self.references  # raises if prepare() was not called
        if self._roi_tokens is None:
            raise MethodError("iconmatting: predict() called before a successful prepare()")
        out: list[np.ndarray] = []
        for start in range(0, len(targets), self.batch_size):
            chunk = targets[start : start + self.batch_size]
            frames, images = [], []
            for t in chunk:
                frame, tensor, _ = self._image(t.sample_id, t.image, "target")
                frames.append(frame)
                images.append(tensor)
            batch = torch.stack(images).to(self.device)
            seeds = [self.noise_seed_for(t.sample_id, "target") for t in chunk]
            feats = self.extractor.target_features(batch, seeds=seeds)
            with self._autocast():
                res = self.decoder(batch, feats.ft_cor, feats.ft_matting, feats.attn, self._roi_tokens,
                                   self._roi_weights)
            alpha = res.alpha.float().clamp(0, 1).cpu().numpy()[:, 0]
            out.extend(alpha_from_frame(a, f, self.crop_fill, self.quantize)
                       for a, f in zip(alpha, frames, strict=True))
        return out

    def predict_one(self, target: Target) -> np.ndarray:
        return self.predict([target])[0]

    def close(self) -> None:
        """Release the SD models, the decoder and the episode state (and cached CUDA memory).

        The fingerprint stays available; ``prepare``/``predict`` afterwards raise :class:`MethodError`."""
        if self._closed:
            return
        self.fingerprint()
        self._closed = True
        self._roi_tokens = self._roi_weights = None
        del self.extractor, self.decoder
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _check_open(self) -> None:
        if self._closed:
            raise MethodError("iconmatting: the method was closed")

    # ------------------------------------------------------------------ identity
    def settings_dict(self) -> dict[str, Any]:
        """Everything besides weights that changes outputs."""
        return {
            "preprocess": self.preprocess,
            "input_size": self.input_size,
            "interpolation": self.interpolation,
            "interp_seed": self.interp_seed if self.interpolation == "official_random" else None,
            "crop_fill": self.crop_fill,
            "quantize": self.quantize,
            "dtype": DTYPE_NAMES[self.dtype],
            # the attention kernel, its chunk size and the upcast flag schedule the same maths unless
            # the attention really runs in bf16/fp16: identity is the precision it runs in
            "attention_precision": "fp32" if self.extractor.attention_fp32 else DTYPE_NAMES[self.dtype],
            "extractor": {k: v for k, v in vars(self.settings).items()
                          if k not in ("attn_chunk_bytes", "attention_impl", "upcast_attention")},
            "noise": NOISE_SCHEME,
            "prompt_top_m": self.prompt_top_m,
            "roi_combine": self.roi_combine,
            "random_decoder_seed": self._decoder_seed,
        }

    def fingerprint(self) -> str:
        """sha256 over the decoder checkpoint bytes, the SD folder's configs and sampled weights and
        :meth:`settings_dict`: content only, so moving the files or changing the device keeps it.

        The empty-prompt embedding is not hashed (its low bits depend on the CPU that computed it);
        the text encoder it comes from is part of the SD folder's fingerprint."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self._checkpoint is not None:
                h.update(f"ckpt:{Path(self._checkpoint).stat().st_size}:{file_digest(self._checkpoint)}".encode())
            h.update(f"sd:{folder_fingerprint(self.extractor.source)}".encode())
            h.update(json.dumps(self.settings_dict(), sort_keys=True, default=str).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint
