"""The loss terms of one training view (gags-method.md §3.6, pseudo-code §3.8).

:func:`distillation_losses` assembles the per-pixel primitives of :mod:`gags_viewer.train.losses` into
the distillation, entropy and consistency terms of one rendered view; it is a pure function of tensors
and the two decoders, used by :class:`gags_viewer.train.trainer.Trainer` and ``benchmarks/train.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gags_viewer.train import losses as L
from gags_viewer.train.config import LEVELS, SingleScale


def single_scale_probs(mode: SingleScale, height: int, width: int, device, dtype=torch.float32) -> Tensor:
    """Constant α for the single-granularity / average ablation. -> [H, W, 3]"""
    if mode == "mix":
        value = torch.full((3,), 1.0 / 3.0)
    else:
        value = torch.zeros(3)
        value[LEVELS.index(mode)] = 1.0
    return value.to(device=device, dtype=dtype).expand(height, width, 3)


def distillation_losses(
    features: Tensor,
    seg: Tensor,
    embeddings: Tensor,
    clip_decoder: torch.nn.Module,
    granularity_decoder: torch.nn.Module,
    *,
    variant: str = "official",
    single_scale: SingleScale | None = None,
    smoothing: int = 5,
    region_loss: str = "vectorised",
) -> dict[str, Tensor]:
    """Loss terms of one view (gags-method.md §3.6, pseudo-code §3.8).

    Args:
        features: Rendered per-pixel features F16. [H, W, D]
        seg: Mask row per level (s, m, l), -1 = none. [3, H, W] integer
        embeddings: The view's mask embeddings. [M, 512]
        clip_decoder: D -> 512 (unit norm), applied per row.
        granularity_decoder: D -> 3 softmax, applied to the *detached* features.
        variant: "official" or "paper" (see :class:`TrainConfig`).
        single_scale: replace α by a constant (ablation), or None.
        smoothing: box size for the region map.
        region_loss: "vectorised" or "loop" (official-style per-region Python loop).

    Returns:
        {"distill", "entropy", "consistency"} scalars (consistency is computed even when its weight is 0,
        as the official code does), and "probs" [H, W, 3] / "region" [H, W] for inspection.
    """
    height, width, _ = features.shape
    seg = seg.long()
    if single_scale is None:
        probs = granularity_decoder(features.detach())  # [H, W, 3], no gradient into the features
    else:
        probs = single_scale_probs(single_scale, height, width, features.device, features.dtype)
    region = L.region_map(seg, probs, smoothing)  # [H, W]
    valid = L.valid_mask(seg)  # [H, W]
    seg_valid = seg.permute(1, 2, 0)[valid]  # [P, 3]
    probs_valid = probs[valid]  # [P, 3]
    prediction = clip_decoder(features[valid])  # [P, 512], only where supervised (elsewhere e = 0)
    if variant == "official":
        target = L.mixed_target(embeddings, seg_valid, probs_valid)
        error_valid = L.l1_error(prediction, target)
    else:
        error_valid = L.weighted_l2_error(prediction, embeddings, seg_valid, probs_valid)
    error = features.new_zeros(height, width)
    error = error.masked_scatter(valid, error_valid)

    if region_loss == "loop":
        distill = L.loop_region_balanced_mean(error, region)
        consistency = (
            L.loop_region_variance_loss(features, region)
            if variant == "official"
            else _loop_mean_deviation(features, region)
        )
    else:
        regions = L.group_regions(region)
        distill = L.region_balanced_mean(error, regions)
        consistency = (
            L.region_variance_loss(features, regions)
            if variant == "official"
            else L.region_mean_deviation_loss(features, regions)
        )
    return {
        "distill": distill,
        "entropy": L.entropy_loss(probs),
        "consistency": consistency,
        "probs": probs,
        "region": region,
    }


def _loop_mean_deviation(features: Tensor, region: Tensor) -> Tensor:
    terms = []
    for rid in torch.unique(region):
        if int(rid) == -1:
            continue
        pixels = features[region == rid]
        terms.append((pixels - pixels.mean(dim=0)).square().sum(dim=-1).mean())
    return torch.stack(terms).mean() if terms else features.sum() * 0.0
