"""The query engine: one place that turns a field, a camera and phrases into relevancy maps.

Shared by the viewer, the render CLI and the evaluation. Two modes (DESIGN.md, "Two query modes"):

- ``"pixel"`` (the GAGS protocol, the reference for quality): render the D-channel feature map,
  decode every pixel to CLIP space, LERF relevancy per pixel. Decoding and relevancy are fused per
  chunk of pixels, so the [H, W, 512] CLIP map is never held in memory (at 1080p it would be 4 GB).
  Pixels nothing was rendered into (α = 0, feature exactly 0) are decoded once, not per pixel; their
  relevancy is that of the zero feature, as in the official evaluator. The decoder's last layer is folded
  into the phrases' embeddings and, on CUDA, the decoder runs in float16
  (:mod:`~gags_viewer.language.pixel_relevancy`). The last view's decoded pixels are kept, so a query
  change on an unchanged view decodes nothing (:mod:`~gags_viewer.language.decoded_views`). Values are
  raw (not smoothed, not normalised): the evaluation protocol needs them so.
- ``"gaussian"`` (fast): decode each Gaussian once (cached per field; by default its feature averaged with
  its nearest neighbours', see :mod:`gags_viewer.field.neighbours`), keep per-phrase similarities per
  Gaussian (cached), LERF relevancy per Gaussian [K, N], then composite the K relevancy channels in one
  render pass. A rendered channel is alpha-weighted: Σ w_i r_i with Σ w_i = α (background 0). The
  engine divides it by α (``alpha_normalize=True``, the default), so the map is the weighted mean
  relevancy of the Gaussians seen through each pixel: in [0, 1] like pixel mode, comparable to it under
  the same threshold, and equal to it wherever a single opaque Gaussian covers a pixel and the decoder
  is positively homogeneous (bias-free). Pixels with α ≤ ``min_alpha`` get 0. The raw alpha-weighted
  channels stay in ``QueryResult.render.features``; ``render.alpha`` is there for compositing.

The two modes are not identical in general: decoding is non-linear, so decode(Σ w_i f_i) differs from
Σ w_i decode(f_i) where Gaussians blend (gags-method.md §4.7).

Fields with several feature levels (LangSplat: ``metadata.levels``, one 3-D block per level) are scored
at every level in both modes, and each query keeps one level per image by LangSplat's own rule
(:mod:`gags_viewer.language.langsplat`); ``QueryResult.levels`` says which.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Literal

import torch
from torch import Tensor
from torch.nn import Module

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.field.neighbours import neighbour_smoothed_features
from gags_viewer.language.clip_text import TextEncoder, shared_text_encoder
from gags_viewer.language.colormaps import QUERY_PALETTE_SIZE, query_colors
from gags_viewer.language.composite import FeaturePCA
from gags_viewer.language.contrast import contrasting_choice, match_weights, palette_distances
from gags_viewer.language.decoded_views import DEFAULT_MAX_BYTES, DecodedView, DecodedViewCache
from gags_viewer.language.decoders import (
    StateDict,
    clip_decoder_from_state_dict,
    default_chunk_size,
    granularity_decoder_from_state_dict,
)
from gags_viewer.language.langsplat import gaussian_levels, mask_levels, pick_levels, split_levels
from gags_viewer.language.pixel_relevancy import (
    DecodedPixels,
    DecodePrecision,
    FoldedRelevancy,
    cast_decoder,
    covered_pixels,
    decode_dtype,
    decode_pixels,
    decoded_bytes,
    fused_pixel_relevancy,
    score_pixels,
)
from gags_viewer.language.relevancy import (
    TEMPERATURE,
    alpha_normalize,
    check_phrases,
    parse_queries,
    relevancy_from_similarities,
)
from gags_viewer.render.api import BackendName, RenderOutput, render
from gags_viewer.render.camera import Camera

QueryMode = Literal["pixel", "gaussian"]
MODES = ("pixel", "gaussian")


@dataclass
class QueryResult:
    """Relevancy of K queries for one camera.

    Attributes:
        relevancy: LERF relevancy per pixel and query, raw in pixel mode, alpha-normalised in gaussian
            mode (see the module docstring). [K, H, W] float32
        gaussian_scores: relevancy per Gaussian (gaussian mode only, else None). [K, N]
        render: the render pass: ``rgb`` [H, W, 3] (if asked), ``alpha`` [H, W], no depth, and
            ``features``: the D-channel feature map [H, W, D] (pixel mode) or the raw alpha-weighted
            relevancy channels [H, W, K] (gaussian mode).
        queries, negatives: the phrases used.
        mode: "pixel" or "gaussian".
        timings: seconds spent per phase: "encode" (text), "render", "decode", "relevancy".
        levels: fields with several feature levels (LangSplat): the level each query kept (index into
            ``metadata.levels``), else None.
        level_relevancy: fields with several feature levels: the relevancy at every level, before the
            choice (raw in pixel mode, alpha-normalised in gaussian mode). [L, K, H, W], else None
    """

    relevancy: Tensor
    gaussian_scores: Tensor | None
    render: RenderOutput
    queries: tuple[str, ...]
    negatives: tuple[str, ...]
    mode: str
    timings: dict[str, float] = dc_field(default_factory=dict)
    levels: tuple[int, ...] | None = None
    level_relevancy: Tensor | None = None


class QueryEngine:
    """Relevancy queries on one field, with the field's decoded features and similarities cached.

    Args:
        field: a field with language features and a CLIP decoder, on the device to compute on.
        text_encoder: the CLIP text encoder; default: the process-wide shared encoder for the field's
            ``metadata.clip`` (build one with :func:`~gags_viewer.language.clip_weights.resolve_clip_spec`
            when the spec has paths relative to the field directory or the command line overrides it).
        backend: render backend (see :func:`gags_viewer.render.render`).
        chunk_size: rows decoded at once (default: 4k on CPU, 256k on CUDA).
        temperature: LERF temperature τ.
        alpha_normalize: gaussian mode divides rendered relevancy by α (see the module docstring).
        min_alpha: below this coverage gaussian-mode relevancy is 0.
        neighbours: gaussian mode decodes each Gaussian's feature averaged with those of its nearest
            neighbours, this many including itself (:func:`~gags_viewer.field.neighbours.neighbour_smoothed_features`);
            1 decodes every Gaussian's own feature.
        similarity_cache: how many phrases keep their per-Gaussian similarities [N] cached.
        decode_precision: pixel mode's decoder precision: "auto" (float16 on CUDA, float32 on CPU),
            "float32", "float16" or "bfloat16".
        decoded_view_bytes: pixel mode keeps the last view's decoded pixels up to this size, so a query
            change on an unchanged view decodes nothing (:mod:`~gags_viewer.language.decoded_views`);
            0 keeps nothing.
        profile: synchronise CUDA between phases so that ``timings`` are exact (benchmarks).
    """

    def __init__(
        self,
        field: LanguageField,
        text_encoder: TextEncoder | None = None,
        *,
        backend: BackendName = "auto",
        chunk_size: int | None = None,
        temperature: float = TEMPERATURE,
        alpha_normalize: bool = True,
        min_alpha: float = 1e-6,
        neighbours: int = 8,
        similarity_cache: int = 32,
        decode_precision: DecodePrecision = "auto",
        decoded_view_bytes: int = DEFAULT_MAX_BYTES,
        profile: bool = False,
    ):
        if not field.has_language:
            raise GagsError("this field has no language features (an RGB-only splat cannot be queried)")
        if neighbours < 1:
            raise GagsError(
                f"gaussian-mode neighbours must be at least 1 (1: each Gaussian's own feature), got {neighbours}"
            )
        self.field = field
        self.device = field.means.device
        self._text_encoder = text_encoder
        self.backend = backend
        self.chunk_size = chunk_size or default_chunk_size(self.device)
        self.temperature = temperature
        self.alpha_normalize = alpha_normalize
        self.min_alpha = min_alpha
        self.neighbours = neighbours
        self.profile = profile
        self.decode_dtype = decode_dtype(decode_precision, self.device)
        self.negatives: tuple[str, ...] = tuple(field.metadata.negatives)
        self.levels = field.level_count
        """Feature levels each query is scored at (1 except for LangSplat fields)."""
        self._similarity_capacity = similarity_cache
        self._lock = threading.RLock()
        """Guards the small caches; never held across slow work (text encoding, the per-field builds)."""
        self._build_lock = threading.RLock()
        """Held while the once-per-field caches are built (neighbour search, decoding every Gaussian), so a
        frame that does not need them (rgb, pixel mode) never waits for them. Never taken under ``_lock``."""
        self._decoders: dict[str, Module] = {}  # "clip", "granularity", built on first use
        self._gaussian_features: Tensor | None = None
        self._gaussian_clip: Tensor | None = None
        self._gaussian_granularity: Tensor | None = None
        self._zero_clip: Tensor | None = None
        # Caches of what phrases give, each entry kept with the embedding(s) it was made from.
        self._similarities: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()  # phrase -> ([E], [N])
        # (queries, negatives) -> (text, scores per level [L, K, N], scores at each query's level [K, N])
        self._scores: OrderedDict[tuple, tuple[Tensor, Tensor, Tensor]] = OrderedDict()
        self._colors: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()  # -> (relevancy, [K, 3])
        self._folded: OrderedDict[tuple, tuple[Tensor, FoldedRelevancy]] = OrderedDict()  # ... -> pixel scorer
        self._pca: FeaturePCA | None = None
        self._decoded_views = DecodedViewCache(decoded_view_bytes)
        self.decode_gaussians_seconds: float | None = None
        """How long decoding every Gaussian took (once per field), or None before it happened."""

    # -- components ---------------------------------------------------------------------------------

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            self._text_encoder = shared_text_encoder(self.field.metadata.clip)
        return self._text_encoder

    def _decoder(
        self, name: str, state: StateDict | None, build: Callable[[StateDict], Module], missing: str
    ) -> Module:
        """The decoder cached under ``name``, built from the field's ``state`` dict on first use and moved
        to the engine's device; GagsError(``missing``) when the field has no such decoder."""
        with self._lock:
            if name not in self._decoders:
                if state is None:
                    raise GagsError(missing)
                self._decoders[name] = build(state).to(self.device)
            return self._decoders[name]

    @property
    def clip_decoder(self):
        """The field's D → CLIP decoder as a module on the engine's device."""
        return self._decoder(
            "clip",
            self.field.decoder,
            lambda state: clip_decoder_from_state_dict(state, self.field.metadata.decoder_kind),
            "this field has no CLIP decoder, so it cannot be queried with text",
        )

    @property
    def granularity_decoder(self):
        """The field's granularity decoder (D → softmax over s, m, l) on the engine's device."""
        return self._decoder(
            "granularity",
            self.field.granularity_decoder,
            granularity_decoder_from_state_dict,
            "this field has no granularity decoder",
        )

    @property
    def has_granularity(self) -> bool:
        return self.field.granularity_decoder is not None

    # -- text ---------------------------------------------------------------------------------------

    def resolve_negatives(self, negatives: Sequence[str] | None) -> tuple[str, ...]:
        return self.negatives if negatives is None else tuple(p.strip() for p in negatives if p.strip())

    def text_embeddings(self, phrases: Sequence[str]) -> Tensor:
        """L2-normalised text embeddings on the engine's device (encoded once per phrase). [K, E]"""
        return self.text_encoder.encode(list(phrases)).to(self.device, torch.float32)

    def ready(self, queries: Sequence[str], negatives: Sequence[str] | None = None) -> bool:
        """Whether every phrase is already encoded (so :meth:`query` will not wait for the text model)."""
        return self.text_encoder.is_cached(list(queries) + list(self.resolve_negatives(negatives)))

    def prepare(self, queries: Sequence[str], negatives: Sequence[str] | None = None) -> Future[Tensor]:
        """Start encoding the phrases in the background; the viewer re-renders when the future is done."""
        return self.text_encoder.encode_async(list(queries) + list(self.resolve_negatives(negatives)))

    # -- per-Gaussian caches ------------------------------------------------------------------------

    def _sync(self) -> None:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def gaussian_features(self) -> Tensor:
        """The per-Gaussian features gaussian mode decodes (neighbour-averaged unless ``neighbours`` <= 1),
        on the engine's device, once per field. [N, D]; with L feature levels, level-major rows of one
        level's width: row l·N + i is Gaussian i at level l. [L·N, D / L]"""
        with self._build_lock:
            if self._gaussian_features is None:
                field = self.field
                features = _language_features(field).to(self.device)
                sizes = field.scales().amax(dim=1).to(self.device)
                smoothed = neighbour_smoothed_features(field.means.to(self.device), sizes, features, self.neighbours)
                self._gaussian_features = split_levels(smoothed, self.levels).reshape(-1, field.level_dim)
            return self._gaussian_features

    def gaussian_clip_features(self) -> Tensor:
        """Every Gaussian decoded to CLIP space, once per field. [N, E] ([L·N, E] with L feature levels)

        Kept in float32 up to 1 GB, in float16 beyond (1M Gaussians × 512 would be 2 GB).
        """
        with self._build_lock:
            if self._gaussian_clip is None:
                start = time.perf_counter()
                features = self.gaussian_features()
                n, e = features.shape[0], self.clip_decoder.out_dim
                dtype = torch.float32 if n * e * 4 <= (1 << 30) else torch.float16
                out = torch.empty(n, e, dtype=dtype, device=self.device)
                for i in range(0, n, self.chunk_size):
                    out[i : i + self.chunk_size] = self.clip_decoder.decode(
                        features[i : i + self.chunk_size], self.chunk_size
                    )
                self._sync()
                self._gaussian_clip = out
                self.decode_gaussians_seconds = time.perf_counter() - start
            return self._gaussian_clip

    def gaussian_similarities(self, phrases: Sequence[str]) -> Tensor:
        """Cosine similarity of every Gaussian's decoded feature to each phrase (cached per phrase and
        embedding: a phrase given a new embedding, e.g. a re-used click name, is computed again). [P, N]
        ([P, L·N] with L feature levels)"""
        phrases = [p.strip() for p in phrases]
        embeddings = dict(zip(phrases, self.text_embeddings(phrases)))  # slow work first, outside the lock
        clip = self.gaussian_clip_features()
        with self._lock:
            missing = [p for p in embeddings if not _same_text(self._similarities.get(p, (None,))[0], embeddings[p])]
            if missing:
                text = torch.stack([embeddings[p] for p in missing])  # [P', E]
                sims = torch.empty(len(missing), clip.shape[0], dtype=torch.float32, device=self.device)
                for i in range(0, clip.shape[0], self.chunk_size * 4):
                    rows = clip[i : i + self.chunk_size * 4].float()
                    sims[:, i : i + rows.shape[0]] = (rows @ text.T).T
                for phrase, row in zip(missing, sims):
                    self._similarities[phrase] = (embeddings[phrase], row)
            for p in phrases:
                self._similarities.move_to_end(p)
            out = torch.stack([self._similarities[p][1] for p in phrases])
            while len(self._similarities) > max(self._similarity_capacity, len(phrases)):
                self._similarities.popitem(last=False)
            return out

    def gaussian_relevancy(self, queries: Sequence[str] | str, negatives: Sequence[str] | None = None) -> Tensor:
        """LERF relevancy of each Gaussian for each query (3D selection, PLY export), cached per
        (queries, negatives) and their embeddings. [K, N]

        With several feature levels, each query's scores at the level where they peak highest
        (:func:`~gags_viewer.language.langsplat.gaussian_levels`)."""
        return self._gaussian_scores(queries, negatives)[1]

    def gaussian_level_relevancy(self, queries: Sequence[str] | str, negatives: Sequence[str] | None = None) -> Tensor:
        """LERF relevancy of each Gaussian for each query at every feature level (cached as
        :meth:`gaussian_relevancy`). [L, K, N]"""
        return self._gaussian_scores(queries, negatives)[0]

    def _gaussian_scores(self, queries: Sequence[str] | str, negatives: Sequence[str] | None) -> tuple[Tensor, Tensor]:
        """(scores per level [L, K, N], scores at each query's level [K, N]), cached."""
        queries = parse_queries(queries) if isinstance(queries, str) else [q.strip() for q in queries]
        negatives = self.resolve_negatives(negatives)
        check_phrases(queries, negatives)
        key = (tuple(queries), tuple(negatives))
        text = self.text_embeddings(list(queries) + list(negatives))  # slow work outside the lock
        with self._lock:
            cached = self._scores.get(key)
            if cached is not None and _same_text(cached[0], text):
                self._scores.move_to_end(key)
                return cached[1], cached[2]
        sims = self.gaussian_similarities(list(queries) + list(negatives))
        k = len(queries)
        scores = relevancy_from_similarities(sims[:k].T, sims[k:].T, self.temperature).T.contiguous()
        per_level = scores.reshape(k, self.levels, -1).transpose(0, 1)  # [L, K, N]
        picked = scores if self.levels == 1 else pick_levels(per_level, gaussian_levels(per_level)).contiguous()
        with self._lock:
            self._scores[key] = (text, per_level, picked)
            self._scores.move_to_end(key)
            while len(self._scores) > 4:
                self._scores.popitem(last=False)
            return per_level, picked

    @property
    def gaussians_decoded(self) -> bool:
        """Whether every Gaussian is decoded already (:meth:`gaussian_clip_features` returns at once)."""
        return self._gaussian_clip is not None

    def contrasting_colors(self, queries: Sequence[str], negatives: Sequence[str] | None = None) -> Tensor:
        """Default colour of each query: the query palette's colour that stands out most against the
        Gaussians the query matches (see :mod:`~gags_viewer.language.contrast`). [K, 3] in [0, 1]"""
        key = (tuple(queries), self.resolve_negatives(negatives))
        relevancy = self.gaussian_relevancy(list(queries), negatives)
        with self._lock:
            cached = self._colors.get(key)
            if cached is not None and cached[0] is relevancy:  # scored from the same cached relevancy
                return cached[1]
        field = self.field
        weights = match_weights(field.opacities().to(relevancy.device), relevancy)
        palette = query_colors(QUERY_PALETTE_SIZE)
        colors = palette[contrasting_choice(palette_distances(field.base_colors(), weights, palette))]
        with self._lock:
            self._colors[key] = (relevancy, colors)
            while len(self._colors) > 8:
                self._colors.popitem(last=False)
        return colors

    def prepare_field(self) -> None:
        """Build the once-per-field caches (neighbour search, every Gaussian decoded, the decoder in its
        pixel-mode precision) so that no frame has to: the viewer calls it in the background at load."""
        self.gaussian_clip_features()
        self.folding_decoder()

    def folding_decoder(self):
        """The CLIP decoder in pixel mode's precision (:attr:`decode_dtype`), built once."""
        clip = self.clip_decoder
        return self._decoder("clip-folding", self.field.decoder, lambda _: cast_decoder(clip, self.decode_dtype), "")

    def folded_relevancy(self, queries: Sequence[str], negatives: Sequence[str]) -> FoldedRelevancy:
        """Pixel mode's scorer for these phrases (decoder's last layer folded into their embeddings),
        cached per (queries, negatives) and their embeddings."""
        key = (tuple(queries), tuple(negatives))
        text = self.text_embeddings(list(queries) + list(negatives))  # outside the lock: it may encode
        with self._lock:
            if not _same_text(self._folded.get(key, (None,))[0], text):
                scorer = FoldedRelevancy.build(
                    self.clip_decoder, text, len(queries), self.temperature, body=self.folding_decoder()
                )
                self._folded[key] = (text, scorer)
                while len(self._folded) > 8:
                    self._folded.popitem(last=False)
            self._folded.move_to_end(key)
            return self._folded[key][1]

    # -- queries ------------------------------------------------------------------------------------

    def render_features(
        self, camera: Camera, *, rgb: bool = True, background: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> RenderOutput:
        """One render pass with the D-channel language features (background 0). features: [H, W, D]"""
        return render(
            self.field,
            camera,
            rgb=rgb,
            features=self.field.features,
            background=background,
            backend=self.backend,
            depth=False,
        )

    def query(
        self,
        camera: Camera,
        queries: Sequence[str] | str,
        negatives: Sequence[str] | None = None,
        mode: QueryMode = "pixel",
        *,
        background: Sequence[float] = (0.0, 0.0, 0.0),
        rgb: bool = True,
        min_decode_alpha: float = 0.0,
    ) -> QueryResult:
        """Relevancy maps of K queries seen from ``camera``.

        Args:
            camera: the view; maps are camera.height × camera.width.
            queries: phrases, or one string of phrases separated by ";".
            negatives: negative phrases; None uses :attr:`negatives` (the field's defaults unless edited).
            mode: "pixel" (render, decode per pixel) or "gaussian" (decode per Gaussian, render K channels).
            background: RGB background of the colour render.
            rgb: also render colour (for compositing).
            min_decode_alpha: pixel mode decodes only pixels more opaque than this; the others get the
                zero feature's relevancy. 0 (the official protocol) decodes every pixel anything was
                rendered into; the viewer passes ~1/255 (nothing fainter changes a displayed colour).

        Returns:
            :class:`QueryResult` with relevancy [K, H, W] (and gaussian_scores [K, N] in gaussian mode).
        """
        if mode not in MODES:
            raise GagsError(f"unknown query mode '{mode}'; choose 'pixel' or 'gaussian'")
        queries = parse_queries(queries) if isinstance(queries, str) else [q.strip() for q in queries if q.strip()]
        negatives = self.resolve_negatives(negatives)
        check_phrases(queries, negatives)
        timings: dict[str, float] = {}
        if mode == "pixel":
            return self._query_pixel(camera, queries, negatives, background, rgb, timings, min_decode_alpha)
        return self._query_gaussian(camera, queries, negatives, background, rgb, timings)

    def _query_pixel(self, camera, queries, negatives, background, rgb, timings, min_decode_alpha) -> QueryResult:
        start = time.perf_counter()
        scorer = self.folded_relevancy(queries, negatives)
        timings["encode"] = time.perf_counter() - start

        key = (camera.key(), bool(rgb), tuple(float(c) for c in background), float(min_decode_alpha), scorer.dtype)
        kept = self._decoded_views.get(self.field, key)
        decoded: tuple[DecodedPixels, ...] | None
        if kept is not None:
            out, decoded = kept.render, kept.levels
            timings["render"] = timings["decode"] = 0.0
        else:
            start = time.perf_counter()
            out = self.render_features(camera, rgb=rgb, background=background)
            self._sync()
            timings["render"] = time.perf_counter() - start
            blocks = split_levels(_rendered_features(out), self.levels)  # [L, H, W, D]
            indices = [covered_pixels(block, out.alpha, min_decode_alpha) for block in blocks]
            decoded = self._decode_to_keep(scorer, blocks, indices, timings)
            if decoded is not None:
                self._decoded_views.put(self.field, key, DecodedView(out, decoded))

        zero = scorer.zero_feature(_rendered_features(out).shape[-1] // self.levels)
        if decoded is None:  # too large to keep: decoded and scored chunk by chunk
            per_level = [
                fused_pixel_relevancy(
                    scorer, block, index, zero, chunk_size=self.chunk_size, sync=self._sync, timings=timings
                )
                for block, index in zip(blocks, indices)
            ]
        else:
            per_level = [score_pixels(scorer, level, zero, sync=self._sync, timings=timings) for level in decoded]
        if self.levels == 1:
            return QueryResult(per_level[0], None, out, tuple(queries), tuple(negatives), "pixel", timings)
        return self._level_result(torch.stack(per_level), None, out, queries, negatives, "pixel", timings)

    def _decode_to_keep(
        self, scorer: FoldedRelevancy, blocks: Tensor, indices: list[Tensor], timings: dict
    ) -> tuple[DecodedPixels, ...] | None:
        """Every level's pixels ``indices`` of the feature blocks [L, H, W, D] decoded (to keep for later
        queries on this view), or None when they would not fit the decoded-view budget."""
        if not self._decoded_views.fits(sum(decoded_bytes(scorer, index.numel()) for index in indices)):
            return None
        self._decoded_views.clear()  # the old view goes before the new one is decoded
        return tuple(
            decode_pixels(scorer, block, index, chunk_size=self.chunk_size, sync=self._sync, timings=timings)
            for block, index in zip(blocks, indices)
        )

    def _level_result(self, per_level, gaussian_scores, out, queries, negatives, mode, timings) -> QueryResult:
        """The result of a multi-level query: each query's map at the level LangSplat's rule keeps.
        per_level [L, K, H, W], gaussian_scores [L, K, N] or None."""
        start = time.perf_counter()
        levels = mask_levels(per_level)
        relevancy = pick_levels(per_level, levels).contiguous()
        scores = None if gaussian_scores is None else pick_levels(gaussian_scores, levels).contiguous()
        timings["relevancy"] = timings.get("relevancy", 0.0) + time.perf_counter() - start
        return QueryResult(
            relevancy,
            scores,
            out,
            tuple(queries),
            tuple(negatives),
            mode,
            timings,
            levels=tuple(int(level) for level in levels),
            level_relevancy=per_level,
        )

    def _query_gaussian(self, camera, queries, negatives, background, rgb, timings) -> QueryResult:
        start = time.perf_counter()
        self.text_embeddings(list(queries) + list(negatives))
        timings["encode"] = time.perf_counter() - start

        start = time.perf_counter()
        fresh = self._gaussian_clip is None
        self.gaussian_clip_features()
        timings["decode"] = time.perf_counter() - start  # 0 after the first query on this field
        if fresh:
            timings["decode_once"] = timings["decode"]

        start = time.perf_counter()
        level_scores = self.gaussian_level_relevancy(queries, negatives)  # [L, K, N]
        scores = level_scores.reshape(-1, level_scores.shape[-1])  # [L·K, N]
        self._sync()
        timings["relevancy"] = time.perf_counter() - start

        start = time.perf_counter()
        out = render(
            self.field, camera, rgb=rgb, features=scores.T, background=background, backend=self.backend, depth=False
        )
        self._sync()
        timings["render"] = time.perf_counter() - start

        start = time.perf_counter()
        if self.alpha_normalize:
            relevancy = alpha_normalize(_rendered_features(out), out.alpha, self.min_alpha)
        else:
            relevancy = _rendered_features(out).permute(2, 0, 1).contiguous()
        timings["relevancy"] += time.perf_counter() - start
        if self.levels > 1:
            per_level = relevancy.reshape(self.levels, len(queries), *relevancy.shape[1:])
            return self._level_result(per_level, level_scores, out, queries, negatives, "gaussian", timings)
        return QueryResult(relevancy, scores, out, tuple(queries), tuple(negatives), "gaussian", timings)

    # -- granularity and feature colours -----------------------------------------------------------

    def granularity(
        self,
        camera: Camera,
        mode: QueryMode = "pixel",
        *,
        rgb: bool = True,
        background: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> tuple[Tensor, RenderOutput]:
        """Granularity probabilities (α_s, α_m, α_l) per pixel and the render they came from.

        pixel mode decodes the rendered feature map; gaussian mode renders the per-Gaussian
        probabilities (decoded once per field) and divides by α.

        Returns:
            ([H, W, 3] probabilities, RenderOutput)
        """
        decoder = self.granularity_decoder
        if mode == "pixel":
            out = self.render_features(camera, rgb=rgb, background=background)
            return decoder.decode(out.features, self.chunk_size), out
        features = self.gaussian_features()  # built outside the lock
        with self._lock:
            if self._gaussian_granularity is None:
                self._gaussian_granularity = decoder.decode(features, self.chunk_size)
            per_gaussian = self._gaussian_granularity
        out = render(
            self.field, camera, rgb=rgb, features=per_gaussian, background=background, backend=self.backend, depth=False
        )
        return alpha_normalize(_rendered_features(out), out.alpha, self.min_alpha).permute(1, 2, 0), out

    def feature_pca(self) -> FeaturePCA:
        """The field's fixed feature → RGB projection (fitted once on the per-Gaussian features)."""
        with self._lock:
            if self._pca is None:
                self._pca = FeaturePCA.fit(_language_features(self.field).to(self.device))
            return self._pca


def _rendered_features(out: RenderOutput) -> Tensor:
    """The feature channels of a render made with ``features=``. [H, W, C]"""
    assert out.features is not None, "rendered without features"
    return out.features


def _language_features(field: LanguageField) -> Tensor:
    """The field's per-Gaussian language features (the engine is only built on fields that have them). [N, D]"""
    assert field.features is not None, "a QueryEngine needs a field with language features"
    return field.features


def _same_text(cached: Tensor | None, current: Tensor) -> bool:
    """Whether a cache entry made from embedding(s) ``cached`` is still valid for ``current``."""
    return cached is not None and (cached is current or torch.equal(cached, current))
