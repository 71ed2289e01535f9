"""The viewer server: viser + nerfview, one renderer per browser, shared field and query engine.

nerfview's :class:`~nerfview.Viewer` gives every browser a ``Renderer`` thread (low resolution while
the camera moves, full resolution once it rests, abandoned frames when it moves again), but all of
them call one ``render_fn(camera_state, render_tab_state)`` without saying which browser asks, write
the image size into one shared ``RenderTabState``, and queue behind one global lock. Here each browser
gets its own ``Renderer`` bound to a small stand-in viewer (:class:`_ClientView`) that carries that
browser's render callback, ``RenderTabState`` and lock; so each browser keeps its own camera, queries
and resolution, and one browser's slow frame (a pixel-mode query decodes every pixel) does not hold the
others' frames: they render concurrently and share the cores. Frames are only serialised
(:attr:`ViewerApp.raster_lock`) where the rasterizer cannot be entered from two threads at once
(numba's "workqueue" thread pool; see :meth:`FrameSource.warm_up`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import nerfview
import numpy as np
import viser

from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera
from gags_viewer.viewer import nerfview_adapter as nv
from gags_viewer.viewer.browser_side import BrowserSplats
from gags_viewer.viewer.camera_path import default_framing
from gags_viewer.viewer.camera_path_panel import ClientAsServer, add_camera_path_panel
from gags_viewer.viewer.click_query import ClickQueries
from gags_viewer.viewer.compare import Comparison
from gags_viewer.viewer.compare_panel import add_compare_panel
from gags_viewer.viewer.editing import FieldEditor
from gags_viewer.viewer.frame import Frame, FrameSource, preview_settings
from gags_viewer.viewer.memory import return_freed_memory
from gags_viewer.viewer.panels import ClientPanels
from gags_viewer.viewer.renderer import ClientRenderer
from gags_viewer.viewer.session import ClientSession
from gags_viewer.viewer.settings import ViewSettings

log = logging.getLogger(__name__)

CAMERA_WAIT_S = 30.0

TEXT_WAIT_S = 0.15
"""How long a frame waits for new phrases to be encoded before it shows the view without their
highlight (and the highlight follows once they are). The demo's text model takes a few ms, a CLIP
ViT-B text tower tens of ms on a CPU: the highlight then comes with the first frame, instead of a frame
without it that costs a render and a paint in between."""


class _ClientView:
    """The parts of ``nerfview.Viewer`` that a nerfview ``Renderer`` reads, for one browser."""

    def __init__(self, viewer: GagsViewer, session: ClientSession, viewer_res: int):
        self._viewer = viewer
        self._client = session.client
        self.render_fn = session.render
        self.render_tab_state = nv.RenderTabState(viewer_res=int(viewer_res))
        self.lock = threading.Lock()

    @property
    def state(self) -> str:
        # "preparing" holds the Renderer until the browser has reported its camera once (reading the
        # camera earlier fails inside nerfview's thread and would leave this browser without frames).
        if not nv.camera_ready(self._client):
            return "preparing"
        return self._viewer.state

    def get_camera_state(self, client: viser.ClientHandle):
        return self._viewer.get_camera_state(client)

    def _after_render(self) -> None:  # called by a Renderer after each frame (nv.RENDERER_VIEWER_CALLS)
        pass


def browser_res(viewer_res: int, camera) -> int:
    """The longest side to stream at rest: ``viewer_res``, but never more than the browser's canvas."""
    canvas = max(int(getattr(camera, "image_width", 0) or 0), int(getattr(camera, "image_height", 0) or 0))
    return int(viewer_res) if canvas <= 0 else max(16, min(int(viewer_res), canvas))


class ViewerApp(FrameSource):
    """State shared by all browsers: the field, the query engine, exports.

    Args:
        field: the field to show (tensors on the render device).
        engine: the query engine, or None for a field without language features.
        output_dir: where exports go.
        default_settings: settings a new browser starts with.
        field_dir: the directory the field was loaded from (saved edits keep finding its CLIP model).
        sam_checkpoint: a segment-anything checkpoint for click-to-query (None: feature clicks).
        queries_off: why a field with language features is shown without queries (its text model
            could not be loaded); every browser's Query panel says so.
        comparison: a second field shown beside this one under the same camera
            (:mod:`gags_viewer.viewer.compare`), or None.
    """

    def __init__(
        self,
        field: LanguageField,
        engine=None,
        *,
        output_dir: Path = Path("exports"),
        default_settings: ViewSettings | None = None,
        backend: str = "auto",
        field_dir: Path | None = None,
        sam_checkpoint: Path | None = None,
        queries_off: str | None = None,
        comparison: Comparison | None = None,
    ):
        super().__init__(field, engine, backend=backend)
        self.queries_off = queries_off
        self.comparison = comparison
        if comparison is not None:
            comparison.on_second_text(self.rerender_all)
        self.clicks = ClickQueries(sam_checkpoint)
        """Clicks turned into queries (names and embeddings; SAM loaded on the first click)."""
        self.editor = FieldEditor(self, field_dir)
        """Delete / keep only the selection, undo, redo, save (shared by every browser)."""
        from gags_viewer.language.vocabulary import vocabulary_for

        self.vocabulary = vocabulary_for(engine.text_encoder.spec) if engine is not None else None
        """The fixed vocabulary of the field's CLIP model (the demo's), or None for a general CLIP."""
        self.output_dir = Path(output_dir)
        self.default_settings = (default_settings or ViewSettings()).checked()
        self.sessions: dict[int, ClientSession] = {}
        self._sessions_lock = threading.Lock()
        self.viewer: GagsViewer | None = None

    # -- text encoding finished: re-render the browsers that were waiting for it -------------------

    def on_text_ready(self, phrases: tuple[str, ...], future: Future) -> None:
        # A failure is reported by the re-render itself (one notification per browser).
        for session in self.all_sessions():
            if session.release_pending(phrases):
                session.rerender()

    def all_sessions(self) -> list[ClientSession]:
        with self._sessions_lock:
            return list(self.sessions.values())

    def rerender_all(self) -> None:
        for session in self.all_sessions():
            session.rerender()

    # -- two fields: frames of both (see gags_viewer.viewer.compare) -----------------------------------

    def warm_up(self) -> float:
        seconds = super().warm_up()
        if self.comparison is not None:
            self.comparison.warm_up(self.raster_lock)
        return seconds

    def compose(self, camera: Camera, settings: ViewSettings, *, wait_for_text: bool = True) -> Frame:
        if self.comparison is None:
            return super().compose(camera, settings, wait_for_text=wait_for_text)
        return self.comparison.compose(self, camera, settings, wait_for_text=wait_for_text)

    def compose_for(self, camera: Camera, settings: ViewSettings, session: ClientSession) -> Frame:
        # While the camera moves (nerfview's low-resolution states) pixel mode shows gaussian mode's
        # frame; the pixel-mode frame comes with the full-resolution one when the camera rests.
        moving = session.renderer is not None and session.renderer.moving
        settings = preview_settings(settings, moving)
        self.await_text(settings, TEXT_WAIT_S)
        frame = self.compose(camera, settings, wait_for_text=False)
        # What this browser waits for is what its latest frame lacked (a frame that raced with the
        # encoder's callback must not leave a stale entry behind).
        session.set_pending(frame.pending)
        if frame.pending:
            self.request_text(frame.pending)
        return frame


class GagsViewer(nerfview.Viewer):
    """nerfview's Viewer with per-browser renderers, settings panels, camera paths and server-side exports."""

    def __init__(self, server: viser.ViserServer, app: ViewerApp):
        self.app = app
        app.viewer = self
        self.default_render_size = (1280, 960)
        """The "Render Res" a new browser's camera-path panel starts with (export size)."""
        super().__init__(server, render_fn=self._shared_render_fn, output_dir=app.output_dir, mode="rendering")
        server.gui.set_panel_label("gags-viewer")
        server.gui.configure_theme(dark_mode=True, brand_color=(255, 211, 105))

    @staticmethod
    def _shared_render_fn(camera_state, render_tab_state):  # pragma: no cover - never called
        return np.zeros((render_tab_state.viewer_height, render_tab_state.viewer_width, 3), dtype=np.uint8)

    # -- nerfview hooks --------------------------------------------------------------------------

    def _init_rendering_tab(self):  # nerfview hook (nv.VIEWER_HOOKS)
        self.render_tab_state = nv.RenderTabState(viewer_res=self.app.default_settings.viewer_res)
        nv.init_render_tab(self, None)

    def _populate_rendering_tab(self):  # nerfview hook
        pass  # each browser gets its own camera-path panel (see _connect_client)

    def rerender(self, _=None):
        self.app.rerender_all()

    def _connect_client(self, client: viser.ClientHandle):  # nerfview hook
        app = self.app
        panels_holder: dict = {}

        def on_frame(session: ClientSession, legend, legend_changed: bool) -> None:
            panels = panels_holder.get("panels")
            if panels is not None:
                if legend_changed:
                    session.after_frame(lambda: panels.show_legend(legend))  # this frame first
                panels.show_stats()

        def on_status(error) -> None:
            panels = panels_holder.get("panels")
            if panels is not None:
                panels.show_status(error)

        session = ClientSession(
            client, app.default_settings.copy(), app.compose_for, on_frame=on_frame, on_status=on_status
        )
        view = _ClientView(self, session, session.settings.viewer_res)

        def moving_frame_is_final() -> bool:
            settings = session.settings
            return preview_settings(settings, moving=True) is settings  # no stand-in while moving

        renderer = ClientRenderer(
            viewer=view,
            client=client,
            lock=view.lock,
            moving_frame_is_final=moving_frame_is_final,
            on_sent=session.frame_sent,
        )
        nv.set_target_fps(renderer, session.settings.moving_fps)
        session.view = view
        session.renderer = renderer

        def rerender() -> None:
            if nv.camera_ready(client) and renderer.running:
                renderer.submit(nv.RenderTask("rerender", self.get_camera_state(client)))

        session.browser_side = BrowserSplats(app, session, rerender)  # browser-side mode: pauses the renderer
        session.rerender = session.browser_side.refresh
        session.camera_path = add_camera_path_panel(ClientAsServer(client), self.output_dir, self.default_render_size)
        with app._sessions_lock:
            app.sessions[client.client_id] = session
        nv.renderers(self)[client.client_id] = renderer
        panels_holder["panels"] = ClientPanels(client, session, self)
        if app.comparison is not None:
            add_compare_panel(client, session, app.comparison.labels)

        @client.camera.on_update
        def _(_: viser.CameraHandle) -> None:
            nv.mark_camera_moved(self)
            view.render_tab_state.viewer_res = browser_res(session.settings.viewer_res, client.camera)
            if renderer.running:
                renderer.submit(nv.RenderTask("move", self.get_camera_state(client)))

        renderer.start()
        session.rerender()

    def _disconnect_client(self, client: viser.ClientHandle):  # nerfview hook
        renderer = nv.renderers(self).pop(client.client_id, None)
        if renderer is not None:
            renderer.running = False
        with self.app._sessions_lock:
            self.app.sessions.pop(client.client_id, None)
        threading.Thread(target=return_freed_memory, name="gags-release-memory", daemon=True).start()

    def get_camera_state(self, client: viser.ClientHandle):
        deadline = time.time() + CAMERA_WAIT_S
        while not nv.camera_ready(client) and time.time() < deadline:
            time.sleep(0.05)
        return super().get_camera_state(client)

    # -- what the export actions read (gags_viewer.viewer.export_actions) ------------------------------

    @staticmethod
    def render_size(session: ClientSession) -> tuple[int, int]:
        """The "Render Res" of this browser's camera-path panel (full export resolution)."""
        return session.camera_path.render_size() if session.camera_path is not None else (1280, 960)


def start_viewer(
    app: ViewerApp, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False
) -> tuple[viser.ViserServer, GagsViewer]:
    """Start the viser server and the viewer on it (returns immediately; the server runs in threads)."""
    app.warm_up()
    server = viser.ViserServer(host=host, port=port, label="gags-viewer", verbose=verbose)
    field = app.field
    up = np.asarray(field.metadata.up, dtype=np.float64)
    if np.linalg.norm(up) > 0:
        server.scene.set_up_direction(tuple(float(v) for v in up / np.linalg.norm(up)))
    framing = default_framing(field)
    server.initial_camera.position = tuple(float(v) for v in framing.eye)
    server.initial_camera.look_at = tuple(float(v) for v in framing.target)
    server.initial_camera.up = tuple(float(v) for v in framing.up)
    server.initial_camera.fov = math.radians(framing.fov_y_deg)
    viewer = GagsViewer(server, app)
    return server, viewer
