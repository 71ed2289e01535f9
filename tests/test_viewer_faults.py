"""Faults while serving: a browser gone mid-render, an out-of-memory frame, a failing frame among
working ones; the server keeps serving and the affected browser is told what happened."""

from __future__ import annotations

import numpy as np

from gags_viewer.viewer.session import ClientSession, placeholder_image
from gags_viewer.viewer.settings import ViewSettings
from tests.test_viewer_session import FakeClient, _good, _state, _tab


class GoneClient(FakeClient):
    """A browser that disconnected: every message to it fails."""

    def add_notification(self, title, body, **kwargs):
        raise ConnectionError("client disconnected")


def test_huge_request_that_runs_out_of_memory_is_reported_without_allocating_it():
    def compose(camera, settings, session):
        np.zeros((camera.height, camera.width, 3), dtype=np.uint8)[...] = 1  # 30 TB: raises MemoryError
        raise AssertionError("unreachable")

    client = FakeClient()
    session = ClientSession(client, ViewSettings(), compose)
    image = session.render(_state(), _tab(3_000_000, 3_000_000))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    ((title, body, kwargs),) = client.notifications
    assert title == "Render failed" and "out of memory rendering 3000000x3000000" in body and kwargs["color"] == "red"


def test_torch_out_of_memory_message_is_recognised():
    def compose(camera, settings, session):
        raise RuntimeError("CUDA out of memory. Tried to allocate 90.00 GiB")

    client = FakeClient()
    ClientSession(client, ViewSettings(), compose).render(_state(), _tab(8000, 6000))
    assert "out of memory rendering 8000x6000" in client.notifications[0][1]


def test_a_browser_gone_mid_render_does_not_break_its_callback():
    calls = {"n": 0}

    def compose(camera, settings, session):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("socket closed while the frame was composed")
        return _good(camera, settings, session)

    session = ClientSession(GoneClient(), ViewSettings(), compose)
    first = session.render(_state(), _tab())
    assert session.render(_state(), _tab()) is first  # the failure could not be reported: last frame kept
    assert session.errors == 1


def test_one_failing_browser_does_not_stop_another():
    def failing(camera, settings, session):
        raise RuntimeError("this browser's frame fails")

    broken = ClientSession(FakeClient(), ViewSettings(), failing)
    working = ClientSession(FakeClient(), ViewSettings(), _good)
    for _ in range(3):
        broken.render(_state(), _tab())
        assert (working.render(_state(), _tab(40, 30)) == 9).all()
    assert broken.errors == 3 and working.errors == 0


def test_placeholder_keeps_the_aspect_ratio_small():
    assert placeholder_image(1920, 1080).shape == (36, 64, 3)
    assert placeholder_image(20, 10).shape == (10, 20, 3)
    assert placeholder_image(1, 100000).shape == (64, 1, 3)


def test_an_abandon_signal_wrapped_by_numba_still_abandons_the_frame():
    """nerfview's trace function may raise its interrupt inside numba's Python callbacks, which wrap it in
    a SystemError: the frame is abandoned (no failure shown), not reported as a render failure."""
    import pytest

    from gags_viewer.viewer.nerfview_adapter import InterruptRenderException

    def compose(camera, settings, session):
        try:
            raise InterruptRenderException
        except InterruptRenderException as signal:
            raise SystemError("<function _numba_unpickle> returned a result with an exception set") from signal

    client = FakeClient()
    session = ClientSession(client, ViewSettings(), compose)
    with pytest.raises(InterruptRenderException):
        session.render(_state(), _tab())
    assert client.notifications == [] and session.errors == 0
