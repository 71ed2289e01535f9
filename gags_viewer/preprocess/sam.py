"""A SAM mask source on the stock ``segment-anything`` package (gags-method.md §2.4-2.6).

Every prompt point goes through SAM's prompt decoder with three mask outputs, in batches on one image
embedding. Output 0, 1, 2 of each prompt are the ``s`` (subpart), ``m`` (part) and ``l`` (whole)
candidates; the ``default`` level pools all of them (prompt-major). Each level is then filtered on its
own by :mod:`gags_viewer.preprocess.mask_filters` (predicted IoU, stability, box NMS, small regions,
mask NMS), as LangSplat's SAM fork and GAGS's ``masks_update`` do, without vendoring the fork.

On CUDA the networks run under fp16 autocast; thresholds and NMS use float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.preprocess.mask_filters import (
    MaskFilterConfig,
    box_nms,
    mask_boxes,
    mask_nms,
    pack_masks,
    remove_small_regions,
    unpack_masks,
)
from gags_viewer.preprocess.masks import ALL_LEVELS, LEVELS, LevelMasks

OFFICIAL_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
SAM_KINDS = {"vit_h": (1280, 32), "vit_l": (1024, 24), "vit_b": (768, 12)}
"""Image-encoder (width, depth) of the published SAM models."""
PATCH = 16
DECODER_HEADS = 8
"""Attention heads of the mask decoder's two-way transformer (8 in every published SAM)."""


class SamCheckpointError(GagsError):
    """The SAM checkpoint is missing or is not a SAM state dict."""


@dataclass
class SamConfig:
    """How prompts go through SAM and how its masks are filtered."""

    points_per_batch: int = 64
    """prompts per decoder batch (each gives 3 full-resolution masks)."""
    filters: MaskFilterConfig = field(default_factory=MaskFilterConfig)


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


@dataclass
class Candidates:
    """SAM masks that passed the predicted-IoU and stability thresholds, kept bit-packed: thousands of
    full-resolution candidates (1.5 MB each as bool at 1440×1080, 194 kB packed) stay on the device.

    Attributes:
        packed: the masks (logits > 0), :func:`pack_masks` layout. [C, ceil(H * W / 8)] uint8
        size: (H, W) of the masks.
        iou: predicted IoU. [C]
        stability: stability score. [C]
        output: which of the 3 outputs (0 = s, 1 = m, 2 = l). [C] int64
        boxes: XYXY inclusive pixel bounds of the masks (zeros for an empty mask). [C, 4] float32
    """

    packed: Tensor
    size: tuple[int, int]
    iou: Tensor
    stability: Tensor
    output: Tensor
    boxes: Tensor

    @classmethod
    def from_masks(cls, masks: Tensor, iou: Tensor, stability: Tensor, output: Tensor) -> Candidates:
        """Candidates from masks [C, H, W] bool and their scores [C] (outputs [C] int64)."""
        return cls(pack_masks(masks), (masks.shape[1], masks.shape[2]), iou, stability, output, mask_boxes(masks))

    def __len__(self) -> int:
        return self.packed.shape[0]

    def masks(self, indices: Tensor) -> Tensor:
        """The masks at ``indices`` [K] int64. -> [K, H, W] bool"""
        return unpack_masks(self.packed[indices], self.size)


def decode_prompts(predictor, coords: Tensor) -> tuple[Tensor, Tensor]:
    """SAM's prompt encoder + mask decoder for one batch of single-point prompts, three outputs each.

    Args:
        predictor: a ``SamPredictor`` with the image set.
        coords: prompts in the model's input frame (``predictor.transform.apply_coords``). [B, 2] float64

    Returns:
        (low-resolution logits [B * 3, 1, h, w], predicted IoU [B * 3]), prompt-major.
    """
    model = predictor.model
    labels = torch.ones(coords.shape[0], 1, dtype=torch.int64, device=coords.device)
    sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
    low_res, iou = model.mask_decoder(
        image_embeddings=predictor.features,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    return low_res.flatten(0, 1)[:, None], iou.flatten(0, 1)


def predict_candidates(predictor, points: np.ndarray, config: SamConfig) -> Candidates:
    """Run every prompt with 3 outputs in batches on the predictor's image and keep the confident masks.

    Only masks above the predicted-IoU threshold are upsampled to the image size (SAM's
    ``postprocess_masks``) for the stability score and the binary mask: the others would be dropped anyway.

    Args:
        predictor: a ``SamPredictor`` with the image set.
        points: prompts in pixels (x, y) of the original image. [P, 2]
        config: batching and thresholds.
    """
    from segment_anything.utils.amg import calculate_stability_score

    device = predictor.device
    filters = config.filters
    kept: dict[str, list[Tensor]] = {"packed": [], "iou": [], "stability": [], "output": [], "boxes": []}
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    for start in range(0, len(points), config.points_per_batch):
        # float64 coordinates, as SamAutomaticMaskGenerator passes them (the prompt encoder casts after scaling)
        batch = np.asarray(points[start : start + config.points_per_batch], dtype=np.float64)
        coords = torch.as_tensor(predictor.transform.apply_coords(batch, predictor.original_size), device=device)
        with autocast:
            low_res, iou = decode_prompts(predictor, coords)
        iou = iou.float()
        output = torch.arange(3, device=device).repeat(len(batch))
        confident = torch.nonzero(iou > filters.pred_iou_thresh).squeeze(1)
        logits = predictor.model.postprocess_masks(
            low_res[confident].float(), predictor.input_size, predictor.original_size
        )[:, 0]
        stability = calculate_stability_score(logits, 0.0, filters.stability_score_offset)
        keep = stability >= filters.stability_score_thresh
        masks, chosen = logits[keep] > 0, confident[keep]
        for key, value in (
            ("packed", pack_masks(masks)),
            ("iou", iou[chosen]),
            ("stability", stability[keep]),
            ("output", output[chosen]),
            ("boxes", mask_boxes(masks)),
        ):
            kept[key].append(value)
    height, width = predictor.original_size
    if not kept["packed"]:
        empty = torch.zeros(0, height, width, dtype=torch.bool, device=device)
        scores = torch.zeros(0, device=device)
        return Candidates.from_masks(empty, scores, scores, torch.zeros(0, dtype=torch.int64, device=device))
    return Candidates(size=(height, width), **{key: torch.cat(values) for key, values in kept.items()})


class SmallRegionCache:
    """Small-region cleanup (holes, then islands) of candidates, computed once per candidate across levels."""

    def __init__(self, candidates: Candidates, area: int):
        self.candidates, self.area = candidates, int(area)
        self.done: dict[int, tuple[Tensor, bool]] = {}

    def __call__(self, index: int) -> tuple[Tensor, bool]:
        """(cleaned mask [H, W] bool on the candidates' device, whether it is unchanged)."""
        if index not in self.done:
            mask = self.candidates.masks(torch.tensor([index], device=self.candidates.packed.device))[0]
            if self.area <= 0:
                self.done[index] = (mask, True)
            else:
                array = mask.cpu().numpy()
                array, holes = remove_small_regions(array, self.area, "holes")
                array, islands = remove_small_regions(array, self.area, "islands")
                self.done[index] = (torch.from_numpy(array).to(mask.device), not (holes or islands))
        return self.done[index]


def filter_level(
    candidates: Candidates, members: Tensor, cleanup: SmallRegionCache, filters: MaskFilterConfig
) -> list[np.ndarray]:
    """Box NMS, small regions, box NMS, mask NMS of one level's candidates (``members`` [K] indices).

    Returns:
        The level's masks in painting order, each [H, W] bool.
    """
    # an empty mask has an all-zero box; so has a one-pixel mask at (0, 0), told apart by that pixel
    members = members[(candidates.boxes[members].sum(dim=1) > 0) | (candidates.packed[members, 0] & 1).bool()]
    order = members[box_nms(candidates.boxes[members], candidates.iou[members], filters.box_nms_thresh)]
    cleaned = [cleanup(int(i)) for i in order]
    masks = torch.stack([m for m, _ in cleaned]) if cleaned else candidates.masks(order)
    unchanged = torch.tensor([float(u) for _, u in cleaned], device=masks.device)
    second = box_nms(mask_boxes(masks), unchanged, filters.box_nms_thresh)
    masks, order = masks[second], order[second]
    nonempty = masks.flatten(1).any(dim=1)
    masks, order = masks[nonempty], order[nonempty]
    keep = mask_nms(masks, candidates.stability[order] * candidates.iou[order], filters)
    return [m for m in masks[keep].cpu().numpy()]


def split_levels(candidates: Candidates, filters: MaskFilterConfig) -> LevelMasks:
    """The four levels from SAM's candidates: outputs 0/1/2 as s/m/l, all pooled as default."""
    cleanup = SmallRegionCache(candidates, filters.min_mask_region_area)
    everything = torch.arange(len(candidates), device=candidates.packed.device)
    result = LevelMasks()
    for level in ALL_LEVELS:
        members = everything if level == "default" else everything[candidates.output == LEVELS.index(level)]
        setattr(result, level, filter_level(candidates, members, cleanup, filters))
    return result


class SamMaskSource:
    """The :class:`~gags_viewer.preprocess.masks.MaskSource` of GAGS: prompts -> SAM -> four filtered levels.

    Args:
        model: a ``segment_anything.modeling.Sam`` (e.g. from :func:`load_sam`).
        prompts: ``(image [H, W, 3] uint8, name) -> points [P, 2]`` normalised (x / W, y / H).
        config: batching and filter thresholds.
    """

    def __init__(self, model, prompts: Callable[[np.ndarray, str], np.ndarray], config: SamConfig | None = None):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(model)
        self.prompts = prompts
        self.config = config or SamConfig()

    def __call__(self, image: np.ndarray, name: str) -> LevelMasks:
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        points = np.asarray(self.prompts(image, name), dtype=np.float64) * np.array([width, height])
        device = self.predictor.device
        with torch.no_grad():
            with (
                torch.autocast("cuda", dtype=torch.float16)
                if device.type == "cuda"
                else torch.autocast("cpu", enabled=False)
            ):
                self.predictor.set_image(image)
            candidates = predict_candidates(self.predictor, points, self.config)
        masks = split_levels(candidates, self.config.filters)
        self.predictor.reset_image()
        return masks
