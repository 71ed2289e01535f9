"""Default query colours stand out against the object they paint, and every place that shows a query's
colour (the frame, its legend, ``gags-viewer render``, the browser's pickers) shows the same one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gags_viewer.field.language_field import SH_C0
from gags_viewer.language import QueryEngine
from gags_viewer.language.colormaps import query_colors
from gags_viewer.language.contrast import contrasting_choice, match_weights, palette_distances, srgb_to_lab
from gags_viewer.viewer.frame import compose_frame
from gags_viewer.viewer.settings import ViewSettings
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


def test_lab_of_the_primaries_is_the_published_one():
    # CIE L*a*b* (D65) of sRGB white, black and primaries, as tabulated by colour-science references.
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    published = torch.tensor(
        [[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(srgb_to_lab(rgb), published, atol=0.15, rtol=0.0)


def test_match_weights_are_opacities_of_the_matched_gaussians():
    opacities = torch.tensor([0.75, 0.25, 1.0, 1.0])
    relevancy = torch.tensor(
        [
            [0.9, 0.6, 0.1, 0.2],  # matches the first two, weighted 3:1 by opacity
            [0.1, 0.2, 0.45, 0.3],  # matches none: its most relevant Gaussian stands in
        ]
    )
    weights = match_weights(opacities, relevancy)
    torch.testing.assert_close(weights, torch.tensor([[0.75, 0.25, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))


def test_distance_is_the_mean_over_the_gaussians_not_to_their_mean_colour():
    palette = query_colors(10)
    orange, grey = palette[1], torch.tensor([0.4, 0.38, 0.38])
    colors = torch.stack([orange, grey])  # an orange shade on a grey base
    weights = torch.tensor([[0.5, 0.5]])
    distances = palette_distances(colors, weights, palette)
    lab = srgb_to_lab(torch.cat([colors, palette]))
    expected = 0.5 * (lab[2:] - lab[0]).norm(dim=1) + 0.5 * (lab[2:] - lab[1]).norm(dim=1)
    torch.testing.assert_close(distances[0], expected)
    assert contrasting_choice(distances) != [1]  # never the colour of one of its parts


def test_choice_is_the_farthest_unused_palette_colour():
    distances = torch.tensor([[1.0, 5.0, 9.0], [1.0, 5.0, 9.0], [1.0, 5.0, 9.0], [1.0, 5.0, 9.0]])
    assert contrasting_choice(distances[:1]) == [2]
    # A second query cannot take the farthest again while others are free; a fourth reuses the farthest.
    assert contrasting_choice(distances) == [2, 1, 0, 2]


def _recoloured(scene, phrase: str, rgb: tuple[float, float, float]):
    """A copy of the synthetic field whose ``phrase`` Gaussians have colour ``rgb``, with its own engine."""
    from gags_viewer.viewer.synthetic import DEFAULT_SCENE

    index = [b.phrase for b in DEFAULT_SCENE].index(phrase)
    selected = scene.field.features[:, index] == 1
    sh = scene.field.sh.clone()
    sh[selected, 0, :] = (torch.tensor(rgb) - 0.5) / SH_C0
    field = dataclasses.replace(scene.field, sh=sh)
    return field, QueryEngine(field, scene.encoder)


@pytest.mark.parametrize("index", [0, 1, 3])
def test_an_object_in_a_palette_colour_is_painted_in_another(scene, index):
    palette = query_colors(10)
    own = tuple(float(c) for c in palette[index])
    field, engine = _recoloured(scene, "mug", own)
    camera = scene.camera()
    frame = compose_frame(field, camera, ViewSettings(queries_text="mug", display="mask"), engine)
    ((phrase, chosen),) = frame.legend.swatches
    assert phrase == "mug"
    chosen_unit = torch.tensor(chosen, dtype=torch.float32) / 255.0
    lab = srgb_to_lab(torch.cat([torch.tensor([own]), palette]))
    distances = (lab[1:] - lab[0]).norm(dim=1)
    picked = int((palette - chosen_unit).abs().amax(dim=1).argmin())
    assert (palette[picked] - chosen_unit).abs().max() <= 0.5 / 255 + 1e-6  # a palette colour, rounded to 0-255
    assert picked != index and float(distances[picked]) == pytest.approx(float(distances.max()))
    # The mask is drawn solid in exactly that colour on the object.
    solid = (frame.image == np.array(chosen)).all(-1)
    assert solid[scene.object_mask("mug", camera)].mean() > 0.5


def test_a_chosen_colour_is_kept(scene):
    field, engine = _recoloured(scene, "mug", (0.0, 0.0, 1.0))
    settings = ViewSettings(queries_text="mug; plant", display="mask", colors={"mug": (0, 0, 255)})
    camera = scene.camera()
    frame = compose_frame(field, camera, settings, engine)
    assert dict(frame.legend.swatches)["mug"] == (0, 0, 255)
    solid = (frame.image == np.array([0, 0, 255])).all(-1)
    assert solid[scene.object_mask("mug", camera)].mean() > 0.5


def test_viewer_frames_render_command_and_selection_agree(scene):
    """The viewer (text encoded in the background, no waiting) and a headless render colour alike, and a
    shown 3D selection tints in the colour of its query, not one picked from the tinted copy."""
    from gags_viewer.viewer.app import ViewerApp

    field, engine = _recoloured(scene, "mug", (0.12, 0.47, 0.71))
    app = ViewerApp(field, engine)
    camera = scene.camera()
    settings = ViewSettings(queries_text="mug; plant", display="overlay")
    engine.prepare(settings.queries, settings.negatives).result()
    engine.prepare_field()
    headless = compose_frame(field, camera, settings, engine)
    viewer = app.compose(camera, settings, wait_for_text=False)
    assert viewer.legend.swatches == headless.legend.swatches
    np.testing.assert_array_equal(viewer.image, headless.image)
    tinted = app.compose(camera, settings.copy(selection_show="tinted"), wait_for_text=False)
    assert tinted.legend.swatches == headless.legend.swatches
