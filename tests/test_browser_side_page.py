"""Browser-side rendering in headless Chromium (Debian's, through Playwright; WebGL in software): the demo
field splatted by the browser, recoloured per query, from two viewpoints, with no frame rendered by the
server after the switch; and a plain .splat file opened browser-side.

Where the highlight must be: the pixels onto which the Gaussians the engine scores above the threshold
for the phrase project, with the browser's current camera (which the server knows).
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gags_viewer.viewer.screenshots import labelled_input
from tests.test_browser_viewer import (  # noqa: F401 - fixture
    TOP_MARGIN,
    VIEWPORT,
    Page,
    _changed,
    _dump,
    _free_port,
    _wait,
    browser,
    wait_for_highlight,
)
from tests.test_viewer_fixtures import project_mask

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scenes" / "demo"
SPLAT = REPO / "scenes" / "teapot.splat"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from gags_viewer.viewer.commands import build_engine, check_text_model, load_for_viewing, serve

    field = load_for_viewing(DEMO, None, torch.device("cpu"))
    engine = build_engine(field, DEMO, torch.device("cpu"))
    check_text_model(engine)
    out = tmp_path_factory.mktemp("browser_side_exports")
    srv, viewer = serve(field, engine, port=_free_port(), output_dir=out, block=False, field_dir=DEMO)
    yield srv, viewer, f"http://127.0.0.1:{srv.get_port()}", out
    srv.stop()


def _choose_rendering(page, option: str) -> None:
    page.page.locator(labelled_input("Rendering") + "[not(@type='hidden')]").click()
    page.page.get_by_role("option", name=option, exact=True).click()


def _orbit(client, framing, degrees: float) -> None:
    """Put the browser's camera on the default view turned by ``degrees`` about the scene's up axis."""
    up = framing.up / np.linalg.norm(framing.up)
    offset = framing.eye - framing.target
    angle = math.radians(degrees)
    along = np.dot(offset, up) * up
    across = offset - along
    turned = along + across * math.cos(angle) + np.cross(up, across) * math.sin(angle)
    with client.atomic():
        client.camera.up_direction = tuple(float(v) for v in up)
        client.camera.position = tuple(float(v) for v in framing.target + turned)
        client.camera.look_at = tuple(float(v) for v in framing.target)


def _phrase_mask(engine, phrase: str, negatives, camera, threshold: float = 0.5) -> np.ndarray:
    relevancy = engine.gaussian_relevancy([phrase], list(negatives))[0]
    return project_mask(engine.field.means[relevancy > threshold], camera)


def _highlighted(page, before, phrase, other, engine, negatives):
    """Wait until ``phrase``'s pixels changed from ``before`` (towards its legend colour) and ``other``'s did not."""

    def masks(camera):
        return _phrase_mask(engine, phrase, negatives, camera), _phrase_mask(engine, other, negatives, camera)

    shown, changed = wait_for_highlight(page, before, masks, phrase, other, "browser-side", min_other_pixels=201)
    swatches = dict(page.session.legend.swatches)
    assert phrase in swatches, page.session.legend
    target = np.array(swatches[phrase])
    towards = np.abs(shown[changed].astype(int) - target).sum(1).mean()
    assert towards < np.abs(before[changed].astype(int) - target).sum(1).mean()
    return shown


def _canvas(pw_page) -> np.ndarray:
    """A screenshot of the viewer's canvas. [H, W, 3] uint8"""
    from PIL import Image

    box = pw_page.locator("canvas").first.bounding_box()
    png = pw_page.screenshot(clip={"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"]})
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).copy()


def _settled(pw_page, timeout: float = 30.0) -> np.ndarray:
    """A canvas screenshot once two in a row agree (the browser finished sorting and drawing)."""
    previous = _canvas(pw_page)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.7)
        current = _canvas(pw_page)
        if _changed(previous, current)[TOP_MARGIN:].mean() < 0.002 and current[TOP_MARGIN:].std() > 5:
            return current
        previous = current
    raise AssertionError("the browser never settled")


def test_demo_browser_side_from_two_viewpoints_without_server_renders(browser, demo_server):
    from gags_viewer.viewer.camera_path import default_framing

    page = Page(browser, demo_server)
    try:
        session, viewer = page.session, page.viewer
        engine = viewer.app.engine
        negatives = session.settings.negatives
        _choose_rendering(page, "browser")
        _wait(lambda: session.browser_side.mode == "browser", what="browser-side mode on the server")
        page.page.get_by_text("your browser draws the 9,170 Gaussians", exact=False).wait_for(timeout=30_000)
        time.sleep(1.0)  # a frame already on its way is dropped
        frames, renders = session.renderer.frames_sent, len(session.frame_times)

        framing = default_framing(viewer.app.field)
        for degrees in (0.0, 50.0):
            _orbit(session.client, framing, degrees)
            plain = _settled(page.page)
            page.type_queries("red cube")
            _highlighted(page, plain, "red cube", "green ball", engine, negatives)
            page.type_queries("green ball")  # the recolouring follows a query change
            _highlighted(page, plain, "green ball", "red cube", engine, negatives)
            page.type_queries("")
        assert session.renderer.frames_sent == frames and len(session.frame_times) == renders  # no server render

        _choose_rendering(page, "server")  # and back: the server streams frames again
        _wait(lambda: session.renderer.frames_sent > frames, what="a server frame after switching back")
        assert session.browser_side.mode == "server"
    finally:
        page.close()


@pytest.mark.skipif(not SPLAT.exists(), reason="scenes/teapot.splat is not in this checkout")
def test_a_plain_splat_file_opens_browser_side(browser, tmp_path):
    from gags_viewer.field.load import load_field
    from gags_viewer.viewer.commands import serve

    field = load_field(SPLAT)
    srv, viewer = serve(field, None, port=_free_port(), output_dir=tmp_path, block=False, browser_side=True)
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{srv.get_port()}")
        page.locator(labelled_input("Queries")).wait_for(timeout=60_000)
        session = _wait(lambda: next(iter(viewer.app.sessions.values()), None), what="the server session")
        _wait(lambda: session.browser_side.recolours > 0, what="the splats sent")
        page.get_by_text("no language features", exact=False).first.wait_for(timeout=30_000)
        image = _settled(page)
        assert image[TOP_MARGIN:].std() > 10  # the teapot is drawn (on black)
        assert session.renderer.frames_sent == 0 and len(session.frame_times) == 0  # by the browser alone
        assert session.browser_side.gaussians_sent == field.num_gaussians
    finally:
        context.close()
        srv.stop()
