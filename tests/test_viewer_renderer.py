"""The per-browser render thread never loses a request (gags_viewer/viewer/renderer.py), checked on the
exact interleavings that lose one in nerfview's own Renderer."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from nerfview import CameraState
from nerfview._renderer import Renderer, RenderTask
from nerfview.render_panel import RenderTabState

from gags_viewer.viewer.nerfview_adapter import InterruptRenderException, set_target_fps
from gags_viewer.viewer.renderer import IDLE_WAIT_S, ClientRenderer
from gags_viewer.viewer.settings import split_phrases


class FakeScene:
    def __init__(self, view):
        self.view = view
        self.frames: list[tuple[float, int, int]] = []
        """(arrival time, renders started so far, the frame's query version)"""

    def set_background_image(self, image, format, jpeg_quality, depth=None):
        self.frames.append((time.monotonic(), self.view.started, int(image[0, 0, 0])))


class FakeClient:
    client_id = 1

    def __init__(self, view):
        self.scene = FakeScene(view)
        self.flushed_after: list[int] = []
        """Frames sent when each flush of the outgoing messages was asked for."""

    def flush(self):
        self.flushed_after.append(len(self.scene.frames))


class FakeView:
    """What a Renderer reads; ``render_fn`` paints the current 'query version' into the frame."""

    def __init__(self, render_seconds: float = 0.0):
        self.render_tab_state = RenderTabState(viewer_res=64)
        self.state = "ready"
        self.version = 0
        self.render_seconds = render_seconds
        self.started = 0

    def render_fn(self, camera_state, tab):
        self.started += 1
        version = self.version
        deadline = time.monotonic() + self.render_seconds
        while time.monotonic() < deadline:  # calls into the package: where an abandoned frame is interrupted
            split_phrases("mug")
        return np.full((tab.viewer_height, tab.viewer_width, 3), version, dtype=np.uint8)

    def get_camera_state(self, client):
        return CameraState(fov=math.radians(50), aspect=4 / 3, c2w=np.eye(4))

    def _after_render(self):
        pass


def _start(cls, render_seconds: float = 0.0):
    view = FakeView(render_seconds)
    client = FakeClient(view)
    renderer = cls(viewer=view, client=client, lock=threading.Lock())
    renderer.start()
    return renderer, view, client


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _at_rest(renderer, client, timeout: float = 5.0) -> None:
    """Wait until the thread refined the view to full resolution and went idle."""
    assert _wait_for(lambda: renderer._state == "high" and client.scene.frames, timeout)
    time.sleep(0.5)


def _at_rest_then_record(renderer, view, client) -> tuple[tuple[int, int], list]:
    """At rest at full resolution, with the low resolution a tenth of its pixels: (the full size, the
    list the sizes of later frames are recorded in)."""
    _at_rest(renderer, client, timeout=10)
    full = (view.render_tab_state.viewer_width, view.render_tab_state.viewer_height)
    set_target_fps(renderer, 10.0)
    view.render_tab_state.num_view_rays_per_sec = 64 * 48 * 10.0 / 10
    return full, _frame_sizes(view)


def _request_as_the_wait_times_out(renderer, view) -> None:
    """Make the thread's next idle wait time out at the instant a settings change is submitted."""
    original = renderer._render_event.wait

    def wait(timeout=None):
        original(timeout)
        renderer._render_event.wait = original
        view.version = 7
        renderer.submit(RenderTask("rerender", view.get_camera_state(None)))
        return False  # the wait "timed out" just before the request arrived

    renderer._render_event.wait = wait


@pytest.mark.parametrize("cls, lost", [(ClientRenderer, False), (Renderer, True)])
def test_a_change_made_as_the_thread_goes_idle_is_rendered(cls, lost):
    renderer, view, client = _start(cls)
    try:
        _at_rest(renderer, client)
        _request_as_the_wait_times_out(renderer, view)
        shown = _wait_for(lambda: any(value == 7 for _, _, value in client.scene.frames), timeout=3.0)
        assert shown is not lost  # nerfview's Renderer drops it (the reason for ClientRenderer)
    finally:
        renderer.running = False


def test_a_change_at_rest_is_not_abandoned_and_comes_at_once():
    """At rest, a settings change renders once, without an abandoned first attempt or a 0.2 s wait."""
    renderer, view, client = _start(ClientRenderer)
    try:
        _at_rest(renderer, client)
        started, sent = view.started, len(client.scene.frames)
        view.version = 3
        submitted = time.monotonic()
        renderer.submit(RenderTask("rerender", view.get_camera_state(None)))
        assert _wait_for(lambda: len(client.scene.frames) > sent)
        arrived, started_by_then, value = client.scene.frames[sent]
        assert value == 3 and started_by_then == started + 1
        assert arrived - submitted < 0.15  # not held back by the idle wait (generous for busy machines)
        assert _wait_for(lambda: sent + 1 in client.flushed_after)  # sent now, not in viser's next window
    finally:
        renderer.running = False


def test_a_move_abandons_the_full_resolution_frame_being_rendered():
    renderer, view, client = _start(ClientRenderer, render_seconds=0.3)
    try:
        _at_rest(renderer, client, timeout=10)
        renderer.submit(RenderTask("rerender", view.get_camera_state(None)))  # low-res, then a slow full-res frame
        assert _wait_for(lambda: renderer._rendering and renderer._state == "high")
        sent = len(client.scene.frames)
        view.version = 5
        renderer.submit(RenderTask("move", view.get_camera_state(None)))
        assert _wait_for(lambda: any(value == 5 for _, _, value in client.scene.frames[sent:]), timeout=5)
        assert all(value == 5 for _, _, value in client.scene.frames[sent:])  # the old frame never arrived
    finally:
        renderer.running = False


def test_an_abandoned_frame_stops_only_where_a_package_function_is_entered():
    """Never on a traced line: the line event of a ``with lock:`` statement's exit runs outside the
    block's protection, and a raise there leaves the lock held for good (seen under load)."""
    import sys

    renderer, _, _ = _start(ClientRenderer)
    renderer.running = False
    lock = threading.Lock()

    def hold_and_release():
        with lock:
            x = 1
        return x

    renderer._may_interrupt_render = True
    sys.settrace(renderer._may_interrupt_trace)
    try:
        for _ in range(100):
            hold_and_release()  # a test-module function: never interrupted
        interrupted = False
        try:
            split_phrases("mug")  # a package function: interrupted at its entry
        except InterruptRenderException:
            interrupted = True
    finally:
        sys.settrace(None)
    assert interrupted and not lock.locked() and renderer._may_interrupt_render is False


def test_a_failing_frame_or_a_gone_browser_does_not_end_the_thread():
    renderer, view, client = _start(ClientRenderer)
    try:
        _at_rest(renderer, client)
        good_render = view.render_fn
        view.render_fn = lambda *a: 1 / 0
        renderer.submit(RenderTask("rerender", view.get_camera_state(None)))
        time.sleep(0.3)
        client.scene.set_background_image = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("gone"))
        view.render_fn = good_render
        renderer.submit(RenderTask("rerender", view.get_camera_state(None)))
        time.sleep(0.3)
        assert renderer.is_alive()
    finally:
        renderer.running = False


def test_a_tab_that_stops_reading_holds_only_its_own_thread():
    """A browser whose connection stopped reading blocks its own frame send, never the others' frames:
    frames are sent outside every lock, and each browser has its own render thread."""
    shared_raster_lock = threading.Lock()

    class SharedLockView(FakeView):
        def render_fn(self, camera_state, tab):
            with shared_raster_lock:  # what FrameSource.raster_lock serialises
                return super().render_fn(camera_state, tab)

    stuck = threading.Event()
    stalled_view, healthy_view = SharedLockView(), SharedLockView()
    stalled_client, healthy_client = FakeClient(stalled_view), FakeClient(healthy_view)
    stalled_client.scene.set_background_image = lambda *a, **k: stuck.wait(30)  # the send never returns
    stalled = ClientRenderer(viewer=stalled_view, client=stalled_client, lock=threading.Lock())
    healthy = ClientRenderer(viewer=healthy_view, client=healthy_client, lock=threading.Lock())
    stalled.start()
    healthy.start()
    try:
        assert _wait_for(lambda: stalled_view.started >= 1)  # its first frame is stuck in the send
        for version in (1, 2, 3):
            healthy_view.version = version
            healthy.submit(RenderTask("rerender", healthy_view.get_camera_state(None)))
            assert _wait_for(
                lambda version=version: any(v == version for _, _, v in healthy_client.scene.frames), timeout=5
            )
        assert stalled_view.started == 1 and not stalled.frames_sent
    finally:
        stuck.set()
        stalled.running = healthy.running = False


def _frame_sizes(view):
    """Record the size of every frame rendered."""
    sizes: list[tuple[int, int]] = []
    render = view.render_fn

    def recording(camera_state, tab):
        sizes.append((tab.viewer_width, tab.viewer_height))
        return render(camera_state, tab)

    view.render_fn = recording
    return sizes


def test_the_view_rests_idle_wait_after_the_last_request_not_after_the_last_frame():
    """A camera that stops while its frame is rendered: the resting frame starts as that frame ends (the
    last request is older than ``IDLE_WAIT_S`` by then), not another ``IDLE_WAIT_S`` later (nerfview's
    wait, which ``Event.wait`` never cuts short)."""
    renderer, view, client = _start(ClientRenderer)
    try:
        _at_rest(renderer, client)
        spans: list[tuple[float, float]] = []
        render = view.render_fn

        def timed(camera_state, tab):
            start = time.monotonic()
            image = render(camera_state, tab)
            spans.append((start, time.monotonic()))
            return image

        view.render_fn = timed
        view.render_seconds = 2 * IDLE_WAIT_S
        renderer.submit(RenderTask("move", view.get_camera_state(None)))
        assert _wait_for(lambda: len(spans) >= 2 and renderer._state == "high")
        (_, moving_end), (resting_start, _) = spans[:2]
        assert resting_start - moving_end < IDLE_WAIT_S
    finally:
        renderer.running = False


@pytest.mark.parametrize("render_seconds, low_res_first", [(0.0, False), (0.3, True)])
def test_a_change_at_rest_renders_full_resolution_at_once_when_that_is_quick(render_seconds, low_res_first):
    """Quick full-resolution frames: a settings change renders one frame, at full size (a low-resolution
    one first and the idle wait would only delay it); slow ones: the quick low-resolution frame first."""
    renderer, view, client = _start(ClientRenderer, render_seconds)
    try:
        full, sizes = _at_rest_then_record(renderer, view, client)
        renderer.submit(RenderTask("rerender", view.get_camera_state(None)))
        assert _wait_for(lambda: len(sizes) >= 1 + low_res_first)
        time.sleep(2 * render_seconds + 0.5)
        assert (sizes[0] != full) is low_res_first
        assert sizes[-1] == full and len(sizes) == 1 + low_res_first
    finally:
        renderer.running = False


def test_quick_is_judged_by_the_last_settings_change_at_rest():
    """As in pixel mode: a frame after a move decodes the view (slow), a frame for a settings change at
    rest re-scores it (quick). Once a settings change was quick, the next goes straight to full
    resolution, also after a move whose frame was slow."""
    renderer, view, client = _start(ClientRenderer, render_seconds=0.3)
    try:
        full, sizes = _at_rest_then_record(renderer, view, client)
        view.render_seconds = 0.0
        renderer.submit(RenderTask("rerender", view.get_camera_state(None)))
        assert _wait_for(lambda: len(sizes) >= 2)
        time.sleep(0.5)
        assert sizes[0] != full and sizes[-1] == full and len(sizes) == 2  # judged by the slow frame
        for action, seconds in (("rerender", 0.0), ("move", 0.3), ("rerender", 0.0)):
            view.render_seconds = seconds
            sizes.clear()
            renderer.submit(RenderTask(action, view.get_camera_state(None)))
            assert _wait_for(lambda: renderer._state == "high" and sizes, timeout=5)
            time.sleep(1.0)
            if action == "rerender":
                assert sizes == [full]
    finally:
        renderer.running = False


@pytest.mark.parametrize("final", [True, False])
def test_a_moving_frame_that_is_the_resting_one_is_not_rendered_again(final):
    """Moving frames at full size with no stand-in are sent at the resting quality, and the camera coming
    to rest renders nothing more; with a stand-in (pixel mode's preview) the resting frame follows."""
    view = FakeView()
    client = FakeClient(view)
    qualities: list[int] = []
    send = client.scene.set_background_image
    client.scene.set_background_image = lambda image, format, jpeg_quality: (
        qualities.append(jpeg_quality),
        send(image, format, jpeg_quality),
    )
    renderer = ClientRenderer(viewer=view, client=client, lock=threading.Lock(), moving_frame_is_final=lambda: final)
    renderer.start()
    try:
        _at_rest(renderer, client)
        view.render_tab_state.num_view_rays_per_sec = 1e9  # moving frames come at full size
        sizes = _frame_sizes(view)
        for _ in range(3):
            renderer.submit(RenderTask("move", view.get_camera_state(None)))
            time.sleep(0.05)
        assert _wait_for(lambda: renderer._state == "high", timeout=5)
        time.sleep(0.5)
        full = (view.render_tab_state.viewer_width, view.render_tab_state.viewer_height)
        assert sizes and all(size == full for size in sizes)
        moves = len(sizes) - (not final)
        assert qualities[-1] == 70 and (qualities[-2] == 70) is final
        assert len(sizes) == moves + (not final) and moves >= 1
    finally:
        renderer.running = False
