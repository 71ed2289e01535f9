"""A small synthetic language field whose answers are known: for tests, screenshots and timings.

Each object is a blob of Gaussians labelled with a phrase. Its Gaussians carry a one-hot feature, and
the field's GAGS-layout decoder (bias-free, identity blocks, so it is exactly linear on non-negative
inputs) maps that one-hot to a CLIP-space vector φ built from the text embeddings themselves:
φ·t(own phrase) = +a, φ·t(other phrases) = −a and φ·t(negative) = 0. So a query for an object's
phrase has relevancy sigmoid(10·a/|φ|) > 0.5 on that object and < 0.5 on every other one, whatever
CLIP model encoded the phrases (a random tiny model in tests). A floor whose φ leans towards the
negatives scores below 0.5 for every query.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gags_viewer.field.language_field import DEFAULT_NEGATIVES, ClipSpec, FieldMetadata, LanguageField
from gags_viewer.language.decoders import GAGS_CLIP_LAYERS, random_granularity_decoder_state

SH_C0 = 0.28209479177387814
FEATURE_DIM = 16
DECODER_WIDTH = 256


@dataclass
class BlobSpec:
    """One labelled object: a ball of Gaussians (or a flat slab when ``extent`` is given)."""

    phrase: str | None
    center: tuple[float, float, float]
    color: tuple[float, float, float]
    count: int = 600
    radius: float = 0.6
    extent: tuple[float, float, float] | None = None
    """Half-sizes of a box instead of a ball (for the floor)."""


DEFAULT_SCENE = (
    BlobSpec("mug", (-1.1, 0.0, 0.0), (0.85, 0.80, 0.70)),
    BlobSpec("plant", (1.1, 0.0, 0.0), (0.30, 0.48, 0.30)),
    BlobSpec(None, (0.0, 0.65, 0.0), (0.45, 0.45, 0.48), count=1200, extent=(2.6, 0.02, 1.6)),
)
"""Two objects side by side on a floor (y points down, as in COLMAP scenes)."""


def clip_directions(targets: Tensor, text: Tensor) -> Tensor:
    """Vectors φ in the span of ``text`` whose dot products with ``text`` are ``targets``.

    Args:
        targets: wanted similarities, one row per output vector. [P, T]
        text: unit text embeddings. [T, E]

    Returns:
        unit vectors [P, E]; φ·t_j has the sign of targets[:, j] (zero targets stay zero).
    """
    gram = text @ text.T  # [T, T]
    coeffs = torch.linalg.solve(gram.double(), targets.double().T).T  # [P, T]
    phi = (coeffs @ text.double()).float()
    return torch.nn.functional.normalize(phi, dim=-1)


def linear_gags_decoder(directions: Tensor, in_dim: int = FEATURE_DIM, width: int = DECODER_WIDTH) -> dict[str, Tensor]:
    """A GAGS-layout decoder state that computes normalize(directions.T @ x) for x >= 0.

    All biases are 0; the hidden layers pass the (non-negative) input through unchanged, so the
    residual additions and ReLUs cancel out exactly. Column i of the output layer is directions[i].
    """
    k, e = directions.shape
    if k > in_dim or in_dim > width:
        raise ValueError(f"{k} directions need in_dim >= {k} and width >= in_dim")
    eye = torch.zeros(width, width)
    eye[:in_dim, :in_dim] = torch.eye(in_dim)
    first = torch.zeros(width, in_dim)
    first[:in_dim, :in_dim] = torch.eye(in_dim)
    last = torch.zeros(e, width)
    last[:, :k] = directions.T
    # Layer order (GagsClipDecoder.forward): h1 = L0 x; h2 = L4 L2 h1; h3 = L6 (h1 + h2);
    # h4 = L10 L8 h3; y = L16 L14 L12 (h3 + h4). Halving at L6 and L12 undoes the residual doubling.
    weights = {0: first, 2: eye, 4: eye, 6: 0.5 * eye, 8: eye, 10: eye, 12: 0.5 * eye, 14: eye, 16: last}
    state = {}
    for index in GAGS_CLIP_LAYERS:
        w = weights[index]
        state[f"decoder.{index}.weight"] = w[:, :, None, None].clone()
        state[f"decoder.{index}.bias"] = torch.zeros(w.shape[0])
    return state


def _blob_positions(spec: BlobSpec, generator: torch.Generator) -> Tensor:
    center = torch.tensor(spec.center, dtype=torch.float32)
    if spec.extent is not None:
        half = torch.tensor(spec.extent, dtype=torch.float32)
        return center + (torch.rand(spec.count, 3, generator=generator) * 2 - 1) * half
    direction = torch.nn.functional.normalize(torch.randn(spec.count, 3, generator=generator), dim=-1)
    radius = spec.radius * torch.rand(spec.count, 1, generator=generator) ** (1 / 3)
    return center + direction * radius


def make_query_field(
    encode: Callable[[list[str]], Tensor],
    clip: ClipSpec,
    scene: Sequence[BlobSpec] = DEFAULT_SCENE,
    negatives: Sequence[str] = DEFAULT_NEGATIVES,
    seed: int = 0,
    margin: float = 1.0,
) -> LanguageField:
    """The synthetic field (see the module docstring).

    Args:
        encode: phrases -> unit text embeddings [K, E] of the CLIP model in ``clip`` (e.g.
            ``TextEncoder(clip).encode``).
        clip: stored in the field's metadata, so queries use the same model.
        scene: the objects; at most 15 (one feature channel each, one left for the floor...).
        negatives: the field's default negatives.
        margin: the similarity gap a (larger gives relevancies nearer 0 and 1).
    """
    phrases = [b.phrase for b in scene if b.phrase]
    if len(scene) > FEATURE_DIM:
        raise ValueError(f"at most {FEATURE_DIM} objects")
    text = torch.nn.functional.normalize(encode(list(phrases) + list(negatives)).float().cpu(), dim=-1)
    k = len(phrases)
    targets = []
    for blob in scene:
        row = torch.zeros(text.shape[0])
        if blob.phrase:
            row[:k] = -margin
            row[phrases.index(blob.phrase)] = margin
        else:  # unlabelled: every query below every negative
            row[:k] = -margin
            row[k:] = margin
        targets.append(row)
    directions = clip_directions(torch.stack(targets), text)

    generator = torch.Generator().manual_seed(seed)
    means, colors, features, scales, quats = [], [], [], [], []
    for i, blob in enumerate(scene):
        pos = _blob_positions(blob, generator)
        means.append(pos)
        colors.append(torch.tensor(blob.color).expand(blob.count, 3))
        one_hot = torch.zeros(blob.count, FEATURE_DIM)
        one_hot[:, i] = 1.0
        features.append(one_hot)
        if blob.extent is None:
            size = torch.full((3,), blob.radius / blob.count ** (1 / 3) * 1.2)
        else:  # flat tiles covering the box
            area = 4 * blob.extent[0] * blob.extent[2]
            side = math.sqrt(area / blob.count) * 0.9
            size = torch.tensor([side, max(blob.extent[1], 0.01), side])
        scales.append(torch.log(size).expand(blob.count, 3))
        if blob.extent is None:
            quats.append(torch.nn.functional.normalize(torch.randn(blob.count, 4, generator=generator), dim=-1))
        else:
            quats.append(torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(blob.count, 4))
    means_t = torch.cat(means)
    n = means_t.shape[0]
    rgb = torch.cat(colors)
    return LanguageField(
        means=means_t,
        quats=torch.cat(quats).contiguous(),
        log_scales=torch.cat(scales).contiguous(),
        opacity_logits=torch.full((n,), 3.0),
        sh=((rgb - 0.5) / SH_C0)[:, None, :].contiguous(),
        features=torch.cat(features),
        decoder=linear_gags_decoder(directions),
        granularity_decoder=random_granularity_decoder_state(FEATURE_DIM, seed=seed),
        metadata=FieldMetadata(
            clip=clip,
            negatives=tuple(negatives),
            up=(0.0, -1.0, 0.0),
            default_camera={"c2w": _default_c2w().tolist(), "fov_y_deg": 50.0},
            decoder_kind="gags",
            example_queries=tuple(phrases),
            source="synthetic query test scene (gags_viewer.viewer.synthetic)",
        ),
    ).validate()


def _default_c2w() -> np.ndarray:
    from gags_viewer.render.camera import look_at

    return look_at((0.0, -1.5, -4.4), (0.0, 0.1, 0.0), (0.0, -1.0, 0.0)).numpy()


def object_centers(scene: Sequence[BlobSpec] = DEFAULT_SCENE) -> dict[str, tuple[float, float, float]]:
    """Centre of each labelled object."""
    return {b.phrase: b.center for b in scene if b.phrase}
