"""Default query colours that stand out against the object they paint.

A highlight in the query palette's first colour (blue) over a blue object, or orange over an orange
one, is hard to see. Each query's default colour is instead the palette colour farthest, on average
(CIELAB distance), from the colours of the Gaussians that query selects, each palette colour used once
while there are unused ones. Colours the user picks are never changed: this only supplies defaults.
"""

from __future__ import annotations

import torch
from torch import Tensor

MATCH_RELEVANCY = 0.5
"""Gaussians at or above this relevancy are "under the mask" (the viewer's default threshold)."""

FALLBACK_FRACTION = 0.005
"""When no Gaussian reaches :data:`MATCH_RELEVANCY`, the top fraction by relevancy stands in."""


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """CIELAB (D65) of sRGB colours in [0, 1]. [..., 3] -> [..., 3] (L in [0, 100])"""
    rgb = rgb.double().clamp(0.0, 1.0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = torch.tensor(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        dtype=torch.float64,
        device=rgb.device,
    )
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64, device=rgb.device)
    xyz = (linear @ to_xyz.T) / white
    delta = 6.0 / 29.0
    f = torch.where(xyz > delta**3, xyz ** (1.0 / 3.0), xyz / (3 * delta**2) + 4.0 / 29.0)
    return torch.stack(
        [116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], dim=-1
    )


def match_weights(opacities: Tensor, relevancy: Tensor) -> Tensor:
    """How much each Gaussian counts as "under" each query's mask: its opacity where its relevancy reaches
    :data:`MATCH_RELEVANCY` (or, for a query that no Gaussian reaches, among its most relevant
    :data:`FALLBACK_FRACTION`, at least one), else 0.

    Args:
        opacities: opacity of each Gaussian in [0, 1]. [N]
        relevancy: relevancy of each Gaussian for each query. [K, N]

    Returns:
        [K, N], each row summing to 1.
    """
    relevancy = torch.nan_to_num(relevancy.float(), nan=0.0)
    matched = relevancy >= MATCH_RELEVANCY
    top = max(1, int(round(FALLBACK_FRACTION * relevancy.shape[1])))
    fallback = torch.zeros_like(matched)
    fallback.scatter_(1, relevancy.topk(top, dim=1).indices, True)
    chosen = torch.where(matched.any(dim=1, keepdim=True), matched, fallback).float()
    weights = chosen * opacities.float()[None, :] + 1e-12 * chosen  # all transparent: equal weights
    return weights / weights.sum(dim=1, keepdim=True)


def palette_distances(base_colors: Tensor, weights: Tensor, palette: Tensor) -> Tensor:
    """Mean CIELAB distance from each palette colour to the Gaussians under each query's mask.

    The mean of the distances, not the distance to the mean colour: an orange-and-grey lamp must not get
    orange because the average of its parts is far from orange.

    Args:
        base_colors: colour of each Gaussian in [0, 1]. [N, 3]
        weights: :func:`match_weights`. [K, N]
        palette: candidate colours in [0, 1]. [P, 3]

    Returns:
        [K, P]
    """
    lab = srgb_to_lab(base_colors.cpu())  # [N, 3] float64
    distance = torch.cdist(lab, srgb_to_lab(palette.cpu()))  # [N, P]
    return weights.cpu().double() @ distance


def contrasting_choice(distances: Tensor) -> list[int]:
    """For each query in order, the palette entry with the largest distance to what it paints, taking
    entries not yet used while any remain (then the largest of all).

    Args:
        distances: :func:`palette_distances`. [K, P]

    Returns:
        K palette indices.
    """
    count = distances.shape[1]
    used: set[int] = set()
    choice = []
    for row in distances:
        free = [i for i in range(count) if i not in used] or list(range(count))
        best = max(free, key=lambda i: (float(row[i]), -i))
        used.add(best)
        choice.append(best)
    return choice
