"""Per-Gaussian features averaged over each Gaussian's nearest neighbours in 3D.

Distillation supervises the language features only through alpha-blends: every training pixel sees a
weighted sum of several Gaussians' features, so one Gaussian's own feature carries noise that the blend
averages away (the finer the training resolution, the less). Decoding each Gaussian on its own (the fast
gaussian query mode, 3D selection) sees that noise. Averaging each feature with those of its nearest
neighbours, weighted by distance relative to the Gaussian's size and by how alike the two features are
(so that touching objects with different features do not bleed into each other), is an object-space
stand-in for the blend that pixel mode decodes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def nearest_neighbours(means: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest Gaussians of every Gaussian, itself first (a k-d tree on the CPU; a Gaussian that
    shares its centre with another is still listed first).

    Args:
        means: Gaussian centres. [N, 3]
        k: neighbours per Gaussian, itself included (clamped to N).

    Returns:
        (distances [N, k] float32, indices [N, k] int64), on the device of ``means``, nearest first.
    """
    from scipy.spatial import cKDTree

    points = means.detach().cpu().double().numpy()
    k = min(k, len(points))
    distances, indices = cKDTree(points).query(points, k=k, workers=-1)
    distances, indices = np.asarray(distances).reshape(len(points), k), np.asarray(indices).reshape(len(points), k)
    indices[:, 0], distances[:, 0] = np.arange(len(points)), 0.0
    return (
        torch.from_numpy(distances).float().to(means.device),
        torch.from_numpy(indices.astype(np.int64)).to(means.device),
    )


def neighbour_smoothed_features(
    means: Tensor, sizes: Tensor, features: Tensor, k: int = 8, bandwidth: float = 2.0
) -> Tensor:
    """Each Gaussian's feature averaged with its ``k - 1`` nearest neighbours'.

    The weight of neighbour j of Gaussian i is exp(-d_ij² / (2 (bandwidth · size_i)²)) · max(0, cos(f_i, f_j)),
    and 1 for i itself: isolated Gaussians keep their own feature, neighbours a few sizes away count little,
    and so do neighbours whose feature points elsewhere (another object), while the noise among alike
    features averages out.

    Args:
        means: Gaussian centres. [N, 3]
        sizes: a length per Gaussian, e.g. its largest scale. [N]
        features: per-Gaussian features. [N, D]
        k: neighbourhood size, the Gaussian itself included; k <= 1 returns ``features`` unchanged.
        bandwidth: the weight's width in multiples of ``sizes``.

    Returns:
        Smoothed features, same dtype and device as ``features``. [N, D]
    """
    if k <= 1 or features.shape[0] <= 1:
        return features
    distances, indices = nearest_neighbours(means, k)  # [N, k]
    width = (bandwidth * sizes.detach().float().to(distances.device)).clamp_min(1e-12)[:, None]  # [N, 1]
    spatial = torch.exp(-0.5 * (distances / width) ** 2)  # [N, k]
    unit = torch.nn.functional.normalize(features.float(), dim=-1)  # [N, D]
    smoothed = torch.empty_like(features)
    chunk = 1 << 16
    for start in range(0, features.shape[0], chunk):
        rows = slice(start, start + chunk)
        neighbours = indices[rows]  # [n, k]
        alike = torch.einsum("nd,nkd->nk", unit[rows], unit[neighbours]).clamp_min(0.0)  # [n, k]
        weights = spatial[rows] * alike
        weights[:, 0] = 1.0  # the Gaussian itself (also when its feature is zero)
        weights = (weights / weights.sum(dim=1, keepdim=True)).to(features.dtype)
        smoothed[rows] = torch.einsum("nk,nkd->nd", weights, features[neighbours])
    return smoothed
