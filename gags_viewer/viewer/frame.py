"""One frame: field + query engine + camera + settings -> an RGB image and its legend.

:func:`compose_frame` is the only place a displayed image is made: the viewer streams it, the PNG and
video exports draw its legend onto it, and ``gags-viewer render`` writes it to disk, so all three show
the same pixels for the same camera and settings.

Display modes (see :data:`~gags_viewer.viewer.settings.DISPLAY_MODES`):

- ``rgb``: the colour render over the background.
- ``relevancy``: the relevancy heat-map (the maximum over the queries, through the colormap), faded
  into the background where nothing was rendered.
- ``heatmap``: the heat-map over the RGB render where relevancy exceeds the threshold (LERF style).
- ``overlay``: every query in its own colour over the RGB render where it exceeds the threshold.
- ``mask``: the thresholded (evaluated) masks, each solid in its query colour, over the RGB render;
  ``overlay`` instead blends by how far relevancy exceeds the threshold.
- ``granularity``: the granularity decoder's class (subpart / part / whole) per pixel over RGB.
- ``pca``: the language features projected to RGB (a projection fitted once per field).
- ``depth`` / ``alpha``: expected depth (1st-99th percentile of the covered pixels) and accumulated
  opacity, through the colormap.

Query modes come from the engine: ``gaussian`` (relevancy per Gaussian, then rendered) or ``pixel``
(features rendered, then decoded per pixel).
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field as dc_field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.language.colormaps import GRANULARITY_COLORS, GRANULARITY_NAMES, apply_colormap, colormap_lut
from gags_viewer.language.composite import (
    binary_mask,
    granularity_image,
    heatmap_overlay,
    mask_image,
    multi_query_overlay,
)
from gags_viewer.render.api import render
from gags_viewer.render.camera import Camera
from gags_viewer.viewer.export import Legend
from gags_viewer.viewer.selection_view import SelectionViews
from gags_viewer.viewer.settings import DISPLAY_LABELS, LANGUAGE_DISPLAY_MODES, QUERY_DISPLAY_MODES, ViewSettings

MASK_OPACITY = 1.0
"""Masks are solid: the binary mask as evaluated, distinct from the graded overlay."""


@dataclass
class Frame:
    """A composed frame.

    Attributes:
        image: [H, W, 3] uint8.
        legend: what the colours mean (drawn onto exports, shown beside the view in the viewer).
        pending: phrases that still had to be encoded (only when not waiting for text); the image then
            shows the RGB render.
        timings: seconds per phase ("render", "decode", "relevancy", "composite", "total", ...).
    """

    image: np.ndarray
    legend: Legend
    pending: tuple[str, ...] = ()
    timings: dict[str, float] = dc_field(default_factory=dict)


def to_uint8(image: Tensor) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (any device) -> contiguous uint8 numpy."""
    return (image.detach().float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _locked(lock: Optional[threading.Lock]):
    """``lock`` as a context manager (nothing when None).

    The plain ``with lock`` form matters: nerfview raises its interrupt from a trace function at any
    Python line of the render thread, and only the lock's own C-level enter/exit leave no line between
    acquiring and releasing where that could strand the lock.
    """
    return contextlib.nullcontext() if lock is None else lock


def _colorbar(name: str, low: str, high: str) -> tuple[np.ndarray, str, str]:
    lut = (colormap_lut(name).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return lut, low, high


def _over_background(colors: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    a = alpha.to(colors)[..., None].clamp(0.0, 1.0)
    return colors * a + background.to(colors) * (1.0 - a)


def needs_language(settings: ViewSettings) -> bool:
    return settings.display in LANGUAGE_DISPLAY_MODES


def compose_frame(
    field: LanguageField,
    camera: Camera,
    settings: ViewSettings,
    engine=None,
    *,
    wait_for_text: bool = True,
    lock: Optional[threading.Lock] = None,
    backend: str = "auto",
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

    Raises:
        GagsError: a language mode on a field without language features, or without an engine.
    """
    start = time.perf_counter()
    settings = settings.checked()
    mode = settings.display
    background = torch.tensor(settings.background, dtype=torch.float32) / 255.0
    bg = tuple(float(v) for v in background)
    timings: dict[str, float] = {}

    if needs_language(settings):
        if not field.has_language:
            raise GagsError(
                f"display mode '{mode}' needs language features; this field is RGB only (use rgb, depth or alpha)"
            )
        if engine is None:
            raise GagsError(f"display mode '{mode}' needs a query engine")

    queries = settings.queries
    negatives = settings.negatives
    if mode in QUERY_DISPLAY_MODES and not queries:
        with _locked(lock):
            out = render(field, camera, rgb=True, background=bg, backend=backend)
        legend = Legend(title="Type a query (e.g. mug; plant)")
        return _finish(out.rgb, legend, (), timings, start)
    if mode in QUERY_DISPLAY_MODES and not negatives:
        raise GagsError("relevancy needs at least one negative phrase")

    if mode in QUERY_DISPLAY_MODES and not wait_for_text and not engine.ready(queries, negatives):
        with _locked(lock):
            out = render(field, camera, rgb=True, background=bg, backend=backend)
        missing = tuple(p for p in list(queries) + list(negatives) if engine.text_encoder.cached(p) is None)
        legend = _query_legend(settings, mode)
        legend.notes.append("encoding " + ", ".join(f"'{p}'" for p in missing[:3]) + ("…" if len(missing) > 3 else "") + "…")
        return _finish(out.rgb, legend, missing, timings, start)

    if mode == "rgb":
        with _locked(lock):
            t0 = time.perf_counter()
            out = render(field, camera, rgb=True, background=bg, backend=backend)
            timings["render"] = time.perf_counter() - t0
        return _finish(out.rgb, Legend(), (), timings, start)

    if mode in ("depth", "alpha"):
        with _locked(lock):
            t0 = time.perf_counter()
            out = render(field, camera, rgb=False, background=bg, backend=backend)
            timings["render"] = time.perf_counter() - t0
        if mode == "alpha":
            image = apply_colormap(out.alpha, settings.colormap)
            return _finish(image, Legend(title="alpha", colorbar=_colorbar(settings.colormap, "0", "1")), (), timings, start)
        covered = out.alpha > 0.5
        values = out.depth[covered] if bool(covered.any()) else out.depth[out.alpha > 0]
        if values.numel() == 0:
            near, far = 0.0, 1.0
        else:
            sample = values.float()
            if sample.numel() > 100_000:
                sample = sample[:: sample.numel() // 100_000 + 1]
            near, far = (float(v) for v in torch.quantile(sample, torch.tensor([0.01, 0.99], device=sample.device)))
        scaled = (out.depth - near) / max(far - near, 1e-6)
        image = _over_background(apply_colormap(scaled, settings.colormap), out.alpha, background)
        legend = Legend(title="depth", colorbar=_colorbar(settings.colormap, f"{near:.2f}", f"{far:.2f}"))
        return _finish(image, legend, (), timings, start)

    if mode == "pca":
        with _locked(lock):
            t0 = time.perf_counter()
            out = engine.render_features(camera, rgb=False, background=bg)
            timings["render"] = time.perf_counter() - t0
        image = engine.feature_pca().colorize(out.features, out.alpha, bg)
        return _finish(image, Legend(title=f"feature PCA ({field.feature_dim}-D → RGB)"), (), timings, start)

    if mode == "granularity":
        with _locked(lock):
            t0 = time.perf_counter()
            probabilities, out = engine.granularity(camera, settings.query_mode, rgb=True, background=bg)
            timings["render"] = time.perf_counter() - t0
        image = granularity_image(probabilities, rgb=out.rgb, alpha=out.alpha)
        swatches = [
            (name, tuple(int(round(float(c) * 255)) for c in rgb))
            for name, rgb in zip(GRANULARITY_NAMES, GRANULARITY_COLORS)
        ]
        return _finish(image, Legend(title=f"granularity ({settings.query_mode})", swatches=swatches), (), timings, start)

    # relevancy, heatmap, overlay, mask
    with _locked(lock):
        result = engine.query(camera, queries, negatives, settings.query_mode, background=bg, rgb=True)
    timings.update(result.timings)
    relevancy, rgb, alpha = result.relevancy, result.render.rgb, result.render.alpha
    legend = _query_legend(settings, mode)
    if mode == "relevancy":
        heat = apply_colormap(relevancy.max(dim=0).values, settings.colormap)
        image = _over_background(heat, alpha, background)
    elif mode == "heatmap":
        image = heatmap_overlay(rgb, relevancy.max(dim=0).values, settings.threshold, settings.colormap, alpha=alpha)
    elif mode == "overlay":
        colors = torch.tensor(settings.query_colors(), dtype=torch.float32) / 255.0
        image = multi_query_overlay(rgb, relevancy, settings.threshold, colors, alpha=alpha)
    else:  # mask
        colors = torch.tensor(settings.query_colors(), dtype=torch.float32) / 255.0
        mask = binary_mask(relevancy, settings.threshold, alpha)
        image = mask_image(mask, colors, rgb=rgb, opacity=MASK_OPACITY)
    return _finish(image, legend, (), timings, start)


def _query_legend(settings: ViewSettings, mode: str) -> Legend:
    label = DISPLAY_LABELS.get(mode, mode)
    swatches = [(q, settings.color_of(i, q)) for i, q in enumerate(settings.queries)]
    if mode == "relevancy":
        return Legend(
            title=f"relevancy ({settings.query_mode}): {'; '.join(settings.queries)}",
            colorbar=_colorbar(settings.colormap, "0", "1"),
        )
    if mode == "heatmap":
        return Legend(
            title=f"relevancy > {settings.threshold:.2f} ({settings.query_mode}): {'; '.join(settings.queries)}",
            colorbar=_colorbar(settings.colormap, f"{settings.threshold:.2f}", "1"),
        )
    return Legend(title=f"{label}: relevancy > {settings.threshold:.2f} ({settings.query_mode})", swatches=swatches)


def _finish(image: Tensor, legend: Legend, pending: Sequence[str], timings: dict, start: float) -> Frame:
    t0 = time.perf_counter()
    array = to_uint8(image)
    timings["composite"] = timings.get("composite", 0.0) + (time.perf_counter() - t0)
    timings["total"] = time.perf_counter() - start
    return Frame(array, legend, tuple(pending), timings)


class FrameSource:
    """A field and its query engine, composing frames for several threads.

    Holds the raster lock, and encodes phrases in the background for callers that cannot wait
    (:meth:`request_text`; override :meth:`on_text_ready` to hear when they are done).
    """

    def __init__(self, field: LanguageField, engine=None, *, backend: str = "auto"):
        self.field = field
        self.engine = engine
        self.backend = backend
        self.raster_lock: Optional[threading.Lock] = threading.Lock()
        """Serialises frames between threads when the rasterizer needs it (see :meth:`warm_up`)."""
        self._text_lock = threading.Lock()
        self._inflight: dict[str, Future] = {}
        self.text_errors: dict[str, str] = {}
        self.selections = SelectionViews()
        """3D selections and their display copies (:mod:`gags_viewer.viewer.selection_view`)."""

    def warm_up(self) -> float:
        """Render one small frame on the calling thread; returns the seconds it took.

        This imports and JIT-compiles the rasterizer before any render thread needs it (numba must not
        be imported from two threads at once), and decides whether frames of different browsers may
        render at the same time: yes unless numba runs on its "workqueue" thread pool, which aborts the
        process when two threads enter it; then :attr:`raster_lock` serialises frames.
        """
        from gags_viewer.viewer.camera_path import camera_from_fov, default_framing

        start = time.perf_counter()
        framing = default_framing(self.field)
        camera = camera_from_fov(framing.c2w(), np.radians(framing.fov_y_deg), 64, 48)
        with _locked(self.raster_lock):
            render(self.field, camera, rgb=True, backend=self.backend)
        if self.field.means.device.type == "cpu":
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
        failed = [p for p in settings.queries + settings.negatives if p in self.text_errors] if settings.shows_queries else []
        if failed:
            raise GagsError(f"cannot encode '{failed[0]}': {self.text_errors[failed[0]]}")
        engine = self.engine  # one read: the engine's own field is the field it belongs to (edits swap both)
        field = self.field if engine is None else engine.field
        view = None
        if settings.shows_selection and engine is not None:
            view = self.selections.view(engine, settings, wait_for_text)  # the selection is shown by the field
            field, engine = view.field, view.engine
        frame = compose_frame(field, camera, settings, engine, wait_for_text=wait_for_text, lock=self.raster_lock,
                              backend=self.backend)
        if view is not None:
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

    def on_text_ready(self, phrases: tuple[str, ...], future: Future) -> None:
        """Called (on the encoder's thread) when phrases finished encoding or failed."""
