"""Per-browser state: settings, last good frame, error reporting, and the render callback nerfview calls.

nerfview ends the whole process (``os._exit(1)``) when a render callback raises anything but a
``TypeError``, and silently switches to its old calling convention on a ``TypeError``. So
:meth:`ClientSession.render` never raises: a failure becomes a notification on that browser (once per
distinct message, until a frame renders again), the canvas shows the last good frame darkened with the
error written over it, and ``on_status`` reports the error (the panel keeps it in a status line until
the next good frame clears it). The only
exception let through is nerfview's own ``InterruptRenderException``, which nerfview raises inside the
callback to abandon a frame when the camera moves, and catches itself.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from gags_viewer.errors import GagsError
from gags_viewer.render.camera import Camera
from gags_viewer.viewer.export import Legend, draw_error
from gags_viewer.viewer.nerfview_adapter import InterruptRenderException  # must pass through render()
from gags_viewer.viewer.settings import ViewSettings

if TYPE_CHECKING:
    from gags_viewer.viewer.frame import Frame

log = logging.getLogger(__name__)

ComposeFn = Callable[[Camera, ViewSettings, "ClientSession"], "Frame"]


PANEL_WAIT_S = 0.3
"""A panel change waits for the browser's next frame at most this long (see :meth:`ClientSession.after_frame`)."""

_PANEL_UPDATES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gags-panel")
"""Runs deferred panel changes, in order, off the render and websocket threads."""

PLACEHOLDER_SIDE = 64
"""Longest side of the black image sent when a browser has no good frame yet (the browser stretches
it): never the requested size, which may be what ran out of memory."""


def placeholder_image(width: int, height: int) -> np.ndarray:
    """A small black image with the aspect ratio of width x height. [h, w, 3] uint8, h, w <= 64"""
    scale = min(1.0, PLACEHOLDER_SIDE / max(width, height, 1))
    return np.zeros((max(1, round(height * scale)), max(1, round(width * scale)), 3), dtype=np.uint8)


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or torch's CPU/CUDA allocation failures."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "not enough memory" in text


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is nerfview's abandon-this-frame signal, possibly wrapped: the signal is raised by a
    trace function at any Python line, including inside numba's Python callbacks, which turn it into a
    ``SystemError`` whose cause it is."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, InterruptRenderException):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def failure_message(exc: BaseException, width: int, height: int) -> str:
    """What to tell the browser whose frame failed: the user's error as it is, an out-of-memory with the
    size that caused it, anything else with its type."""
    if isinstance(exc, GagsError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"out of memory rendering {width}x{height}: lower the resolution (Settings) and try again"
    return f"{type(exc).__name__}: {exc}"


class ClientSession:
    """One connected browser: its settings, its last frame, and its render callback.

    Attributes:
        client: the viser ClientHandle (None in unit tests).
        settings: this browser's settings; replace it through :meth:`update` (thread-safe).
        last_frame: the last frame rendered without error. [H, W, 3] uint8 or None
        legend: legend of the last frame.
        frame_times: recent (width, height, seconds) of rendered frames.
    """

    def __init__(
        self,
        client,
        settings: ViewSettings,
        compose: ComposeFn,
        on_frame: Callable[[ClientSession, Legend, bool], None] | None = None,
        on_status: Callable[[str | None], None] | None = None,
    ):
        self.client = client
        self._settings = settings
        self._compose = compose
        self._on_frame = on_frame
        self._on_status = on_status
        self._lock = threading.Lock()
        self.last_frame: np.ndarray | None = None
        self.legend: Legend = Legend()
        self.frame_times: deque[tuple[int, int, float]] = deque(maxlen=100)
        self.last_error: str | None = None
        self._notified_error: str | None = None
        self._unreachable = False
        self.errors = 0
        self._pending: frozenset[str] = frozenset()
        self._frame_sent = threading.Event()
        self.rerender: Callable[[], None] = lambda: None
        """Set by the app: ask nerfview to render this browser's view again."""
        self.view = None
        """The app's per-browser stand-in for nerfview's viewer (holds its RenderTabState)."""
        self.renderer = None
        """This browser's nerfview Renderer thread."""
        self.camera_path = None
        """This browser's camera-path panel (:class:`~gags_viewer.viewer.camera_path_panel.CameraPathPanel`)."""
        self.browser_side = None
        """This browser's browser-side rendering (:class:`~gags_viewer.viewer.browser_side.BrowserSplats`)."""

    @property
    def client_id(self) -> int:
        return -1 if self.client is None else int(self.client.client_id)

    @property
    def settings(self) -> ViewSettings:
        with self._lock:
            return self._settings

    @property
    def pending_phrases(self) -> frozenset[str]:
        """Phrases this browser's latest frame lacked (being encoded in the background)."""
        with self._lock:
            return self._pending

    def set_pending(self, phrases) -> None:
        """Called by the render thread with what its latest frame lacked."""
        with self._lock:
            self._pending = frozenset(phrases)

    def release_pending(self, phrases) -> bool:
        """Called by the encoder thread when ``phrases`` are ready: whether this browser waited for any
        of them (then it should render again). Atomic with :meth:`set_pending`."""
        with self._lock:
            waiting = self._pending & frozenset(phrases)
            self._pending -= waiting
            return bool(waiting)

    def after_frame(self, change: Callable[[], None]) -> None:
        """Make a panel change once this browser's next frame has been sent (or after ``PANEL_WAIT_S``
        without one), on the panel-update thread. The browser handles messages in order, so a panel
        redrawn first (the colour pickers of new queries, the legend) delays the frame: on 2 CPU cores
        by about 40 ms of a 200 ms query."""
        self._frame_sent.clear()
        _PANEL_UPDATES.submit(self._change_after_frame, change)

    def _change_after_frame(self, change: Callable[[], None]) -> None:
        self._frame_sent.wait(PANEL_WAIT_S)
        try:
            change()
        except Exception:  # noqa: BLE001 - a panel change must not stop the others
            log.debug("panel change failed", exc_info=True)

    def frame_sent(self) -> None:
        """Called once a frame went to the browser: the waiting panel changes go now."""
        self._frame_sent.set()

    def update(self, rerender: bool = True, **changes) -> ViewSettings:
        """Apply setting changes (validated; a bad value raises GagsError and changes nothing)."""
        with self._lock:
            new = self._settings.copy(**changes)
            self._settings = new
        if rerender:
            self.rerender()
        return new

    # -- the nerfview callback ------------------------------------------------------------------------

    def render(self, camera_state, render_tab_state) -> np.ndarray:
        """nerfview's ``render_fn(camera_state, render_tab_state)``: an [H, W, 3] uint8 image. Never raises."""
        width = max(1, int(getattr(render_tab_state, "viewer_width", 640)))
        height = max(1, int(getattr(render_tab_state, "viewer_height", 480)))
        try:
            start = time.perf_counter()
            camera = Camera.from_nerfview(camera_state, width, height)
            frame = self._compose(camera, self.settings, self)
            image = np.ascontiguousarray(frame.image, dtype=np.uint8)
            self.frame_times.append((width, height, time.perf_counter() - start))
            self.last_frame = image
            self._set_legend(frame.legend)
            self._clear_error()
            return image
        except InterruptRenderException:
            raise
        except Exception as exc:  # noqa: BLE001 - nerfview would kill the process
            if interrupted(exc):  # the abandon signal, wrapped by code it landed in (numba's callbacks)
                raise InterruptRenderException from None
            return self._failed(exc, width, height)

    def _failed(self, exc: BaseException, width: int, height: int) -> np.ndarray:
        try:
            self.errors += 1
            message = failure_message(exc, width, height)
            self.last_error = message
            if not isinstance(exc, GagsError):
                log.warning("render failed for client %s:\n%s", self.client_id, traceback.format_exc())
            if message != self._notified_error:
                self._notified_error = message
                self._unreachable = (
                    self.client is not None and self.notify("Render failed", message, color="red") is None
                )
                self._status(message)
            if is_out_of_memory(exc) or self._unreachable:
                # no full-size image now (out of memory), or nobody to show it to (browser gone): the last
                # frame, or a small black one
                return self.last_frame if self.last_frame is not None else placeholder_image(width, height)
            return draw_error(message, width, height, self.last_frame)
        except InterruptRenderException:
            raise
        except Exception:  # noqa: BLE001 - even reporting must not kill the server
            return placeholder_image(width, height)

    def _clear_error(self) -> None:
        if self._notified_error is not None:
            self._status(None)
        self.last_error = None
        self._notified_error = None
        self._unreachable = False

    def _status(self, error: str | None) -> None:
        if self._on_status is not None:
            try:
                self._on_status(error)
            except InterruptRenderException:
                raise
            except Exception:  # noqa: BLE001 - a GUI update must not fail the frame
                log.debug("status update failed", exc_info=True)

    def _set_legend(self, legend: Legend) -> None:
        changed = legend != self.legend
        self.legend = legend
        if self._on_frame is not None:
            try:
                self._on_frame(self, legend, changed)
            except InterruptRenderException:
                raise
            except Exception:  # noqa: BLE001 - a GUI update must not fail the frame
                log.debug("panel update failed", exc_info=True)

    # -- messages to the browser ----------------------------------------------------------------------

    def notify(
        self,
        title: str,
        body: str,
        *,
        color: str | None = None,
        loading: bool = False,
        auto_close_seconds: float | None = 8.0,
    ):
        """Show a notification on this browser; returns the handle (or None without a client)."""
        if self.client is None:
            return None
        try:
            return self.client.add_notification(
                title,
                body,
                loading=loading,
                with_close_button=True,
                auto_close_seconds=None if loading else auto_close_seconds,
                color=color,
            )
        except Exception:  # noqa: BLE001 - a closed connection must not break rendering
            log.debug("notification failed", exc_info=True)
            return None

    def mean_frame_ms(self, width: int | None = None, height: int | None = None) -> float | None:
        """Mean render time in ms of the recent frames (of that size if given)."""
        times = [
            t for w, h, t in list(self.frame_times) if (width is None or w == width) and (height is None or h == height)
        ]
        return 1000.0 * sum(times) / len(times) if times else None
