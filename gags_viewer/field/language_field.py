"""The language field: Gaussian geometry, per-Gaussian language features, decoders and metadata.

This module knows nothing of rendering or CLIP. Decoders are kept as plain state dicts (tensors keyed
as in the official GAGS checkpoints) so that the field can be saved and validated without building any
network; :mod:`gags_viewer.language` turns them into modules.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gags_viewer.errors import FieldError

DEFAULT_NEGATIVES = ("object", "things", "stuff", "texture")
GAGS_CLIP_MODEL = "ViT-B-16"
GAGS_CLIP_PRETRAINED = "laion2b_s34b_b88k"

StateDict = dict[str, Tensor]


@dataclass
class ClipSpec:
    """Which CLIP model the language features live in.

    Either an open_clip model name plus pretrained tag (hub or open_clip cache), or a local model
    config JSON plus checkpoint file. Relative local paths are resolved against the field directory.
    """

    model: str = GAGS_CLIP_MODEL
    pretrained: str | None = GAGS_CLIP_PRETRAINED
    config_file: str | None = None
    checkpoint_file: str | None = None


@dataclass
class FieldMetadata:
    """Everything about a field that is not a tensor."""

    clip: ClipSpec = field(default_factory=ClipSpec)
    negatives: tuple[str, ...] = DEFAULT_NEGATIVES
    up: tuple[float, float, float] = (0.0, -1.0, 0.0)
    """World up direction (COLMAP scenes usually have -y up)."""
    default_camera: dict | None = None
    """Optional initial view: {"c2w": 4x4 list (OpenCV convention), "fov_y_deg": float}."""
    decoder_kind: str | None = None
    """"gags" for the GAGS 16->512 residual decoder, "langsplat" for LangSplat's autoencoder decoder
    (3 -> ... -> 512); None when the field has no decoder."""
    levels: tuple[str, ...] = ()
    """Names of the feature levels when the features are several equal blocks, one per level, each decoded
    by the same decoder (LangSplat: ("subpart", "part", "whole"), features [N, 3 x 3]); queries score every
    level and keep one per query (gags_viewer.language.langsplat). Empty: one block."""
    example_queries: tuple[str, ...] = ()
    source: str = ""
    """Provenance: where the field was read from or how it was built."""

    def to_json(self) -> dict:
        """The metadata as JSON values; ``levels`` only when there are several (files stay as before)."""
        data = dataclasses.asdict(self)
        if not data["levels"]:
            del data["levels"]
        return data

    @staticmethod
    def from_json(data: dict) -> FieldMetadata:
        """Build metadata from a parsed ``field.json``; unknown keys are a :class:`FieldError`."""
        if not isinstance(data, dict):
            raise FieldError("field metadata must be a JSON object")
        known = {f.name for f in dataclasses.fields(FieldMetadata)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FieldError(f"unknown metadata keys: {', '.join(unknown)}")
        values = dict(data)
        clip = values.pop("clip", {}) or {}
        clip_known = {f.name for f in dataclasses.fields(ClipSpec)}
        if not isinstance(clip, dict) or set(clip) - clip_known:
            raise FieldError(f"metadata 'clip' must be an object with keys {sorted(clip_known)}")
        for key in ("negatives", "example_queries", "up", "levels"):
            if key in values:
                if not isinstance(values[key], (list, tuple)):
                    raise FieldError(f"metadata '{key}' must be a list")
                values[key] = tuple(values[key])
        _check_metadata_types(clip, values)
        return FieldMetadata(clip=ClipSpec(**clip), **values)


def _check_metadata_types(clip: dict, values: dict) -> None:
    """Raise :class:`FieldError` unless parsed field.json values have the types the dataclasses document."""
    if not isinstance(clip.get("model", ""), str):
        raise FieldError("metadata 'clip.model' must be a string")
    for key in set(clip) - {"model"}:
        if clip[key] is not None and not isinstance(clip[key], str):
            raise FieldError(f"metadata 'clip.{key}' must be a string or null")
    for key in ("negatives", "example_queries", "levels"):
        if not all(isinstance(item, str) for item in values.get(key, ())):
            raise FieldError(f"metadata '{key}' must be a list of strings")
    up = values.get("up", (0.0, 1.0, 0.0))
    if len(up) != 3 or not all(map(_is_finite_number, up)):
        raise FieldError("metadata 'up' must be 3 finite numbers")
    for key, kind in (("decoder_kind", str), ("default_camera", dict)):
        if values.get(key) is not None and not isinstance(values[key], kind):
            raise FieldError(f"metadata '{key}' must be {'a string' if kind is str else 'an object'} or null")
    if not isinstance(values.get("source", ""), str):
        raise FieldError("metadata 'source' must be a string")


SH_C0 = 0.28209479177387814
"""Degree-0 spherical-harmonic constant: colour = 0.5 + SH_C0 * DC coefficient."""


@dataclass
class LanguageField:
    """A 3D Gaussian splat whose Gaussians may carry language features.

    Geometry is stored pre-activation, exactly as the Inria / GAGS PLY files store it.

    Attributes:
        means: Gaussian centres. [N, 3]
        quats: Rotations as (w, x, y, z) quaternions, not necessarily normalised. [N, 4]
        log_scales: Log of the per-axis standard deviations. [N, 3]
        opacity_logits: Opacity before the sigmoid. [N]
        sh: Spherical-harmonic colour coefficients, DC first. [N, K, 3], K = (degree + 1) ** 2
        features: Per-Gaussian language features, or None for an RGB-only splat. [N, D]
        decoder: State dict of the D -> 512 CLIP decoder (official GAGS key layout), or None.
        granularity_decoder: State dict of the D -> 3 granularity decoder, or None.
        metadata: Model names, negatives, default camera, provenance.
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh: Tensor
    features: Tensor | None = None
    decoder: StateDict | None = None
    granularity_decoder: StateDict | None = None
    metadata: FieldMetadata = field(default_factory=FieldMetadata)

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1

    @property
    def feature_dim(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    @property
    def level_count(self) -> int:
        """How many feature levels the features hold (1 unless ``metadata.levels`` names several)."""
        return max(1, len(self.metadata.levels))

    @property
    def level_dim(self) -> int:
        """Width of one level's block of the features (the decoder's input width). [N, level_dim] per level"""
        return self.feature_dim // self.level_count

    @property
    def has_language(self) -> bool:
        return self.features is not None

    def scales(self) -> Tensor:
        """Per-axis standard deviations. [N, 3]"""
        return torch.exp(self.log_scales)

    def opacities(self) -> Tensor:
        """Opacities in [0, 1]. [N]"""
        return torch.sigmoid(self.opacity_logits)

    def base_colors(self) -> Tensor:
        """View-independent colour of each Gaussian (its SH DC term), clipped to [0, 1]. [N, 3]"""
        return (0.5 + SH_C0 * self.sh[:, 0, :]).clamp(0.0, 1.0)

    def unit_quats(self) -> Tensor:
        """Normalised (w, x, y, z) quaternions. [N, 4]"""
        return torch.nn.functional.normalize(self.quats, dim=-1)

    def to(self, device: torch.device | str) -> LanguageField:
        """A copy with every tensor on ``device``."""

        def move(value):
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: v.to(device) for k, v in value.items()}
            return value

        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Robust axis-aligned bounds of the centres (1st and 99th percentile). ([3], [3])"""
        sample = self.means
        if sample.shape[0] > 200_000:
            sample = sample[torch.randperm(sample.shape[0], generator=torch.Generator().manual_seed(0))[:200_000]]
        low = torch.quantile(sample.float(), 0.01, dim=0)
        high = torch.quantile(sample.float(), 0.99, dim=0)
        return low, high

    def validate(self) -> LanguageField:
        """Check shapes, dtypes and values; raise :class:`FieldError` naming the first problem.

        Returns the field itself so that loaders can ``return field.validate()``.
        """
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "opacity_logits": (n,),
        }
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise FieldError(f"means must have shape [N, 3], got {list(self.means.shape)}")
        if n == 0:
            raise FieldError("the field has no Gaussians")
        for name, shape in expected.items():
            _check_tensor(name, getattr(self, name), shape)
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise FieldError(f"sh must have shape [N={n}, K, 3], got {list(self.sh.shape)}")
        if self.sh.shape[1] not in (1, 4, 9, 16):
            raise FieldError(f"sh has {self.sh.shape[1]} coefficients per channel; expected 1, 4, 9 or 16 (degree 0-3)")
        _check_tensor("sh", self.sh, tuple(self.sh.shape))
        if self.features is not None:
            if self.features.ndim != 2 or self.features.shape[0] != n:
                raise FieldError(f"features must have shape [N={n}, D], got {list(self.features.shape)}")
            _check_tensor("features", self.features, tuple(self.features.shape))
            if self.feature_dim % self.level_count:
                raise FieldError(
                    f"{self.feature_dim}-D features cannot be split into the {self.level_count} levels "
                    f"{', '.join(self.metadata.levels)}"
                )
        for name in ("decoder", "granularity_decoder"):
            state = getattr(self, name)
            if state is None:
                continue
            if self.features is None:
                raise FieldError(f"the field has a {name} but no language features")
            for key, value in state.items():
                if not torch.isfinite(value).all():
                    raise FieldError(f"{name} weight '{key}' contains NaN or Inf")
            in_dim = decoder_input_dim(state)
            if in_dim * self.level_count != self.feature_dim:
                per_level = f" ({self.level_count} levels of {in_dim})" if self.level_count > 1 else ""
                raise FieldError(
                    f"feature dimension {self.feature_dim} does not match the {name} input dimension "
                    f"{in_dim}{per_level}"
                )
        return self


def _is_finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float64
        return False


def decoder_input_dim(state: StateDict) -> int:
    """Input width of a decoder state dict: the in-dimension of its first weight (conv or linear)."""
    weights = [k for k in state if k.endswith("weight")]
    if not weights:
        raise FieldError("decoder state dict has no weights")
    first = min(weights, key=_layer_order)
    if state[first].ndim < 2:
        raise FieldError(f"decoder weight '{first}' has shape {list(state[first].shape)}; expected [out, in, ...]")
    return int(state[first].shape[1])


def _layer_order(key: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in key.split("."))


TENSOR_NAMES = {
    "means": "positions (means)",
    "quats": "rotations (quats)",
    "log_scales": "scales (log_scales)",
    "opacity_logits": "opacities (opacity_logits)",
    "sh": "colours (sh)",
    "features": "language features",
}
"""How error messages name the per-Gaussian tensors."""


def _check_tensor(name: str, value: Tensor, shape: tuple) -> None:
    if not isinstance(value, Tensor):
        raise FieldError(f"{name} must be a tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise FieldError(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    if not value.is_floating_point():
        raise FieldError(f"{name} must be floating point, got {value.dtype}")
    bad = ~torch.isfinite(value)
    if bad.any():
        count = int(bad.reshape(value.shape[0], -1).any(dim=1).sum()) if value.ndim else 1
        what = TENSOR_NAMES.get(name, name)
        raise FieldError(f"{what} contain NaN or Inf ({count:,} Gaussian{'s' if count != 1 else ''} affected)")
