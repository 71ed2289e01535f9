"""No per-frame waste: settings-only changes repaint without rendering, per-field caches are built once,
activations are not recomputed per frame, and a moving camera gets gaussian mode's frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gags_viewer.language.engine as engine_module
import gags_viewer.viewer.display as display_module
from gags_viewer.language.engine import QueryEngine
from gags_viewer.render import api
from gags_viewer.viewer.frame import FrameSource, PassCache, compose_frame, preview_settings
from gags_viewer.viewer.settings import ViewSettings
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("query_mode", ["gaussian", "pixel"])
def test_settings_only_change_repaints_without_rendering(scene, monkeypatch, query_mode):
    engine = QueryEngine(scene.field, scene.encoder)
    query = _Counter(engine.query)
    monkeypatch.setattr(engine, "query", query)
    cache = PassCache()
    camera = scene.camera(64, 48)
    base = ViewSettings(queries_text="mug; plant", display="overlay", query_mode=query_mode, threshold=0.5)
    first = compose_frame(scene.field, camera, base, engine, cache=cache)
    assert query.calls == 1 and "reused" not in first.timings

    changes = [
        dict(threshold=0.7),
        dict(display="mask"),
        dict(display="heatmap", colormap="viridis"),
        dict(colors={"mug": (0, 255, 0)}),
    ]
    for i, change in enumerate(changes):
        settings = base.copy(**change)
        frame = compose_frame(scene.field, camera, settings, engine, cache=cache)
        assert query.calls == 1 + i, change
        assert frame.timings["reused"] == 1.0
        uncached = compose_frame(scene.field, camera, settings, engine)  # the same pixels as a fresh render
        np.testing.assert_array_equal(frame.image, uncached.image)

    # what the pass depends on renders again: the camera, the phrases, the query mode, the background
    calls = query.calls
    compose_frame(scene.field, scene.camera(64, 40), base, engine, cache=cache)
    compose_frame(scene.field, camera, base.copy(queries_text="mug"), engine, cache=cache)
    compose_frame(scene.field, camera, base.copy(background=(9, 9, 9)), engine, cache=cache)
    assert query.calls == calls + 3


def test_pass_cache_never_reuses_a_swapped_field(scene, monkeypatch):
    render = _Counter(display_module.render)
    monkeypatch.setattr(display_module, "render", render)
    cache = PassCache()
    camera = scene.camera(32, 24)
    settings = ViewSettings(display="rgb")
    compose_frame(scene.field, camera, settings, None, cache=cache)
    compose_frame(scene.field, camera, settings, None, cache=cache)
    assert render.calls == 1
    other = scene.field.to("cpu")
    other.sh = other.sh * 0.5
    darker = compose_frame(other, camera, settings, None, cache=cache)
    assert render.calls == 2 and "reused" not in darker.timings


def test_per_field_caches_are_built_once_in_the_background(scene, monkeypatch):
    smooth = _Counter(engine_module.neighbour_smoothed_features)
    monkeypatch.setattr(engine_module, "neighbour_smoothed_features", smooth)
    engine = QueryEngine(scene.field, scene.encoder)
    decode = _Counter(engine.clip_decoder.decode)
    monkeypatch.setattr(engine.clip_decoder, "decode", decode)
    source = FrameSource(scene.field, engine)
    thread = source.prepare_field()
    assert thread is not None and thread.name == "gags-prepare-field"
    thread.join(timeout=120)
    assert smooth.calls == 1 and decode.calls >= 1
    decodes = decode.calls
    for i, queries in enumerate(["mug", "plant", "mug; plant"]):
        settings = ViewSettings(queries_text=queries, display="overlay", query_mode="gaussian")
        source.compose(scene.camera(40 + i, 30), settings)
    assert smooth.calls == 1 and decode.calls == decodes
    # per-(queries, negatives) caches: the per-Gaussian scores and pixel mode's folded scorer
    assert engine.gaussian_relevancy(["mug"]) is engine.gaussian_relevancy(["mug"])
    assert engine.folded_relevancy(("mug",), ("object",)) is engine.folded_relevancy(("mug",), ("object",))


def test_activations_are_cached_until_the_field_changes(scene):
    field = scene.field.to("cpu")
    quats, scales, opacities = api.activations(field)
    again = api.activations(field)
    assert again[0] is quats and again[1] is scales and again[2] is opacities
    torch.testing.assert_close(scales, field.scales())
    with torch.no_grad():
        field.log_scales += 0.1  # an in-place change (a training step) invalidates the cache
    changed = api.activations(field)
    assert changed[1] is not scales
    torch.testing.assert_close(changed[1], field.scales())


def test_depth_is_composited_only_when_asked(scene):
    camera = scene.camera(32, 24)
    without = api.render(scene.field, camera, rgb=True, depth=False)
    with_depth = api.render(scene.field, camera, rgb=True)
    assert without.depth is None and with_depth.depth is not None
    torch.testing.assert_close(without.rgb, with_depth.rgb)
    torch.testing.assert_close(without.alpha, with_depth.alpha)


def test_moving_camera_shows_gaussian_mode_frame():
    pixel = ViewSettings(queries_text="mug", display="overlay", query_mode="pixel")
    assert preview_settings(pixel, moving=True).query_mode == "gaussian"
    assert preview_settings(pixel, moving=False) is pixel
    rgb = ViewSettings(display="rgb", query_mode="pixel")
    assert preview_settings(rgb, moving=True) is rgb


def test_stream_resolution_is_capped_by_the_browser_canvas():
    from types import SimpleNamespace

    from gags_viewer.viewer.app import browser_res

    assert browser_res(1920, SimpleNamespace(image_width=1280, image_height=720)) == 1280
    assert browser_res(640, SimpleNamespace(image_width=1280, image_height=720)) == 640
    assert browser_res(1920, SimpleNamespace(image_width=0, image_height=0)) == 1920


def test_camera_coming_to_rest_goes_straight_to_full_resolution():
    import threading
    from types import SimpleNamespace

    from gags_viewer.viewer.renderer import ClientRenderer

    renderer = ClientRenderer(viewer=SimpleNamespace(state="ready"), client=None, lock=threading.Lock())
    assert renderer.transitions["low_move"]["static"] == "high"
    # the rest of nerfview's state machine is unchanged: moving drops the resolution, a rerender too
    assert renderer.transitions["high"]["move"] == "low_move"
    assert renderer.transitions["high"]["rerender"] == "low_static"
    assert renderer.transitions["low_static"]["static"] == "high"


def test_a_phrase_given_a_new_embedding_is_not_served_from_the_caches(scene):
    """Click queries re-use names ("[click 1]") with new vectors: every per-phrase cache follows the vector."""
    engine = QueryEngine(scene.field, scene.encoder)
    camera = scene.camera(48, 36)
    maps = {}
    for name in ("mug", "plant"):
        scene.encoder.remember("[test phrase]", scene.encoder.encode([name])[0])
        for mode in ("pixel", "gaussian"):
            maps[name, mode] = engine.query(camera, ["[test phrase]"], mode=mode).relevancy
        maps[name, "scores"] = engine.gaussian_relevancy(["[test phrase]"])
    for what in ("pixel", "gaussian", "scores"):
        assert not torch.equal(maps["mug", what], maps["plant", what]), what
    torch.testing.assert_close(maps["plant", "pixel"], engine.query(camera, ["plant"], mode="pixel").relevancy)
