"""Filters of SAM's masks, as batched tensor ops (gags-method.md §2.4-2.5).

Per granularity level, in this order (all thresholds are :class:`MaskFilterConfig` fields, official
values by default):

1. predicted IoU > 0.7 and stability score >= 0.85 (SAM's ``calculate_stability_score``, offset 1.0);
2. threshold the logits at 0;
3. box NMS at IoU 0.7, scored by predicted IoU;
4. small regions: holes, then islands, under 100 px removed (8-connected components, as SAM does), then
   a second box NMS at 0.7 that prefers masks the removal did not change;
5. the official mask NMS (:func:`mask_nms`): score = stability × predicted IoU; a mask is dropped when
   a higher-scored mask overlaps it with IoU > 0.8, when its score <= 0.7, or when it lies >= 85 %
   inside another mask that it covers < 50 % of (the inner one goes, whatever the scores). Survivors
   keep their order from step 4.

Sorting is stable everywhere (ties keep their earlier order), so results do not depend on the sort
implementation of the device. Pairwise intersections are one matrix product of the flattened masks
(exact in float32 up to 2^24 pixels per mask), chunked over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CONTAINMENT = 0.85
"""Nesting rule: the inner mask lies at least this fraction inside the outer one ..."""
COVERAGE = 0.5
"""... and covers less than this fraction of it."""
PIXEL_CHUNK = 1 << 18


@dataclass
class MaskFilterConfig:
    """Thresholds of the SAM mask filters (official values, gags-method.md §0.1)."""

    pred_iou_thresh: float = 0.7
    """keep masks whose predicted IoU is above this."""
    stability_score_thresh: float = 0.85
    """keep masks whose stability score is at least this."""
    stability_score_offset: float = 1.0
    """logit offset of the stability score."""
    box_nms_thresh: float = 0.7
    """box IoU above which the lower-scored box is dropped."""
    crop_nms_thresh: float = 0.7
    """with crops: box IoU above which a mask from a larger crop gives way to one from a smaller crop."""
    min_mask_region_area: int = 100
    """holes and islands smaller than this (pixels) are removed; 0 turns it off."""
    nms_iou_thresh: float = 0.8
    """mask NMS: drop a mask overlapping a higher-scored one with IoU above this."""
    nms_score_thresh: float = 0.7
    """mask NMS: drop masks whose stability x predicted-IoU score is not above this."""
    nms_inner_thresh: float = 0.5
    """mask NMS: drop an inner mask when 1 - (I/|A|)(I/|B|) exceeds 1 - this."""


def stable_descending(scores: Tensor) -> Tensor:
    """Indices that sort ``scores`` [M] descending, ties in their original order. -> [M] int64"""
    return torch.sort(scores, descending=True, stable=True).indices


def pairwise_intersections(masks: Tensor, chunk: int = PIXEL_CHUNK) -> tuple[Tensor, Tensor]:
    """Pixel counts of every pair of masks.

    Args:
        masks: [M, H, W] or [M, P] bool.

    Returns:
        (intersections [M, M] float32, areas [M] float32).
    """
    flat = masks.reshape(masks.shape[0], -1)
    count = flat.shape[0]
    inter = torch.zeros(count, count, dtype=torch.float32, device=flat.device)
    for start in range(0, flat.shape[1], chunk):
        block = flat[:, start : start + chunk].float()
        inter += block @ block.T
    return inter, inter.diagonal().clone()


def mask_nms(masks: Tensor, scores: Tensor, config: MaskFilterConfig | None = None) -> Tensor:
    """The official mask NMS (module doc, step 5), vectorised.

    Args:
        masks: [M, H, W] bool, non-empty.
        scores: stability × predicted IoU per mask. [M]
        config: thresholds (official by default).

    Returns:
        Kept indices in increasing (original) order. [K] int64
    """
    config = config or MaskFilterConfig()
    count = masks.shape[0]
    if count == 0:
        return torch.zeros(0, dtype=torch.int64, device=masks.device)
    order = stable_descending(scores)
    inter, areas = pairwise_intersections(masks[order])
    union = areas[:, None] + areas[None, :] - inter
    iou = inter / union.clamp(min=1e-12)
    higher = torch.ones(count, count, dtype=torch.bool, device=masks.device).triu(diagonal=1)  # [i, j]: i ranks above j
    overlapped = ((iou > config.nms_iou_thresh) & higher).any(dim=0)
    inside = inter / areas[:, None].clamp(min=1e-12)  # [a, b]: fraction of a inside b
    nested = (inside >= CONTAINMENT) & (inside.T < COVERAGE)
    nested &= (1 - inside * inside.T) > 1 - config.nms_inner_thresh
    nested.fill_diagonal_(False)
    is_inner = nested.any(dim=1)
    keep_sorted = ~overlapped & ~is_inner & (scores[order] > config.nms_score_thresh)
    return torch.sort(order[keep_sorted]).values


def pack_masks(masks: Tensor) -> Tensor:
    """Masks [M, H, W] bool -> [M, ceil(H * W / 8)] uint8: row-major pixel p is bit p % 8 of byte p // 8."""
    flat = masks.reshape(masks.shape[0], masks.shape[1] * masks.shape[2]).to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, (-flat.shape[1]) % 8))
    weights = torch.tensor([1 << bit for bit in range(8)], dtype=torch.uint8, device=masks.device)
    return (flat.reshape(flat.shape[0], flat.shape[1] // 8, 8) * weights).sum(dim=-1, dtype=torch.uint8)


def unpack_masks(packed: Tensor, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pack_masks`: [M, B] uint8 and (H, W) -> [M, H, W] bool."""
    height, width = size
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed[..., None] >> shifts) & 1
    return bits.reshape(packed.shape[0], packed.shape[1] * 8)[:, : height * width].bool().reshape(-1, height, width)


def box_nms(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Greedy box NMS (torchvision) with a stable order. boxes [M, 4] XYXY, scores [M] -> kept [K], best first"""
    from torchvision.ops import nms

    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = stable_descending(scores)
    ranks = torch.arange(boxes.shape[0], 0, -1, dtype=torch.float32, device=boxes.device)
    return order[nms(boxes[order].float(), ranks, threshold)]


def mask_boxes(masks: Tensor) -> Tensor:
    """XYXY boxes (inclusive pixel bounds) of masks [M, H, W] bool -> [M, 4] float32 (zeros if empty)."""
    from segment_anything.utils.amg import batched_mask_to_box

    if masks.shape[0] == 0:
        return torch.zeros(0, 4, device=masks.device)
    return batched_mask_to_box(masks).float()


def remove_small_regions(mask: np.ndarray, area: int, mode: str) -> tuple[np.ndarray, bool]:
    """SAM's small-region cleanup of one mask, with 8-connected components.

    Only the mask's bounding box plus a one-pixel margin is labelled: every island lies inside it, and a
    background component that reaches a margin row (column) inside the image contains that whole row
    (column) and every row (column) beyond it, all background: at least ``strip`` pixels. When every such
    strip has ``area`` pixels or more, that component is no hole; otherwise (small images) the whole
    image is labelled. Components that touch the image border inside the box are counted exactly.

    Args:
        mask: [H, W] bool.
        area: regions smaller than this many pixels are removed.
        mode: "holes" fills small background components; "islands" drops small foreground components
            (keeping the largest if every one is small).

    Returns:
        (new mask [H, W] bool, whether it changed).
    """
    from scipy import ndimage

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask, False
    height, width = mask.shape
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, width)
    holes = mode == "holes"
    strips = [(y0 + 1) * width * (y0 > 0), (height - y1 + 1) * width * (y1 < height)]
    strips += [(x0 + 1) * height * (x0 > 0), (width - x1 + 1) * height * (x1 < width)]
    if holes and any(0 < strip < area for strip in strips):
        y0, y1, x0, x1 = 0, height, 0, width
    crop = mask[y0:y1, x0:x1]
    labels, count = ndimage.label(~crop if holes else crop, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask, False
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)[1:]
    small = sizes < area
    if holes:
        margin = np.zeros(crop.shape, dtype=bool)  # the margin pixels that are not on the image border
        margin[0, :], margin[-1, :], margin[:, 0], margin[:, -1] = y0 > 0, y1 < height, x0 > 0, x1 < width
        small[np.unique(labels[margin & (labels > 0)]) - 1] = False
    if not small.any():
        return mask, False
    out = mask.copy()
    if holes:
        out[y0:y1, x0:x1] |= np.concatenate([[False], small])[labels]
        return out, True
    big = ~small
    if not big.any():
        big[int(np.argmax(sizes))] = True
    out[y0:y1, x0:x1] = np.concatenate([[False], big])[labels]
    return out, True
