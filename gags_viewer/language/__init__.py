"""Language queries: CLIP text encoding, decoders, LERF relevancy, colormaps and compositing.

Imports point downwards only: this package uses :mod:`gags_viewer.field` and :mod:`gags_viewer.render`,
never viser or anything from the viewer, eval or train packages. open_clip is imported lazily (only when
a text model is actually loaded).
"""

from gags_viewer.language.clip_text import TextEncoder, shared_text_encoder
from gags_viewer.language.clip_weights import ClipError, ClipWeightsMissing, resolve_clip_spec
from gags_viewer.language.colormaps import COLORMAPS, apply_colormap, query_colors
from gags_viewer.language.composite import (
    FeaturePCA,
    binary_mask,
    granularity_image,
    heatmap_overlay,
    mask_image,
    multi_query_overlay,
)
from gags_viewer.language.decoders import (
    GagsClipDecoder,
    MLPDecoder,
    clip_decoder_from_state_dict,
    granularity_decoder_from_state_dict,
)
from gags_viewer.language.engine import MODES, QueryEngine, QueryResult
from gags_viewer.language.relevancy import (
    TEMPERATURE,
    normalize_scores,
    parse_queries,
    relevancy,
    relevancy_from_similarities,
)

__all__ = [
    "COLORMAPS",
    "MODES",
    "TEMPERATURE",
    "ClipError",
    "ClipWeightsMissing",
    "FeaturePCA",
    "GagsClipDecoder",
    "MLPDecoder",
    "QueryEngine",
    "QueryResult",
    "TextEncoder",
    "apply_colormap",
    "binary_mask",
    "clip_decoder_from_state_dict",
    "granularity_decoder_from_state_dict",
    "granularity_image",
    "heatmap_overlay",
    "mask_image",
    "multi_query_overlay",
    "normalize_scores",
    "parse_queries",
    "query_colors",
    "relevancy",
    "relevancy_from_similarities",
    "resolve_clip_spec",
    "shared_text_encoder",
]
