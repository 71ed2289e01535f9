"""The compositor's own pieces: its inlined float32 exp, and the vector channel updates for every
padding case (one and several blocks of 4 or 8 floats), against the brute-force reference."""

import numba
import numpy as np
import pytest

from gags_viewer.render.numba_backend import BACKEND
from gags_viewer.render.numba_composite import _exp_neg, padded_channels
from tests.reference_render import compare_to_reference, reference_rasterize_with_cuts
from tests.test_render_numba import _camera, _random_scene


@numba.njit
def _exp_neg_all(values):
    out = np.empty_like(values)
    for i in range(values.shape[0]):
        out[i] = _exp_neg(values[i])
    return out


def test_exp_neg_is_within_a_millionth_of_exp():
    """Over the whole range the compositor uses (sigma up to the cut ln(255 opacity), and beyond), the
    relative error against float64 exp is below 1e-6, i.e. ~17 float32 ulps: far below the render
    tolerance, and any CPU (fused multiply-adds or not) stays inside it by a wide margin."""
    rng = np.random.default_rng(0)
    grid = np.concatenate(
        [
            np.linspace(0.0, 80.0, 400_001, dtype=np.float32),
            rng.uniform(0.0, 8.0, 100_000).astype(np.float32),
            # around the points where the reduction switches to the next power of two
            (np.arange(1, 116) * np.log(2.0) + np.array([[-1e-6], [0.0], [1e-6]])).ravel().astype(np.float32),
            np.array([0.0, np.float32(1e-30), np.float32(np.log(255.0))], dtype=np.float32),
        ]
    )
    got = _exp_neg_all(grid).astype(np.float64)
    exact = np.exp(-grid.astype(np.float64))
    assert got.dtype == np.float64 and np.all(np.isfinite(got))
    assert np.max(np.abs(got - exact) / exact) < 1e-6
    assert _exp_neg(np.float32(0.0)) == 1.0


def test_exp_neg_beyond_its_range_is_tiny():
    """Above 80 the argument is clamped: exp(-80) ~ 1.8e-35, which no opacity in [0, 1] lifts to 1/255."""
    got = _exp_neg_all(np.array([80.0, 81.0, 1e6, np.inf], dtype=np.float32))
    assert np.all(got <= np.exp(-80.0) * (1 + 1e-6)) and np.all(got > 0)


@pytest.mark.parametrize("channels", [1, 2, 4, 5, 8, 9, 24])
def test_padded_channel_blocks_match_reference(channels):
    """Blocks of 4 (up to 4 channels) and of 8, partly used or several, composite like the reference."""
    assert padded_channels(channels) % (4 if channels <= 4 else 8) == 0
    assert channels <= padded_channels(channels) < channels + 8
    means, quats, scales, opacities, colors, background = _random_scene(30, channels, 20 + channels)
    camera = _camera(37, 29)
    image, alpha = BACKEND.rasterize(means, quats, scales, opacities, colors, camera, background)
    assert image.shape == (29, 37, channels)
    reference = reference_rasterize_with_cuts(means, quats, scales, opacities, colors, camera, background)
    compare_to_reference(image, alpha, reference)
