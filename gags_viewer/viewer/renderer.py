"""One browser's render thread: nerfview's ``Renderer`` state machine without its lost requests.

nerfview's ``Renderer`` (one thread per browser) renders at low resolution while the camera moves and
at full resolution once it rests, and abandons a full-resolution frame when the camera moves again.
Driven by several threads (the camera's, the GUI's, the text encoder's), it loses requests:

- when its 0.2 s wait for work times out it submits its own "static" request, overwriting a request
  that arrived in that instant; at full resolution that request is then skipped: a query change never
  shows until the next camera move;
- a request that arrives while no frame is being rendered still raises the "abandon the frame" flag,
  so the next frame is abandoned at its first line and only comes after another 0.2 s wait;
- an exception in the callback ends the whole process (``os._exit``), and a browser that left while
  its frame was sent kills the thread.

:class:`ClientRenderer` keeps nerfview's states and resolutions but takes every request under one lock,
lets its idle "static" request never replace a real one, raises the abandon flag only while a frame is
being rendered, and logs instead of exiting. It decides that the camera rests 0.1 s after the last
request, not 0.2 s after the last frame (``IDLE_WAIT_S``), and three transitions differ, each to show
the resting view sooner (the demo on a CPU: nerfview's rules added 0.2-0.4 s to every query and orbit):

- a camera coming to rest goes straight to the full-resolution frame (nerfview first renders one more
  low-resolution frame and only after another 0.2 s wait the full one);
- a settings change at rest renders the full-resolution frame at once when that frame is quick
  (``QUICK_FULL_FRAME_S``): the low-resolution frame first, then the wait, would only make it later.
  "Quick" is judged by the last settings change at rest when there was one, not by the last frame after
  a move: pixel mode decodes a new view in about a second on a CPU, but re-scores a decoded one for new
  queries in tens of ms (its low-resolution stand-in would only flash gaussian mode's colours);
- a moving frame that already is the resting frame (full size, and the display shows no stand-in while
  the camera moves: see ``moving_frame_is_final``) is sent at the resting quality and is not rendered
  again when the camera stops.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from gags_viewer.viewer.nerfview_adapter import InterruptRenderException, Renderer, RenderTask, set_trace_context

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.1
"""How long after the last request the thread decides that the view rests and refines it. A moving
camera reports at up to 50 Hz (viser throttles camera messages to one per 20 ms), so 0.1 s without one
means it rests; nerfview waits 0.2 s, and counts it from the end of the last frame, which a person sees
as a slower settle (by up to a frame's time)."""

QUICK_FULL_FRAME_S = 0.25
"""A settings change at rest renders the full-resolution frame at once when the last one took no longer
than this (else a quick low-resolution frame first)."""

INTERRUPTIBLE_ACTIONS = ("move", "rerender")

RESTING_JPEG_QUALITY = 70
MOVING_JPEG_QUALITY = 40
"""nerfview's JPEG qualities for frames at rest and while the camera moves."""


def resting_size(viewer_res: int, aspect: float) -> tuple[int, int]:
    """(width, height) of a full-resolution frame: the longest side ``viewer_res`` (nerfview's rule)."""
    height = viewer_res
    width = int(height * aspect)
    if width > viewer_res:
        width = viewer_res
        height = int(width / aspect)
    return width, height


PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
"""Functions under this directory are where an abandoned frame may stop (see ``_may_interrupt_trace``)."""


class ClientRenderer(Renderer):
    """A nerfview ``Renderer`` that never drops a request (see the module doc).

    Args:
        viewer: what nerfview's Renderer reads (``render_fn``, ``render_tab_state``, ``state``,
            ``get_camera_state``, ``_after_render``).
        client: the viser client to stream to.
        lock: held while rendering.
        moving_frame_is_final: whether a frame rendered while the camera moves shows what the resting
            frame would (no stand-in, such as pixel mode's gaussian-mode preview); nerfview assumes not.
        on_sent: called after each frame sent to the browser.
    """

    def __init__(self, viewer, client, lock: threading.Lock, moving_frame_is_final=lambda: False, on_sent=lambda: None):
        super().__init__(viewer=viewer, client=client, lock=lock)
        self._task_lock = threading.Lock()
        self._rendering = False
        self._moving_frame_is_final = moving_frame_is_final
        self._on_sent = on_sent
        self._full_frame_seconds: float | None = None
        """How long the last full-resolution frame took."""
        self._rest_change_seconds: float | None = None
        """How long the last full-resolution frame for a settings change at rest took."""
        self._since_rest_change = False
        """Whether the frames being rendered follow a settings change made with the camera at rest (and
        no move since)."""
        self._shown_final = False
        """Whether the last frame sent is the resting frame for the camera it was rendered for."""
        self.frames_sent = 0
        self.sent_times: deque[tuple[float, bool]] = deque(maxlen=64)
        """(``time.time()`` when sent, whether it was the resting frame) of the latest frames."""
        self.paused = False
        """While True (the browser splats the field itself) nothing is rendered or sent."""
        self._last_request = time.monotonic()
        """When the latest request (a camera move or a settings change) was submitted."""

    @property
    def moving(self) -> bool:
        """Whether the renderer is in one of nerfview's low-resolution (camera moving) states."""
        return self._state != "high"

    def _define_transitions(self) -> None:
        super()._define_transitions()
        self.transitions["low_move"]["static"] = "high"

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) rendering; once this returns while pausing, no frame is sent any more (a
        frame being rendered is abandoned or dropped)."""
        with self._task_lock:
            self.paused = paused
            if paused:
                self._task = None
                self._may_interrupt_render = self._rendering

    def submit(self, task: RenderTask) -> None:
        """Ask for a frame (the newest request wins); abandon a full-resolution frame being rendered if
        the camera moved or the settings changed. Ignored while paused."""
        with self._task_lock:
            if self.paused:
                return
            self._task = task
            self._last_request = time.monotonic()
            if self._rendering and self._state == "high" and task.action in INTERRUPTIBLE_ACTIONS:
                self._may_interrupt_render = True
            self._render_event.set()

    def _next_task(self, woke: bool):
        """The task to render now and move the state machine, or None when there is nothing to do."""
        with self._task_lock:
            if self.paused:
                self._render_event.clear()
                return None
            if not woke and not self._render_event.is_set():
                if self._state == "high":
                    return None  # at rest at full resolution: nothing to refine
                if self._shown_final:  # the last moving frame already is the resting one
                    self._state = "high"
                    return None
                self._task = RenderTask("static", None)
            self._render_event.clear()
            task = self._task
            if task is None:
                return None
            if self._state == "high" and task.action == "static":
                return None
            at_rest = self._state in ("high", "low_static")
            self._state = self.transitions[self._state][task.action]
            if task.action == "rerender" and self._state == "low_static" and self._full_frame_is_quick():
                self._state = "high"
            if task.action != "static":
                self._since_rest_change = task.action == "rerender" and at_rest
            self._may_interrupt_render = False
            self._rendering = True
            self._shown_final = False  # what is shown is not this request's frame
            return task

    def _rest_wait(self) -> float:
        """Seconds left until the view counts as resting: ``IDLE_WAIT_S`` after the latest request, so a
        frame still being rendered when the camera stopped does not add its time to the wait. At rest
        at full resolution, or paused, a plain ``IDLE_WAIT_S`` (nothing is refined then)."""
        with self._task_lock:
            if self.paused or self._state == "high":
                return IDLE_WAIT_S
            return max(0.0, IDLE_WAIT_S - (time.monotonic() - self._last_request))

    def _full_frame_is_quick(self) -> bool:
        """Whether the last full-resolution frame for a settings change at rest (else the last one) took
        no longer than ``QUICK_FULL_FRAME_S``."""
        seconds = self._rest_change_seconds if self._rest_change_seconds is not None else self._full_frame_seconds
        return seconds is not None and seconds <= QUICK_FULL_FRAME_S

    def _may_interrupt_trace(self, frame, event, arg):
        """Abandon the frame (raise) only when one of this package's functions is entered.

        nerfview raises on any traced *line*, but the line event of a ``with lock:`` statement's normal
        exit runs outside the block's protection: raised there, the lock is never released. Seen under
        8-browser load as every browser waiting for the text encoder's cache lock for good. A raise at
        a *call* lands inside the caller's block (released as usual); returning None turns off line
        tracing, which also makes traced frames cheaper.
        """
        if event == "call" and self._may_interrupt_render and frame.f_code.co_filename.startswith(PACKAGE_DIR):
            self._may_interrupt_render = False
            raise InterruptRenderException
        return None

    def run(self) -> None:
        while self.running:
            if not self.is_prepared_fn():
                time.sleep(0.1)
                continue
            task = self._next_task(self._render_event.wait(self._rest_wait()))
            if task is None:
                continue
            try:
                camera_state = task.camera_state or self.viewer.get_camera_state(self.client)
                image, final = self._render(camera_state)
            except InterruptRenderException:
                continue
            except Exception:  # noqa: BLE001 - one browser's failure must not end the server
                log.exception("render thread of client %s: frame failed", getattr(self.client, "client_id", "?"))
                continue
            finally:
                with self._task_lock:
                    self._rendering = False
            self._send(image, final)

    def _render(self, camera_state) -> tuple:
        """One frame at the size the state asks for. -> ([H, W, 3] uint8, whether it is the resting frame)"""
        with self.lock, set_trace_context(self._may_interrupt_trace):
            start = time.time()
            width, height = self._get_img_wh(camera_state.aspect)
            tab = self.viewer.render_tab_state
            full_size = (width, height) == resting_size(tab.viewer_res, camera_state.aspect)
            final = self._state == "high" or (full_size and self._moving_frame_is_final())
            tab.viewer_width, tab.viewer_height = width, height
            image = self.viewer.render_fn(camera_state, tab)
            self.viewer._after_render()
            seconds = time.time() - start
            tab.num_view_rays_per_sec = (width * height) / max(seconds, 1e-10)
            if full_size and final:
                self._full_frame_seconds = seconds
                if self._since_rest_change:
                    self._rest_change_seconds = seconds
        return (image[0] if isinstance(image, tuple) else image), final

    def _send(self, image, final: bool) -> None:
        quality = RESTING_JPEG_QUALITY if final else MOVING_JPEG_QUALITY
        try:
            with self._task_lock:  # no frame after set_paused(True) returned
                if self.paused:
                    return
                self._shown_final = final
                self.client.scene.set_background_image(image, format="jpeg", jpeg_quality=quality)
                self.client.flush()  # now, not at the end of viser's message window (up to 1/60 s)
                self.frames_sent += 1
                self.sent_times.append((time.time(), final))
            self._on_sent()
        except Exception:  # noqa: BLE001 - the browser left while its frame was on the way
            log.debug("could not send a frame to client %s", getattr(self.client, "client_id", "?"), exc_info=True)
