"""LangSplat's query protocol: relevancy per feature level, one level kept per query (gags-method.md §4.6).

A LangSplat field holds one 3-D feature block per level (subpart, part, whole), all decoded by the same
autoencoder decoder. Every query is scored at every level; its evaluation (``eval/evaluate_iou_loc.py``,
``activate_stream`` and ``lerf_localization``) then keeps one level per query and image:

- masks (mIoU), and what the viewer shows: the level whose smoothed map ``½ (r + box30(r))`` has the
  highest maximum (:func:`mask_levels`);
- localization: the level whose ``box30(r)`` has the highest maximum (:func:`localization_levels`).

Ties go to the lowest level, as ``torch.argmax`` / ``np.argmax`` do there. Without an image (a query's
per-Gaussian scores, for 3D selection and exports) the level with the highest per-Gaussian maximum is kept
(:func:`gaussian_levels`): the same rule with no image to smooth over.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gags_viewer.language.smoothing import box_filter, box_filter_tensor


def split_levels(features: Tensor, levels: int) -> Tensor:
    """Features with the levels side by side as one block per level. [..., L·D] -> [L, ..., D]"""
    if levels == 1:
        return features.unsqueeze(0)
    *lead, width = features.shape
    blocks = features.reshape(*lead, levels, width // levels)
    return blocks.movedim(-2, 0)


def mask_levels(relevancy: Tensor) -> Tensor:
    """LangSplat's level per query for masks: argmax over levels of max ½ (r + box30(r)).

    Args:
        relevancy: raw relevancy per level and query. [L, K, H, W]
    Returns:
        chosen level per query. [K] int64 (CPU)
    """
    if relevancy.device.type == "cpu":
        values = relevancy.detach().double().numpy()
        return levels_by_peak(0.5 * (values + box_filter(values)))
    maps = relevancy.detach().double()  # filtered where it is: a GPU viewer frame does this per query
    smoothed = 0.5 * (maps + box_filter_tensor(maps))
    return levels_by_peak(smoothed.amax(dim=(-2, -1), keepdim=True).cpu().numpy())


def localization_levels(relevancy: Tensor) -> Tensor:
    """LangSplat's level per query for localization: argmax over levels of max box30(r). [L, K, H, W] -> [K]"""
    return levels_by_peak(box_filter(relevancy.detach().float().cpu().numpy()))


def levels_by_peak(maps: np.ndarray) -> Tensor:
    """The level whose map peaks highest, per query, ties to the lowest level: LangSplat's choice once its
    maps are filtered (½ (r + box30(r)) for masks, box30(r) for localization). [L, K, H, W] -> [K] int64"""
    maps = np.asarray(maps)
    return _first_argmax(maps.reshape(*maps.shape[:2], -1).max(axis=-1))


def gaussian_levels(scores: Tensor) -> Tensor:
    """The level per query without an image: argmax over levels of the per-Gaussian maximum. [L, K, N] -> [K]"""
    return _first_argmax(scores.detach().float().amax(dim=-1).cpu().numpy())


def pick_levels(per_level: Tensor, levels: Tensor) -> Tensor:
    """Each query's map at its level. per_level [L, K, ...], levels [K] -> [K, ...]"""
    index = torch.arange(per_level.shape[1], device=per_level.device)
    return per_level[levels.to(per_level.device), index]


def _first_argmax(peaks: np.ndarray) -> Tensor:
    """Argmax over axis 0 of [L, K] peaks, ties to the lowest level. -> [K] int64"""
    return torch.from_numpy(np.argmax(np.asarray(peaks), axis=0).astype(np.int64))
