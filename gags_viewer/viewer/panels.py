"""Per-browser GUI: Query, Display, Select & edit and Export panels (viser ``client.gui``; every browser
has its own).

Each control writes into its browser's :class:`~gags_viewer.viewer.session.ClientSession` and asks
for a re-render of that browser only. Long actions (exports) run on their own thread and report
through notifications; the panels never block viser's message handling.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import viser

from gags_viewer.errors import GagsError
from gags_viewer.viewer import export_actions
from gags_viewer.viewer import nerfview_adapter as nv
from gags_viewer.viewer.export import VIDEO_FORMATS, Legend
from gags_viewer.viewer.selection_panel import SelectionPanel
from gags_viewer.viewer.session import ClientSession
from gags_viewer.viewer.settings import (
    COLORMAPS,
    DISPLAY_LABELS,
    DISPLAY_MODES,
    LANGUAGE_DISPLAY_MODES,
    QUERY_DISPLAY_MODES,
    QUERY_MODES,
)

log = logging.getLogger(__name__)

_LABEL_TO_MODE = {label: mode for mode, label in DISPLAY_LABELS.items()}
STATS_PERIOD_S = 1.0


class ClientPanels:
    """The controls of one browser."""

    def __init__(self, client: viser.ClientHandle, session: ClientSession, viewer: export_actions.ExportHost):
        self.client = client
        self.session = session
        self.viewer = viewer
        self.app = viewer.app
        self._color_handles: list = []
        self._last_stats = 0.0
        self._busy = threading.Lock()
        has_language = self.app.field.has_language and self.app.engine is not None
        has_granularity = self.app.field.granularity_decoder is not None
        settings = session.settings
        gui = client.gui

        # -- Query ---------------------------------------------------------------------------------
        with gui.add_folder("Query", order=1):
            if self.app.queries_off:
                gui.add_markdown(f"**Queries are off**: {self.app.queries_off}")
            elif not has_language:
                gui.add_markdown("This field has no language features: **RGB, depth and alpha only**.")
            self.queries = gui.add_text(
                "Queries",
                settings.queries_text,
                disabled=not has_language,
                hint="Phrases separated by ';' (e.g. mug; plant), each shown in its own colour. Enter applies.",
            )
            if has_language and self.app.vocabulary is not None:
                vocabulary = self.app.vocabulary
                examples = list(self.app.field.metadata.example_queries[:6]) or vocabulary.examples()
                gui.add_markdown(
                    f"*{vocabulary.model[0].upper() + vocabulary.model[1:]} knows only the {len(vocabulary.phrases)} "
                    f"phrases it was trained on, e.g. {', '.join(examples)}.*"
                )
            self.vocabulary_note = gui.add_markdown("")
            """Which queries are far from the model's fixed vocabulary (when it has one)."""
            self.negatives = gui.add_text(
                "Negatives",
                settings.negatives_text,
                disabled=not has_language,
                hint="Canonical phrases every query is compared against (LERF relevancy), separated by ';'.",
            )
            self.threshold = gui.add_slider(
                "Threshold",
                0.0,
                1.0,
                0.01,
                settings.threshold,
                disabled=not has_language,
                hint="Relevancy above which a pixel is highlighted (overlay) or masked (mask).",
            )
            self.query_mode = gui.add_dropdown(
                "Query mode",
                QUERY_MODES,
                initial_value=settings.query_mode,
                disabled=not has_language,
                hint="gaussian: relevancy per Gaussian, then rendered (fast). pixel: features rendered, "
                "decoded per pixel (as GAGS evaluates; slower).",
            )
            sam = getattr(self.app, "clicks", None) is not None and self.app.clicks.uses_sam
            self.click_to_query = gui.add_checkbox(
                "Click to query",
                False,
                disabled=not has_language,
                hint="While on, a click on the view adds a query: "
                + (
                    "SAM segments the clicked object and its CLIP image embedding becomes the query."
                    if sam
                    else "the feature decoded at the clicked pixel becomes the query (more like this)."
                ),
            )
            self.status = gui.add_markdown("")
            """The last render error, kept until the next good frame."""
            self._colors_folder = gui.add_folder("Query colours", expand_by_default=True)
            self.legend = gui.add_html(session.legend.html())

        # -- Display -------------------------------------------------------------------------------
        modes = [m for m in DISPLAY_MODES if has_language or m not in LANGUAGE_DISPLAY_MODES]
        if not has_granularity and "granularity" in modes:
            modes.remove("granularity")
        display = settings.display if settings.display in modes else "rgb"
        if display != settings.display:
            session.update(rerender=False, display=display)
        with gui.add_folder("Display", order=2):
            self.display = gui.add_dropdown(
                "Display",
                [DISPLAY_LABELS[m] for m in modes],
                initial_value=DISPLAY_LABELS[display],
            )
            self.colormap = gui.add_dropdown(
                "Colormap",
                COLORMAPS,
                initial_value=settings.colormap,
                hint="Colormap of the heat-map, depth and alpha views.",
            )
            self.background = gui.add_rgb("Background", settings.background)
            self.viewer_res = gui.add_slider(
                "Viewer res",
                64,
                2048,
                16,
                min(max(int(settings.viewer_res), 64), 2048),
                hint="Longest side of the streamed image while the camera rests.",
            )
            self.moving_fps = gui.add_slider(
                "Moving FPS",
                1,
                30,
                1,
                int(round(settings.moving_fps)),
                hint="Frame rate aimed for while the camera moves; the resolution drops to reach it.",
            )
            self.stats = gui.add_markdown("")

        # -- Export --------------------------------------------------------------------------------
        with gui.add_folder("Export", order=3):
            self.file_name = gui.add_text("File name", "", hint="Optional; default: the queries or display mode.")
            self.export_png_button = gui.add_button(
                "Export PNG",
                icon=viser.Icon.PHOTO,
                hint="Render the current view server-side at the 'Render Res' height with a legend; download it.",
            )
            self.video_format = gui.add_dropdown("Video format", VIDEO_FORMATS, initial_value="mp4")
            self.export_video_button = gui.add_button(
                "Render video",
                icon=viser.Icon.MOVIE,
                hint="Render the keyframe path of the 'Camera path' panel server-side with these queries.",
            )
            self.export_ply_button = gui.add_button(
                "Export matches (field)",
                icon=viser.Icon.CUBE,
                visible=has_language,
                hint="The Gaussians the selection selects (official GAGS 3D query, see 'Select & edit') as a "
                "field directory (features, decoders, CLIP reference; gags-viewer view opens it), zipped.",
            )
            gui.add_markdown(f"Files are written to `{self.app.output_dir.resolve()}`.")

        self.selection = SelectionPanel(client, session, viewer, lambda: self.file_name.value.strip())
        self._rebuild_colors()
        self._wire()
        self._check_vocabulary()

    # -- callbacks ---------------------------------------------------------------------------------

    def _apply(self, control=None, value=None, **changes) -> bool:
        """Apply setting changes; a rejected one is notified and ``control`` snaps back to ``value``
        (what the setting still is)."""
        try:
            self.session.update(**changes)
            return True
        except GagsError as exc:
            self.session.notify("Invalid setting", str(exc), color="yellow")
            if control is not None:
                control.value = value
            return False

    def _wire(self) -> None:
        @self.queries.on_update
        def _(_) -> None:
            if self._apply(self.queries, self.session.settings.queries_text, queries_text=self.queries.value):
                self.session.after_frame(self._follow_queries)  # the new frame is painted first
                settings = self.session.settings
                if settings.queries and settings.display not in QUERY_DISPLAY_MODES:
                    self.display.value = DISPLAY_LABELS["overlay"]

        @self.click_to_query.on_update
        def _(_) -> None:
            if self.click_to_query.value:
                self.client.scene.on_click()(self._on_click)
            else:
                self.client.scene.remove_click_callback(self._on_click)

        @self.negatives.on_update
        def _(_) -> None:
            self._apply(self.negatives, self.session.settings.negatives_text, negatives_text=self.negatives.value)

        @self.threshold.on_update
        def _(_) -> None:
            self._apply(self.threshold, self.session.settings.threshold, threshold=float(self.threshold.value))

        @self.query_mode.on_update
        def _(_) -> None:
            self._apply(query_mode=self.query_mode.value)

        @self.display.on_update
        def _(_) -> None:
            mode = _LABEL_TO_MODE.get(self.display.value)
            if mode is not None:
                self._apply(display=mode)

        @self.colormap.on_update
        def _(_) -> None:
            self._apply(colormap=self.colormap.value)

        @self.background.on_update
        def _(_) -> None:
            self._apply(background=tuple(int(c) for c in self.background.value))

        @self.viewer_res.on_update
        def _(_) -> None:
            if (
                self._apply(self.viewer_res, self.session.settings.viewer_res, viewer_res=int(self.viewer_res.value))
                and self.session.view is not None
            ):
                self.session.view.render_tab_state.viewer_res = int(self.viewer_res.value)

        @self.moving_fps.on_update
        def _(_) -> None:
            if (
                self._apply(
                    self.moving_fps,
                    self.session.settings.moving_fps,
                    rerender=False,
                    moving_fps=float(self.moving_fps.value),
                )
                and self.session.renderer is not None
            ):
                nv.set_target_fps(self.session.renderer, float(self.moving_fps.value))

        @self.export_png_button.on_click
        def _(_) -> None:
            self._run_export("png")

        @self.export_video_button.on_click
        def _(_) -> None:
            self._run_export("video")

        @self.export_ply_button.on_click
        def _(_) -> None:
            self._run_export("ply")

    def _on_click(self, event) -> None:
        threading.Thread(
            target=self._click_query, args=(tuple(event.screen_pos),), name="gags-click", daemon=True
        ).start()

    def _click_query(self, screen_pos: tuple[float, float]) -> None:
        """Turn a click into a query phrase (feature or SAM, see :mod:`.click_query`) and add it to the box."""
        from gags_viewer.render.camera import Camera
        from gags_viewer.viewer.click_query import click_pixel

        session, app = self.session, self.app
        handle = session.notify("Click to query", "Reading the clicked point…", loading=True)
        try:
            state = self.viewer.get_camera_state(self.client)
            res = int(session.settings.viewer_res)
            aspect = float(state.aspect)
            width, height = (res, max(1, round(res / aspect))) if aspect >= 1 else (max(1, round(res * aspect)), res)
            camera = Camera.from_nerfview(state, width, height)
            x, y = click_pixel(screen_pos, width, height)
            if getattr(app, "comparison", None) is not None:  # a click on either half of a comparison
                from gags_viewer.viewer.compare import clicked_view

                camera, x = clicked_view(camera, x, session.settings)
            lock = app.raster_lock
            with contextlib.nullcontext() if lock is None else lock:
                result = app.clicks.query(app.engine, camera, x, y)
            text = session.settings.queries_text.strip()
            self.queries.value = f"{text}; {result.phrase}" if text else result.phrase
            message, color = f"Added the query {result.phrase}", "green"
        except GagsError as exc:
            message, color = str(exc), "red"
        except Exception as exc:  # noqa: BLE001 - a click must not take the server down
            log.exception("click to query failed")
            message, color = f"{type(exc).__name__}: {exc}", "red"
        if handle is not None:
            handle.loading, handle.body, handle.color, handle.auto_close_seconds = False, message, color, 6.0
        else:
            session.notify("Click to query", message, color=color)

    def _follow_queries(self) -> None:
        """The panel parts that follow the query text: colour pickers, selection count, vocabulary notes."""
        self._rebuild_colors()
        self.selection.refresh_count()  # an empty selection box follows the queries
        self._check_vocabulary()

    def _check_vocabulary(self) -> None:
        """Note the queries far from the model's fixed vocabulary (encoded on a thread of its own)."""
        vocabulary, engine = self.app.vocabulary, self.app.engine
        if vocabulary is None or engine is None:
            return
        phrases = list(self.session.settings.queries)

        def check() -> None:
            from gags_viewer.language.vocabulary import far_phrase_note

            try:
                note = far_phrase_note(vocabulary, phrases, engine.text_encoder.encode)
            except GagsError as exc:  # the render reports encoder failures
                log.debug("vocabulary check failed: %s", exc)
                return
            if phrases == list(self.session.settings.queries):
                self.vocabulary_note.content = f"**Note**: {note}" if note else ""

        threading.Thread(target=check, name="gags-vocabulary", daemon=True).start()

    def _rebuild_colors(self) -> None:
        """One colour picker per query phrase, in query order."""
        for handle in self._color_handles:
            handle.remove()
        self._color_handles = []
        settings = self.session.settings
        with self._colors_folder:
            for index, phrase in enumerate(settings.queries):
                label = phrase if len(phrase) <= 28 else phrase[:27] + "…"
                handle = self.client.gui.add_rgb(label, settings.color_of(index, phrase), hint=f"Colour of '{phrase}'")
                self._wire_color(handle, phrase)
                self._color_handles.append(handle)

    def _wire_color(self, handle, phrase: str) -> None:
        @handle.on_update
        def _(event) -> None:
            if event.client is None:  # set by show_legend (the frame's colours), not by the user
                return
            colors = dict(self.session.settings.colors)
            colors[phrase] = tuple(int(c) for c in handle.value)
            self._apply(colors=colors)

    # -- after each frame --------------------------------------------------------------------------

    def show_legend(self, legend: Legend) -> None:
        self.legend.content = legend.html()
        shown = dict(legend.swatches)
        stale = [
            (handle, tuple(int(c) for c in shown[phrase]))
            for handle, phrase in zip(list(self._color_handles), self.session.settings.queries)
            if phrase in shown and tuple(handle.value) != tuple(shown[phrase])
        ]
        if stale:
            # The pickers show the colours on screen. Set on a thread of its own: this runs on the render
            # thread, where nerfview's interrupt (raised from a trace function, anywhere) could cut viser's
            # GUI code short while it holds its locks; seen as browsers that got no frame any more.
            threading.Thread(target=_set_values, args=(stale,), name="gags-pickers", daemon=True).start()

    def show_status(self, error) -> None:
        """Show a render error until the next good frame (``error`` None clears it)."""
        self.status.content = f"**Render failed**: {error}" if error else ""

    def show_stats(self) -> None:
        now = time.time()
        if now - self._last_stats < STATS_PERIOD_S or not self.session.frame_times:
            return
        self._last_stats = now
        width, height, seconds = self.session.frame_times[-1]
        self.stats.content = f"Last frame: {width}×{height} in {seconds * 1000:.0f} ms"

    # -- exports -----------------------------------------------------------------------------------

    def _run_export(self, kind: str) -> None:
        if not self._busy.acquire(blocking=False):
            self.session.notify("Export running", "Wait for the current export to finish.", color="yellow")
            return
        thread = threading.Thread(target=self._export, args=(kind,), name=f"gags-export-{kind}", daemon=True)
        thread.start()

    def _export(self, kind: str) -> None:
        session = self.session
        text = {"png": "Rendering the PNG…", "video": "Rendering the video…", "ply": "Selecting Gaussians…"}[kind]
        handle = session.notify("Exporting", text, loading=True)
        buttons = (self.export_png_button, self.export_video_button, self.export_ply_button)
        try:
            for button in buttons:
                button.disabled = True
            if kind == "png":
                path = export_actions.export_png(self.viewer, session, self.file_name.value.strip())
            elif kind == "ply":
                path, count, rule = export_actions.export_selection(self.viewer, session, self.file_name.value.strip())
            else:

                def progress(done: int, total: int) -> None:
                    if handle is not None and (done == total or done % 5 == 0):
                        handle.body = f"Frame {done} / {total}"

                path = export_actions.export_video(
                    self.viewer, session, self.video_format.value, self.file_name.value.strip(), progress
                )
            message, color = f"Saved {path}" + (f" ({count:,} Gaussians; {rule})" if kind == "ply" else ""), "green"
        except GagsError as exc:
            message, color = str(exc), "red"
        except Exception as exc:  # noqa: BLE001 - an export failure must not take the server down
            log.exception("export failed")
            message, color = f"{type(exc).__name__}: {exc}", "red"
        finally:
            for button in buttons:
                button.disabled = False
            self._busy.release()
        if handle is not None:
            try:
                handle.title = "Export done" if color == "green" else "Export failed"
                handle.body = message
                handle.loading = False
                handle.color = color
                handle.auto_close_seconds = 10.0
            except Exception:  # noqa: BLE001
                session.notify("Export", message, color=color)
        else:
            session.notify("Export", message, color=color)


def _set_values(pairs) -> None:
    """Set GUI handles' values (``pairs`` of (handle, value)); a handle removed meanwhile is skipped."""
    for handle, value in pairs:
        try:
            handle.value = value
        except Exception:  # noqa: BLE001 - the picker was rebuilt or its browser left
            log.debug("could not update a colour picker", exc_info=True)
