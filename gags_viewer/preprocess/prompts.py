"""SAM prompt points per image (gags-method.md §2.2-2.3).

``gags`` (the official code): the image is cut into 8×8 patches (origins ``floor(linspace(0, W-1, 9)[:-1])``,
size ``floor(W/8)``, likewise in y). In each patch, r = mean rendered depth over all its pixels divided by
the mean minimum observed depth over the pixels that hold a visible Gaussian centre; the patch gets
k × k points with k = ⌊4·r⌋ clamped to [1, 20], and k = 1 when r < 1 or r is NaN (no centre in the
patch). A patch seen from its closest distance gets 16 points, one seen from twice as far 64.

``gags-paper`` (the paper's formula): k² = 16 · mean over the patch's centre pixels of (D / M)², i.e.
k = ⌊4·√mean((D/M)²)⌋, clamped to [1, 20]; 1 where the patch holds no centre. No r < 1 jump.

``grid``: SAM's regular 32×32 grid (the LangSplat baseline), the same for every image. As in LangSplat, the
SAM source then also prompts each of the 2×2 overlapping crops of ``crop_n_layers=1`` with it (5120 prompts
per image; :class:`~gags_viewer.preprocess.sam.SamConfig`).

Inside a patch the k² points are placed by the density of visible centres: the patch is split into
10×10 sub-cells (origins ``floor(linspace(0, w-1, 11)[:-1])``, size ``w // 10``), each weighted by its
number of non-zero pixels of M (uniform when all are 0); k² sub-cells are drawn with replacement and a
uniform integer pixel is taken in each (inclusive bounds, the upper one clamped to the patch).
Randomness comes from a generator seeded by (seed, image name): the points of an image do not depend on
which other images are processed or in what order (the official code threads one Python ``random``
through all images).

Points are returned in x-major patch order (as the official ``product(xs, ys)``), as (x, y) pixel
coordinates divided by (W, H).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np

PromptKind = Literal["gags", "gags-paper", "grid"]

PATCHES_PER_SIDE = 8
SUBCELLS_PER_SIDE = 10
BASE_POINTS_PER_SIDE = 4
MAX_POINTS_PER_SIDE = 20
GRID_POINTS_PER_SIDE = 32
PROMPT_SEED = 42
"""The official ``seed_everything(42)``."""


def patch_origins(length: int, count: int = PATCHES_PER_SIDE) -> np.ndarray:
    """Start pixel of each of ``count`` patches along a side of ``length`` pixels. -> [count] int64"""
    return np.floor(np.linspace(0, length - 1, count + 1)[:-1]).astype(np.int64)


def points_per_side(depth_patch: np.ndarray, sample_patch: np.ndarray, kind: PromptKind = "gags") -> int:
    """k for one patch (module doc).

    Args:
        depth_patch: rendered depth D of the patch. [h, w]
        sample_patch: minimum observed depth map M of the patch (0 = no centre). [h, w]
        kind: "gags" (ratio of means, official) or "gags-paper" (mean of squared ratios).
    """
    centres = sample_patch != 0
    if not centres.any():
        return 1
    if kind == "gags-paper":
        ratio = float(np.sqrt(np.mean((depth_patch[centres] / sample_patch[centres]) ** 2)))
        if not np.isfinite(ratio):
            return 1
        return int(np.clip(np.floor(BASE_POINTS_PER_SIDE * ratio), 1, MAX_POINTS_PER_SIDE))
    ratio = float(np.mean(depth_patch)) / float(np.mean(sample_patch[centres]))
    if np.isnan(ratio) or ratio < 1:
        return 1
    return int(np.clip(int(BASE_POINTS_PER_SIDE * ratio), 1, MAX_POINTS_PER_SIDE))


def points_per_side_map(depth: np.ndarray, sample: np.ndarray, kind: PromptKind = "gags") -> np.ndarray:
    """k of every patch. [H, W] depth and sample map -> [8 rows (y), 8 columns (x)] int64"""
    height, width = depth.shape
    xs, ys = patch_origins(width), patch_origins(height)
    cw, ch = width // PATCHES_PER_SIDE, height // PATCHES_PER_SIDE
    out = np.zeros((len(ys), len(xs)), dtype=np.int64)
    for j, y0 in enumerate(ys):
        for i, x0 in enumerate(xs):
            out[j, i] = points_per_side(depth[y0 : y0 + ch, x0 : x0 + cw], sample[y0 : y0 + ch, x0 : x0 + cw], kind)
    return out


def subcell_weights(sample_patch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-cell origins and weights of one patch.

    Returns:
        (x origins [10], y origins [10], weights [10 (y), 10 (x)] float64 summing to 1).
    """
    h, w = sample_patch.shape
    xs, ys = patch_origins(w, SUBCELLS_PER_SIDE), patch_origins(h, SUBCELLS_PER_SIDE)
    sw, sh = w // SUBCELLS_PER_SIDE, h // SUBCELLS_PER_SIDE
    occupied = (sample_patch != 0).astype(np.int64)
    # Counts over each [y0, y0 + sh) x [x0, x0 + sw) window via a summed-area table.
    table = np.zeros((h + 1, w + 1), dtype=np.int64)
    table[1:, 1:] = occupied.cumsum(0).cumsum(1)
    y1, x1 = np.minimum(ys + sh, h), np.minimum(xs + sw, w)
    counts = table[y1][:, x1] - table[ys][:, x1] - table[y1][:, xs] + table[ys][:, xs]
    weights = counts.astype(np.float64)
    total = weights.sum()
    weights = weights / total if total > 0 else np.full_like(weights, 1.0 / weights.size)
    return xs, ys, weights


def sample_patch_points(sample_patch: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k² pixel positions inside one patch, placed by centre density (module doc). -> [k², 2] int64 (x, y)"""
    h, w = sample_patch.shape
    xs, ys, weights = subcell_weights(sample_patch)
    cells = rng.choice(weights.size, size=k * k, replace=True, p=weights.reshape(-1))
    cy, cx = np.divmod(cells, SUBCELLS_PER_SIDE)
    x0, y0 = xs[cx], ys[cy]
    x1 = np.minimum(x0 + w // SUBCELLS_PER_SIDE, w - 1)
    y1 = np.minimum(y0 + h // SUBCELLS_PER_SIDE, h - 1)
    return np.stack([rng.integers(x0, x1 + 1), rng.integers(y0, y1 + 1)], axis=1)


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The prompt generator of one image: seeded by (seed, image name) only."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def depth_prompts(
    depth: np.ndarray, sample: np.ndarray, rng: np.random.Generator, kind: PromptKind = "gags"
) -> np.ndarray:
    """Granularity-aware prompts of one image (module doc). -> [P, 2] float64 in [0, 1), (x / W, y / H)"""
    if depth.shape != sample.shape:
        raise ValueError(f"depth {depth.shape} and depth-sample map {sample.shape} must have one shape")
    height, width = depth.shape
    counts = points_per_side_map(depth, sample, kind)
    xs, ys = patch_origins(width), patch_origins(height)
    cw, ch = width // PATCHES_PER_SIDE, height // PATCHES_PER_SIDE
    points = []
    for i, x0 in enumerate(xs):  # x-major, as the official product(xs, ys)
        for j, y0 in enumerate(ys):
            local = sample_patch_points(sample[y0 : y0 + ch, x0 : x0 + cw], int(counts[j, i]), rng)
            points.append(local + np.array([x0, y0]))
    return np.concatenate(points).astype(np.float64) / np.array([width, height], dtype=np.float64)


def grid_prompts(points_per_side_: int = GRID_POINTS_PER_SIDE) -> np.ndarray:
    """SAM's regular grid (cell centres). -> [n², 2] float64 in (0, 1)"""
    from segment_anything.utils.amg import build_point_grid

    return build_point_grid(points_per_side_).astype(np.float64)
