"""Pixel-mode relevancy: decode a rendered feature map to CLIP space and score it, fused per chunk.

The [H, W, E] CLIP map is never held in memory (at 1080p with E = 512 it would be 4 GB): each chunk of
pixels is decoded and immediately reduced to K relevancy values. Pixels nothing was rendered into
(α = 0, feature exactly 0) are decoded once, not per pixel; their relevancy is that of the zero feature,
as in the official evaluator. Used by :class:`~gags_viewer.language.engine.QueryEngine`.

The decoder's last layer is folded into the relevancy (:class:`FoldedRelevancy`): with h the last hidden
activation and y = W h + b the 512-D output, the similarity of ŷ = y / ‖y‖ to a text embedding t is
(h·Wᵀt + b·t) / ‖y‖, and with W = QR (reduced QR), ‖y‖² = ‖R h + Qᵀb‖² + ‖b − QQᵀb‖². So each pixel
needs one [width → width + P] product instead of [width → 512] plus a normalisation and a [512 → P]
product, and the norm is a sum of squares (no cancellation, safe in half precision). R is upper
triangular: on a CPU the norm's product skips its zero blocks, and the units that are zero on every pixel
of a chunk (:func:`project_triangular`). On CUDA the decoder runs in float16 by default (tensor cores);
the relevancy stays within 0.01 of float32.
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
from gags_viewer.language.cpu_chunks import map_chunks
from gags_viewer.language.decoder_inference import Scratch, active_units, thread_scratch
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
        hidden: the decoder without its last layer, in ``dtype`` (and its :class:`Scratch`). [P, D] -> [P, width]
        projection: [Rᵀ | Wᵀ T] in ``dtype``. [width, r + K + M]
        norm_offset: Qᵀb. [r] float32
        norm_residual: ‖b − QQᵀb‖² (float).
        text_offset: b·T for each phrase. [K + M] float32
        num_queries: K.
        temperature: LERF τ.
        dtype: the precision of the decoder body and of the folded product.
    """

    hidden: Callable[[Tensor, Scratch | None], Tensor]
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
        return self.score_hidden(*self.hidden_and_norm(features))

    @torch.no_grad()
    def hidden_and_norm(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """What the relevancy of any phrases needs of each feature row: the last hidden activation h and
        the norm of the decoded vector ‖W h + b‖. [P, D] -> ([P, width] in ``dtype``, [P, 1] float32)"""
        scratch = thread_scratch() if features.device.type == "cpu" else None  # CUDA's allocator is cheap
        hidden = self.hidden(features.to(self.dtype), scratch)
        rank = self.norm_offset.shape[0]
        if scratch is None or hidden.dtype != torch.float32:
            z = project(hidden, self.projection[:, :rank]).add_(self.norm_offset)
            squared = torch.linalg.vector_norm(z, dim=-1, keepdim=True).square_()
        else:
            z_t = project_triangular(hidden, self.projection[:, :rank], scratch)
            squared = z_t.add_(self.norm_offset[:, None]).square_().sum(dim=0)[:, None]  # 15x vector_norm's speed here
        return hidden, (squared + self.norm_residual).clamp_(min=1e-24).sqrt_()

    @torch.no_grad()
    def score_hidden(self, hidden: Tensor, norm: Tensor) -> Tensor:
        """Relevancy from :meth:`hidden_and_norm`'s output (of this decoder in this dtype, for any
        phrases). [P, width], [P, 1] -> [P, K] float32"""
        rank = self.norm_offset.shape[0]
        sims = (project(hidden, self.projection[:, rank:]) + self.text_offset) / norm
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
    A unit-major ``hidden`` (a transposed view, as CPU inference gives) is multiplied as such: the
    product reading it by rows is ~2x faster than ``hidden @ projection`` there.
    [P, width] @ [width, C] -> [P, C] float32"""
    if hidden.is_cuda and hidden.dtype != torch.float32:
        try:
            return torch.mm(hidden, projection, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # torch without mm(out_dtype=...)
            pass
    hidden, projection = hidden.float(), projection.float()
    if hidden.t().is_contiguous() and not hidden.is_contiguous():
        return (projection.t() @ hidden.t()).t()
    return hidden @ projection


NORM_BLOCKS = 4
"""Column blocks of Rᵀ in :func:`project_triangular`: it skips 6 of 16 blocks (zeros), 37.5 % of the
norm's products, in products still wide enough to run at full speed."""

NORM_SLOT = 0
"""The :class:`Scratch` slot :func:`project_triangular` writes to (free once the hidden layers are done)."""


def project_triangular(hidden: Tensor, lower: Tensor, scratch: Scratch) -> Tensor:
    """``(hidden @ lower)ᵀ`` for a lower-triangular (or lower-trapezoidal) ``lower`` such as Rᵀ, read
    neither in its zero blocks (column block [a, b) of the product only needs rows a.. of ``lower``) nor
    in the rows of the units that are zero in every row of ``hidden`` (:func:`active_units`). Float32,
    unit-major, into ``scratch``'s slot :data:`NORM_SLOT`. [P, width] @ [width, r] -> [r, P]"""
    rank = lower.shape[1]
    out_t = scratch.take(NORM_SLOT, rank, hidden.shape[0], hidden)
    units, hidden_active = active_units(hidden.t(), scratch)
    if units is not None:
        lower = lower.index_select(0, units)
    step = -(-rank // NORM_BLOCKS)
    for start in range(0, rank, step):
        first = start if units is None else int(torch.searchsorted(units, start))
        stop = start + step
        torch.mm(lower[first:, start:stop].t(), hidden_active[first:], out=out_t[start:stop])
    return out_t


def cast_decoder(decoder: _Decoder, dtype: torch.dtype) -> _Decoder:
    """``decoder`` itself when it is in ``dtype`` already, else a copy cast to ``dtype``."""
    if next(decoder.parameters()).dtype == dtype:
        return decoder
    return copy.deepcopy(decoder).to(dtype)


def covered_pixels(feature_map: Tensor, alpha: Tensor, min_alpha: float = 0.0) -> Tensor:
    """Row-major indices of the pixels to decode: α > ``min_alpha``, and for ``min_alpha`` 0 also any
    pixel with a nonzero feature. 0 keeps the official protocol (only exactly empty pixels get the zero
    feature's relevancy); the viewer passes ~1/255, below which a highlight cannot change the displayed
    colour. [H, W, D], [H, W] -> [P] int64"""
    flat = feature_map.reshape(-1, feature_map.shape[-1])
    covered = alpha.reshape(-1) > min_alpha
    if min_alpha <= 0.0:
        covered = covered | (flat != 0).any(dim=-1)
    return covered.nonzero().squeeze(-1)


TILE = 32
"""Side of the square tiles a CPU decodes pixels in (:func:`in_tiles`)."""


def in_tiles(index: Tensor, width: int, tile: int = TILE) -> Tensor:
    """Row-major pixel indices of an image ``width`` pixels wide, reordered tile by tile (``tile`` ×
    ``tile`` squares, row-major within each). A decode chunk then holds neighbouring pixels, which
    switch on fewer distinct decoder units than a strip of whole rows does; the units no pixel of a chunk
    uses are skipped on a CPU (:mod:`~gags_viewer.language.decoder_inference`). [P] -> [P]"""
    rows, cols = index // width, index % width
    tiles = (rows // tile) * -(-width // tile) + cols // tile
    return index[torch.sort(tiles, stable=True).indices]


def _filled(background_relevancy: Tensor, pixels: int, device: torch.device) -> Tensor:
    """[pixels, K] float32, every row the background's relevancy."""
    k = background_relevancy.shape[-1]
    return background_relevancy.to(device, torch.float32).reshape(1, k).repeat(pixels, 1)


def _as_maps(rel: Tensor, height: int, width: int) -> Tensor:
    """[H·W, K] -> [K, H, W]"""
    return rel.T.reshape(rel.shape[1], height, width).contiguous()


def fused_pixel_relevancy(
    scorer: Callable[[Tensor], Tensor],
    feature_map: Tensor,
    index: Tensor,
    background_relevancy: Tensor,
    *,
    chunk_size: int,
    sync: Callable[[], None] = lambda: None,
    timings: dict | None = None,
) -> Tensor:
    """Score the pixels ``index`` of a rendered feature map, chunk by chunk, keeping nothing of the
    decoding (:func:`decode_pixels` keeps it); the other pixels get ``background_relevancy``.

    Args:
        scorer: features [P, D] -> relevancy [P, K] (a :class:`FoldedRelevancy`, or decode + score).
        feature_map: [H, W, D] rendered features (background 0).
        index: the pixels to decode, from :func:`covered_pixels`. [P] int64
        background_relevancy: relevancy given to the pixels that are not decoded. [1, K]
        chunk_size: pixels decoded at once.
        sync: called after the last chunk (CUDA synchronisation for exact timings).
        timings: if given, the seconds of decode + relevancy are added to its "decode" entry.

    Returns:
        [K, H, W] float32
    """
    start = time.perf_counter()
    h, w, d = feature_map.shape
    flat = feature_map.reshape(-1, d)
    rel = _filled(background_relevancy, h * w, flat.device)
    if flat.device.type == "cpu":
        index = in_tiles(index, w)
    starts = range(0, index.numel(), chunk_size)

    def score(i: int) -> None:
        rows = index[starts[i] : starts[i] + chunk_size]
        rel[rows] = scorer(flat[rows])  # the chunks write disjoint rows

    map_chunks(score, len(starts), flat.device)
    sync()
    _add_time(timings, "decode", start)
    return _as_maps(rel, h, w)


@dataclass(frozen=True)
class DecodedPixels:
    """The covered pixels of one rendered feature map, decoded up to the folded last layer: enough to
    score any phrases (:meth:`FoldedRelevancy.score_hidden`) without decoding again. Kept in the chunks
    they were decoded in (no copy into one buffer).

    Attributes:
        index: indices (row-major in the image) of the decoded pixels, in decoding order. [P] int64
        hidden: their last hidden activations, in the decoder's dtype, chunk by chunk. [P_i, width] each
        norm: the norms of their decoded vectors, chunk by chunk. [P_i, 1] float32 each
        height, width: the image size.
    """

    index: Tensor
    hidden: tuple[Tensor, ...]
    norm: tuple[Tensor, ...]
    height: int
    width: int


def decoded_bytes(folded: FoldedRelevancy, pixels: int) -> int:
    """Memory :func:`decode_pixels` keeps for ``pixels`` decoded pixels."""
    width = folded.projection.shape[0]
    return pixels * (width * folded.projection.element_size() + 4 + 8)


def decode_pixels(
    folded: FoldedRelevancy,
    feature_map: Tensor,
    index: Tensor,
    *,
    chunk_size: int,
    sync: Callable[[], None] = lambda: None,
    timings: dict | None = None,
) -> DecodedPixels:
    """Decode the pixels ``index`` (from :func:`covered_pixels`) of a feature map [H, W, D] up to the
    folded last layer, chunk by chunk; adds its seconds to ``timings["decode"]``."""
    start = time.perf_counter()
    h, w, d = feature_map.shape
    flat = feature_map.reshape(-1, d)
    if flat.device.type == "cpu":
        index = in_tiles(index, w)
    starts = range(0, index.numel(), chunk_size)
    chunks = map_chunks(
        lambda i: folded.hidden_and_norm(flat[index[starts[i] : starts[i] + chunk_size]]), len(starts), flat.device
    )
    sync()
    _add_time(timings, "decode", start)
    return DecodedPixels(index, tuple(c[0] for c in chunks), tuple(c[1] for c in chunks), h, w)


def score_pixels(
    folded: FoldedRelevancy,
    decoded: DecodedPixels,
    background_relevancy: Tensor,
    *,
    sync: Callable[[], None] = lambda: None,
    timings: dict | None = None,
) -> Tensor:
    """Relevancy maps of ``folded``'s phrases on decoded pixels, the others given ``background_relevancy``
    [1, K]; adds its seconds to ``timings["relevancy"]``. -> [K, H, W] float32"""
    start = time.perf_counter()
    rel = _filled(background_relevancy, decoded.height * decoded.width, background_relevancy.device)
    if decoded.hidden:
        chunks = map_chunks(
            lambda i: folded.score_hidden(decoded.hidden[i], decoded.norm[i]),
            len(decoded.hidden),
            decoded.hidden[0].device,
        )
        scores = torch.cat(chunks)
        rel[decoded.index.to(rel.device)] = scores.to(rel.device)
    sync()
    _add_time(timings, "relevancy", start)
    return _as_maps(rel, decoded.height, decoded.width)


def _add_time(timings: dict | None, phase: str, start: float) -> None:
    if timings is not None:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
