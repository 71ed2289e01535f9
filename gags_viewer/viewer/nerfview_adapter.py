"""Every use of nerfview's (and viser's) private names, in one place. Written against nerfview 0.1.3.

The viewer subclasses ``nerfview.Viewer`` and drives nerfview's per-browser ``Renderer`` threads itself,
which needs names nerfview does not promise to keep (underscored modules, methods and attributes).
Only this module touches them; ``tests/test_nerfview_adapter.py`` checks each of them against the
installed nerfview and fails loudly, naming the missing one, when an upgrade renames something.
"""

from __future__ import annotations

import threading
import time

import nerfview.render_panel as _render_panel
from nerfview._renderer import InterruptRenderException, Renderer, RenderTask, set_trace_context
from nerfview.render_panel import CameraPath, RenderTabState

__all__ = [
    "CameraPath",
    "InterruptRenderException",
    "RenderTabState",
    "Renderer",
    "RenderTask",
    "set_trace_context",
    "VIEWER_HOOKS",
    "VIEWER_ATTRIBUTES",
    "RENDERER_ATTRIBUTES",
    "RENDERER_METHODS",
    "RENDERER_VIEWER_CALLS",
    "CAMERA_PATH_ATTRIBUTES",
    "camera_ready",
    "set_target_fps",
    "last_move_time",
    "mark_camera_moved",
    "renderers",
    "render_tab_handles",
    "populate_render_tab",
    "populate_panel",
    "path_keyframes",
    "path_has_splines",
]

PINNED_VERSION = "0.1.3"

VIEWER_HOOKS = ("_init_rendering_tab", "_populate_rendering_tab", "_connect_client", "_disconnect_client")
"""Private methods of ``nerfview.Viewer`` that :class:`~gags_viewer.viewer.app.GagsViewer` overrides."""

VIEWER_ATTRIBUTES = ("_renderers", "_last_move_time", "_rendering_tab_handles", "_rendering_folder")
"""Private attributes of a ``nerfview.Viewer`` used here."""

RENDERER_ATTRIBUTES = ("_target_fps", "_state", "_task", "_render_event", "_may_interrupt_render", "transitions")
"""Private attributes of a nerfview ``Renderer`` used here and by its subclass
:class:`~gags_viewer.viewer.renderer.ClientRenderer` (the one module besides this one that touches nerfview's
internals: it re-implements the Renderer's loop, so it reads the state the loop keeps)."""

RENDERER_METHODS = ("_define_transitions", "_get_img_wh", "_may_interrupt_trace", "run", "submit")
"""Methods of nerfview's ``Renderer`` that ClientRenderer calls or overrides."""

RENDERER_VIEWER_CALLS = ("_after_render",)
"""Private methods a ``Renderer`` calls on its viewer: the per-browser stand-in
(:class:`~gags_viewer.viewer.app._ClientView`) provides them, and ClientRenderer calls them as nerfview does."""

CAMERA_PATH_ATTRIBUTES = ("_keyframes", "_position_spline", "_orientation_spline")
"""Private attributes of nerfview's ``render_panel.CameraPath`` used here."""


def camera_ready(client) -> bool:
    """Whether the browser has reported its camera at least once (viser's private camera state)."""
    return client.camera._state.update_timestamp != 0.0


def set_target_fps(renderer: Renderer, fps: float) -> None:
    """The frame rate a browser's renderer aims for while the camera moves."""
    renderer._target_fps = float(fps)


def last_move_time(viewer) -> float:
    """When any browser's camera last moved (``time.time()``), 0 before the first move."""
    return float(getattr(viewer, "_last_move_time", 0.0))


def mark_camera_moved(viewer) -> None:
    viewer._last_move_time = time.time()


def renderers(viewer) -> dict:
    """The viewer's ``{client_id: Renderer}`` table."""
    return viewer._renderers


def render_tab_handles(viewer) -> dict:
    """The GUI handles of the camera-path ("rendering") panel, by nerfview's names."""
    return viewer._rendering_tab_handles


def init_render_tab(viewer, folder) -> None:
    """Give ``viewer`` the (empty) handle table and folder nerfview's render-tab code expects."""
    viewer._rendering_tab_handles = {}
    viewer._rendering_folder = folder


_capture_lock = threading.Lock()


def populate_panel(**kwargs) -> tuple[dict, CameraPath | None]:
    """Build nerfview's camera-path panel, keeping a handle on its path.

    ``kwargs`` go to ``nerfview.render_panel.populate_general_render_tab`` (``server`` -- a server, or
    anything with its ``gui``/``scene``/``atomic``/``get_clients`` --, ``folder``, ``output_dir``,
    ``render_tab_state``, ``extra_handles``, ``scale_ratio``). Returns (handles, the panel's CameraPath).
    Thread-safe (browsers connect on their own threads; the capture patches a module global).
    """
    captured: list[CameraPath] = []
    with _capture_lock:
        original = _render_panel.CameraPath

        def capturing(*args, **kw) -> CameraPath:
            # A function, not a subclass made per call: such a class outlived its browser (with the
            # browser's panel, session and render thread) until the next browser built its panel.
            path = original(*args, **kw)
            captured.append(path)
            return path

        _render_panel.CameraPath = capturing
        try:
            handles = _render_panel.populate_general_render_tab(**kwargs)
        finally:
            _render_panel.CameraPath = original
    return handles, (captured[-1] if captured else None)


def populate_render_tab(viewer, **kwargs) -> tuple[dict, CameraPath | None]:
    """:func:`populate_panel` in ``viewer``'s render folder, its handles kept in the viewer's table."""
    handles, path = populate_panel(folder=viewer._rendering_folder, **kwargs)
    viewer._rendering_tab_handles.update(handles)
    return handles, path


def path_keyframes(path: CameraPath) -> list:
    """The keyframes of a camera-path panel, in order (nerfview ``Keyframe`` objects)."""
    return [keyframe for keyframe, _ in path._keyframes.values()]


def path_has_splines(path: CameraPath) -> bool:
    return path._position_spline is not None and path._orientation_spline is not None
