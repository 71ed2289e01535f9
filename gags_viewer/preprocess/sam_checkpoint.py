"""SAM checkpoints: the official weights' location, a one-line error when they are missing or wrong, and a
``segment_anything.modeling.Sam`` built with the architecture read from the checkpoint's tensors (any size,
the official ViT-H / ViT-L / ViT-B or a small test model)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from gags_viewer.errors import GagsError

OFFICIAL_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
SAM_KINDS = {"vit_h": (1280, 32), "vit_l": (1024, 24), "vit_b": (768, 12)}
"""Image-encoder (width, depth) of the published SAM models."""
PATCH = 16
DECODER_HEADS = 8
"""Attention heads of the mask decoder's two-way transformer (8 in every published SAM)."""


class SamCheckpointError(GagsError):
    """The SAM checkpoint is missing or is not a SAM state dict."""


def check_checkpoint(checkpoint: Path) -> Path:
    """``checkpoint`` if it is a file; else a one-line :class:`SamCheckpointError` saying where SAM is published."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise SamCheckpointError(
            f"SAM checkpoint {checkpoint} not found; download the official ViT-H weights from {OFFICIAL_SAM_URL} "
            "(or vit_l / vit_b from github.com/facebookresearch/segment-anything) and pass --sam-checkpoint FILE"
        )
    return checkpoint


def load_sam(checkpoint: Path, kind: str = "auto", device: str | torch.device = "cpu"):
    """Build a ``segment_anything.modeling.Sam`` from a checkpoint, its architecture read from the tensors.

    Args:
        checkpoint: a SAM state dict (``sam_vit_h_4b8939.pth`` and the like), read with ``weights_only``.
        kind: "vit_h", "vit_l", "vit_b" to check the checkpoint is that model, or "auto".
        device: where the model goes.

    Raises:
        SamCheckpointError: missing or unreadable file, or not the asked kind.
    """
    checkpoint = check_checkpoint(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load fails in many ways
        raise SamCheckpointError(
            f"{checkpoint}: not a readable SAM checkpoint ({str(error).splitlines()[0][:120]})"
        ) from None
    if not isinstance(state, dict) or "image_encoder.patch_embed.proj.weight" not in state:
        raise SamCheckpointError(f"{checkpoint}: not a SAM checkpoint (no image_encoder.patch_embed weights)")
    try:
        model = build_sam(state)
    except (KeyError, IndexError, ValueError, AttributeError, ZeroDivisionError) as error:
        raise SamCheckpointError(f"{checkpoint}: not a segment-anything checkpoint (incomplete: {error})") from None
    width, depth = model.image_encoder.patch_embed.proj.out_channels, len(model.image_encoder.blocks)
    if kind != "auto" and SAM_KINDS.get(kind) != (width, depth):
        raise SamCheckpointError(f"{checkpoint}: a ViT of width {width} and depth {depth}, not SAM {kind}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise SamCheckpointError(
            f"{checkpoint}: not a segment-anything checkpoint ({str(error).splitlines()[0][:120]})"
        ) from None
    return model.to(device).eval().requires_grad_(False)


def build_sam(state: dict):
    """An untrained ``Sam`` with the architecture of the state dict ``state`` (any size)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    width = state["image_encoder.patch_embed.proj.weight"].shape[0]
    depth = len([k for k in state if k.startswith("image_encoder.blocks.") and k.endswith(".norm1.weight")])
    grid = state["image_encoder.pos_embed"].shape[1]
    rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
    global_blocks = [i for i, shape in enumerate(rel) if shape[0] == 2 * grid - 1]
    windowed = [shape[0] for i, shape in enumerate(rel) if i not in global_blocks]
    prompt_dim = state["image_encoder.neck.0.weight"].shape[0]
    layers = len({k.split(".")[3] for k in state if k.startswith("mask_decoder.transformer.layers.")})
    encoder = ImageEncoderViT(
        depth=depth,
        embed_dim=width,
        img_size=grid * PATCH,
        patch_size=PATCH,
        mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / width,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=width // rel[0][1],
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_blocks,
        window_size=(windowed[0] + 1) // 2 if windowed else 0,
        out_chans=prompt_dim,
    )
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(grid * PATCH, grid * PATCH),
            mask_in_chans=state["prompt_encoder.mask_downscaling.0.weight"].shape[0] * 4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=layers,
                embedding_dim=prompt_dim,
                num_heads=DECODER_HEADS,
                mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
