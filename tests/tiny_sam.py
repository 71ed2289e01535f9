"""A tiny SAM for tests: ``segment_anything.modeling`` parts at image size 256, random weights.

Built in well under a second and run on CPU in about a second per image. :func:`make_tiny_sam` can make
the random model "confident" (large predicted IoU and large logits), so that SAM's official thresholds
let masks through; random weights otherwise give predicted IoUs near 0 and no mask at all.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch


def make_tiny_sam(seed: int = 0, confident: bool = True):
    """A random-weight ``Sam`` (ViT width 64, depth 2, window 4 + one global block; decoder width 32)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    size, dim = 256, 32
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=64,
            img_size=size,
            mlp_ratio=2.0,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=4,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=4,
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(16, 16), input_image_size=(size, size), mask_in_chans=8
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, num_heads=8, mlp_dim=64),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if confident:
        with torch.no_grad():
            head = model.mask_decoder.iou_prediction_head.layers[-1]
            head.weight.zero_()
            head.bias.fill_(0.95)
            for mlp in model.mask_decoder.output_hypernetworks_mlps:
                mlp.layers[-1].weight.mul_(2000.0)
                mlp.layers[-1].bias.mul_(2000.0)
    return model.eval()


def save_tiny_sam(path: str | Path, seed: int = 0, confident: bool = True) -> Path:
    """Write the tiny SAM's state dict to ``path`` (a .pth file read with weights_only). -> path"""
    path = Path(path)
    torch.save(make_tiny_sam(seed, confident).state_dict(), path)
    return path
