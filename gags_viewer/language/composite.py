"""Turning relevancy maps, masks, granularity and features into images over the RGB render.

All images are float tensors in [0, 1], [H, W, 3], on the device of their inputs. Relevancy maps are
the raw values of :class:`~gags_viewer.language.engine.QueryEngine` (LERF relevancy, 0.5 means "as
close to the query as to the hardest negative"). Passing the render's ``alpha`` keeps highlights off
empty background, where the decoded feature of a zero vector gives an arbitrary relevancy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gags_viewer.language.colormaps import GRANULARITY_COLORS, apply_colormap, query_colors


def _strength(relevancy: Tensor, threshold: float) -> Tensor:
    """How far above the threshold, rescaled to [0, 1] (0 at or below it). [...]"""
    span = max(1.0 - threshold, 1e-6)
    return ((relevancy - threshold) / span).clamp(0.0, 1.0)


def _coverage(alpha: Tensor | None, like: Tensor) -> Tensor:
    return torch.ones_like(like) if alpha is None else alpha.to(like).clamp(0.0, 1.0)


def heatmap_overlay(
    rgb: Tensor,
    relevancy: Tensor,
    threshold: float = 0.5,
    colormap: str = "turbo",
    opacity: float = 0.75,
    alpha: Tensor | None = None,
) -> Tensor:
    """One query as a heat map over the RGB render, only where relevancy exceeds ``threshold``.

    Above the threshold, the colour is ``colormap((r − t) / (1 − t))`` blended over RGB with
    ``opacity`` (times the render's alpha, when given); below it the RGB shows through unchanged.

    Args:
        rgb: [H, W, 3]; relevancy: [H, W]; alpha: optional accumulated opacity [H, W].
    Returns:
        [H, W, 3]
    """
    rel = relevancy.to(rgb)
    above = rel > threshold
    colors = apply_colormap(_strength(rel, threshold), colormap)
    weight = (opacity * _coverage(alpha, rel) * above.to(rgb))[..., None]
    return torch.lerp(rgb, colors.to(rgb), weight).clamp_(0.0, 1.0)


def multi_query_overlay(
    rgb: Tensor,
    relevancy: Tensor,
    threshold: float = 0.5,
    colors: Tensor | None = None,
    opacity: float = 0.7,
    alpha: Tensor | None = None,
) -> Tensor:
    """K queries, each in its own colour, over the RGB render.

    Each pixel takes the colour of its most relevant query among those above ``threshold``; the blend
    weight grows from 0.35·opacity at the threshold to ``opacity`` at relevancy 1.

    Args:
        rgb: [H, W, 3]; relevancy: [K, H, W]; colors: [K, 3] (default :func:`query_colors`);
        alpha: optional [H, W].
    Returns:
        [H, W, 3]
    """
    if relevancy.ndim == 2:
        relevancy = relevancy[None]
    rel = relevancy.to(rgb)
    k = rel.shape[0]
    colors = query_colors(k, rgb.device) if colors is None else colors.to(rgb)
    best, index = rel.max(dim=0)
    # In place where possible: at 640x480 on a CPU each full-image temporary costs about a millisecond.
    weight = _strength(best, threshold).mul_(0.65 * opacity).add_(0.35 * opacity)
    weight.masked_fill_(best <= threshold, 0.0)
    if alpha is not None:
        weight.mul_(alpha.to(rgb).clamp(0.0, 1.0))
    return torch.lerp(rgb, colors[index], weight[..., None]).clamp_(0.0, 1.0)


def binary_mask(
    relevancy: Tensor, threshold: float = 0.5, alpha: Tensor | None = None, min_alpha: float = 0.5
) -> Tensor:
    """Thresholded relevancy; with ``alpha``, pixels less opaque than ``min_alpha`` are excluded.

    [K, H, W] (or [H, W]) -> bool of the same shape.
    """
    mask = relevancy > threshold
    if alpha is not None:
        mask = mask & (alpha > min_alpha)
    return mask


def mask_image(mask: Tensor, colors: Tensor | None = None, rgb: Tensor | None = None, opacity: float = 1.0) -> Tensor:
    """Masks as an image: one query is white on black; K queries each in their own colour (later over
    earlier). With ``rgb``, masks are blended over it at ``opacity`` instead of over black.

    Args:
        mask: bool [K, H, W] or [H, W].
    Returns:
        [H, W, 3]
    """
    if mask.ndim == 2:
        mask = mask[None]
    k, h, w = mask.shape
    device = mask.device
    if colors is None:
        colors = torch.ones(1, 3, device=device) if k == 1 else query_colors(k, device)
    base = torch.zeros(h, w, 3, device=device) if rgb is None else rgb.float()
    out = base.clone()
    for i in range(k):
        m = mask[i][..., None].to(out)
        blended = base * (1.0 - opacity) + colors[i].to(out) * opacity
        out = out * (1.0 - m) + blended * m
    return out


def granularity_image(
    probabilities: Tensor,
    rgb: Tensor | None = None,
    alpha: Tensor | None = None,
    opacity: float = 0.6,
    colors: Tensor | None = None,
) -> Tensor:
    """The granularity map: each pixel coloured by the argmax of (α_s, α_m, α_l).

    Args:
        probabilities: granularity decoder output. [H, W, 3]
        rgb: optional render to blend over (at ``opacity``); without it the classes are drawn on black.
        alpha: optional coverage [H, W]; uncovered pixels show RGB (or black).
    Returns:
        [H, W, 3]
    """
    colors = (GRANULARITY_COLORS if colors is None else colors).to(probabilities.device, torch.float32)
    classes = colors[probabilities.argmax(dim=-1)]
    coverage = _coverage(alpha, probabilities[..., 0])[..., None]
    if rgb is None:
        return classes * coverage
    weight = opacity * coverage
    return torch.lerp(rgb.float(), classes, weight).clamp_(0.0, 1.0)


@dataclass
class FeaturePCA:
    """A fixed projection of D-dimensional language features to RGB, computed once per field.

    Fitted on the per-Gaussian features (not on a frame), so colours do not change while orbiting.

    Attributes:
        mean: feature mean. [D]
        components: first three principal directions (columns), sign-fixed so that each one's
            largest-magnitude entry is positive. [D, 3]
        low, high: 1st and 99th percentiles of the projected features, mapped to 0 and 1. [3], [3]
    """

    mean: Tensor
    components: Tensor
    low: Tensor
    high: Tensor

    @staticmethod
    def fit(features: Tensor, max_samples: int = 200_000, seed: int = 0) -> FeaturePCA:
        """Fit on per-Gaussian features [N, D] (a deterministic subsample when N is large)."""
        x = features.detach().float()
        if x.shape[0] > max_samples:
            index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
            x = x[index.to(x.device)]
        mean = x.mean(dim=0)
        centred = x - mean
        cov = centred.T @ centred / max(x.shape[0] - 1, 1)
        _, vectors = torch.linalg.eigh(cov.double().cpu())  # ascending eigenvalues
        vectors = vectors.flip(-1)[:, :3].float()
        if vectors.shape[1] < 3:
            vectors = torch.cat([vectors, torch.zeros(vectors.shape[0], 3 - vectors.shape[1])], dim=1)
        pivot = vectors.abs().argmax(dim=0)
        signs = torch.sign(vectors[pivot, torch.arange(3)])
        vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs)
        vectors = vectors.to(x.device)
        projected = centred @ vectors
        low = torch.quantile(projected[:100_000].cpu(), 0.01, dim=0).to(x.device)
        high = torch.quantile(projected[:100_000].cpu(), 0.99, dim=0).to(x.device)
        high = torch.maximum(high, low + 1e-6)
        return FeaturePCA(mean, vectors, low, high)

    def colorize(self, feature_map: Tensor, alpha: Tensor, background: Sequence[float] = (0.0, 0.0, 0.0)) -> Tensor:
        """Colours for a rendered feature map.

        The render holds F = Σ w_i f_i with Σ w_i = α, so (F − α·mean)·P = Σ w_i (f_i − mean)·P: the
        colour is the premultiplied (by α) projection of the Gaussians' features, composited over
        ``background``.

        Args:
            feature_map: [H, W, D] (background 0); alpha: [H, W].
        Returns:
            [H, W, 3]
        """
        device = feature_map.device
        a = alpha.to(device, torch.float32)[..., None]
        projected = (feature_map.float() - a * self.mean.to(device)) @ self.components.to(device)
        low, high = self.low.to(device), self.high.to(device)
        color = ((projected - a * low) / (high - low)).clamp(min=0.0)
        color = torch.minimum(color, a)
        bg = torch.as_tensor(background, dtype=torch.float32, device=device)
        return (color + (1.0 - a) * bg).clamp(0.0, 1.0)
