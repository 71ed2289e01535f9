"""The "Select & edit" panel in headless Chromium on the demo field: show the selection alone, delete it,
undo, redo, save the edited field (it reloads and renders the same), and click-to-query."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from gags_viewer.demo import DEMO_FIELD
from tests.test_browser_viewer import TOP_MARGIN, Page, _changed, _free_port, _wait, browser  # noqa: F401 - fixture

pytestmark = [pytest.mark.skipif(not (DEMO_FIELD / "field.json").is_file(), reason="demo field not built")]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from gags_viewer.field.load import load_field
    from gags_viewer.viewer.commands import build_engine, serve

    field = load_field(DEMO_FIELD)
    engine = build_engine(field, DEMO_FIELD, torch.device("cpu"))
    out = tmp_path_factory.mktemp("selection_exports")
    srv, viewer = serve(
        field,
        engine,
        port=_free_port(),
        output_dir=out,
        query="red cube",
        viewer_res=480,
        block=False,
        field_dir=DEMO_FIELD,
    )
    yield srv, viewer, f"http://127.0.0.1:{srv.get_port()}", out
    srv.stop()


def test_select_delete_undo_redo_save(browser, demo_server):
    from gags_viewer.field.load import load_field
    from gags_viewer.render.api import render

    _, viewer, _, out = demo_server
    app = viewer.app
    n = app.field.num_gaussians
    page = Page(browser, demo_server)
    try:
        before = page.stable_screenshot()
        page.page.get_by_text("Select & edit", exact=True).click()
        page.page.get_by_text("Sel. threshold", exact=True).wait_for(timeout=30_000)
        page.choose(1, "Alone")  # selects: Query mode, Show, Save as, Display, ...
        _wait(lambda: page.session.settings.selection_show == "alone", what="'Alone' on the server")
        page.page.get_by_text("Gaussians selected", exact=False).first.wait_for(timeout=60_000)
        expected = app.selections.select(app.engine, page.session.settings).count
        assert 0 < expected < n

        # Shown alone: most of the picture (the table, the other objects) is gone.
        _wait(
            lambda: _changed(page.screenshot(), before)[TOP_MARGIN:].mean() > 0.2,
            timeout=60,
            period=0.5,
            what="the selection shown alone",
        )

        page.page.get_by_role("button", name="Delete selection").click()
        _wait(lambda: app.field.num_gaussians == n - expected, what="the selection deleted")
        assert app.engine.field is app.field
        page.page.get_by_role("button", name="Undo").click()
        _wait(lambda: app.field.num_gaussians == n, what="the delete undone")
        page.page.get_by_role("button", name="Redo").click()
        _wait(lambda: app.field.num_gaussians == n - expected, what="the delete redone")

        page.page.get_by_role("button", name="Save field").click()
        saved = _wait(
            lambda: (
                [p for p in (out / "fields").glob("*") if (p / "field.json").is_file()]
                if (out / "fields").is_dir()
                else []
            ),
            what="the saved field",
        )
        reloaded = load_field(saved[0])
        assert reloaded.num_gaussians == n - expected and reloaded.decoder is not None
        camera = page.camera(before)
        a = render(app.field, camera, rgb=True, backend="torch").rgb
        b = render(reloaded, camera, rgb=True, backend="torch").rgb
        assert torch.equal(a, b)
    finally:
        page.close()


def test_click_to_query(browser, demo_server):
    from gags_viewer.demo.scene import NODE_INDEX, SceneConfig, make_scene

    _, viewer, _, _ = demo_server
    while viewer.app.editor.history.can_undo:  # back to the field as loaded
        viewer.app.editor.undo()
    page = Page(browser, demo_server)
    try:
        image = page.stable_screenshot()
        camera = page.camera(image)
        ball = make_scene(SceneConfig(seed=0)).leaf_map(camera) == NODE_INDEX["green_ball"]
        ball[:TOP_MARGIN] = False
        ys, xs = np.nonzero(ball)
        assert len(xs) > 50, "the green ball is on screen"
        i = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        page.page.get_by_text("Click to query", exact=True).click()
        checkbox = page.page.get_by_role("checkbox").first
        _wait(checkbox.is_checked, what="'Click to query' on")
        time.sleep(1.0)  # viser tells the page that clicks are now wanted
        box = page.page.locator("canvas").first.bounding_box()
        page.page.mouse.click(box["x"] + float(xs[i]), box["y"] + float(ys[i]))
        _wait(lambda: "[click" in page.session.settings.queries_text, what="the click turned into a query")
        phrase = page.session.settings.queries[-1]
        page.page.locator("span", has_text=phrase).first.wait_for(timeout=30_000)  # listed in the legend
        from gags_viewer.language.selection import GaussianSelector

        truth = make_scene(SceneConfig(seed=0)).leaf == NODE_INDEX["green_ball"]
        selected = GaussianSelector(viewer.app.engine).select(phrase).mask
        assert (selected & truth).sum() >= 0.8 * truth.sum()
    finally:
        page.close()
