"""LERF relevancy: pure functions on similarities, no model, no rendering.

For a unit CLIP-space vector φ (a decoded pixel or Gaussian), a query embedding t_q and negative
embeddings t_1..t_M, with s_q = φ·t_q and s_j = φ·t_j:

    rel = min_j  exp(τ s_q) / (exp(τ s_q) + exp(τ s_j))  =  min_j sigmoid(τ (s_q − s_j)),    τ = 10

i.e. a two-way softmax against each negative, keeping the worst case (LERF; GAGS
``eval/openclip_encoder.py``). The sigmoid form is the numerically stable way to write it. Since the
sigmoid is monotone, the minimum over negatives is the sigmoid of τ (s_q − max_j s_j), which is what
:func:`relevancy_from_similarities` computes (one sigmoid per query instead of M).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gags_viewer.errors import GagsError

TEMPERATURE = 10.0


def parse_queries(text: str) -> list[str]:
    """Split the viewer's query box ("mug; plant") into phrases: ``;`` separates, blanks are dropped."""
    return [part.strip() for part in text.split(";") if part.strip()]


def check_phrases(queries: Sequence[str], negatives: Sequence[str]) -> None:
    """Raise :class:`GagsError` when there is no query or no negative phrase."""
    if len(queries) == 0:
        raise GagsError("no query phrase given")
    if len(negatives) == 0:
        raise GagsError("relevancy needs at least one negative phrase (default: object, things, stuff, texture)")


def relevancy_from_similarities(query_sims: Tensor, negative_sims: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """LERF relevancy from cosine similarities.

    Args:
        query_sims: φ·t_q for each query. [..., K]
        negative_sims: φ·t_j for each negative. [..., M], M ≥ 1
        temperature: τ (10 in LERF and GAGS).

    Returns:
        min_j sigmoid(τ (s_q − s_j)) in [0, 1]. [..., K]
    """
    if negative_sims.shape[-1] == 0:
        raise GagsError("relevancy needs at least one negative phrase")
    hardest = negative_sims.max(dim=-1, keepdim=True).values  # [..., 1]
    return torch.sigmoid(temperature * (query_sims - hardest))


def relevancy(
    clip_features: Tensor, query_embeds: Tensor, negative_embeds: Tensor, temperature: float = TEMPERATURE
) -> Tensor:
    """LERF relevancy of unit CLIP-space vectors.

    Args:
        clip_features: decoded, L2-normalised CLIP-space vectors. [..., E]
        query_embeds: L2-normalised text embeddings of the queries. [K, E]
        negative_embeds: L2-normalised text embeddings of the negatives. [M, E]

    Returns:
        [..., K]
    """
    text = torch.cat([query_embeds, negative_embeds], dim=0).to(clip_features.dtype)
    sims = clip_features @ text.T  # [..., K + M]
    k = query_embeds.shape[0]
    return relevancy_from_similarities(sims[..., :k].float(), sims[..., k:].float(), temperature)


def alpha_normalize(accumulated: Tensor, alpha: Tensor, min_alpha: float = 1e-6) -> Tensor:
    """Turn alpha-weighted sums of per-Gaussian values into weighted means.

    A rendered channel is Σ_i w_i r_i with Σ_i w_i = α (background 0); dividing by α gives the mean of
    r over the Gaussians seen through the pixel, weighted by their compositing weights. Pixels with
    α ≤ ``min_alpha`` get 0.

    Args:
        accumulated: rendered channels. [H, W, K]
        alpha: accumulated opacity. [H, W]

    Returns:
        [K, H, W], clamped to [0, 1].
    """
    inverse = torch.where(alpha > min_alpha, alpha.reciprocal(), 0.0)  # 1/α, and 0 where not covered
    return (accumulated * inverse[..., None]).clamp_(0.0, 1.0).permute(2, 0, 1).contiguous()


def normalize_scores(scores: Tensor, dim: int | None = None, eps: float = 1e-9) -> Tensor:
    """GAGS' display/threshold normalisation: o = clip(2·minmax(r) − 1, 0, 1).

    Args:
        scores: relevancy values. [...]
        dim: normalise along this dimension (e.g. per query); None normalises over everything.
    """
    if dim is None:
        low, high = scores.min(), scores.max()
    else:
        low = scores.amin(dim=dim, keepdim=True)
        high = scores.amax(dim=dim, keepdim=True)
    normed = (scores - low) / (high - low + eps)
    return (2.0 * normed - 1.0).clamp(0.0, 1.0)
