"""The render callback nerfview calls never raises (nerfview would end the process), and reports once."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from nerfview import CameraState
from nerfview._renderer import InterruptRenderException
from nerfview.render_panel import RenderTabState

from gags_viewer.errors import GagsError
from gags_viewer.viewer.export import Legend
from gags_viewer.viewer.frame import Frame
from gags_viewer.viewer.session import ClientSession
from gags_viewer.viewer.settings import ViewSettings
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


class FakeClient:
    client_id = 7

    def __init__(self):
        self.notifications = []

    def add_notification(self, title, body, **kwargs):
        self.notifications.append((title, body, kwargs))
        return object()


def _state(c2w=None):
    return CameraState(fov=math.radians(50), aspect=4 / 3, c2w=np.eye(4) if c2w is None else c2w)


def _tab(width=32, height=24):
    return RenderTabState(viewer_width=width, viewer_height=height)


def _good(camera, settings, session):
    return Frame(np.full((camera.height, camera.width, 3), 9, np.uint8), Legend(title="ok"))


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom"), TypeError("bad type"), GagsError("user problem"), MemoryError(), ZeroDivisionError()],
)
def test_errors_become_one_notification_and_a_failure_image(error):
    calls = {"n": 0}

    def compose(camera, settings, session):
        calls["n"] += 1
        if calls["n"] == 1:
            return _good(camera, settings, session)
        raise error

    client = FakeClient()
    session = ClientSession(client, ViewSettings(), compose)
    first = session.render(_state(), _tab())
    assert first.shape == (24, 32, 3) and client.notifications == []
    for _ in range(3):  # repeated failures: a frame that says so (not the old image), one notification
        again = session.render(_state(), _tab(64, 48))
        if isinstance(error, MemoryError):  # nothing full-size is allocated after an out-of-memory error
            assert again is first
        else:
            assert again.shape == (48, 64, 3) and _shows_failure(again)
    assert len(client.notifications) == 1
    title, body, kwargs = client.notifications[0]
    assert title == "Render failed" and kwargs["color"] == "red"
    assert session.errors == 3 and session.last_error


def _shows_failure(image) -> bool:
    """Red text ("Render failed") on a dark image."""
    red = (image[..., 0].astype(int) - image[..., 1]) > 60
    return bool(red.any()) and image.mean() < 60


def test_failure_before_any_frame_gives_a_failure_frame_of_the_right_size():
    session = ClientSession(FakeClient(), ViewSettings(), lambda *a: 1 / 0)
    image = session.render(_state(), _tab(80, 60))
    assert image.shape == (60, 80, 3) and image.dtype == np.uint8 and _shows_failure(image)


def test_the_status_line_holds_the_error_until_the_next_good_frame():
    mode = {"fail": True}

    def compose(camera, settings, session):
        if mode["fail"]:
            raise GagsError("relevancy needs at least one negative phrase")
        return _good(camera, settings, session)

    statuses = []
    session = ClientSession(FakeClient(), ViewSettings(), compose, on_status=statuses.append)
    session.render(_state(), _tab())
    session.render(_state(), _tab())
    assert statuses == ["relevancy needs at least one negative phrase"]
    mode["fail"] = False
    session.render(_state(), _tab())
    session.render(_state(), _tab())
    assert statuses == ["relevancy needs at least one negative phrase", None]


def test_a_new_error_after_recovery_is_reported_again():
    mode = {"fail": True}

    def compose(camera, settings, session):
        if mode["fail"]:
            raise RuntimeError("boom")
        return _good(camera, settings, session)

    client = FakeClient()
    session = ClientSession(client, ViewSettings(), compose)
    session.render(_state(), _tab())
    mode["fail"] = False
    session.render(_state(), _tab())
    mode["fail"] = True
    session.render(_state(), _tab())
    assert len(client.notifications) == 2


def test_bad_camera_does_not_raise():
    c2w = np.full((4, 4), np.nan)
    session = ClientSession(FakeClient(), ViewSettings(), _good)
    image = session.render(_state(c2w), _tab())
    assert image.shape == (24, 32, 3)
    assert "NaN" in session.last_error


def test_nerfview_interrupt_passes_through():
    def compose(camera, settings, session):
        raise InterruptRenderException

    session = ClientSession(FakeClient(), ViewSettings(), compose)
    with pytest.raises(InterruptRenderException):
        session.render(_state(), _tab())


def test_failing_notification_or_panel_update_does_not_raise():
    class BrokenClient(FakeClient):
        def add_notification(self, *args, **kwargs):
            raise ConnectionError("socket closed")

    def broken_panel(session, legend, changed):
        raise RuntimeError("panel gone")

    session = ClientSession(BrokenClient(), ViewSettings(), _good, on_frame=broken_panel)
    assert session.render(_state(), _tab()).shape == (24, 32, 3)
    session._compose = lambda *a: 1 / 0
    assert session.render(_state(), _tab()).shape == (24, 32, 3)


def test_real_frames_through_the_callback(scene):
    """With the real composer: the callback renders the synthetic field; a bad setting fails softly."""
    from gags_viewer.viewer.frame import FrameSource

    source = FrameSource(scene.field, scene.engine)
    client = FakeClient()
    session = ClientSession(client, ViewSettings(display="rgb"), lambda c, s, _: source.compose(c, s))
    from gags_viewer.viewer.camera_path import default_framing

    c2w = default_framing(scene.field).c2w()
    image = session.render(_state(c2w), _tab(64, 48))
    assert image.shape == (48, 64, 3) and image.std() > 1
    session._settings = ViewSettings(display="granularity", queries_text="x")
    session._settings.display = "not a mode"  # bypass validation, as a corrupted state would
    failed = session.render(_state(c2w), _tab(64, 48))
    assert failed.shape == image.shape and _shows_failure(failed)
    assert "display mode" in client.notifications[-1][1]


def test_settings_updates_are_validated_and_thread_safe():
    session = ClientSession(FakeClient(), ViewSettings(), _good)
    rerenders = []
    session.rerender = lambda: rerenders.append(1)
    with pytest.raises(GagsError):
        session.update(threshold=3.0)
    assert session.settings.threshold == 0.5 and not rerenders

    def worker(i):
        for _ in range(50):
            session.update(threshold=i / 10)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert session.settings.threshold in {0.0, 0.1, 0.2, 0.3}
    assert len(rerenders) == 200


def test_a_slow_browser_does_not_hold_up_another():
    """Each browser has its own nerfview Renderer and lock: a 3 s frame in one does not delay the other."""
    import time
    import types

    from nerfview._renderer import Renderer, RenderTask

    from gags_viewer.viewer.app import _ClientView

    class Client(FakeClient):
        def __init__(self, client_id):
            super().__init__()
            self.client_id = client_id
            self.frames = []
            self.scene = types.SimpleNamespace(set_background_image=lambda img, **kw: self.frames.append(time.time()))
            self.flush = lambda: None
            self.camera = types.SimpleNamespace(_state=types.SimpleNamespace(update_timestamp=1.0))

    stub = types.SimpleNamespace(state="rendering", get_camera_state=lambda client: _state())

    def slow(camera, settings, session):
        time.sleep(3.0)
        return _good(camera, settings, session)

    renderers = []
    clients = []
    for client_id, compose in ((1, slow), (2, _good)):
        client = Client(client_id)
        session = ClientSession(client, ViewSettings(), compose)
        view = _ClientView(stub, session, 64)
        renderer = Renderer(viewer=view, client=client, lock=view.lock)
        renderer.start()
        renderers.append(renderer)
        clients.append(client)
    try:
        start = time.time()
        for renderer in renderers:
            renderer.submit(RenderTask("rerender", _state()))
        time.sleep(1.5)
        slow_client, fast_client = clients
        assert not slow_client.frames  # still in its first frame
        assert fast_client.frames and fast_client.frames[0] - start < 1.0
    finally:
        for renderer in renderers:
            renderer.running = False


def test_checking_settings_never_modifies_them():
    """A browser's render thread checks the settings object its GUI thread may be replacing."""
    original = ViewSettings(colors={"mug": "#ff0000"}, background="0, 128, 255")
    checked = original.checked()
    assert checked.colors == {"mug": (255, 0, 0)} and checked.background == (0, 128, 255)
    assert original.colors == {"mug": "#ff0000"} and original.background == "0, 128, 255"


def test_pending_phrases_are_released_once_and_atomically():
    session = ClientSession(FakeClient(), ViewSettings(), _good)
    session.set_pending(("mug", "plant"))
    assert session.release_pending(("mug", "lamp")) is True
    assert session.pending_phrases == {"plant"}
    assert session.release_pending(("mug",)) is False  # already released: no second re-render
    # the encoder thread releasing while the render thread replaces the set never loses or resurrects one
    stop = threading.Event()

    def render_thread():
        while not stop.is_set():
            session.set_pending(("a", "b"))

    thread = threading.Thread(target=render_thread)
    thread.start()
    try:
        for _ in range(2000):
            session.release_pending(("a",))
            assert session.pending_phrases in ({"a", "b"}, {"b"})
    finally:
        stop.set()
        thread.join()


def test_a_panel_change_waits_for_the_next_frame_sent_or_a_short_while():
    """The browser handles messages in order: a panel redrawn before the frame delays the frame, so panel
    changes wait until the frame has gone (or PANEL_WAIT_S without one, e.g. browser-side rendering)."""
    import time

    from gags_viewer.viewer import session as session_module

    session = ClientSession(None, ViewSettings(), _good)
    done = threading.Event()
    session.after_frame(done.set)
    assert not done.wait(0.1)  # no frame sent yet
    session.frame_sent()
    assert done.wait(2.0)

    late = threading.Event()
    start = time.monotonic()
    session.after_frame(late.set)  # no frame follows
    assert late.wait(5.0)
    assert time.monotonic() - start >= 0.9 * session_module.PANEL_WAIT_S

    order: list[int] = []
    for i in range(5):
        session.after_frame(lambda i=i: order.append(i))
    session.frame_sent()
    deadline = time.monotonic() + 5.0
    while len(order) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == [0, 1, 2, 3, 4]  # in the order they were asked for
