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

import json
import logging
import math
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import viser

import nerfview
import nerfview.render_panel as nerfview_panel
from nerfview._renderer import RenderTask
from nerfview.render_panel import RenderTabState

from gags_viewer.field.language_field import LanguageField
from gags_viewer.fsutil import atomic_write_text
from gags_viewer.render.camera import Camera
from gags_viewer.viewer import export as ex
from gags_viewer.viewer.camera_path import (
    SCALE_RATIO,
    camera_path_from_nerfview,
    default_framing,
    parse_camera_path,
)
from gags_viewer.viewer.frame import Frame, FrameSource
from gags_viewer.viewer.memory import return_freed_memory
from gags_viewer.viewer.renderer import ClientRenderer
from gags_viewer.viewer.session import ClientSession
from gags_viewer.viewer.settings import ViewSettings

log = logging.getLogger(__name__)

CAMERA_WAIT_S = 30.0


class _ClientView:
    """The parts of ``nerfview.Viewer`` that a nerfview ``Renderer`` reads, for one browser."""

    def __init__(self, viewer: "GagsViewer", session: ClientSession, viewer_res: int):
        self._viewer = viewer
        self._client = session.client
        self.render_fn = session.render
        self.render_tab_state = RenderTabState(viewer_res=int(viewer_res))
        self.lock = threading.Lock()

    @property
    def state(self) -> str:
        # "preparing" holds the Renderer until the browser has reported its camera once (reading the
        # camera earlier fails inside nerfview's thread and would leave this browser without frames).
        if not _camera_ready(self._client):
            return "preparing"
        return self._viewer.state

    def get_camera_state(self, client: viser.ClientHandle):
        return self._viewer.get_camera_state(client)

    def _after_render(self) -> None:
        pass


def _camera_ready(client: viser.ClientHandle) -> bool:
    return client.camera._state.update_timestamp != 0.0


class ViewerApp(FrameSource):
    """State shared by all browsers: the field, the query engine, exports.

    Args:
        field: the field to show (tensors on the render device).
        engine: the query engine, or None for a field without language features.
        output_dir: where exports go.
        default_settings: settings a new browser starts with.
    """

    def __init__(self, field: LanguageField, engine=None, *, output_dir: Path = Path("exports"),
                 default_settings: Optional[ViewSettings] = None, backend: str = "auto"):
        super().__init__(field, engine, backend=backend)
        self.output_dir = Path(output_dir)
        self.default_settings = (default_settings or ViewSettings()).checked()
        self.sessions: dict[int, ClientSession] = {}
        self._sessions_lock = threading.Lock()
        self.viewer: Optional["GagsViewer"] = None

    # -- text encoding finished: re-render the browsers that were waiting for it -------------------

    def on_text_ready(self, phrases: tuple[str, ...], future: Future) -> None:
        # A failure is reported by the re-render itself (one notification per browser).
        for session in self.all_sessions():
            if session.release_pending(phrases):
                session.rerender()

    def all_sessions(self) -> list[ClientSession]:
        with self._sessions_lock:
            return list(self.sessions.values())

    def compose_for(self, camera: Camera, settings: ViewSettings, session: ClientSession) -> Frame:
        frame = self.compose(camera, settings, wait_for_text=False)
        # What this browser waits for is what its latest frame lacked (a frame that raced with the
        # encoder's callback must not leave a stale entry behind).
        session.set_pending(frame.pending)
        if frame.pending:
            self.request_text(frame.pending)
        return frame


class GagsViewer(nerfview.Viewer):
    """nerfview's Viewer with per-browser renderers, settings panels and server-side exports."""

    def __init__(self, server: viser.ViserServer, app: ViewerApp):
        self.app = app
        app.viewer = self
        self.panel_path = None  # nerfview's CameraPath of the camera-path panel
        super().__init__(server, render_fn=self._shared_render_fn, output_dir=app.output_dir, mode="rendering")
        server.gui.set_panel_label("gags-viewer")
        server.gui.configure_theme(dark_mode=True, brand_color=(255, 211, 105))

    @staticmethod
    def _shared_render_fn(camera_state, render_tab_state):  # pragma: no cover - never called
        return np.zeros((render_tab_state.viewer_height, render_tab_state.viewer_width, 3), dtype=np.uint8)

    # -- nerfview hooks --------------------------------------------------------------------------

    def _init_rendering_tab(self):
        self.render_tab_state = RenderTabState(viewer_res=self.app.default_settings.viewer_res)
        self._rendering_tab_handles = {}
        self._rendering_folder = self.server.gui.add_folder("Camera path", order=100, expand_by_default=False)

    def _populate_rendering_tab(self):
        captured = []
        original = nerfview_panel.CameraPath

        class _Captured(original):  # keep a handle on the panel's path to render it server-side
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                captured.append(self)

        nerfview_panel.CameraPath = _Captured
        try:
            handles = nerfview_panel.populate_general_render_tab(
                self.server, output_dir=self.output_dir, folder=self._rendering_folder,
                render_tab_state=self.render_tab_state, extra_handles={}, scale_ratio=SCALE_RATIO,
            )
        finally:
            nerfview_panel.CameraPath = original
        self.panel_path = captured[-1] if captured else None
        # nerfview's own "Dump Video" grabs browser screenshots; our Export panel renders server-side.
        handles["dump_video_button"].visible = False
        self._rendering_tab_handles.update(handles)

    def rerender(self, _=None):
        for session in self.app.all_sessions():
            session.rerender()

    def _connect_client(self, client: viser.ClientHandle):
        from gags_viewer.viewer.panels import ClientPanels

        app = self.app
        panels_holder: dict = {}

        def on_frame(session: ClientSession, legend, legend_changed: bool) -> None:
            panels = panels_holder.get("panels")
            if panels is not None:
                if legend_changed:
                    panels.show_legend(legend)
                panels.show_stats()

        session = ClientSession(client, app.default_settings.copy(), app.compose_for, on_frame=on_frame)
        view = _ClientView(self, session, session.settings.viewer_res)
        renderer = ClientRenderer(viewer=view, client=client, lock=view.lock)
        renderer._target_fps = session.settings.moving_fps
        session.view = view
        session.renderer = renderer

        def rerender() -> None:
            if _camera_ready(client) and renderer.running:
                renderer.submit(RenderTask("rerender", self.get_camera_state(client)))

        session.rerender = rerender
        with app._sessions_lock:
            app.sessions[client.client_id] = session
        self._renderers[client.client_id] = renderer
        panels_holder["panels"] = ClientPanels(client, session, self)

        @client.camera.on_update
        def _(_: viser.CameraHandle) -> None:
            self._last_move_time = time.time()
            if renderer.running:
                renderer.submit(RenderTask("move", self.get_camera_state(client)))

        renderer.start()

    def _disconnect_client(self, client: viser.ClientHandle):
        renderer = self._renderers.pop(client.client_id, None)
        if renderer is not None:
            renderer.running = False
        with self.app._sessions_lock:
            self.app.sessions.pop(client.client_id, None)
        threading.Thread(target=return_freed_memory, name="gags-release-memory", daemon=True).start()

    def get_camera_state(self, client: viser.ClientHandle):
        deadline = time.time() + CAMERA_WAIT_S
        while not _camera_ready(client) and time.time() < deadline:
            time.sleep(0.05)
        return super().get_camera_state(client)

    # -- exports -----------------------------------------------------------------------------------

    def render_size(self) -> tuple[int, int]:
        """The "Render Res" of the camera-path panel (full export resolution)."""
        return int(self.render_tab_state.render_width), int(self.render_tab_state.render_height)

    def export_png(self, session: ClientSession, name_hint: str = "") -> Path:
        """The browser's current view, at the panel's render height and the browser's aspect ratio,
        in its display mode with a legend; written under ``<output_dir>/images`` and sent to it."""
        client = session.client
        _, height = self.render_size()
        camera_state = self.get_camera_state(client)
        width = max(1, int(round(height * float(camera_state.aspect))))
        camera = Camera.from_nerfview(camera_state, width, height)
        settings = session.settings
        frame = self.app.compose(camera, settings, wait_for_text=True)
        image = ex.draw_legend(frame.image, frame.legend)
        directory = ex.ensure_directory(self.output_dir / "images")
        hint = name_hint or ("_".join(settings.queries) if settings.shows_queries else settings.display)
        path = ex.write_png(ex.unique_path(directory, ex.export_stem("view", hint), ".png"), image)
        client.send_file_download(path.name, path.read_bytes(), save_immediately=True)
        return path

    def export_selection(self, session: ClientSession, name_hint: str = "") -> tuple[Path, int]:
        """The Gaussians whose relevancy to any of this browser's queries exceeds its threshold, as an
        Inria PLY (with their language features) under ``<output_dir>/selections``, sent to it.
        Returns (path, number of Gaussians)."""
        from gags_viewer.field.ply import write_ply

        settings = session.settings
        engine = self.app.engine
        if engine is None:
            raise ex.ExportError("this field has no language features: there is nothing to select")
        if not settings.queries:
            raise ex.ExportError("type a query first: the export keeps the Gaussians that match it")
        scores = engine.gaussian_relevancy(settings.queries, settings.negatives)  # [K, N]
        keep = (scores > settings.threshold).any(dim=0)
        count = int(keep.sum())
        if count == 0:
            raise ex.ExportError(f"no Gaussian has a relevancy above {settings.threshold:.2f}; lower the threshold")
        directory = ex.ensure_directory(self.output_dir / "selections")
        hint = name_hint or "_".join(settings.queries)
        path = ex.unique_path(directory, ex.export_stem("selection", hint), ".ply")
        write_ply(select_gaussians(self.app.field, keep.to(self.app.field.means.device)), path)
        session.client.send_file_download(path.name, path.read_bytes(), save_immediately=True)
        return path, count

    def export_video(self, session: ClientSession, video_format: str = "mp4", name_hint: str = "",
                     progress: Optional[Callable[[int, int], None]] = None) -> Path:
        """Render the camera-path panel's path server-side with this browser's settings.

        The path is first saved as nerfview JSON under ``<output_dir>/camera_paths`` (the same file
        ``gags-viewer render --camera-path`` reads), then rendered from that JSON, so the headless
        command reproduces these frames.
        """
        if self.panel_path is None:
            raise ex.ExportError("the camera-path panel is not available")
        width, height = self.render_size()
        fps = float(self._rendering_tab_handles["framerate_number"].value)
        data = camera_path_from_nerfview(self.panel_path, width, height, fps)
        if data is None:
            raise ex.ExportError("add at least two keyframes in the 'Camera path' panel first")
        trajectory = self._rendering_tab_handles["trajectory_name_text"].value
        stem = ex.sanitize_filename(name_hint or trajectory, default="path")
        path_dir = ex.ensure_directory(self.output_dir / "camera_paths")
        json_path = path_dir / f"{stem}.json"
        atomic_write_text(json_path, json.dumps(data, indent=1))
        cameras = parse_camera_path(data, source=str(json_path))
        settings = session.settings
        total = len(cameras.cameras)

        def frames():
            for i, camera in enumerate(cameras.cameras):
                frame = self.app.compose(camera, settings, wait_for_text=True)
                yield ex.draw_legend(frame.image, frame.legend)
                if progress is not None:
                    progress(i + 1, total)

        directory = ex.ensure_directory(self.output_dir / "videos")
        path = ex.unique_path(directory, ex.export_stem(stem), f".{video_format}")
        ex.write_video(path, frames(), cameras.fps)
        session.client.send_file_download(path.name, path.read_bytes(), save_immediately=True)
        return path


def select_gaussians(field: LanguageField, keep: torch.Tensor) -> LanguageField:
    """The Gaussians of ``field`` where ``keep`` [N] is True (decoders and metadata kept)."""
    import dataclasses

    per_gaussian = ("means", "quats", "log_scales", "opacity_logits", "sh", "features")
    changes = {name: getattr(field, name)[keep] for name in per_gaussian if getattr(field, name) is not None}
    meta = dataclasses.replace(field.metadata, source=f"selection of {field.metadata.source or 'a field'}")
    return dataclasses.replace(field, metadata=meta, **changes)


def start_viewer(app: ViewerApp, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False) -> tuple[viser.ViserServer, GagsViewer]:
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
