"""Tiny random-weight SAM and MAM M2M checkpoints in the official file layouts (fixed seeds; nothing downloaded).

- :func:`tiny_sam`: a plain SAM state dict (as ``sam_vit_b_01ec64.pth``) of the real ``segment_anything`` classes
  with a shrunken image encoder (``arch``: 128-pixel input, 32-dim, 2 blocks, 2 heads); prompt encoder and mask
  decoder are the real sizes.
- :func:`tiny_m2m`: an M2M head in the layout ``trainer.py:save_model`` writes (``{'iter', 'loss',
  'state_dict', 'opt_state_dict', 'lr_state_dict'}``), its BN statistics and affine terms randomised so the
  residual branches (zero-initialised officially) are active.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_SAM_ARCH = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
                 "encoder_global_attn_indexes": [1], "image_size": 128}


def tiny_sam(folder: Path, seed: int = 0) -> tuple[Path, dict]:
    """Save (once) a tiny random SAM state dict under ``folder``; returns (checkpoint path, arch)."""
    from methods.sam import build_sam, sam_arch

    path = Path(folder) / "sam_tiny.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_sam(sam_arch("vit_b", TINY_SAM_ARCH))
            for name, p in model.image_encoder.named_parameters():
                if name.startswith(("pos_embed", "blocks")) and "norm" not in name:
                    p.data.normal_(0, 0.02)  # the released model's are not zero
        torch.save(model.state_dict(), path)
    return path, dict(TINY_SAM_ARCH)


def randomize_m2m_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Official init, then random BN affine terms and running statistics (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=gen)
            m.bias.data = 0.2 * torch.randn(n, generator=gen)
            m.running_mean.data = 0.1 * torch.randn(n, generator=gen)
            m.running_var.data = 0.5 + torch.rand(n, generator=gen)
    return model


def tiny_m2m(folder: Path, seed: int = 0, prefix: str = "") -> Path:
    """Save (once) a random M2M head as the official training script does; ``prefix='module.'`` writes
    DataParallel-style keys. Returns the file."""
    from methods.mam.m2m import sam_decoder_deep

    path = Path(folder) / f"mam_tiny{'_prefixed' if prefix else ''}.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = randomize_m2m_(sam_decoder_deep(256), seed)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=16000)
        torch.save({"iter": 20000, "loss": torch.tensor(0.05),
                    "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
                    "opt_state_dict": opt.state_dict(), "lr_state_dict": sched.state_dict()}, path)
    return path
