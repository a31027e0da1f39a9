"""Stable Diffusion 2.1 feature extractor on current diffusers (study §4).

One UNet pass per image batch at timestep 200 over an ensemble of E noisy copies:
- correspondence/matting features: ensemble means of up-block 0 and 1 outputs
  (latent/4 and latent/2; 24² and 48² for a 768 input), captured by forward hooks;
- self-attention maps at those two resolutions: the official layers (latent/4:
  ``down_blocks.2`` + ``up_blocks.1``; latent/2: ``down_blocks.1`` + ``up_blocks.2``),
  averaged over ensemble, heads and layers by :mod:`.attention`.
The pass stops as soon as the last needed output exists: after up block 1 for a reference
(no maps), after the last ``up_blocks.2`` self-attention for a target; up block 3,
``conv_norm_out`` and ``conv_out`` never run.

Noise is drawn on the CPU from one ``torch.Generator`` per image (VAE posterior ε first, then
the diffusion noise), so features are a deterministic function of (image, that image's seed)
on any backend and independent of batch composition. The caller gives each image its seed
(the method derives it with :func:`image_seed` from ``noise_seed``, the episode seed, the
image's role and its sample id); without one every image uses ``noise_seed``. Both draws can
be injected for parity with recorded official noise.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .attention import AttentionCapture, CaptureAttnProcessor, StopForward

log = logging.getLogger(__name__)

SD21_REPO = "stabilityai/stable-diffusion-2-1"
DOWN_TYPES = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
UP_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
#: Official capture layers per resolution group (self-attention ``attn1`` inside these blocks).
CAPTURE_BLOCKS = {"low": ("down_blocks.2.", "up_blocks.1."), "high": ("down_blocks.1.", "up_blocks.2.")}


def image_seed(noise_seed: int, episode_seed: int, role: str, sample_id: str, stream: str = "noise") -> int:
    """A 64-bit seed for one image's generator: SHA-256 over (stream, noise_seed, episode seed, role,
    sample id), the scheme of ``benchmark/seeding.py`` (never Python's ``hash``, so it is the same in
    every process and on every platform). Reference and target of one sample get different seeds."""
    text = "\x1f".join(["iconmatting", stream, str(int(noise_seed)), str(int(episode_seed)), role, str(sample_id)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


class SDModelError(ValueError):
    """The Stable Diffusion folder is missing, incomplete or not the expected model."""


@dataclass(frozen=True)
class ExtractorSettings:
    """Official defaults: t = 200, E = 4, posterior sampling."""

    timestep: int = 200
    ensemble_size: int = 4
    posterior: str = "sample"  # "sample" (official) or "mean" (deterministic latents)
    noise_seed: int = 0
    attn_chunk_bytes: int = 32 << 20
    #: "sdpa" (fast) or "math" (explicit fp32 softmax attention in every UNet/VAE attention
    #: layer, as the official xformers kernel computes it; used for golden parity).
    attention_impl: str = "sdpa"
    #: Encode each ensemble member separately (official); False encodes each image once.
    vae_per_member: bool = False
    #: Run the UNet on channels-last latents (what the official CPU run did; fast on GPUs too).
    channels_last: bool = True
    #: Honour the UNet config's ``upcast_attention`` in bf16/fp16: SDPA from fp32 inputs in those
    #: layers (SD 2.1 asks for it). False is the fast path (attention in the working dtype).
    upcast_attention: bool = True

    @classmethod
    def official_numerics(cls, **overrides) -> ExtractorSettings:
        """Settings that reproduce the official computation most closely (slower)."""
        return cls(**{"attention_impl": "math", "vae_per_member": True, "channels_last": True, **overrides})

    def __post_init__(self) -> None:
        if self.attention_impl not in ("sdpa", "math"):
            raise ValueError(f"attention_impl must be 'sdpa' or 'math', got {self.attention_impl!r}")
        if self.posterior not in ("sample", "mean"):
            raise ValueError(f"posterior must be 'sample' or 'mean', got {self.posterior!r}")
        if self.ensemble_size < 1:
            raise ValueError("ensemble_size must be >= 1")
        if not 0 <= self.timestep < 1000:
            raise ValueError(f"timestep must be in [0, 1000), got {self.timestep}")


@dataclass
class TargetFeatures:
    """What the decoder needs from a target batch (all fp32)."""

    ft_cor: torch.Tensor  # [B, C1, h, w] up block 1 (= ft_matting[1])
    ft_matting: tuple[torch.Tensor, torch.Tensor]  # (up block 0, up block 1)
    attn: tuple[torch.Tensor, torch.Tensor]  # (low, high), each [B, r, r, r²] (query position, key)


# --------------------------------------------------------------------------- loading
@contextmanager
def quiet_hub_logs() -> Iterator[None]:
    """Silence diffusers/transformers info logs and progress bars while loading or saving models."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    prev = dlog.get_verbosity(), tlog.get_verbosity(), tlog.is_progress_bar_enabled(), dlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(prev[0])
        tlog.set_verbosity(prev[1])
        if prev[2]:
            tlog.enable_progress_bar()
        if prev[3]:
            dlog.enable_progress_bar()


def resolve_sd_path(sd_path: str | Path) -> Path:
    """A local diffusers folder, or a Hub id already in the local HF cache (never downloads)."""
    p = Path(sd_path).expanduser()
    if p.is_dir():
        return p
    text = str(sd_path)
    if text.count("/") == 1 and not p.exists() and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception as e:
            raise SDModelError(
                f"iconmatting: '{text}' is not a folder and is not in the local Hugging Face cache "
                f"(offline: nothing is downloaded): {e}"
            ) from e
    raise SDModelError(f"iconmatting: Stable Diffusion folder not found: {p}")


def check_sd_folder(root: Path, check_sd21: bool) -> None:
    """Validate the folder layout and (unless disabled) that it is SD 2.1 768-v."""
    for sub in ("unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"):
        if not (root / sub).is_file():
            raise SDModelError(f"iconmatting: {root} is not a diffusers Stable Diffusion folder (no {sub})")
    unet_cfg = json.loads((root / "unet/config.json").read_text())
    if (
        tuple(unet_cfg.get("down_block_types", ())) != DOWN_TYPES
        or tuple(unet_cfg.get("up_block_types", ())) != UP_TYPES
    ):
        raise SDModelError(
            f"iconmatting: UNet in {root} does not have the SD 2.x block layout "
            f"(down {unet_cfg.get('down_block_types')}, up {unet_cfg.get('up_block_types')})"
        )
    if check_sd21:
        sched = json.loads((root / "scheduler/scheduler_config.json").read_text())
        pred, size = sched.get("prediction_type"), unet_cfg.get("sample_size")
        if pred != "v_prediction" or size != 96:
            raise SDModelError(
                f"iconmatting: {root} is not Stable Diffusion 2.1 768-v (prediction_type={pred!r}, "
                f"sample_size={size!r}; expected 'v_prediction' and 96). IconMatting was trained on SD 2.1 "
                "features; pass check_sd21=False only for test models."
            )


def folder_fingerprint(root: Path) -> str:
    """Hash of the model's config files and weight contents (sampled: 3 MiB per weight file, see
    :func:`sampled_digest`), independent of where the folder lives."""
    from methods._hub import sampled_digest

    h = hashlib.sha256()
    for sub in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        for f in sorted((root / sub).glob("*")):
            if f.suffix in (".json", ".txt"):
                h.update(f.name.encode() + f.read_bytes())
            elif f.is_file():
                h.update(f"{sub}/{f.name}:{sampled_digest(f)}".encode())
    return h.hexdigest()


def encode_empty_prompt(root: Path) -> torch.Tensor:
    """[1, 77, D] last hidden state of the text encoder for the empty prompt (official ``_encode_prompt('')``)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    for sub in ("tokenizer", "text_encoder"):
        if not (root / sub).is_dir():
            raise SDModelError(
                f"iconmatting: {root} has no {sub}/ to encode the empty prompt (or give prompt_embeds_file)"
            )
    with quiet_hub_logs():
        tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True).eval()
    ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return encoder(ids)[0].float().contiguous()


def load_prompt_embeds(root: Path, path: str | Path | None) -> torch.Tensor:
    """The empty-prompt embedding, read from ``path`` if present, else computed (and saved to ``path``).

    The file records a hash of the text encoder's config and refuses one made for another model.
    """
    from safetensors.torch import load_file, save_file

    te_cfg = root / "text_encoder" / "config.json"
    tag = hashlib.sha256(te_cfg.read_bytes()).hexdigest() if te_cfg.is_file() else "unknown"
    if path is not None and Path(path).is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("text_encoder_config_sha256", tag) != tag and tag != "unknown":
            raise SDModelError(f"iconmatting: {path} was computed for another text encoder than {root}")
        return load_file(str(path))["prompt_embeds"].float()
    emb = encode_empty_prompt(root)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({"prompt_embeds": emb}, str(path), metadata={"text_encoder_config_sha256": tag})
    return emb


# --------------------------------------------------------------------------- extractor
class SDFeatureExtractor(nn.Module):
    """Frozen VAE encoder + truncated UNet pass with hooks and attention capture."""

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        scheduler,
        prompt_embeds: torch.Tensor,
        settings: ExtractorSettings | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.settings = settings or ExtractorSettings()
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        if getattr(self.vae, "decoder", None) is not None:
            self.vae.decoder = None  # never used; frees memory
        self.scheduler = scheduler
        self.register_buffer("prompt_embeds", prompt_embeds.float(), persistent=False)
        self.dtype = dtype
        self.calls: Counter[str] = Counter()  # images encoded per role, for tests and logs
        self.capture = AttentionCapture(self.settings.attn_chunk_bytes)
        self._up_out: dict[int, torch.Tensor] = {}
        self._groups: dict[str, list[str]] = {"low": [], "high": []}
        impl, upcast = self.settings.attention_impl, self.settings.upcast_attention
        for name, module in self.unet.named_modules():
            if not hasattr(module, "set_processor"):
                continue
            group = next((g for g, pre in CAPTURE_BLOCKS.items() if name.startswith(pre)), None)
            if name.endswith("attn1") and group is not None:
                module.set_processor(CaptureAttnProcessor(self.capture, name, group, impl, upcast))
                self._groups[group].append(name)
            else:  # every other UNet attention: honours upcast_attention (diffusers' SDPA processor does not)
                module.set_processor(CaptureAttnProcessor(None, impl=impl, upcast=upcast))
        if impl == "math":
            for module in self.vae.modules():
                if hasattr(module, "set_processor"):
                    module.set_processor(CaptureAttnProcessor(None, impl=impl))
        if not all(self._groups.values()):
            raise SDModelError("iconmatting: UNet has no self-attention layers in the official capture blocks")
        for i in (0, 1):
            self.unet.up_blocks[i].register_forward_hook(self._up_hook(i))

    @classmethod
    def from_pretrained(
        cls,
        sd_path: str | Path,
        settings: ExtractorSettings | None = None,
        prompt_embeds_file: str | Path | None = None,
        check_sd21: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> SDFeatureExtractor:
        """Load UNet, VAE and scheduler from a local folder or the HF cache (offline)."""
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

        root = resolve_sd_path(sd_path)
        check_sd_folder(root, check_sd21)
        try:
            with quiet_hub_logs():
                unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True)
                vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True)
                scheduler = DDIMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise SDModelError(f"iconmatting: cannot load Stable Diffusion weights from {root}: {e}") from e
        emb = load_prompt_embeds(root, prompt_embeds_file)
        if emb.shape[-1] != unet.config.cross_attention_dim:
            raise SDModelError(
                f"iconmatting: prompt embedding width {emb.shape[-1]} != UNet cross_attention_dim "
                f"{unet.config.cross_attention_dim}"
            )
        ext = cls(unet, vae, scheduler, emb, settings, dtype)
        ext.source = root
        return ext.to(device)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.prompt_embeds.device

    @property
    def attention_fp32(self) -> bool:
        """True when every UNet attention output is computed in fp32 (fp32 run, ``math``, or upcast honoured)."""
        if self.dtype == torch.float32 or self.settings.attention_impl == "math":
            return True
        return self.settings.upcast_attention and bool(getattr(self.unet.config, "upcast_attention", False))

    @property
    def feature_channels(self) -> tuple[int, int]:
        """Output channels of up blocks 0 and 1 (1280, 1280 for SD 2.1)."""
        chans = list(reversed(self.unet.config.block_out_channels))
        return chans[0], chans[1]

    def _up_hook(self, index: int):
        def hook(module, args, output):
            self._up_out[index] = output.detach()
            self.capture.done(f"up{index}")

        return hook

    # ------------------------------------------------------------------ noise and latents
    def _seeds(self, batch: int, seeds: Sequence[int] | None) -> list[int]:
        if seeds is None:
            return [int(self.settings.noise_seed)] * batch
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} noise seed(s) for {batch} image(s)")
        return [int(s) for s in seeds]

    def draw_noise(self, seeds: Sequence[int], latent_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: a CPU generator seeded with that image's seed draws ε then the diffusion noise.

        Returns ([B·E, C, h, w] ε, [B·E, C, h, w] noise), image b's members at b·E … b·E + E − 1."""
        e = self.settings.ensemble_size
        shape = (e, self.unet.config.in_channels, *latent_hw)
        eps, noise = [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed))
            eps.append(torch.randn(shape, generator=g))
            noise.append(torch.randn(shape, generator=g))
        return torch.cat(eps), torch.cat(noise)

    @torch.no_grad()
    def encode(
        self, images: torch.Tensor, eps: torch.Tensor | None = None, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Scaled latents [B·E, 4, h, w] (member order b·E + e), posterior sample or mean.

        The VAE runs once per image in fp32; the ensemble copies share its mean/std. ``eps``
        replaces the seeded draw (``seeds``: one per image, default ``noise_seed`` for all).
        """
        e = self.settings.ensemble_size
        images = images.to(self.device, torch.float32)
        if self.settings.vae_per_member:
            dist = self.vae.encode(images.repeat_interleave(e, dim=0)).latent_dist
            mean, std = dist.mean, dist.std
        else:
            dist = self.vae.encode(images).latent_dist
            mean, std = dist.mean.repeat_interleave(e, dim=0), dist.std.repeat_interleave(e, dim=0)
        if self.settings.posterior == "mean":
            z = mean
        else:
            if eps is None:
                eps = self.draw_noise(self._seeds(images.shape[0], seeds), tuple(mean.shape[-2:]))[0]
            z = mean + std * eps.to(mean.device, mean.dtype)
        return (z * self.vae.config.scaling_factor).contiguous()

    # ------------------------------------------------------------------ UNet pass
    def _unet_pass(self, latents: torch.Tensor, noise: torch.Tensor, groups: tuple[str, ...], up: tuple[int, ...]):
        t = torch.tensor(self.settings.timestep, dtype=torch.long, device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise.to(latents.device, latents.dtype), t)
        if self.settings.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        emb = self.prompt_embeds.expand(noisy.shape[0], -1, -1).to(noisy.device)
        layers = [name for g in groups for name in self._groups[g]]
        self._up_out = {}
        self.capture.begin(self.settings.ensemble_size, layers, [f"up{i}" for i in up], stop_early=True)
        use_amp = self.dtype != torch.float32  # bf16/fp16 autocast (CUDA, and CPU for tests/measurements)
        try:
            with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=use_amp):
                self.unet(noisy, t, encoder_hidden_states=emb)
        except StopForward:
            pass
        else:
            raise RuntimeError(f"iconmatting: UNet pass ended before producing {sorted(self.capture.pending)}")
        finally:
            self.capture.end()

    def _ensemble_mean(self, x: torch.Tensor) -> torch.Tensor:
        e = self.settings.ensemble_size
        return x.float().reshape(-1, e, *x.shape[1:]).mean(dim=1)

    def _prepare(self, images, eps, noise, latents, seeds):
        images = images.to(self.device, torch.float32)
        if images.shape[-1] % 64 or images.shape[-2] % 64:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of 64")
        if eps is None or noise is None:
            lat_hw = (images.shape[-2] // 8, images.shape[-1] // 8)
            d_eps, d_noise = self.draw_noise(self._seeds(images.shape[0], seeds), lat_hw)
            eps = d_eps if eps is None else eps
            noise = d_noise if noise is None else noise
        return (self.encode(images, eps) if latents is None else latents.to(self.device)), noise

    @torch.no_grad()
    def reference_features(
        self,
        images: torch.Tensor,
        eps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        with_attention: bool = False,
        latents: torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(up block 1 ensemble mean [B, C, h, w], high-resolution attention [B, N, N] or None).

        Without attention the pass stops right after up block 1. ``eps``/``noise``
        ([B·E, 4, h, w]) replace the seeded draws (``seeds``: one per image); ``latents``
        (from :meth:`encode`) skips the VAE.
        """
        self.calls["reference"] += images.shape[0]
        latents, noise = self._prepare(images, eps, noise, latents, seeds)
        self._unet_pass(latents, noise, ("high",) if with_attention else (), (1,))
        ft = self._ensemble_mean(self._up_out[1])
        return ft, (self.capture.mean("high") if with_attention else None)

    @torch.no_grad()
    def target_features(
        self,
        images: torch.Tensor,
        eps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
    ) -> TargetFeatures:
        """Features and both attention maps of a target batch [B, 3, S, S] in [-1, 1] (``seeds``: one per image)."""
        self.calls["target"] += images.shape[0]
        latents, noise = self._prepare(images, eps, noise, latents, seeds)
        self._unet_pass(latents, noise, ("low", "high"), (0, 1))
        up0, up1 = self._ensemble_mean(self._up_out[0]), self._ensemble_mean(self._up_out[1])
        attn = []
        for group, ft in (("low", up0), ("high", up1)):
            a = self.capture.mean(group)
            h, w = ft.shape[-2:]
            if a.shape[-1] != h * w:
                raise RuntimeError(f"attention {group} has {a.shape[-1]} tokens, expected {h}x{w}")
            attn.append(a.reshape(a.shape[0], h, w, h * w))
        return TargetFeatures(ft_cor=up1, ft_matting=(up0, up1), attn=(attn[0], attn[1]))
