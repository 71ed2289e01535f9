"""Frame composition: every display mode, highlight placement, pending text, errors."""

from __future__ import annotations

import numpy as np
import pytest

from gags_viewer.errors import GagsError
from gags_viewer.render.api import render
from gags_viewer.viewer.frame import FrameSource, compose_frame, to_uint8
from gags_viewer.viewer.settings import DISPLAY_MODES, ViewSettings, settings_for_render
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


def _changed(a: np.ndarray, b: np.ndarray, level: int = 12) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).sum(-1) > level


def test_rgb_frame_is_the_render(scene):
    camera = scene.camera()
    frame = compose_frame(scene.field, camera, ViewSettings(display="rgb"), scene.engine)
    expected = to_uint8(render(scene.field, camera, rgb=True).rgb)
    assert frame.image.dtype == np.uint8 and frame.image.shape == (120, 160, 3)
    np.testing.assert_array_equal(frame.image, expected)
    assert frame.legend.empty and frame.pending == ()


@pytest.mark.parametrize("query_mode", ["gaussian", "pixel"])
@pytest.mark.parametrize("display", ["overlay", "mask", "heatmap"])
def test_highlight_is_on_the_queried_object(scene, query_mode, display):
    camera = scene.camera()
    rgb = compose_frame(scene.field, camera, ViewSettings(display="rgb"), scene.engine).image
    mug, plant = scene.object_mask("mug", camera), scene.object_mask("plant", camera)
    for phrase, own, other in (("mug", mug, plant), ("plant", plant, mug)):
        settings = ViewSettings(queries_text=phrase, display=display, query_mode=query_mode)
        frame = compose_frame(scene.field, camera, settings, scene.engine)
        changed = _changed(frame.image, rgb)
        assert changed[own].mean() > 0.5, f"{phrase}: only {changed[own].mean():.2f} of the object highlighted"
        assert changed[other].mean() < 0.05, f"{phrase}: {changed[other].mean():.2f} of the other object highlighted"


def test_each_query_in_its_own_colour(scene):
    camera = scene.camera()
    settings = ViewSettings(
        queries_text="mug; plant", display="mask", colors={"mug": (255, 0, 0), "plant": (0, 0, 255)}
    )
    image = compose_frame(scene.field, camera, settings, scene.engine).image.astype(int)
    mug = image[scene.object_mask("mug", camera)].mean(0)
    plant = image[scene.object_mask("plant", camera)].mean(0)
    assert mug[0] > mug[2] + 60, mug
    assert plant[2] > plant[0] + 60, plant
    frame = compose_frame(scene.field, camera, settings, scene.engine)
    assert [s[0] for s in frame.legend.swatches] == ["mug", "plant"]
    assert frame.legend.swatches[0][1] == (255, 0, 0)


def test_mask_mode_is_distinct_from_the_overlay(scene):
    """The mask shows the thresholded mask solid in the query colour; the overlay blends by strength."""
    camera = scene.camera()
    colors = {"mug": (255, 0, 0)}
    mask = compose_frame(
        scene.field, camera, ViewSettings(queries_text="mug", display="mask", colors=colors), scene.engine
    ).image
    overlay = compose_frame(
        scene.field, camera, ViewSettings(queries_text="mug", display="overlay", colors=colors), scene.engine
    ).image
    mug = scene.object_mask("mug", camera)
    assert _changed(mask, overlay, level=40)[mug].mean() > 0.3
    solid = (mask == np.array([255, 0, 0])).all(-1)
    assert solid[mug].mean() > 0.5


@pytest.mark.parametrize("display", DISPLAY_MODES)
def test_every_display_mode(scene, display):
    camera = scene.camera(96, 64)
    settings = ViewSettings(queries_text="mug", display=display, background=(10, 20, 30))
    frame = compose_frame(scene.field, camera, settings, scene.engine)
    assert frame.image.shape == (64, 96, 3) and frame.image.dtype == np.uint8
    assert frame.image.std() > 1.0  # not a blank image
    if display != "rgb":
        assert not frame.legend.empty
    assert frame.timings["total"] > 0
    MODE_CHECKS.get(display, lambda *a: None)(scene, camera, settings, frame.image)


def _mean_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return image[mask].astype(float).mean(0)


def _colormap_position(colours: np.ndarray, name: str) -> np.ndarray:
    """Where on the colormap each RGB colour [..., 3] lies (0..1, nearest of 256 samples)."""
    import torch

    from gags_viewer.language.colormaps import apply_colormap

    lut = to_uint8(apply_colormap(torch.linspace(0, 1, 256), name)).astype(float)
    distance = ((colours[..., None, :].astype(float) - lut) ** 2).sum(-1)
    return distance.argmin(-1) / 255.0


def _check_alpha(scene, camera, settings, image):
    """The accumulated alpha through the colormap: exactly the render's alpha, pixel by pixel."""
    from gags_viewer.language.colormaps import apply_colormap

    alpha = render(scene.field, camera, rgb=False).alpha
    assert np.abs(image.astype(int) - to_uint8(apply_colormap(alpha, settings.colormap)).astype(int)).max() <= 1


def _check_depth(scene, camera, settings, image):
    """Depth increases along the colormap: the nearer object sits lower on it than the farther one."""
    out = render(scene.field, camera, rgb=False)
    position = _colormap_position(image, settings.colormap)
    covered = out.alpha.numpy() > 0.99
    depth = out.depth.numpy()
    near = covered & (depth < np.quantile(depth[covered], 0.2))
    far = covered & (depth > np.quantile(depth[covered], 0.8))
    assert position[near].mean() + 0.3 < position[far].mean()


def _check_relevancy(scene, camera, settings, image):
    """'mug' relevancy: the mug high on the colormap, the plant low."""
    position = _colormap_position(image, settings.colormap)
    mug, plant = scene.object_mask("mug", camera), scene.object_mask("plant", camera)
    assert np.median(position[mug]) > np.median(position[plant]) + 0.15


def _check_pca(scene, camera, settings, image):
    """Objects with different features get clearly different colours."""
    mug, plant = scene.object_mask("mug", camera), scene.object_mask("plant", camera)
    assert np.abs(_mean_colour(image, mug) - _mean_colour(image, plant)).sum() > 60


MODE_CHECKS = {"alpha": _check_alpha, "depth": _check_depth, "relevancy": _check_relevancy, "pca": _check_pca}
"""Value checks per display mode (overlay, mask, heatmap: test_highlight_is_on_the_queried_object)."""


def test_background_colour_fills_empty_pixels(scene):
    camera = scene.camera(96, 64)
    frame = compose_frame(scene.field, camera, ViewSettings(display="rgb", background=(0, 255, 0)), scene.engine)
    assert tuple(frame.image[0, 0]) == (0, 255, 0)  # the top corners see nothing


def test_pending_text_gives_rgb_at_once(scene):
    camera = scene.camera(64, 48)
    settings = ViewSettings(queries_text="a phrase never encoded before", display="overlay")
    frame = compose_frame(scene.field, camera, settings, scene.engine, wait_for_text=False)
    assert "a phrase never encoded before" in frame.pending
    rgb = compose_frame(scene.field, camera, ViewSettings(display="rgb"), scene.engine).image
    np.testing.assert_array_equal(frame.image, rgb)
    assert any("encoding" in note for note in frame.legend.notes)


def test_frame_source_encodes_in_background_and_calls_back(scene):
    import threading

    source = FrameSource(scene.field, scene.engine)
    done = threading.Event()
    heard = []

    def ready(phrases, future):
        heard.append(phrases)
        done.set()

    source.on_text_ready = ready
    settings = ViewSettings(queries_text="teapot lid", display="overlay")
    frame = source.compose(scene.camera(64, 48), settings, wait_for_text=False)
    source.request_text(frame.pending)
    assert done.wait(60)
    assert "teapot lid" in heard[0]
    assert not source.compose(scene.camera(64, 48), settings, wait_for_text=False).pending


def test_the_first_frame_of_a_new_phrase_shows_its_highlight(scene, tmp_path):
    """The viewer waits briefly for a new phrase's encoding: no frame without the highlight first."""
    from gags_viewer.viewer.app import ViewerApp
    from gags_viewer.viewer.session import ClientSession

    app = ViewerApp(scene.field, scene.engine, output_dir=tmp_path)
    camera = scene.camera(64, 48)
    settings = ViewSettings(queries_text="a kettle spout", display="overlay")
    assert not scene.engine.ready(settings.queries, settings.negatives)
    session = ClientSession(None, settings, app.compose_for)
    frame = app.compose_for(camera, settings, session)
    assert frame.pending == () and not session.pending_phrases
    np.testing.assert_array_equal(frame.image, compose_frame(scene.field, camera, settings, scene.engine).image)


def test_a_phrase_slower_than_the_wait_shows_the_view_then_its_highlight(scene, tmp_path, monkeypatch):
    import threading

    from gags_viewer.viewer import app as app_module
    from gags_viewer.viewer.session import ClientSession

    encoder = scene.engine.text_encoder
    encode, release, rerendered = encoder.encode, threading.Event(), threading.Event()

    def slow_encode(phrases):
        assert release.wait(60)
        return encode(phrases)

    monkeypatch.setattr(encoder, "encode", slow_encode)
    monkeypatch.setattr(app_module, "TEXT_WAIT_S", 0.05)
    app = app_module.ViewerApp(scene.field, scene.engine, output_dir=tmp_path)
    camera = scene.camera(64, 48)
    settings = ViewSettings(queries_text="a teapot handle", display="overlay")
    session = ClientSession(None, settings, app.compose_for)
    session.rerender = rerendered.set
    app.sessions[0] = session
    frame = app.compose_for(camera, settings, session)  # returns while the encoder is still blocked
    assert frame.pending == ("a teapot handle",) and session.pending_phrases == {"a teapot handle"}
    np.testing.assert_array_equal(frame.image, compose_frame(scene.field, camera, ViewSettings(display="rgb")).image)
    release.set()
    assert rerendered.wait(60)  # encoded: the browser is asked for the frame with the highlight
    assert not app.compose_for(camera, settings, session).pending


def test_no_query_shows_rgb_with_a_hint(scene):
    camera = scene.camera(64, 48)
    frame = compose_frame(scene.field, camera, ViewSettings(queries_text="", display="overlay"), scene.engine)
    rgb = compose_frame(scene.field, camera, ViewSettings(display="rgb"), scene.engine).image
    np.testing.assert_array_equal(frame.image, rgb)
    assert "query" in frame.legend.title.lower()


def test_language_mode_on_rgb_only_field_is_a_clear_error(scene):
    import dataclasses

    rgb_only = dataclasses.replace(scene.field, features=None, decoder=None, granularity_decoder=None)
    with pytest.raises(GagsError, match="RGB only"):
        compose_frame(rgb_only, scene.camera(32, 24), ViewSettings(queries_text="mug", display="overlay"), None)
    frame = compose_frame(rgb_only, scene.camera(32, 24), ViewSettings(display="depth"), None)
    assert frame.image.shape == (24, 32, 3)


def test_settings_validation():
    with pytest.raises(GagsError):
        ViewSettings(display="nope").checked()
    with pytest.raises(GagsError):
        ViewSettings(threshold=1.5).checked()
    with pytest.raises(GagsError):
        settings_for_render("", "overlay")
    s = settings_for_render("mug ;  plant; mug", None, colors="#ff0000; 0,0,255")
    assert s.display == "overlay" and s.queries == ["mug", "plant"]
    assert s.colors == {"mug": (255, 0, 0), "plant": (0, 0, 255)}
    assert settings_for_render("", None).display == "rgb"
