"""A tiny random Stable-Diffusion-2.1-shaped model folder, for tests and CPU benchmarks.

Same block structure as SD 2.1 (3× CrossAttnDownBlock2D + DownBlock2D; UpBlock2D + 3×
CrossAttnUpBlock2D; 2 layers per block; linear projection; upcast attention; head counts
given as ``attention_head_dim``) with a few channels, a 4-level VAE, SD 2.1's DDIM
scheduler settings and a 2-layer CLIP text encoder with an 8-token vocabulary. Nothing is
downloaded. ``to_q``/``to_k`` are scaled so the random self-attention maps are far from
uniform. Build one with :func:`save_tiny_sd` and pass the folder as ``sd_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

UNET = {
    "block_out_channels": (16, 32, 32, 32),
    "attention_head_dim": (2, 4, 4, 4),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 2,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "use_linear_projection": True,
    "upcast_attention": True,
    "in_channels": 4,
    "out_channels": 4,
}
VAE = {
    "block_out_channels": (8, 16, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "norm_num_groups": 8,
    "latent_channels": 4,
    "scaling_factor": 0.18215,
}
SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
VOCAB = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2, "a</w>": 3, "b</w>": 4, "c</w>": 5, "d</w>": 6, "e</w>": 7}


def save_tiny_sd(
    folder: str | Path,
    seed: int = 0,
    prediction_type: str = "v_prediction",
    sample_size: int = 96,
    text_encoder: bool = True,
    qk_gain: float = 6.0,
) -> Path:
    """Write a diffusers-style folder (unet/, vae/, scheduler/, optionally text_encoder/ + tokenizer/)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from .features import quiet_hub_logs

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]), quiet_hub_logs():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(sample_size=sample_size, **UNET)
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if name.endswith(("to_q.weight", "to_k.weight")):
                    p.mul_(qk_gain)
        vae = AutoencoderKL(sample_size=sample_size * 8, **VAE)
        unet.save_pretrained(folder / "unet")
        vae.save_pretrained(folder / "vae")
        DDIMScheduler(prediction_type=prediction_type, **SCHEDULER).save_pretrained(folder / "scheduler")
        if text_encoder:
            _save_text_tower(folder)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if text_encoder:
        index |= {"text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder


def _save_text_tower(folder: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = CLIPTextConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    CLIPTextModel(cfg).save_pretrained(folder / "text_encoder")
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(VOCAB))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(
        vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"), pad_token="!", model_max_length=77
    )
    tok.save_pretrained(tok_dir)


def randomize_decoder_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill a decoder with informative random weights, in place (tests/benchmarks only).

    The golden generator's transforms, by parameter type: conv weights N(0, 2/fan_in), conv
    biases 0.1·z, norm weights 1 + 0.1·z, norm biases and BN means 0.1·z, BN variances
    exp(0.2·z). PyTorch's default init makes the decoder output a flat ≈ 0.5; this does not.
    """
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            z = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                v = torch.exp(0.2 * z)
            elif name.endswith("running_mean") or (name.endswith("bias")):
                v = 0.1 * z
            elif t.dim() == 4:
                v = z * (2.0 / t[0].numel()) ** 0.5
            else:
                v = 1.0 + 0.1 * z
            t.copy_(v)
    return module
