"""One frame: field + query engine + camera + settings -> an RGB image and its legend.

:func:`compose_frame` is the only place a displayed image is made: the viewer streams it, the PNG and
video exports draw its legend onto it, and ``gags-viewer render`` writes it to disk, so all three show
the same pixels for the same camera and settings. The display modes are a table
(:data:`~gags_viewer.viewer.display.DISPLAYS`): a render pass, then a paint step. Given a
:class:`PassCache`, a frame whose camera, field and pass settings match an earlier one (a threshold,
colour or colormap change) is repainted from that pass without rendering.

Query modes come from the engine: ``gaussian`` (relevancy per Gaussian, then rendered) or ``pixel``
(features rendered, then decoded per pixel).
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np
import torch
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.api import render
from gags_viewer.render.camera import Camera
from gags_viewer.viewer.display import DISPLAYS, Pass, View, query_legend, run_rgb, with_contrasting_colors
from gags_viewer.viewer.export import Legend, draw_legend
from gags_viewer.viewer.selection_view import SelectionViews, tint_image
from gags_viewer.viewer.settings import LANGUAGE_DISPLAY_MODES, QUERY_DISPLAY_MODES, ViewSettings


@dataclass
class Frame:
    """A composed frame.

    Attributes:
        image: [H, W, 3] uint8.
        legend: what the colours mean (drawn onto exports, shown beside the view in the viewer).
        pending: phrases that still had to be encoded (only when not waiting for text); the image then
            shows the RGB render.
        timings: seconds per phase ("render", "decode", "relevancy", "composite", "total", ...);
            "reused" is 1.0 when the render pass came from a :class:`PassCache`.
        legend_drawn: the image already shows its legends (a comparison draws each field's legend in
            its part, :mod:`gags_viewer.viewer.compare`); ``legend`` is then only the panel's summary.
    """

    image: np.ndarray
    legend: Legend
    pending: tuple[str, ...] = ()
    timings: dict[str, float] = dc_field(default_factory=dict)
    legend_drawn: bool = False


def with_legend(frame: Frame) -> np.ndarray:
    """The frame as exports show it: its image with its legend drawn on (once). [H, W, 3] uint8"""
    return frame.image if frame.legend_drawn else draw_legend(frame.image, frame.legend)


def to_uint8(image: Tensor) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (any device) -> contiguous uint8 numpy."""
    return image.detach().float().mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).cpu().numpy()


def _locked(lock: threading.Lock | None):
    """``lock`` as a context manager (nothing when None).

    The plain ``with lock`` form matters: nerfview raises its interrupt from a trace function at any
    Python line of the render thread, and only the lock's own C-level enter/exit leave no line between
    acquiring and releasing where that could strand the lock.
    """
    return contextlib.nullcontext() if lock is None else lock


def needs_language(settings: ViewSettings) -> bool:
    return settings.display in LANGUAGE_DISPLAY_MODES


class PassCache:
    """The last few render passes, by (field, engine, camera, pass settings), for repainting.

    Entries hold the field and engine weakly and compare them by identity, so a swapped field (training
    preview) never reuses a pass of the old one.
    """

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(view: View, pass_key: tuple) -> tuple:
        return (id(view.field), id(view.engine), view.backend, view.camera.key(), pass_key)

    def get(self, view: View, pass_key: tuple) -> Pass | None:
        key = self._key(view, pass_key)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            field_ref, engine_ref, produced = entry
            if field_ref() is not view.field or (engine_ref is not None and engine_ref() is not view.engine):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return produced

    def put(self, view: View, pass_key: tuple, produced: Pass) -> None:
        key = self._key(view, pass_key)
        engine_ref = None if view.engine is None else weakref.ref(view.engine)
        with self._lock:
            self._entries[key] = (weakref.ref(view.field), engine_ref, produced)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def compose_frame(
    field: LanguageField,
    camera: Camera,
    settings: ViewSettings,
    engine=None,
    *,
    wait_for_text: bool = True,
    lock: threading.Lock | None = None,
    backend: str = "auto",
    cache: PassCache | None = None,
) -> Frame:
    """Render and composite one frame.

    Args:
        field: the Gaussians.
        camera: the view (image size camera.height x camera.width).
        settings: display mode, queries, colours, threshold, colormap, background.
        engine: a :class:`~gags_viewer.language.engine.QueryEngine` on ``field``; required by the
            language display modes.
        wait_for_text: if False and a phrase is not encoded yet, return the RGB render at once with the
            phrases in ``Frame.pending`` (the caller encodes them in the background and asks again).
        lock: held while rendering / querying (serialises the rasterizer between threads).
        backend: render backend for the modes that render directly.
        cache: reuse (and keep) render passes: a settings-only change repaints without rendering.

    Raises:
        GagsError: a language mode on a field without language features, or without an engine.
    """
    start = time.perf_counter()
    settings = settings.checked()
    mode = settings.display
    if needs_language(settings):
        if not field.has_language:
            raise GagsError(
                f"display mode '{mode}' needs language features; this field is RGB only (use rgb, depth or alpha)"
            )
        if engine is None:
            raise GagsError(f"display mode '{mode}' needs a query engine")
    view = View(field, engine, camera, settings, backend)

    queries, negatives = settings.queries, settings.negatives
    if mode in QUERY_DISPLAY_MODES and not queries:
        produced = _produce(view, ("rgb", tuple(settings.background)), run_rgb, lock, cache)
        return _finish(_colour(produced), Legend(title="Type a query (e.g. mug; plant)"), (), produced, start)
    if mode in QUERY_DISPLAY_MODES and not negatives:
        raise GagsError("relevancy needs at least one negative phrase")
    if mode in QUERY_DISPLAY_MODES and not wait_for_text and not engine.ready(queries, negatives):
        produced = _produce(view, ("rgb", tuple(settings.background)), run_rgb, lock, cache)
        missing = unencoded_phrases(engine, settings)
        legend = query_legend(settings, mode)
        legend.notes.append(
            "encoding " + ", ".join(f"'{p}'" for p in missing[:3]) + ("…" if len(missing) > 3 else "") + "…"
        )
        return _finish(_colour(produced), legend, missing, produced, start)

    if mode in QUERY_DISPLAY_MODES:
        view.settings = settings = with_contrasting_colors(settings, engine, wait=wait_for_text)
    display = DISPLAYS[mode]
    produced = _produce(view, display.key(settings), display.run, lock, cache)
    t0 = time.perf_counter()
    image, legend = display.paint(produced, view)
    paint_s = time.perf_counter() - t0
    frame = _finish(image, legend, (), produced, start)
    frame.timings["composite"] += paint_s
    return frame


def unencoded_phrases(engine, settings: ViewSettings) -> tuple[str, ...]:
    """The query and negative phrases of ``settings`` that ``engine``'s text encoder has not encoded yet."""
    phrases = list(settings.queries) + list(settings.negatives)
    return tuple(p for p in phrases if engine.text_encoder.cached(p) is None)


def _produce(view: View, pass_key: tuple, run, lock, cache: PassCache | None) -> Pass:
    produced = None if cache is None else cache.get(view, pass_key)
    if produced is not None:
        return Pass(**{**produced.__dict__, "timings": {"reused": 1.0}})
    with _locked(lock):
        produced = run(view)
    if cache is not None:
        cache.put(view, pass_key, produced)
    return produced


def _colour(produced: Pass) -> Tensor:
    """The RGB image of an rgb pass (:func:`run_rgb` always renders it). [H, W, 3]"""
    if produced.rgb is None:
        raise GagsError("the rgb render pass returned no colour image")
    return produced.rgb


def _finish(image: Tensor, legend: Legend, pending: Sequence[str], produced: Pass, start: float) -> Frame:
    timings = dict(produced.timings)
    t0 = time.perf_counter()
    array = to_uint8(image)
    timings["composite"] = timings.get("composite", 0.0) + (time.perf_counter() - t0)
    timings["total"] = time.perf_counter() - start
    return Frame(array, legend, tuple(pending), timings)


def preview_settings(settings: ViewSettings, moving: bool) -> ViewSettings:
    """What to show while the camera moves: pixel mode's frames take a second on a CPU, so a moving
    camera gets the gaussian-mode frame and the pixel-mode one is swapped in when it rests."""
    if (
        moving
        and settings.query_mode == "pixel"
        and (settings.display in QUERY_DISPLAY_MODES or settings.display == "granularity")
    ):
        return settings.copy(query_mode="gaussian")
    return settings


class FrameSource:
    """A field and its query engine, composing frames for several threads.

    Holds the raster lock and a :class:`PassCache` (settings-only changes repaint without rendering),
    builds the per-field caches in the background (:meth:`prepare_field`), and encodes phrases in the
    background for callers that cannot wait (:meth:`request_text`; override :meth:`on_text_ready` to
    hear when they are done).
    """

    def __init__(self, field: LanguageField, engine=None, *, backend: str = "auto"):
        self.field = field
        self.engine = engine
        self.backend = backend
        self.raster_lock: threading.Lock | None = threading.Lock()
        """Serialises frames between threads when the rasterizer needs it (see :meth:`warm_up`)."""
        self._text_lock = threading.Lock()
        self._inflight: dict[str, Future] = {}
        self.text_errors: dict[str, str] = {}
        self.selections = SelectionViews()
        """3D selections and their display copies (:mod:`gags_viewer.viewer.selection_view`)."""
        self.pass_cache = PassCache()
        self.field_ready: threading.Thread | None = None
        """The thread building the per-field caches (see :meth:`prepare_field`), once started."""

    def prepare_field(self) -> threading.Thread | None:
        """Start building the engine's once-per-field caches (neighbour search, every Gaussian decoded,
        the pixel-mode decoder) on a background thread, so that no render callback (which nerfview may
        interrupt and restart) does that work. A frame that needs them meanwhile waits for them."""
        engine = self.engine
        if engine is None or not hasattr(engine, "prepare_field"):
            return None

        def build() -> None:
            try:
                engine.prepare_field()
            except Exception:  # noqa: BLE001 - the frame that needs the cache reports the error
                pass

        thread = threading.Thread(target=build, name="gags-prepare-field", daemon=True)
        thread.start()
        self.field_ready = thread
        return thread

    def warm_up(self) -> float:
        """Render one small frame on the calling thread; returns the seconds it took.

        This imports and JIT-compiles the rasterizer before any render thread needs it (numba must not
        be imported from two threads at once), and decides whether frames of different browsers may
        render at the same time: yes unless numba runs on its "workqueue" thread pool, which aborts the
        process when two threads enter it; then :attr:`raster_lock` serialises frames. Then starts
        :meth:`prepare_field`.
        """
        from gags_viewer.viewer.camera_path import camera_from_fov, default_framing

        start = time.perf_counter()
        framing = default_framing(self.field)
        camera = camera_from_fov(framing.c2w(), np.radians(framing.fov_y_deg), 64, 48)
        with _locked(self.raster_lock):
            render(self.field, camera, rgb=True, backend=self.backend)
        self.prepare_field()
        if self.field.means.device.type == "cpu":
            layer: str
            try:
                import numba

                layer = numba.threading_layer()
            except Exception:  # noqa: BLE001 - not initialised, or numba missing: stay serialised
                layer = "unknown"
            if layer in ("omp", "tbb"):
                self.raster_lock = None
        else:
            self.raster_lock = None
        return time.perf_counter() - start

    def compose(self, camera: Camera, settings: ViewSettings, *, wait_for_text: bool = True) -> Frame:
        """:func:`compose_frame` on this field; phrases that failed to encode raise their error."""
        failed = (
            [p for p in settings.queries + settings.negatives if p in self.text_errors]
            if settings.shows_queries
            else []
        )
        if failed:
            raise GagsError(f"cannot encode '{failed[0]}': {self.text_errors[failed[0]]}")
        engine = self.engine  # one read: the engine's own field is the field it belongs to (edits swap both)
        field = self.field if engine is None else engine.field
        view = None
        if settings.shows_selection and engine is not None:
            # Colours from the whole field, not from the copy that shows the selection.
            settings = with_contrasting_colors(settings.checked(), engine, wait=wait_for_text)
            view = self.selections.view(engine, settings, wait_for_text)  # the selection is shown by the field
            field, engine = view.field, view.engine
        frame = compose_frame(
            field,
            camera,
            settings,
            engine,
            wait_for_text=wait_for_text,
            lock=self.raster_lock,
            backend=self.backend,
            cache=self.pass_cache,
        )
        if view is not None:
            if view.tint is not None:
                start = time.perf_counter()
                with _locked(self.raster_lock):
                    tinted = tint_image(frame.image, field, camera, view.tint, backend=self.backend)  # type: ignore[arg-type]
                frame.image = to_uint8(tinted)
                frame.timings["tint"] = time.perf_counter() - start
                frame.timings["total"] = frame.timings.get("total", 0.0) + frame.timings["tint"]
            frame.legend.notes.append(view.note)
            frame.pending = tuple(dict.fromkeys(frame.pending + view.pending))
        return frame

    def request_text(self, phrases: Sequence[str]) -> None:
        """Encode ``phrases`` in the background (each phrase once), then call :meth:`on_text_ready`."""
        if self.engine is None:
            return
        with self._text_lock:
            todo = tuple(p for p in dict.fromkeys(phrases) if p not in self._inflight and p not in self.text_errors)
            if not todo:
                return
            future = self.engine.prepare(list(todo), negatives=())
            for p in todo:
                self._inflight[p] = future

        def done(f: Future) -> None:
            error = f.exception()
            with self._text_lock:
                for p in todo:
                    self._inflight.pop(p, None)
                    if error is not None:
                        self.text_errors[p] = str(error)
            self.on_text_ready(todo, f)

        future.add_done_callback(done)

    def await_text(self, settings: ViewSettings, timeout: float) -> None:
        """Encode the phrases ``settings`` shows that are not encoded yet (:meth:`request_text`) and wait
        up to ``timeout`` seconds for them."""
        if self.engine is None or not settings.shows_queries:
            return
        missing = unencoded_phrases(self.engine, settings)
        if not missing:
            return
        self.request_text(missing)
        with self._text_lock:
            futures = {self._inflight[p] for p in missing if p in self._inflight}
        wait_for_futures(futures, timeout=timeout)

    def on_text_ready(self, phrases: tuple[str, ...], future: Future) -> None:
        """Called (on the encoder's thread) when phrases finished encoding or failed."""
