"""Pixel-mode relevancy: decode a rendered feature map to CLIP space and score it, fused per chunk.

The [H, W, E] CLIP map is never held in memory (at 1080p with E = 512 it would be 4 GB): each chunk of
pixels is decoded and immediately reduced to K relevancy values. Pixels nothing was rendered into
(α = 0, feature exactly 0) are decoded once, not per pixel; their relevancy is that of the zero feature,
as in the official evaluator. Used by :class:`~gags_viewer.language.engine.QueryEngine`.

The decoder's last layer is folded into the relevancy (:class:`FoldedRelevancy`): with h the last hidden
activation and y = W h + b the 512-D output, the similarity of ŷ = y / ‖y‖ to a text embedding t is
(h·Wᵀt + b·t) / ‖y‖, and with W = QR (reduced QR), ‖y‖² = ‖R h + Qᵀb‖² + ‖b − QQᵀb‖². So each pixel
needs one [width → width + P] product instead of [width → 512] plus a normalisation and a [512 → P]
product, and the norm is a sum of squares (no cancellation, safe in half precision). On CUDA the
decoder runs in float16 by default (tensor cores); the relevancy stays within 0.01 of float32.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.language.decoders import _Decoder
from gags_viewer.language.relevancy import relevancy_from_similarities

DecodePrecision = Literal["auto", "float32", "float16", "bfloat16"]
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def decode_dtype(precision: DecodePrecision, device: torch.device | str) -> torch.dtype:
    """The dtype pixel decoding runs in: "auto" is float16 on CUDA (tensor cores), float32 elsewhere."""
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise GagsError(f"unknown decode precision '{precision}'; choose auto, float32, float16 or bfloat16")
    return PRECISIONS[precision]


@dataclass
class FoldedRelevancy:
    """LERF relevancy of features through a decoder whose last layer is folded into the text embeddings.

    Build with :meth:`build`; call on [P, D] features to get [P, K] relevancy (float32). Depends only on
    (decoder, phrases, dtype), so the engine caches it per phrase set.

    Attributes:
        hidden: the decoder without its last layer, in ``dtype``. [P, D] -> [P, width]
        projection: [Rᵀ | Wᵀ T] in ``dtype``. [width, r + K + M]
        norm_offset: Qᵀb. [r] float32
        norm_residual: ‖b − QQᵀb‖² (float).
        text_offset: b·T for each phrase. [K + M] float32
        num_queries: K.
        temperature: LERF τ.
        dtype: the precision of the decoder body and of the folded product.
    """

    hidden: Callable[[Tensor], Tensor]
    projection: Tensor
    norm_offset: Tensor
    norm_residual: float
    text_offset: Tensor
    num_queries: int
    temperature: float
    dtype: torch.dtype
    _zero: Tensor | None = None

    @staticmethod
    def build(
        decoder: _Decoder, text: Tensor, num_queries: int, temperature: float, body: _Decoder | None = None
    ) -> FoldedRelevancy:
        """Fold ``decoder``'s last layer into ``text`` [K + M, E] (queries then negatives, unit rows).

        ``body``: the decoder in the precision to decode in (:func:`cast_decoder`); default ``decoder``.

        Raises:
            GagsError: the decoder's output is not an L2-normalised linear layer (nothing to fold).
        """
        head = decoder.head
        if head is None:
            raise GagsError(f"{type(decoder).__name__} has no L2-normalised last layer to fold")
        weight = head.weight.detach().double()  # [E, width]
        bias = head.bias.detach().double()  # [E]
        q, r = torch.linalg.qr(weight, mode="reduced")  # [E, r], [r, width]
        norm_offset = q.T @ bias
        norm_residual = float((bias - q @ norm_offset).square().sum())
        text = text.detach().to(weight.device, torch.float64)
        projection = torch.cat([r.T, weight.T @ text.T], dim=1)  # [width, r + K + M]
        body = decoder if body is None else body
        dtype = next(body.parameters()).dtype
        return FoldedRelevancy(
            hidden=body.hidden,
            projection=projection.to(dtype),
            norm_offset=norm_offset.float(),
            norm_residual=norm_residual,
            text_offset=(text @ bias).float(),
            num_queries=num_queries,
            temperature=temperature,
            dtype=dtype,
        )

    @torch.no_grad()
    def __call__(self, features: Tensor) -> Tensor:
        """Relevancy of each feature row for each query. [P, D] -> [P, K] float32"""
        out = project(self.hidden(features.to(self.dtype)), self.projection)
        rank = self.norm_offset.shape[0]
        z = out[:, :rank] + self.norm_offset
        norm = ((z * z).sum(dim=-1, keepdim=True) + self.norm_residual).clamp(min=1e-24).sqrt()
        sims = (out[:, rank:] + self.text_offset) / norm
        k = self.num_queries
        return relevancy_from_similarities(sims[:, :k], sims[:, k:], self.temperature)

    def zero_feature(self, dim: int) -> Tensor:
        """Relevancy of the zero feature (uncovered pixels), computed once. [1, K]"""
        if self._zero is None:
            self._zero = self(torch.zeros(1, dim, device=self.projection.device))
        return self._zero


def project(hidden: Tensor, projection: Tensor) -> Tensor:
    """``hidden @ projection`` with float32 output: the products of half-precision inputs are summed in
    float32 and not rounded back to half precision (that rounding alone would cost bfloat16 ~0.01 of
    relevancy). On CUDA one tensor-core matmul with a float32 output; elsewhere the same numbers in float32.
    [P, width] @ [width, C] -> [P, C] float32"""
    if hidden.dtype == torch.float32:
        return hidden @ projection.float()
    if hidden.is_cuda:
        try:
            return torch.mm(hidden, projection, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # torch without mm(out_dtype=...)
            pass
    return hidden.float() @ projection.float()


def cast_decoder(decoder: _Decoder, dtype: torch.dtype) -> _Decoder:
    """``decoder`` itself when it is in ``dtype`` already, else a copy cast to ``dtype``."""
    if next(decoder.parameters()).dtype == dtype:
        return decoder
    return copy.deepcopy(decoder).to(dtype)


def fused_pixel_relevancy(
    scorer: Callable[[Tensor], Tensor],
    feature_map: Tensor,
    alpha: Tensor,
    background_relevancy: Tensor,
    *,
    chunk_size: int,
    min_alpha: float = 0.0,
    sync: Callable[[], None] = lambda: None,
    timings: dict | None = None,
) -> Tensor:
    """Score a rendered feature map per pixel, chunk by chunk, decoding only covered pixels.

    Args:
        scorer: features [P, D] -> relevancy [P, K] (a :class:`FoldedRelevancy`, or decode + score).
        feature_map: [H, W, D] rendered features (background 0).
        alpha: [H, W] accumulated opacity.
        background_relevancy: relevancy given to the pixels that are not decoded. [1, K]
        chunk_size: pixels decoded at once.
        min_alpha: pixels with α ≤ ``min_alpha`` and (for 0) a zero feature are not decoded. 0 keeps the
            official protocol (only exactly empty pixels get the zero feature's relevancy); the viewer
            passes ~1/255, below which a highlight cannot change the displayed colour.
        sync: called after each chunk (CUDA synchronisation for exact timings).
        timings: if given, the seconds of decode + relevancy are added to its "decode" entry.

    Returns:
        [K, H, W] float32
    """
    start = time.perf_counter()
    h, w, d = feature_map.shape
    k = background_relevancy.shape[-1]
    flat = feature_map.reshape(-1, d)
    covered = alpha.reshape(-1) > min_alpha
    if min_alpha <= 0.0:
        covered = covered | (flat != 0).any(dim=-1)
    index = covered.nonzero().squeeze(-1)
    rel = background_relevancy.to(flat.device, torch.float32).reshape(1, k).repeat(h * w, 1)
    for i in range(0, index.numel(), chunk_size):
        rows = index[i : i + chunk_size]
        rel[rows] = scorer(flat[rows])
    sync()
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - start
    return rel.T.reshape(k, h, w).contiguous()
