"""Granularity-aware distillation losses (gags-method.md §3.5-3.6), vectorised over regions.

Every function is pure (tensors in, tensors out) and works on pixel-major maps: an image of C channels
is ``[H, W, C]``. Region reductions use ``torch.unique(..., return_inverse=True)`` plus ``index_add_``;
nothing loops over regions in Python. The ``loop_*`` functions at the end compute the same quantities
the way the official code does (a Python loop over the region ids); they are the oracle the tests and
``benchmarks/train.py`` compare against.

Notation: a *region* is a global mask id (a row of the image's ``_f.npy``); ``-1`` means "no mask".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ENTROPY_EPS = 1e-6
"""Inside the log of the entropy term, as in the official code."""


@dataclass
class Regions:
    """Pixels grouped by region id, ready for segment reductions.

    Attributes:
        mask: Pixels that belong to some region (id != -1). [H, W] bool
        index: Compact region index (0..R-1) of each pixel in ``mask``, in row-major pixel order. [P]
        counts: Number of pixels per compact region. [R] int64
        ids: The original region id of each compact region, ascending. [R] int64
    """

    mask: Tensor
    index: Tensor
    counts: Tensor
    ids: Tensor

    @property
    def num_regions(self) -> int:
        return int(self.ids.shape[0])


def group_regions(region: Tensor) -> Regions:
    """Group the pixels of a region-id map. ``region``: [H, W] integer, -1 = no region."""
    mask = region >= 0
    ids, index, counts = torch.unique(region[mask].long(), return_inverse=True, return_counts=True)
    return Regions(mask=mask, index=index, counts=counts, ids=ids)


def segment_sum(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Sum ``values`` [P, ...] into ``num_segments`` bins by ``index`` [P] -> [num_segments, ...]."""
    out = values.new_zeros((num_segments,) + tuple(values.shape[1:]))
    return out.index_add_(0, index, values)


def box_filter(maps: Tensor, size: int = 5) -> Tensor:
    """Per-channel ``size`` x ``size`` mean filter with zero padding (same size out). [H, W, C] -> [H, W, C]"""
    if size <= 1:
        return maps
    chw = maps.permute(2, 0, 1)[None]
    smoothed = F.avg_pool2d(chw, size, stride=1, padding=size // 2, count_include_pad=True)
    return smoothed[0].permute(1, 2, 0)


def region_map(seg: Tensor, probs: Tensor, smooth: int = 5) -> Tensor:
    """Per-pixel region id from the granularity probabilities (``get_trained_seg``, §3.6 item 1).

    The level of pixel p is argmax over levels of the ``smooth``-box-filtered probabilities (ties go to
    the finer level), and its region is that level's mask id. Not differentiable.

    Args:
        seg: Mask ids per level (s, m, l), -1 = none. [L, H, W] integer
        probs: Granularity probabilities α. [H, W, L]
        smooth: Box filter size (5 in the official code; 1 disables it).

    Returns:
        Region id per pixel, -1 = none. [H, W] int64
    """
    with torch.no_grad():
        level = box_filter(probs.detach(), smooth).argmax(dim=-1)
        return seg.long().gather(0, level[None])[0]


def valid_mask(seg: Tensor) -> Tensor:
    """Pixels covered by a mask at every level (V in §3.5). [L, H, W] -> [H, W] bool"""
    return (seg >= 0).all(dim=0)


def mixed_target(embeddings: Tensor, seg_valid: Tensor, probs_valid: Tensor) -> Tensor:
    """Granularity-mixed CLIP target T = Σ_l α_l E_l at the valid pixels (§3.5; not renormalised).

    Args:
        embeddings: The image's mask embeddings (rows of ``_f.npy``). [M, 512]
        seg_valid: Mask id per level at each valid pixel (all >= 0). [P, L]
        probs_valid: α at each valid pixel. [P, L]

    Returns:
        [P, 512]; differentiable w.r.t. ``probs_valid``.
    """
    target = probs_valid[:, :1] * embeddings[seg_valid[:, 0]]
    for level in range(1, seg_valid.shape[1]):
        target = target + probs_valid[:, level : level + 1] * embeddings[seg_valid[:, level]]
    return target


def l1_error(prediction: Tensor, target: Tensor) -> Tensor:
    """Channel-mean absolute error per pixel (``l1_loss_map``). [P, C], [P, C] -> [P]"""
    return (prediction - target).abs().mean(dim=-1)


def weighted_l2_error(prediction: Tensor, embeddings: Tensor, seg_valid: Tensor, probs_valid: Tensor) -> Tensor:
    """Paper variant of the per-pixel error: Σ_l α_l ‖F̂ − E_l‖² (sum over channels). -> [P]

    Shapes as in :func:`mixed_target`; ``prediction`` is [P, 512].
    """
    error = prediction.new_zeros(prediction.shape[0])
    for level in range(seg_valid.shape[1]):
        diff = prediction - embeddings[seg_valid[:, level]]
        error = error + probs_valid[:, level] * diff.square().sum(dim=-1)
    return error


def region_balanced_mean(error: Tensor, regions: Regions) -> Tensor:
    """Mean over regions of the mean per-pixel error inside each region (``Scale_balance_loss``, mix).

    Args:
        error: Per-pixel error, 0 where a pixel is not supervised. [H, W]
        regions: From :func:`group_regions` on the region-id map.

    Returns:
        Scalar; 0 (still attached to ``error``) when no pixel has a region.
    """
    if regions.num_regions == 0:
        return error.sum() * 0.0
    sums = segment_sum(error[regions.mask], regions.index, regions.num_regions)
    return (sums / regions.counts.to(sums.dtype)).mean()


def entropy_loss(probs: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """Mean over pixels and levels of −α·log(α + eps) (``scale_regulation_loss``). [H, W, L] -> scalar"""
    return (-probs * torch.log(probs + eps)).mean()


def region_variance_loss(features: Tensor, regions: Regions) -> Tensor:
    """Region consistency on the rendered features (``scale_region_regulation_loss``, mix mode).

    Σ over regions with ≥ 2 pixels of |r| · mean_c Var_unbiased(features[r, c]), divided by H·W.
    Two-pass (mean, then squared deviations) for accuracy.

    Args:
        features: Rendered low-dimensional features F16. [H, W, C]
        regions: From :func:`group_regions` on the region-id map.

    Returns:
        Scalar.
    """
    height, width, channels = features.shape
    if regions.num_regions == 0:
        return features.sum() * 0.0
    values = features[regions.mask]  # [P, C]
    counts = regions.counts.to(values.dtype)
    means = segment_sum(values, regions.index, regions.num_regions) / counts[:, None]
    squared = (values - means[regions.index]).square().sum(dim=-1)  # [P]
    ss = segment_sum(squared, regions.index, regions.num_regions)  # [R]: Σ_p Σ_c (x - μ)²
    keep = regions.counts >= 2
    # |r| * mean_c (ss_c / (|r| - 1)) = |r| * ss / (C (|r| - 1))
    per_region = counts * ss / (channels * (counts - 1).clamp(min=1))
    return torch.where(keep, per_region, torch.zeros_like(per_region)).sum() / (height * width)


def region_mean_deviation_loss(features: Tensor, regions: Regions) -> Tensor:
    """Paper variant of the consistency term: mean over regions of mean_p ‖F(p) − μ_r‖². -> scalar

    Shapes as in :func:`region_variance_loss`.
    """
    if regions.num_regions == 0:
        return features.sum() * 0.0
    values = features[regions.mask]
    counts = regions.counts.to(values.dtype)
    means = segment_sum(values, regions.index, regions.num_regions) / counts[:, None]
    squared = (values - means[regions.index]).square().sum(dim=-1)
    return (segment_sum(squared, regions.index, regions.num_regions) / counts).mean()


# ---------------------------------------------------------------------------------------------------
# Loop references: one Python iteration per region, as the official code computes these terms.
# ---------------------------------------------------------------------------------------------------


def loop_region_balanced_mean(error: Tensor, region: Tensor) -> Tensor:
    """Reference for :func:`region_balanced_mean` from the raw region map [H, W]."""
    means = []
    for rid in torch.unique(region):
        if int(rid) == -1:
            continue
        means.append(error[region == rid].mean())
    if not means:
        return error.sum() * 0.0
    return torch.stack(means).mean()


def loop_region_variance_loss(features: Tensor, region: Tensor) -> Tensor:
    """Reference for :func:`region_variance_loss` from the raw region map [H, W]."""
    height, width, _ = features.shape
    total = features.sum() * 0.0
    for rid in torch.unique(region):
        if int(rid) == -1:
            continue
        pixels = features[region == rid]  # [n, C]
        if pixels.shape[0] < 2:
            continue
        total = total + pixels.shape[0] * pixels.var(dim=0, unbiased=True).mean()
    return total / (height * width)
