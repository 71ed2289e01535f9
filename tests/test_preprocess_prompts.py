"""Prompt points (gags-method.md §2.2-2.3): density from the depth ratio, clamps, placement, grid, seeding."""

import numpy as np
import pytest

from gags_viewer.preprocess.prompts import (
    depth_prompts,
    grid_prompts,
    image_rng,
    patch_origins,
    points_per_side,
    points_per_side_map,
    sample_patch_points,
)


def constructed_maps(ratios, size=81):
    """8x8 patches of 10x10 px (size 81: official origins 0, 10, ..., 70); patch (row j, col i) has rendered depth ratios[j][i] x its min depth 2.0."""
    depth = np.zeros((size, size), np.float32)
    sample = np.zeros((size, size), np.float32)
    step = 10
    for j in range(8):
        for i in range(8):
            depth[j * step : (j + 1) * step, i * step : (i + 1) * step] = 2.0 * ratios[j][i]
            sample[j * step + 3, i * step + 4] = 2.0  # one visible centre per patch
    return depth, sample


def test_points_per_side_follow_the_depth_ratio_and_are_clamped():
    ratios = np.ones((8, 8))
    ratios[0, 0] = 1.0  # seen from its closest distance: 4 per side
    ratios[0, 1] = 2.0  # twice as far: 8 per side
    ratios[0, 2] = 1.6  # floor(6.4) = 6
    ratios[0, 3] = 0.9  # nearer than ever observed (r < 1): 1
    ratios[0, 4] = 7.5  # floor(30) clamped to 20
    ratios[0, 5] = 5.0  # exactly 20
    depth, sample = constructed_maps(ratios)
    sample[0:10, 60:70] = 0.0  # patch (0, 6) holds no centre: NaN ratio -> 1
    counts = points_per_side_map(depth, sample)
    assert counts[0].tolist() == [4, 8, 6, 1, 20, 20, 1, 4]
    assert (counts[1:] == 4).all()
    # the nearer patch gets fewer points than the farther one
    assert counts[0, 0] < counts[0, 1]


def test_paper_reading_uses_the_mean_of_squared_ratios():
    depth = np.full((10, 10), 3.0)
    sample = np.zeros((10, 10))
    sample[2, 2], sample[5, 5] = 1.0, 3.0  # ratios 3 and 1: mean of squares 5 -> k = floor(4 sqrt 5) = 8
    assert points_per_side(depth, sample, "gags-paper") == 8
    # official: mean D / mean M over centres = 3 / 2 -> floor(6) = 6
    assert points_per_side(depth, sample, "gags") == 6
    # no r < 1 jump in the paper reading: ratio 0.5 gives floor(2) = 2, the official gives 1
    assert points_per_side(np.full((10, 10), 1.0), np.full((10, 10), 2.0), "gags-paper") == 2
    assert points_per_side(np.full((10, 10), 1.0), np.full((10, 10), 2.0), "gags") == 1
    assert points_per_side(depth, np.zeros((10, 10)), "gags-paper") == 1


def test_prompt_count_and_range():
    ratios = np.ones((8, 8))
    ratios[2, 3] = 2.0
    depth, sample = constructed_maps(ratios)
    points = depth_prompts(depth, sample, image_rng(42, "a.png"))
    assert points.shape == (63 * 16 + 64, 2)
    assert (points >= 0).all() and (points < 1).all()


def test_points_land_in_occupied_sub_cells():
    patch = np.zeros((101, 101), np.float32)  # sub-cell origins 0, 10, ..., 90 exactly; size 10
    patch[20:25, 30:35] = 1.0  # inside the one sub-cell with origin (30, 20)
    points = sample_patch_points(patch, 5, np.random.default_rng(0))
    assert points.shape == (25, 2)
    # x in [30, 40], y in [20, 30]: inclusive upper bound of the drawn sub-cell
    assert ((points[:, 0] >= 30) & (points[:, 0] <= 40)).all()
    assert ((points[:, 1] >= 20) & (points[:, 1] <= 30)).all()
    # all-empty patch: uniform over sub-cells, still inside the patch
    points = sample_patch_points(np.zeros((50, 50)), 20, np.random.default_rng(1))
    assert (points >= 0).all() and (points <= 49).all() and len(np.unique(points[:, 0] // 5)) > 5


def test_patch_layout_matches_the_official_linspace():
    assert patch_origins(1440).tolist() == [int(np.floor(v)) for v in np.linspace(0, 1439, 9)[:-1]]
    assert patch_origins(80).tolist() == [0, 9, 19, 29, 39, 49, 59, 69]


def test_prompts_are_seeded_per_image():
    depth, sample = constructed_maps(np.full((8, 8), 1.5))
    a = depth_prompts(depth, sample, image_rng(42, "a.png"))
    np.testing.assert_array_equal(a, depth_prompts(depth, sample, image_rng(42, "a.png")))
    assert not np.array_equal(a, depth_prompts(depth, sample, image_rng(42, "b.png")))
    assert not np.array_equal(a, depth_prompts(depth, sample, image_rng(7, "a.png")))


def test_grid_is_sam_regular_grid():
    grid = grid_prompts()
    assert grid.shape == (1024, 2)
    assert grid.min() == pytest.approx(1 / 64) and grid.max() == pytest.approx(1 - 1 / 64)
