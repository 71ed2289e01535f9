"""Pixel-mode relevancy: decode a rendered feature map to CLIP space and score it, fused per chunk.

The [H, W, E] CLIP map is never held in memory (at 1080p with E = 512 it would be 4 GB): each chunk of
pixels is decoded and immediately reduced to K relevancy values. Pixels nothing was rendered into
(α = 0, feature exactly 0) are decoded once, not per pixel; their relevancy is that of the zero feature,
as in the official evaluator. Used by :class:`~gags_viewer.language.engine.QueryEngine`.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch
from torch import Tensor

from gags_viewer.language.decoders import _Decoder
from gags_viewer.language.relevancy import relevancy_from_similarities


def fused_pixel_relevancy(
    decoder: _Decoder,
    feature_map: Tensor,
    alpha: Tensor,
    text: Tensor,
    num_queries: int,
    *,
    device: torch.device,
    chunk_size: int,
    temperature: float,
    sync: Callable[[], None] = lambda: None,
    timings: Optional[dict] = None,
) -> Tensor:
    """Decode a rendered feature map per pixel and compute relevancy, chunk by chunk.

    Args:
        decoder: the D → CLIP decoder (on ``device``).
        feature_map: [H, W, D] rendered features (background 0).
        alpha: [H, W] accumulated opacity; pixels with α = 0 and a zero feature are decoded once.
        text: query embeddings then negative embeddings. [K + M, E]
        num_queries: K.
        device: where the relevancy is computed and returned.
        chunk_size: pixels decoded at once.
        temperature: LERF temperature τ.
        sync: called after each decode and relevancy step (CUDA synchronisation for exact timings).
        timings: if given, "decode" and "relevancy" seconds are added to it.

    Returns:
        [K, H, W] float32
    """
    h, w, d = feature_map.shape
    text = text.to(device, torch.float32)
    flat = feature_map.reshape(-1, d)
    covered = (alpha.reshape(-1) > 0) | (flat != 0).any(dim=-1)
    index = covered.nonzero().squeeze(-1)
    rel = torch.empty(h * w, num_queries, dtype=torch.float32, device=device)
    decode_s = relevancy_s = 0.0

    def score(clip_rows: Tensor) -> Tensor:
        sims = clip_rows @ text.T
        return relevancy_from_similarities(sims[:, :num_queries], sims[:, num_queries:], temperature)

    if index.numel() < h * w:
        t0 = time.perf_counter()
        zero_clip = decoder.decode(torch.zeros(1, d, device=device))
        t1 = time.perf_counter()
        rel[~covered] = score(zero_clip)
        relevancy_s += time.perf_counter() - t1
        decode_s += t1 - t0
    for i in range(0, index.numel(), chunk_size):
        rows = index[i : i + chunk_size]
        t0 = time.perf_counter()
        clip_rows = decoder.decode(flat[rows], chunk_size)
        sync()
        t1 = time.perf_counter()
        rel[rows] = score(clip_rows)
        sync()
        t2 = time.perf_counter()
        decode_s += t1 - t0
        relevancy_s += t2 - t1
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + decode_s
        timings["relevancy"] = timings.get("relevancy", 0.0) + relevancy_s
    return rel.T.reshape(num_queries, h, w).contiguous()
