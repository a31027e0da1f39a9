"""A tiny random GroundingDINO (transformers' real classes: Swin backbone, BERT text tower, a 14-word
vocabulary) and its processor, saved to a folder, for MatAny's transparency step."""

from __future__ import annotations

from pathlib import Path

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "glass", "lens", "crystal", "diamond", "bubble",
         "bulb", "web", "grid"]


def tiny_grounding_dino(folder: Path) -> Path:
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
                          out_indices=[2, 3, 4], out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # d_model must divide GroupNorm's 32 groups; two decoder layers, as bbox_embed ties layer 0 to the rest
    cfg = GroundingDinoConfig(backbone_config=backbone, text_config=text, num_queries=10, encoder_layers=1,
                              decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, d_model=32,
                              encoder_attention_heads=2, decoder_attention_heads=2, max_text_len=32,
                              encoder_n_points=2, decoder_n_points=2)
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(cfg).eval().save_pretrained(folder)
    size = {"shortest_edge": 64, "longest_edge": 96}
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size=size),
                           tokenizer=BertTokenizer(str(folder / "vocab.txt"))).save_pretrained(folder)
    return folder
