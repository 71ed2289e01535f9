"""Preprocessing of a scene for GAGS distillation: masks per granularity level, CLIP features per mask,
and the official ``language_features/<stem>_f.npy`` / ``_s.npy`` files (gags-method.md §1.3, §2)."""

from gags_viewer.preprocess.clip_features import ClipImageEncoder, load_clip_model, mask_crops
from gags_viewer.preprocess.masks import GroundTruthMaskSource, LevelMasks, MaskSource
from gags_viewer.preprocess.pipeline import extract_language_features
from gags_viewer.preprocess.writer import write_colmap_text, write_language_features

__all__ = [
    "ClipImageEncoder",
    "GroundTruthMaskSource",
    "LevelMasks",
    "MaskSource",
    "extract_language_features",
    "load_clip_model",
    "mask_crops",
    "write_colmap_text",
    "write_language_features",
]
