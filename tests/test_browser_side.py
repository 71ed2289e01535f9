"""Browser-side rendering without a browser: per-Gaussian colours (hand-checked), the Morton chunks, and one
browser's switch between server and browser rendering against a recording stand-in for viser's client."""

from __future__ import annotations

import contextlib
import math
import threading
import time

import numpy as np
import pytest
import torch

from gags_viewer.field.language_field import SH_C0, FieldMetadata, LanguageField
from gags_viewer.language.colormaps import apply_colormap
from gags_viewer.viewer import splat_colors
from gags_viewer.viewer.session import ClientSession
from gags_viewer.viewer.settings import ViewSettings
from gags_viewer.viewer.splat_colors import (
    SplatGeometry,
    browser_side_blocker,
    changed_chunks,
    chunk_size,
    covariances,
    gaussian_colors,
    morton_order,
)
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture

BASE = torch.tensor([[0.2, 0.4, 0.6], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])
RELEVANCY = torch.tensor([[0.9, 0.4, 0.6], [0.2, 0.3, 0.8]])  # [K=2, N=3]
RED_BLUE = {"a": (255, 0, 0), "b": (0, 0, 255)}
F32 = 1e-6  # a few float32 roundings of values <= 1


def _settings(display: str, **changes) -> ViewSettings:
    values = {"queries_text": "a; b", "colors": dict(RED_BLUE), "display": display, "threshold": 0.5, **changes}
    return ViewSettings(**values)


def test_overlay_blends_the_best_query_by_how_far_it_clears_the_threshold():
    out = gaussian_colors(BASE, RELEVANCY, _settings("overlay"))
    # Gaussian 0: query a at 0.9 -> strength 0.8, weight 0.7·(0.35 + 0.65·0.8) = 0.609, towards red.
    w0 = 0.7 * (0.35 + 0.65 * 0.8)
    expected0 = [0.2 * (1 - w0) + w0, 0.4 * (1 - w0), 0.6 * (1 - w0)]
    # Gaussian 2: best is query b at 0.8 -> strength 0.6, weight 0.7·(0.35 + 0.39) = 0.518, towards blue.
    w2 = 0.7 * (0.35 + 0.65 * 0.6)
    expected2 = [1.0 - w2, 0.0, w2]
    assert torch.allclose(out[0], torch.tensor(expected0), atol=F32)
    assert torch.equal(out[1], BASE[1])  # 0.4 and 0.3: below the threshold, its own colour
    assert torch.allclose(out[2], torch.tensor(expected2), atol=F32)


def test_mask_paints_solid_later_query_over_earlier():
    out = gaussian_colors(BASE, RELEVANCY, _settings("mask"))
    assert torch.equal(out[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[1], BASE[1])
    assert torch.equal(out[2], torch.tensor([0.0, 0.0, 1.0]))  # both above 0.5: the later query wins


def test_heatmap_and_relevancy_use_the_colormap_of_the_best_query():
    settings = _settings("heatmap", colormap="viridis")
    out = gaussian_colors(BASE, RELEVANCY, settings)
    hot = apply_colormap(torch.tensor([(0.9 - 0.5) / 0.5]), "viridis")[0]
    assert torch.allclose(out[0], BASE[0] * 0.25 + hot * 0.75, atol=F32)
    assert torch.equal(out[1], BASE[1])
    heat = gaussian_colors(BASE, RELEVANCY, _settings("relevancy", colormap="viridis"))
    assert torch.equal(heat, apply_colormap(torch.tensor([0.9, 0.4, 0.8]), "viridis"))


def test_threshold_and_colours_change_the_result():
    high = gaussian_colors(BASE, RELEVANCY, _settings("overlay", threshold=0.85))
    assert torch.equal(high[2], BASE[2])  # 0.8 no longer clears the threshold
    assert not torch.equal(high[0], BASE[0])
    green = gaussian_colors(BASE, RELEVANCY, _settings("mask").copy(colors={"a": (0, 255, 0), "b": (0, 0, 255)}))
    assert torch.equal(green[0], torch.tensor([0.0, 1.0, 0.0]))


def test_rgb_and_no_queries_keep_the_gaussians_own_colours():
    assert torch.equal(gaussian_colors(BASE, RELEVANCY, _settings("rgb")), BASE)
    assert torch.equal(gaussian_colors(BASE, None, _settings("overlay")), BASE)


def test_modes_the_browser_cannot_draw_say_why():
    assert browser_side_blocker(_settings("overlay")) is None
    assert browser_side_blocker(_settings("rgb", query_mode="pixel")) is None  # no query shown
    assert "pixel" in browser_side_blocker(_settings("overlay", query_mode="pixel"))
    assert "Granularity" in browser_side_blocker(_settings("granularity"))
    assert "selection" in browser_side_blocker(_settings("overlay", selection_show="tinted"))


def test_morton_order_keeps_neighbours_together():
    gen = torch.Generator().manual_seed(0)
    left = torch.randn(500, 3, generator=gen) * 0.1 - 5.0
    right = torch.randn(500, 3, generator=gen) * 0.1 + 5.0
    means = torch.cat([left, right])[torch.randperm(1000, generator=gen)]
    order = morton_order(means)
    assert sorted(order.tolist()) == list(range(1000))
    side = (means[order, 0] > 0).int()
    assert int((side[1:] != side[:-1]).sum()) == 1  # one cluster, then the other


def test_chunk_sizes():
    assert chunk_size(10) == splat_colors.MIN_CHUNK
    assert chunk_size(1_000_000) == math.ceil(1_000_000 / splat_colors.MAX_CHUNKS)


def test_covariance_of_scaled_and_rotated_gaussians():
    half = math.sqrt(0.5)
    field = _field(
        means=torch.zeros(2, 3),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0], [half, 0.0, 0.0, half]]),  # identity; 90° about z
        scales=torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]),
    )
    cov = covariances(field)
    assert torch.allclose(cov[0], torch.diag(torch.tensor([1.0, 4.0, 9.0])), atol=1e-6)
    assert torch.allclose(cov[1], torch.diag(torch.tensor([4.0, 1.0, 9.0])), atol=1e-5)  # x and y swap


def test_only_chunks_whose_colours_changed_are_listed(monkeypatch):
    monkeypatch.setattr(splat_colors, "MIN_CHUNK", 4)
    geometry = SplatGeometry.of(_field(means=torch.rand(40, 3), quats=None, scales=None))
    assert geometry.chunk == 4 and geometry.num_chunks == 10
    colors = np.zeros((40, 3), dtype=np.uint8)
    assert changed_chunks(None, colors, geometry) == list(range(10))
    changed = colors.copy()
    changed[13] = 7  # chunk 3 (sorted positions 12..15)
    assert changed_chunks(colors, changed, geometry) == [3]


def _field(means, quats, scales, colors=None) -> LanguageField:
    n = means.shape[0]
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1) if quats is None else quats
    scales = torch.full((n, 3), 0.01) if scales is None else scales
    sh = torch.zeros(n, 1, 3)
    if colors is not None:
        sh[:, 0] = (colors - 0.5) / SH_C0
    return LanguageField(
        means=means,
        quats=quats,
        log_scales=torch.log(scales),
        opacity_logits=torch.zeros(n),
        sh=sh,
        metadata=FieldMetadata(source="test"),
    )


# -- one browser's switch, against a recording stand-in for viser ------------------------------------


class _Handle:
    def __init__(self, client, name, rgbs):
        self.client, self.name, self.visible = client, name, True
        self._rgbs = np.array(rgbs)
        self.on_update = lambda fn: fn

    @property
    def rgbs(self):
        return self._rgbs

    @rgbs.setter
    def rgbs(self, value):
        self._rgbs = np.array(value)
        self.client.sent.append((self.name, len(value)))

    def remove(self):
        self.client.removed.append(self.name)


class _Control:
    def __init__(self, value):
        self.value, self.content = value, value

    def on_update(self, fn):
        return fn


class _Gui:
    def add_folder(self, *args, **kwargs):
        return contextlib.nullcontext()

    def add_dropdown(self, label, options, initial_value, hint=None):
        return _Control(initial_value)

    def add_markdown(self, text):
        return _Control(text)


class _Scene:
    def __init__(self, client):
        self.client = client

    def add_gaussian_splats(self, name, centers, covariances, rgbs, opacities):
        self.client.sent.append((name, len(centers)))
        handle = _Handle(self.client, name, rgbs)
        self.client.nodes[name] = handle
        return handle

    def set_background_image(self, image, format):
        self.client.backgrounds.append(np.array(image))


class _Client:
    client_id = 3

    def __init__(self):
        self.gui, self.scene = _Gui(), _Scene(self)
        self.sent, self.removed, self.backgrounds, self.nodes = [], [], [], {}

    def add_notification(self, *args, **kwargs):
        return None


class _Renderer:
    def __init__(self):
        self.paused = False

    def set_paused(self, paused):
        self.paused = paused


class _App:
    def __init__(self, field, engine):
        self.field, self.engine = field, engine


def _settle(splats, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with splats._lock:
            if not splats._working:
                return
        time.sleep(0.02)
    raise AssertionError("the browser-side update never finished")


@pytest.fixture
def browser_side(scene, monkeypatch):
    from gags_viewer.viewer.browser_side import BrowserSplats

    monkeypatch.setattr(splat_colors, "MIN_CHUNK", 256)  # 2,400 Gaussians in 10 chunks
    client = _Client()
    session = ClientSession(client, ViewSettings(rendering="browser", display="overlay"), compose=None)
    session.renderer = _Renderer()
    rerenders = []
    splats = BrowserSplats(_App(scene.field, scene.engine), session, lambda: rerenders.append(1))
    session.rerender = splats.refresh
    return client, session, splats, rerenders


def test_browser_mode_sends_the_field_once_then_only_the_query_s_chunks(browser_side, scene):
    client, session, splats, rerenders = browser_side
    session.rerender()
    _settle(splats)
    n = scene.field.num_gaussians
    geometry = splats._geometry
    assert geometry.num_chunks == 10
    assert sum(count for _, count in client.sent) == n  # every Gaussian once
    assert session.renderer.paused and splats.mode == "browser" and not rerenders
    assert client.backgrounds[-1].tolist() == [[[0, 0, 0]]]  # the background colour, not a frame

    client.sent.clear()
    session.update(queries_text="mug")
    _settle(splats)
    mug = (scene.field.features[:, 0] == 1).numpy()[geometry.order]  # the mug's Gaussians, sorted
    mug_chunks = {i for i in range(geometry.num_chunks) if mug[geometry.span(i)].any()}
    resent = {int(name.rsplit("/", 1)[1]) for name, _ in client.sent}
    assert resent and resent <= mug_chunks and len(resent) < geometry.num_chunks
    colors = np.concatenate([client.nodes[f"/gags_splats/{i:03d}"].rgbs for i in range(geometry.num_chunks)])
    base = splat_colors.to_uint8(scene.field.base_colors())[geometry.order]
    recoloured = np.abs(colors.astype(int) - base.astype(int)).sum(1) > 0
    assert recoloured[mug].mean() > 0.9 and not recoloured[~mug].any()
    ((phrase, swatch),) = session.legend.swatches  # the query's colour, as the legend shows it
    assert phrase == "mug"
    towards = np.abs(colors[recoloured].astype(int) - swatch).sum(1)
    before = np.abs(base[recoloured].astype(int) - swatch).sum(1)
    assert (towards < before).all()

    client.sent.clear()
    session.update(threshold=0.5)  # no change: nothing sent
    _settle(splats)
    assert client.sent == [] and splats.recolours >= 3


def test_modes_the_browser_cannot_draw_fall_back_to_server_rendering(browser_side):
    client, session, splats, rerenders = browser_side
    session.rerender()
    _settle(splats)
    session.update(queries_text="mug", query_mode="pixel")
    _settle(splats)
    assert splats.mode == "server" and not session.renderer.paused and rerenders
    assert all(not h.visible for h in client.nodes.values())
    assert "pixel query mode" in splats.note.content
    session.update(query_mode="gaussian")
    _settle(splats)
    assert splats.mode == "browser" and session.renderer.paused
    assert all(h.visible for h in client.nodes.values())


def test_an_edited_field_replaces_the_nodes(browser_side, scene):
    from gags_viewer.field.edit import keep_only

    client, session, splats, _ = browser_side
    session.rerender()
    _settle(splats)
    old = dict(client.nodes)
    mug = scene.field.features[:, 0] == 1
    splats.app = _App(keep_only(scene.field, mug), None)
    client.sent.clear()
    session.rerender()
    _settle(splats)
    assert sorted(client.removed) == sorted(old)
    assert sum(count for _, count in client.sent) == int(mug.sum())


def test_refresh_from_many_threads_ends_with_the_latest_settings(browser_side):
    client, session, splats, _ = browser_side
    threads = [threading.Thread(target=session.update, kwargs={"threshold": t}) for t in (0.3, 0.4, 0.6, 0.7, 0.9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.update(queries_text="plant", threshold=0.5)
    _settle(splats)
    plant_colors = np.concatenate([h.rgbs for h in client.nodes.values()])
    fresh = splat_colors.to_uint8(
        gaussian_colors(
            splats.app.field.base_colors(),
            splats.app.engine.gaussian_relevancy(["plant"], session.settings.negatives),
            session.settings.copy(colors=dict(zip(["plant"], [tuple(splats.session.legend.swatches[0][1])]))),
        )
    )[splats._geometry.order]
    assert np.array_equal(plant_colors, fresh)


def test_a_comparison_of_two_fields_stays_server_side(browser_side):
    client, session, splats, rerenders = browser_side
    splats.app.comparison = object()  # a second field beside the first: one server frame shows both
    session.rerender()
    _settle(splats)
    assert splats.mode == "server" and not session.renderer.paused and rerenders and not client.nodes
    assert "compared" in splats.note.content
