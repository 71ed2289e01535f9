import matplotlib
import numpy as np
import pytest
import torch

from gags_viewer.errors import GagsError
from gags_viewer.language.colormaps import COLORMAPS, GRANULARITY_COLORS, apply_colormap, query_colors
from gags_viewer.language.composite import (
    FeaturePCA,
    binary_mask,
    granularity_image,
    heatmap_overlay,
    mask_image,
    multi_query_overlay,
)


def test_colormaps_match_matplotlib_and_nerfview_names():
    assert set(COLORMAPS) == {"turbo", "viridis", "magma", "inferno", "cividis", "gray"}
    values = torch.tensor([0.0, 0.5, 1.0])
    for name in COLORMAPS:
        expected = matplotlib.colormaps[name](np.array([0, 128, 255]) / 255.0)[:, :3]
        torch.testing.assert_close(
            apply_colormap(values, name), torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0
        )
    with pytest.raises(GagsError):
        apply_colormap(values, "jet2")
    out = apply_colormap(torch.tensor([float("nan"), -1.0, 2.0]))
    assert out.shape == (3, 3) and torch.isfinite(out).all()


def test_heatmap_only_above_threshold():
    rgb = torch.full((4, 5, 3), 0.3)
    rel = torch.zeros(4, 5)
    rel[1, 2] = 0.9
    rel[2, 2] = 0.4
    out = heatmap_overlay(rgb, rel, threshold=0.5)
    assert out.shape == (4, 5, 3)
    changed = (out - rgb).abs().sum(-1) > 1e-6
    assert changed.sum() == 1 and changed[1, 2]
    alpha = torch.ones(4, 5)
    alpha[1, 2] = 0.0
    assert torch.allclose(heatmap_overlay(rgb, rel, threshold=0.5, alpha=alpha), rgb)


def test_multi_query_colours_and_masks():
    rgb = torch.zeros(3, 3, 3)
    rel = torch.zeros(2, 3, 3)
    rel[0, 0, 0] = 0.9
    rel[1, 2, 2] = 0.8
    rel[0, 1, 1] = rel[1, 1, 1] = 0.2
    out = multi_query_overlay(rgb, rel, threshold=0.5, opacity=1.0)
    colors = query_colors(2)
    assert torch.allclose(out[1, 1], torch.zeros(3))
    assert torch.allclose(out[0, 0] / out[0, 0].max(), colors[0] / colors[0].max(), atol=1e-5)
    assert torch.allclose(out[2, 2] / out[2, 2].max(), colors[1] / colors[1].max(), atol=1e-5)

    mask = binary_mask(rel, 0.5)
    assert mask.dtype == torch.bool and mask.sum() == 2
    img = mask_image(mask)
    assert torch.allclose(img[0, 0], colors[0]) and torch.allclose(img[2, 2], colors[1])
    single = mask_image(mask[0])
    assert torch.allclose(single[0, 0], torch.ones(3)) and single.sum() == 3
    alpha = torch.zeros(3, 3)
    assert binary_mask(rel, 0.5, alpha=alpha).sum() == 0


def test_granularity_image_three_colours():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]])
    out = granularity_image(probs)
    torch.testing.assert_close(out[0], GRANULARITY_COLORS)


def test_feature_pca_fixed_per_field_and_premultiplied():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(500, 16, generator=g) * torch.linspace(3, 0.1, 16)
    pca = FeaturePCA.fit(features)
    again = FeaturePCA.fit(features.clone())
    torch.testing.assert_close(pca.components, again.components)
    assert pca.components.shape == (16, 3)

    # a pixel fully covered by Gaussian i gets the same colour from any viewpoint
    f = features[:4]
    ones = torch.ones(1, 4)
    full = pca.colorize(f[None], ones)
    half = pca.colorize(0.5 * f[None], 0.5 * ones, background=(0.0, 0.0, 0.0))
    torch.testing.assert_close(half, torch.minimum(0.5 * full, torch.full_like(full, 0.5)), atol=1e-5, rtol=0)
    empty = pca.colorize(torch.zeros(2, 2, 16), torch.zeros(2, 2), background=(1.0, 1.0, 1.0))
    torch.testing.assert_close(empty, torch.ones(2, 2, 3))
