"""Compare mode on the real page (headless Chromium): ``view A B`` with B = A without its mug.

The canvas shows A left and B right under the browser's camera; typing "mug; plant" highlights the mug in
A's half only and the plant in both; the Compare panel's Layout control switches to split screen.
"""

from __future__ import annotations

import pytest

from gags_viewer.viewer.compare import DIVIDER_WIDTH, Comparison, half_camera
from gags_viewer.viewer.screenshots import labelled_input
from tests.test_browser_viewer import (  # noqa: F401 - fixtures
    TOP_MARGIN,
    Page,
    _changed,
    _dump,
    _free_port,
    _wait,
    browser,
    playwright_api,
    pytestmark,
)
from tests.test_compare import mug_mask
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def server(scene, tmp_path_factory):
    from gags_viewer.field.edit import delete
    from gags_viewer.language import QueryEngine
    from gags_viewer.viewer.commands import serve

    without_mug = delete(scene.field, mug_mask(scene.field))
    comparison = Comparison(without_mug, QueryEngine(without_mug, scene.encoder), ("gags", "no_mug"))
    out = tmp_path_factory.mktemp("browser_compare")
    srv, viewer = serve(
        scene.field, scene.engine, port=_free_port(), output_dir=out, block=False, comparison=comparison
    )
    yield srv, viewer, f"http://127.0.0.1:{srv.get_port()}", out
    srv.stop()


def test_both_fields_side_by_side_then_split(browser, server, scene):
    page = Page(browser, server)
    try:
        rgb = page.stable_screenshot()
        page.type_queries("mug; plant")
        state = {}

        def highlighted() -> bool:
            image = page.screenshot()
            height, width = image.shape[:2]
            scale = width / page.session.view.render_tab_state.viewer_width
            half = round((page.session.view.render_tab_state.viewer_width - DIVIDER_WIDTH) // 2 * scale)
            camera = half_camera(page.camera(image), half)
            changed = _changed(image, rgb)
            changed[:TOP_MARGIN] = False
            left, right = changed[:, :half], changed[:, width - half :]
            mug, plant = scene.object_mask("mug", camera), scene.object_mask("plant", camera)
            mug[:TOP_MARGIN], plant[:TOP_MARGIN] = False, False
            state.update(
                image=image,
                a_mug=left[mug].mean(),
                b_mug=right[mug].mean(),
                a_plant=left[plant].mean(),
                b_plant=right[plant].mean(),
            )
            return (
                mug.sum() > 100
                and state["a_mug"] > 0.4
                and state["b_mug"] < 0.05
                and state["a_plant"] > 0.4
                and state["b_plant"] > 0.4
            )

        try:
            _wait(highlighted, timeout=90, period=0.5, what="the mug in A only, the plant in both")
        except AssertionError:
            _dump("compare", rgb=rgb, page=state.get("image"))
            raise AssertionError(str({k: v for k, v in state.items() if k != "image"})) from None

        page.page.locator(labelled_input("Layout") + " >> visible=true").first.click()
        page.page.get_by_role("option", name="Split screen", exact=True).click()
        _wait(lambda: page.session.settings.compare_layout == "split", what="split layout on the server")
        page.page.locator(labelled_input("Split") + " >> visible=true").first.wait_for(timeout=30_000)
    finally:
        page.close()
