"""Tiny random-weight Hugging Face models for adapter tests (no weights can be downloaded).

Each builder instantiates the real transformers class from a small config of the released model's
shape (same switches, fewer and narrower layers), seeds torch, and saves model + processor with
``save_pretrained`` so adapters load it exactly as they load a real folder.
"""

from __future__ import annotations

from pathlib import Path

#: SegGPT halves are square (prompt above target): a 64×32 canvas, 32×32 processor images, patch 16.
SEGGPT_SIDE = 32


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _lively_convs(model) -> None:
    """PyTorch's default (Kaiming) convolutions and unit-scale BatchNorms with random running
    statistics: transformers initialises ViTMatte's convs and BN weights with std 0.02, which makes
    a random model's alpha a constant 0.5 and would hide every preprocessing bug."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.reset_parameters()
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)


def tiny_seggpt(folder: Path, seed: int = 0) -> Path:
    """SegGptForImageSegmentation with hidden 32, 4 layers, merge after layer 0 and the decoder
    reading layers 1-3 (the released model: merge 2 < [5, 11, 17, 23]), plus its processor at 32×32."""
    from transformers import SegGptConfig, SegGptForImageSegmentation, SegGptImageProcessor

    _seeded(seed)
    config = SegGptConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_dim=64,
                          image_size=[2 * SEGGPT_SIDE, SEGGPT_SIDE], patch_size=16, pretrain_image_size=32,
                          decoder_hidden_size=8, merge_index=0, intermediate_hidden_state_indices=[1, 2, 3],
                          drop_path_rate=0.0, initializer_range=0.2)
    model = SegGptForImageSegmentation(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    SegGptImageProcessor(size={"height": SEGGPT_SIDE, "width": SEGGPT_SIDE}).save_pretrained(folder)
    return folder


def tiny_vitmatte(folder: Path, seed: int = 0, processor: bool = True) -> Path:
    """VitMatteForImageMatting on a VitDet backbone with hidden 32, 2 blocks (block 0 windowed with
    window 4, block 1 global with the conv residual, as the released 2/5/8/11 pattern), relative
    position embeddings, 4 input channels; narrow ConvStream/fusion widths. ``processor=False``
    leaves out preprocessor_config.json (the adapter then uses the processor's defaults)."""
    import torch
    from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting, VitMatteImageProcessor

    _seeded(seed)
    backbone = VitDetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, num_channels=4,
                            image_size=64, pretrain_image_size=64, patch_size=16, window_block_indices=[0],
                            residual_block_indices=[1], window_size=4, use_relative_position_embeddings=True,
                            out_features=["stage2"])
    config = VitMatteConfig(backbone_config=backbone, hidden_size=32, convstream_hidden_sizes=[8, 8, 8],
                            fusion_hidden_sizes=[16, 8, 8, 8])
    model = VitMatteForImageMatting(config).eval()
    _lively_convs(model)
    with torch.no_grad():  # logits of std ~1, so alphas spread over (0, 1) instead of hugging 0.5
        model.decoder.matting_head.matting_convs[-1].weight.mul_(30.0)
    folder = Path(folder)
    model.save_pretrained(folder)
    if processor:
        VitMatteImageProcessor().save_pretrained(folder)
    return folder
