"""The real page in headless Chromium (Debian's, through Playwright): queries, display modes, export,
two browsers at once.

The viewer serves the synthetic field (a "mug" blob left, a "plant" blob right, on a floor) in this
process. Highlights are checked on the page's own pixels (a screenshot of the canvas): the pixels
that change when a query is typed must be where the field's Gaussians for that phrase project with
the browser's current camera, which the server knows.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import time

import numpy as np
import pytest

from gags_viewer.viewer import nerfview_adapter as nv
from gags_viewer.viewer.screenshots import CHROMIUM, FLAGS, labelled_input
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture

VIEWPORT = {"width": 1200, "height": 800}
TOP_MARGIN = 170  # notifications (WebGL warning, export results) show in the canvas' top-left corner

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(scene, tmp_path_factory):
    from gags_viewer.viewer.commands import serve

    out = tmp_path_factory.mktemp("browser_exports")
    srv, viewer = serve(scene.field, scene.engine, port=_free_port(), output_dir=out, block=False)
    viewer.default_render_size = (640, 480)  # export size: quick on CPU
    yield srv, viewer, f"http://127.0.0.1:{srv.get_port()}", out
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
        b = p.chromium.launch(executable_path=executable, args=FLAGS)
        yield b
        b.close()


def _wait(predicate, timeout: float = 60.0, period: float = 0.25, what: str = "condition", state=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" ({state()})" if state else ""))


class Page:
    """One browser tab on the viewer and the server-side session that serves it."""

    def __init__(self, browser, server):
        _, self.viewer, url, _ = server
        before = set(self.viewer.app.sessions)
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page = self.context.new_page()
        self.page.goto(url)
        # viser's "Connected" badge only shows for a moment; the panel's inputs mean the socket is up.
        self.page.locator(labelled_input("Queries")).wait_for(timeout=60_000)
        new = _wait(lambda: set(self.viewer.app.sessions) - before, what="the server session")
        self.session = self.viewer.app.sessions[new.pop()]
        res = self.session.settings.viewer_res
        _wait(
            lambda: any(max(w, h) == res for w, h, _ in list(self.session.frame_times)),
            what="a first full-resolution frame",
        )

    def close(self):
        self.context.close()

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        box = self.page.locator("canvas").first.bounding_box()
        png = self.page.screenshot(clip={"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"]})
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).copy()

    def stable_screenshot(self, timeout: float = 30.0) -> np.ndarray:
        """A screenshot once two in a row agree and show the field (the streamed frame has settled)."""
        previous = self.screenshot()
        deadline = time.time() + timeout
        while time.time() < deadline:
            time.sleep(0.5)
            current = self.screenshot()
            if _changed(previous, current).mean() < 0.002 and current[TOP_MARGIN:].std() > 5:
                return current
            previous = current
        raise AssertionError("the page never settled on a frame of the field")

    def camera(self, image: np.ndarray):
        from gags_viewer.render.camera import Camera

        state = self.viewer.get_camera_state(self.session.client)
        return Camera.from_nerfview(state, image.shape[1], image.shape[0])

    def type_queries(self, text: str):
        box = self.page.locator(labelled_input("Queries"))
        box.fill(text)
        box.press("Enter")
        _wait(lambda: self.session.settings.queries_text == text, what=f"the query '{text}' on the server")

    def choose(self, select_index: int, option: str):
        self.page.locator(".mantine-Select-input >> visible=true").nth(select_index).click()
        self.page.get_by_role("option", name=option, exact=True).click()


def _dump(name: str, **images) -> None:
    """Keep the images of a failed check for inspection (under $TMPDIR/gags_browser_failures)."""
    import tempfile

    from PIL import Image

    folder = os.path.join(tempfile.gettempdir(), "gags_browser_failures")
    os.makedirs(folder, exist_ok=True)
    for key, image in images.items():
        if image is not None:
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(os.path.join(folder, f"{name}-{key}.png"))


def _changed(a: np.ndarray, b: np.ndarray, level: int = 40) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).sum(-1) > level


def wait_for_highlight(page, reference, masks, phrase: str, other: str, label: str, min_other_pixels: int = 0):
    """Wait until most of ``phrase``'s pixels changed from ``reference`` on the page and almost none of
    ``other``'s. ``masks(camera)`` -> (own, other) bool [H, W]. Returns (page image, changed own pixels)."""
    state: dict = {}

    def ok():
        image = page.screenshot()
        own, not_own = masks(page.camera(image))
        not_own = not_own & ~own
        own[:TOP_MARGIN] = False
        not_own[:TOP_MARGIN] = False
        changed = _changed(image, reference)
        state.update(own=changed[own].mean(), other=changed[not_own].mean(), image=image, changed=changed & own)
        return own.sum() > 200 and not_own.sum() >= min_other_pixels and state["own"] > 0.4 and state["other"] < 0.05

    try:
        _wait(ok, timeout=60, period=0.5, what=f"'{phrase}' highlighted")
    except AssertionError:
        _dump(f"{label}-{phrase}", reference=reference, page=state.get("image"))
        raise AssertionError(
            f"'{phrase}': {state.get('own', 0):.2f} of its pixels changed, {state.get('other', 0):.2f} of '{other}''s"
        ) from None
    return state["image"], state["changed"]


def _highlight_check(page: Page, rgb: np.ndarray, phrase: str, other: str, scene):
    """Wait until the page shows ``phrase`` highlighted (vs the RGB screenshot) and ``other`` not."""
    shown, changed = wait_for_highlight(
        page,
        rgb,
        lambda camera: (scene.object_mask(phrase, camera), scene.object_mask(other, camera)),
        phrase,
        other,
        "fail",
    )
    image = shown.astype(int)
    # The highlight has the query's colour, the one the legend shows: pixels moved towards it.
    color = np.array(dict(page.session.legend.swatches)[phrase])
    towards = color - rgb[changed].astype(int)
    moved = ((image[changed] - rgb[changed]) * towards).sum(-1) / np.maximum(np.linalg.norm(towards, axis=-1), 1)
    assert moved.mean() > 20, (color, moved.mean())
    return shown


@pytest.fixture(scope="module")
def page_a(browser, server):
    page = Page(browser, server)
    yield page
    page.close()


def test_query_highlights_where_the_field_says(page_a, scene):
    rgb = page_a.stable_screenshot()
    assert rgb.std() > 5  # the field is on screen
    page_a.rgb = rgb
    page_a.type_queries("mug")
    _highlight_check(page_a, rgb, "mug", "plant", scene)
    page_a.page.get_by_text("relevancy > 0.50", exact=False).first.wait_for(timeout=30_000)  # the legend


def test_display_modes(page_a, scene):
    page = page_a
    page.choose(1, "Solid masks over RGB")
    _wait(lambda: page.session.settings.display == "mask", what="mask mode on the server")
    _highlight_check(page, page.rgb, "mug", "plant", scene)

    page.choose(1, "Depth")
    _wait(lambda: page.session.settings.display == "depth", what="depth mode")

    def depth_shown():
        image = page.screenshot()
        return _changed(image, page.rgb)[TOP_MARGIN:].mean() > 0.3

    _wait(depth_shown, timeout=60, period=0.5, what="the depth view")

    page.choose(1, "RGB")
    _wait(
        lambda: _changed(page.screenshot(), page.rgb)[TOP_MARGIN:].mean() < 0.02,
        timeout=60,
        period=0.5,
        what="the RGB view again",
    )
    page.choose(1, "Query colours over RGB")
    _highlight_check(page, page.rgb, "mug", "plant", scene)


def test_export_png(page_a, server, scene):
    from PIL import Image

    from gags_viewer.render.camera import Camera
    from gags_viewer.viewer.frame import compose_frame
    from gags_viewer.viewer.settings import ViewSettings

    _, viewer, _, out = server
    page = page_a
    with page.page.expect_download(timeout=90_000) as info:
        page.page.get_by_role("button", name="Export PNG").click()
    download = info.value
    assert download.suggested_filename.startswith("view-mug-") and download.suggested_filename.endswith(".png")
    data = open(download.path(), "rb").read()
    written = out / "images" / download.suggested_filename
    assert written.read_bytes() == data  # the download is the file written server-side
    assert not [p for p in (out / "images").iterdir() if p.name.startswith(".")]  # no temporaries left

    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    state = viewer.get_camera_state(page.session.client)
    assert image.shape[0] == 480 and abs(image.shape[1] / 480 - state.aspect) < 0.01
    camera = Camera.from_nerfview(state, image.shape[1], image.shape[0])
    rgb = compose_frame(scene.field, camera, ViewSettings(display="rgb"), scene.engine).image.astype(int)
    mug, plant = scene.object_mask("mug", camera), scene.object_mask("plant", camera)
    legend_rows = slice(0, int(image.shape[0] * 0.75))  # the legend sits in the bottom-left corner
    changed = np.abs(image - rgb).sum(-1) > 30
    mug[legend_rows.stop :], plant[legend_rows.stop :] = False, False
    assert changed[mug].mean() > 0.5 and changed[plant].mean() < 0.05
    corner = image[int(image.shape[0] * 0.75) :, : image.shape[1] // 2].reshape(-1, 3)
    swatch = np.array(dict(page.session.legend.swatches)["mug"])  # the query's colour, drawn in the legend
    assert (np.abs(corner - swatch).sum(-1) < 12).sum() > 20


def test_export_matching_gaussians_as_a_queryable_field(page_a, server, scene, tmp_path, capsys):
    """The matches export keeps what makes the Gaussians queryable (decoders, the CLIP reference): it
    reopens and answers the same query with the same Gaussians."""
    import zipfile

    import torch

    from gags_viewer.cli import main
    from gags_viewer.field.load import load_field
    from gags_viewer.viewer.commands import build_engine

    _, viewer, _, out = server
    # The official rule's vote radius (0.05) is for COLMAP-scale scenes; this synthetic one is sparser.
    page_a.session.update(selection_radius=0.3)
    with page_a.page.expect_download(timeout=90_000) as info:
        page_a.page.get_by_role("button", name="Export matches (field)").click()
    download = info.value
    name = download.suggested_filename
    assert name.startswith("selection-mug-") and name.endswith(".zip")
    archive = tmp_path / name
    download.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path)
    exported = tmp_path / name[: -len(".zip")]
    assert (out / "selections" / exported.name / "field.json").is_file()  # the directory written server-side
    selection = load_field(exported)
    mug, plant = scene.field.features[:, 0] == 1, scene.field.features[:, 1] == 1
    # the official GAGS 3D query: every mug Gaussian, no plant Gaussian (the vote may take floor ones nearby)
    assert int((selection.features[:, 0] == 1).sum()) == int(mug.sum())
    assert int((selection.features[:, 1] == 1).sum()) == 0 and int(plant.sum()) > 0
    assert selection.decoder is not None and selection.metadata.decoder_kind == scene.field.metadata.decoder_kind
    assert "'mug' by the official GAGS 3D query" in selection.metadata.source, "the export names its rule"
    assert main(["info", str(exported)]) == 0
    printed = capsys.readouterr().out
    assert "decoder: none" not in printed and scene.clip.checkpoint_file in printed
    # reopened as `gags-viewer view` would, the same query selects the same Gaussians (all of them)
    engine = build_engine(selection, exported, torch.device("cpu"))
    assert engine.text_encoder.spec.checkpoint_file == scene.clip.checkpoint_file
    again = viewer.app.selections.select(engine, page_a.session.settings)
    mug_again = selection.features[:, 0] == 1
    assert bool(again.mask.cpu()[mug_again].all()) and not bool(again.mask.cpu()[selection.features[:, 1] == 1].any())


def test_two_browsers_keep_their_own_queries(browser, server, page_a, scene):
    page_b = Page(browser, server)
    try:
        rgb_b = page_b.stable_screenshot()
        # A phrase nobody typed before: it is encoded in the background, then this browser re-renders
        # by itself (its legend loses the "encoding" note).
        page_b.type_queries("a phrase typed just now")
        session = page_b.session
        _wait(
            lambda: not session.pending_phrases and not session.legend.notes and session.legend.swatches,
            what="the new phrase encoded and rendered",
            state=lambda: (
                session.pending_phrases,
                session.legend.signature()[::3],
                session.last_error,
                len(session.frame_times),
            ),
        )
        page_b.page.locator("span", has_text="a phrase typed just now").first.wait_for(timeout=30_000)  # legend
        from playwright.sync_api import expect

        # the page receives the legend update a moment after the server state changes
        expect(page_b.page.get_by_text("encoding", exact=False)).to_have_count(0, timeout=30_000)

        page_b.type_queries("plant")
        _highlight_check(page_b, rgb_b, "plant", "mug", scene)
        # The first browser still shows its own query, with its own camera and settings.
        assert page_a.session.settings.queries == ["mug"]
        _highlight_check(page_a, page_a.rgb, "mug", "plant", scene)
        assert page_b.session.settings.queries == ["plant"]
        assert page_a.session.client.client_id != page_b.session.client.client_id
    finally:
        page_b.close()


def test_video_of_the_camera_path(page_a, server, scene, tmp_path):
    """Keyframes from nerfview's panel -> an MP4 rendered server-side with this browser's queries; the
    path is saved as JSON, and ``gags-viewer render --camera-path`` gives the same frames."""
    import imageio.v3 as iio

    _, viewer, _, out = server
    page = page_a
    handles = page.session.camera_path.handles
    handles["framerate_number"].value = 4.0
    handles["transition_sec_number"].value = 1.0
    page.page.get_by_text("Camera path", exact=True).click()
    add = page.page.get_by_role("button", name="Add Keyframe")
    add.click()
    _wait(lambda: len(nv.path_keyframes(page.session.camera_path.path)) == 1, what="the first keyframe")
    client = page.session.client
    client.camera.position = client.camera.position + np.array([0.8, 0.0, 0.3])
    time.sleep(0.5)
    add.click()
    _wait(lambda: len(nv.path_keyframes(page.session.camera_path.path)) == 2, what="the second keyframe")
    handles["trajectory_name_text"].value = "my path"

    with page.page.expect_download(timeout=120_000) as info:
        page.page.get_by_role("button", name="Render video").click()
    download = info.value
    assert download.suggested_filename.startswith("my_path-") and download.suggested_filename.endswith(".mp4")
    written = out / "videos" / download.suggested_filename
    assert written.read_bytes() == open(download.path(), "rb").read()
    video = iio.imread(written)
    assert video.shape[0] == 4 and video.shape[1:3] == (480, 640)  # 1 s at 4 fps, at the Render Res
    saved = out / "camera_paths" / "my_path.json"
    assert saved.exists()

    from gags_viewer.viewer.camera_path import read_camera_path
    from gags_viewer.viewer.render_command import render_frames
    from gags_viewer.viewer.settings import settings_for_render

    cameras = read_camera_path(saved).cameras
    frames = list(render_frames(scene.field, scene.engine, cameras, settings_for_render("mug", "overlay")))
    for a, b in zip(video, frames):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 6  # equal up to H.264 compression
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 2  # the camera really moved


def test_a_rejected_setting_snaps_back_and_a_failed_render_says_so(page_a, scene):
    """Threshold 2 is refused: the slider's box shows the threshold in use again. Emptying the negatives
    makes every frame fail: the canvas shows the failure (not the previous overlay) and a status line
    says why until the next good frame."""
    from playwright.sync_api import expect

    page, session = page_a, page_a.session
    assert session.settings.threshold == 0.5
    box = page.page.locator("input.mantine-NumberInput-input >> visible=true").first
    box.fill("2")
    box.press("Enter")
    expect(box).to_have_value("0.5", timeout=30_000)
    assert session.settings.threshold == 0.5

    good = page.stable_screenshot()
    right_of_notes = 330  # notifications stack in the top-left column meanwhile
    negatives = page.page.locator(labelled_input("Negatives"))
    negatives.fill("")
    negatives.press("Enter")
    _wait(lambda: session.settings.negatives_text == "", what="the empty negatives on the server")
    _wait(lambda: session.last_error, what="the render failure")

    def failure_shown():
        image = page.screenshot()
        return (
            _changed(image, good)[:, right_of_notes:].mean() > 0.3
            and image[:, right_of_notes:].mean() < good[:, right_of_notes:].mean() * 0.6
        )

    _wait(failure_shown, timeout=30, period=0.5, what="the failure on the canvas")
    _dump("render-failed", good=good, page=page.screenshot())
    status = page.page.get_by_text("Render failed: relevancy needs at least one negative phrase", exact=False)
    expect(status.first).to_be_visible(timeout=30_000)
    time.sleep(9)  # longer than the notification stays
    expect(status.first).to_be_visible()

    negatives.fill("object; things; stuff; texture")
    negatives.press("Enter")
    state = {}

    def good_again():
        state["image"] = page.screenshot()
        return not session.last_error and _changed(state["image"], good)[:, right_of_notes:].mean() < 0.02

    try:
        _wait(
            good_again,
            timeout=60,
            period=0.5,
            what="the good frame again",
            state=lambda: (session.last_error, session.settings.negatives_text),
        )
    except AssertionError:
        _dump("render-recovered", good=good, page=state.get("image"))
        raise
    expect(status).to_have_count(0, timeout=30_000)


def test_each_browser_has_its_own_camera_path(browser, server, page_a):
    """The first browser's keyframes (added by the video test, the first one at the start view) are not
    in a new browser's scene: it does not open looking through a keyframe frustum, and its "Render video"
    does not render the other browser's path."""
    from playwright.sync_api import expect

    page_b = Page(browser, server)
    try:
        image = page_b.stable_screenshot()
        _dump("fresh-page", page=image)
        # nerfview draws keyframe frustums in red (seen from inside: thick red bars across the canvas)
        red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
        assert red[TOP_MARGIN:].mean() < 0.002, red[TOP_MARGIN:].mean()
        page_b.page.get_by_role("button", name="Render video").click()
        expect(page_b.page.get_by_text("add at least two keyframes", exact=False).first).to_be_visible(timeout=30_000)
        assert len(nv.path_keyframes(page_a.session.camera_path.path)) == 2
        assert len(nv.path_keyframes(page_b.session.camera_path.path)) == 0
    finally:
        page_b.close()


def test_browsers_that_leave_leave_nothing_behind(browser, server):
    """Per-browser state (session, render thread, panels, caches, client handle) is released when tabs
    close: memory must not grow with every browser that ever connected. The most recently departed
    browser's objects may stay referenced by the server's connection machinery until the next one leaves,
    so of three browsers that came and left, all but the last must be gone."""
    import gc
    import weakref

    _, viewer, _, _ = server
    refs = []
    for phrase in ("plant", "mug", "plant; mug"):
        page = Page(browser, server)
        page.type_queries(phrase)
        _wait(lambda page=page: page.session.legend.swatches, what="the query rendered")
        session, renderer = page.session, page.session.renderer
        client_id = session.client.client_id
        refs.append([weakref.ref(o) for o in (session, renderer, session.settings, session.client)])
        page.session = session = None
        page.close()
        _wait(lambda client_id=client_id: client_id not in viewer.app.sessions, what="the session dropped")
        renderer.join(timeout=30)
        assert not renderer.is_alive()
        renderer = None

    def released():
        gc.collect()
        return all(ref() is None for group in refs[:-1] for ref in group)

    _wait(
        released,
        timeout=30,
        what="the departed browsers' objects garbage-collected",
        state=lambda: [[ref() is None for ref in group] for group in refs],
    )
