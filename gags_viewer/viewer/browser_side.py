"""Browser-side rendering for one browser: the field's Gaussians are sent once as viser splat nodes, the
browser splats them at its own frame rate, and a query, threshold or colour change only resends the
colours of the chunks that changed (see :mod:`gags_viewer.viewer.splat_colors`). The server renders no
frame for that browser meanwhile (its :class:`~gags_viewer.viewer.renderer.ClientRenderer` is paused).

What the browser cannot draw (pixel query mode, the granularity / PCA / depth / alpha displays, a shown
3D selection, a comparison of two fields) falls back to server rendering by itself, and the "Rendering"
panel says which mode is on and why. View-dependent colour (SH degree > 0) and exports are server-side
only.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import numpy as np
import torch

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.viewer.display import query_legend, with_contrasting_colors
from gags_viewer.viewer.export import Legend
from gags_viewer.viewer.settings import QUERY_DISPLAY_MODES, RENDERINGS, ViewSettings
from gags_viewer.viewer.splat_colors import (
    BYTES_PER_GAUSSIAN,
    SplatGeometry,
    browser_side_blocker,
    changed_chunks,
    gaussian_colors,
    to_uint8,
)

log = logging.getLogger(__name__)

NODE_PREFIX = "/gags_splats"

_geometry_lock = threading.Lock()
_geometry_cache: list = []  # [(weakref to the field, its SplatGeometry)]: the latest field only


def geometry_for(field: LanguageField) -> SplatGeometry:
    """The splat geometry of ``field``, made once per field and shared by every browser."""
    with _geometry_lock:
        if _geometry_cache and _geometry_cache[0][0]() is field:
            return _geometry_cache[0][1]
        geometry = SplatGeometry.of(field)
        _geometry_cache[:] = [(weakref.ref(field), geometry)]
        return geometry


def _megabytes(count: int) -> str:
    return f"{count * BYTES_PER_GAUSSIAN / 1e6:.2f} MB"


class BrowserSplats:
    """One browser's Rendering panel, its splat nodes, and the switch between server and browser rendering.

    Args:
        app: the :class:`~gags_viewer.viewer.app.ViewerApp` (its ``field``, ``engine``).
        session: the browser's :class:`~gags_viewer.viewer.session.ClientSession` (``client``, ``settings``,
            ``renderer``).
        server_rerender: asks the server to render this browser's view again.

    :meth:`refresh` replaces ``session.rerender``: every settings change, finished text encoding or field
    edit comes through it.
    """

    def __init__(self, app, session, server_rerender: Callable[[], None]):
        self.app = app
        self.session = session
        self.client = session.client
        self._server_rerender = server_rerender
        self._handles: list = []
        self._geometry: SplatGeometry | None = None
        self._sent: np.ndarray | None = None
        """Colours the browser has, [N, 3] uint8 in the geometry's order."""
        self._lock = threading.Lock()
        self._generation = 0
        self._working = False
        self.mode = "server"
        """The mode in effect ("server" or "browser"; the setting may ask for browser and be refused)."""
        self.gaussians_sent = 0
        """Gaussians sent to this browser so far (each :data:`BYTES_PER_GAUSSIAN` bytes)."""
        self.recolours = 0
        """Colour updates applied in browser mode (a no-change update counts too)."""
        gui = self.client.gui
        with gui.add_folder("Rendering", order=2.5):
            self.control = gui.add_dropdown(
                "Rendering",
                list(RENDERINGS),
                initial_value=session.settings.rendering,
                hint="server: frames rendered here and streamed (every mode). browser: the Gaussians are sent "
                "once and your browser draws them; queries recolour them (no server render while orbiting).",
            )
            self.note = gui.add_markdown("**Server-side**: frames rendered here and streamed.")

        @self.control.on_update
        def _(_) -> None:
            if self.control.value != self.session.settings.rendering:
                self.session.update(rendering=self.control.value)

    # -- the switch -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring this browser up to date with its settings (in the background; the newest request wins)."""
        with self._lock:
            if self.mode == "server" and not self._working and self.session.settings.rendering == "server":
                self._server_rerender()  # the usual case: nothing to switch
                return
            self._generation += 1
            if self._working:
                return
            self._working = True
        threading.Thread(target=self._work, name="gags-browser-side", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                generation = self._generation
            try:
                self._apply(self.session.settings)
            except GagsError as exc:
                self.session.notify("Browser-side rendering", str(exc), color="yellow")
                self._set_note(f"**Browser-side**: {exc}")
            except Exception:  # noqa: BLE001 - a gone browser or a failed update must not end the server
                log.warning("browser-side update failed for client %s", self.session.client_id, exc_info=True)
            with self._lock:
                if generation == self._generation:
                    self._working = False
                    return

    def _apply(self, settings: ViewSettings) -> None:
        if self.control.value != settings.rendering:
            self.control.value = settings.rendering  # set elsewhere than this panel
        blocker = None
        if settings.rendering == "browser":
            blocker = browser_side_blocker(settings)
            if getattr(self.app, "comparison", None) is not None:
                blocker = "two compared fields are drawn in one server frame"
        if settings.rendering != "browser" or blocker is not None:
            self._to_server(blocker)
            return
        renderer = self.session.renderer
        if renderer is not None:
            renderer.set_paused(True)
        self.mode = "browser"
        self._push(settings)

    def _to_server(self, blocker: str | None) -> None:
        self.mode = "server"
        for handle in self._handles:
            if handle.visible:
                handle.visible = False
        renderer = self.session.renderer
        if renderer is not None:
            renderer.set_paused(False)
        if blocker is not None:
            self._set_note(f"**Server-side** for now: {blocker}. Browser-side resumes when that is off.")
        else:
            self._set_note("**Server-side**: frames rendered here and streamed.")
        self._server_rerender()

    # -- browser mode ---------------------------------------------------------------------------------

    def _field_and_engine(self):
        engine = self.app.engine  # one read: the engine's own field is the field it belongs to
        return (self.app.field if engine is None else engine.field), engine

    def _push(self, settings: ViewSettings) -> None:
        field, engine = self._field_and_engine()
        geometry = geometry_for(field)
        if geometry is not self._geometry:
            for handle in self._handles:
                handle.remove()
            self._handles, self._sent, self._geometry = [], None, geometry
        relevancy = None
        if settings.display in QUERY_DISPLAY_MODES and settings.queries and engine is not None:
            if not settings.negatives:
                raise GagsError("relevancy needs at least one negative phrase")
            settings = with_contrasting_colors(settings, engine)
            with torch.no_grad():
                relevancy = engine.gaussian_relevancy(settings.queries, settings.negatives)
        with torch.no_grad():
            colors = gaussian_colors(field.base_colors(), relevancy, settings)
        colors = to_uint8(colors)[geometry.order]
        changed = changed_chunks(self._sent, colors, geometry)
        if not self._handles:
            for index in range(geometry.num_chunks):
                span = geometry.span(index)
                self._handles.append(
                    self.client.scene.add_gaussian_splats(
                        f"{NODE_PREFIX}/{index:03d}",
                        centers=geometry.centers[span],
                        covariances=geometry.covariances[span],
                        rgbs=colors[span],
                        opacities=geometry.opacities[span],
                    )
                )
        else:
            for index in changed:
                self._handles[index].rgbs = colors[geometry.span(index)]
        self._sent = colors
        count = sum(geometry.span(i).stop - geometry.span(i).start for i in changed)
        self.gaussians_sent += count
        self.recolours += 1
        background = np.array([[settings.background]], dtype=np.uint8)  # 1×1: the browser stretches it
        self.client.scene.set_background_image(background, format="png")
        for handle in self._handles:
            if not handle.visible:
                handle.visible = True
        legend = query_legend(settings, settings.display) if relevancy is not None else Legend()
        legend.notes.append("browser-side: per-Gaussian colours")
        self.session._set_legend(legend)  # the panel's legend and colour pickers follow it
        sh = field.sh_degree
        self._set_note(
            f"**Browser-side**: your browser draws the {field.num_gaussians:,} Gaussians "
            f"({_megabytes(field.num_gaussians)} sent once), SH degree 0 colours"
            + (f" (degree {sh} view-dependent colour: server mode)" if sh > 0 else "")
            + f"; queries score Gaussians. Last update: {len(changed)} of {geometry.num_chunks} chunks, "
            f"{_megabytes(count)}. Exports still render on the server."
        )

    def _set_note(self, text: str) -> None:
        if self.note.content != text:
            self.note.content = text
