"""Two fields of one scene under one camera: side by side or split-screen, each with its own legend.

``gags-viewer view A B`` and ``gags-viewer render A B``: A is the viewer's own field (its queries,
selection and edits), B a second :class:`~gags_viewer.viewer.frame.FrameSource` beside it (GAGS against
LangSplat, or two training runs). Every frame renders both with the same camera and the same settings
(queries, negatives, threshold, display and query mode), and a phrase has one colour on both sides
(chosen from A, or from B when A has no language features). The layouts
(:data:`~gags_viewer.viewer.settings.COMPARE_LAYOUTS`):

- ``side``: A left, B right, each rendered with the same half-width camera: the browser's camera
  cropped to its middle columns (same pose, focal length and rows), so both halves show the same view at
  the same scale;
- ``split``: both rendered with the full camera; A left of the split column, B right of it;
- ``a`` / ``b``: one field alone (flip between them to compare in place).

Each side's legend, led by its label, is drawn in its part of the image, so the frame carries its
legends (:attr:`Frame.legend_drawn`) and exports draw nothing more. A side that cannot show the display
mode (an RGB-only field, no granularity decoder, queries off) shows RGB and says why in its legend.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera
from gags_viewer.viewer.display import with_contrasting_colors
from gags_viewer.viewer.export import Legend, draw_legend
from gags_viewer.viewer.frame import Frame, FrameSource
from gags_viewer.viewer.settings import LANGUAGE_DISPLAY_MODES, ViewSettings

LAYOUT_LABELS: dict[str, str] = {"side": "Side by side", "split": "Split screen", "a": "A only", "b": "B only"}
"""How the viewer names each comparison layout."""

DIVIDER_WIDTH = 2
"""Pixels of the line between the two sides."""
DIVIDER_RGB = (255, 211, 105)
MIN_LEGEND_WIDTH = 24
"""A side narrower than this (a split near the edge) gets no legend."""


@dataclass
class Side:
    """One compared field: its frames, its label, and why it cannot be queried (None when it can)."""

    source: FrameSource
    label: str
    queries_off: str | None = None

    def shown(self, settings: ViewSettings) -> tuple[ViewSettings, str | None]:
        """The settings this side can show, and a note when they are less than asked (RGB instead)."""
        field = self.source.field
        if settings.display in LANGUAGE_DISPLAY_MODES:
            if self.queries_off:
                return settings.copy(display="rgb", selection_show="off"), f"RGB only: queries off ({self.queries_off})"
            if self.source.engine is None or not field.has_language:
                return settings.copy(display="rgb", selection_show="off"), "RGB only: no language features"
        if settings.display == "granularity" and field.granularity_decoder is None:
            return settings.copy(display="rgb"), "RGB only: no granularity decoder"
        return settings, None


class _SecondSource(FrameSource):
    """Field B's frames; when phrases it encoded in the background are ready, ``on_ready()`` is called."""

    def __init__(self, field: LanguageField, engine=None, *, backend: str = "auto"):
        super().__init__(field, engine, backend=backend)
        self.on_ready: Callable[[], None] = lambda: None

    def on_text_ready(self, phrases: tuple[str, ...], future: Future) -> None:
        self.on_ready()


def half_camera(camera: Camera, width: int) -> Camera:
    """The middle ``width`` columns of ``camera``'s view: same pose, focal lengths and rows, the principal
    point moved left by the columns cut on each side."""
    K = camera.K.clone()
    K[0, 2] -= (camera.width - width) / 2
    return Camera(camera.world_to_camera, K, int(width), camera.height)


def clicked_view(camera: Camera, x: int, settings: ViewSettings) -> tuple[Camera, int]:
    """Where a click at column ``x`` of the comparison frame lands in one field's own view: side by side,
    the shared half camera and the column within the clicked half (the halves show the same view); in
    the other layouts the full camera and ``x`` itself."""
    if settings.compare_layout != "side":
        return camera, x
    half = max(1, (camera.width - DIVIDER_WIDTH) // 2)
    column = x if x < half else x - (camera.width - half)
    return half_camera(camera, half), min(max(column, 0), half - 1)


def side_legend(tag: str, side: Side, legend: Legend, note: str | None) -> Legend:
    """A side's legend: its tag and label first, then what its colours mean."""
    notes = ([legend.title] if legend.title else []) + ([note] if note else []) + list(legend.notes)
    return Legend(title=f"{tag} · {side.label}", swatches=list(legend.swatches), colorbar=legend.colorbar, notes=notes)


def alignment_note(a: LanguageField, b: LanguageField) -> str | None:
    """A one-line warning when two fields do not look like the same scene in the same coordinates (their
    robust bounds overlap by less than half the smaller extent along some axis, or their sizes differ
    more than threefold); None when they look aligned."""
    (low_a, high_a), (low_b, high_b) = (tuple(t.double().cpu() for t in f.bounds()) for f in (a, b))
    extent_a, extent_b = (high_a - low_a), (high_b - low_b)
    scale = float(torch.maximum(extent_a, extent_b).max().clamp(min=1e-12))
    overlap = (torch.minimum(high_a, high_b) - torch.maximum(low_a, low_b)).clamp(min=0)
    smaller = torch.minimum(extent_a, extent_b).clamp(min=1e-3 * scale)
    size_ratio = float(extent_a.norm() / extent_b.norm().clamp(min=1e-12))
    if bool((overlap >= 0.5 * smaller).all()) and 1 / 3 <= size_ratio <= 3:
        return None

    def box(low, high) -> str:
        return f"{[round(v, 2) for v in low.tolist()]}..{[round(v, 2) for v in high.tolist()]}"

    return (
        f"the two fields do not look aligned (bounds {box(low_a, high_a)} and {box(low_b, high_b)}): "
        "are they of the same scene, in the same coordinates?"
    )


class Comparison:
    """Field B beside a field A: composes the frames that show both (see the module docstring).

    Args:
        second: field B's frames (its own field, engine, caches and raster lock).
        labels: what the legends call A and B (e.g. their directory names).
        first_queries_off, second_queries_off: why a side with language features cannot be queried.
    """

    def __init__(
        self,
        field: LanguageField,
        engine=None,
        labels: tuple[str, str] = ("A", "B"),
        *,
        backend: str = "auto",
        first_queries_off: str | None = None,
        second_queries_off: str | None = None,
    ):
        self.second = Side(_SecondSource(field, engine, backend=backend), labels[1], second_queries_off)
        self.first_label = labels[0]
        self.first_queries_off = first_queries_off

    @property
    def labels(self) -> tuple[str, str]:
        return self.first_label, self.second.label

    def on_second_text(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when phrases B encoded in the background are ready (the viewer re-renders)."""
        self.second.source.on_ready = callback  # type: ignore[attr-defined]

    def warm_up(self, raster_lock) -> None:
        """Share A's raster lock (B's frames must not enter a rasterizer A's frames hold) and start
        building B's per-field caches in the background."""
        self.second.source.raster_lock = raster_lock
        self.second.source.prepare_field()

    def compose(
        self,
        first: FrameSource,
        camera: Camera,
        settings: ViewSettings,
        *,
        wait_for_text: bool = True,
        legends: bool = True,
    ) -> Frame:
        """The frame showing A (``first``) and B with ``camera`` and ``settings``.

        Each side is :meth:`FrameSource.compose` of its own field. Without ``wait_for_text``, phrases A
        still encodes are in ``Frame.pending`` (the caller asks A for them); B asks for its own and calls
        back (:meth:`on_second_text`). ``legends``: draw each side's legend in its part.

        Returns:
            Frame with image [camera.height, camera.width, 3] uint8.
        """
        sides = (Side(first, self.first_label, self.first_queries_off), self.second)
        settings = self._shared_colors(settings.checked(), sides, wait_for_text)
        layout, width = settings.compare_layout, camera.width
        if layout in ("a", "b"):
            index = 0 if layout == "a" else 1
            frame, legend = self._side_frame(index, sides[index], camera, settings, wait_for_text)
            parts = [(0, width, legend)]
            frames = {index: frame}
            image = frame.image.copy()
        elif layout == "side":
            half = max(1, (width - DIVIDER_WIDTH) // 2)
            cam = half_camera(camera, half)
            (fa, la), (fb, lb) = (self._side_frame(i, s, cam, settings, wait_for_text) for i, s in enumerate(sides))
            frames = {0: fa, 1: fb}
            image = np.empty((camera.height, width, 3), dtype=np.uint8)
            image[:] = DIVIDER_RGB
            image[:, :half] = fa.image
            image[:, width - half :] = fb.image
            parts = [(0, half, la), (width - half, width, lb)]
        else:
            (fa, la), (fb, lb) = (self._side_frame(i, s, camera, settings, wait_for_text) for i, s in enumerate(sides))
            frames = {0: fa, 1: fb}
            column = int(round(float(settings.compare_split) * width))
            image = fb.image.copy()
            image[:, :column] = fa.image[:, :column]
            image[:, max(0, column - DIVIDER_WIDTH // 2) : column + (DIVIDER_WIDTH + 1) // 2] = DIVIDER_RGB
            parts = [(0, column, la), (column, width, lb)]
        if legends:
            for start, stop, legend in parts:
                if stop - start >= MIN_LEGEND_WIDTH:
                    image[:, start:stop] = draw_legend(np.ascontiguousarray(image[:, start:stop]), legend)
        return self._combined(frames, image, legends)

    def _side_frame(self, index: int, side: Side, camera: Camera, settings: ViewSettings, wait: bool):
        shown, note = side.shown(settings)
        frame = FrameSource.compose(side.source, camera, shown, wait_for_text=wait)
        if index == 1 and frame.pending:
            side.source.request_text(frame.pending)
        return frame, side_legend("AB"[index], side, frame.legend, note)

    @staticmethod
    def _shared_colors(settings: ViewSettings, sides: tuple[Side, Side], wait: bool) -> ViewSettings:
        """``settings`` with each query's colour fixed: from the first side that can score queries, else
        (its text or Gaussians not ready yet) the palette's, so that the sides never colour a phrase
        differently."""
        if not settings.shows_queries:
            return settings
        for side in sides:
            engine = side.source.engine
            if engine is not None and side.source.field.has_language and not side.queries_off:
                settings = with_contrasting_colors(settings, engine, wait=wait)
                break
        pinned = {q: settings.color_of(i, q) for i, q in enumerate(settings.queries)}
        return settings.copy(colors=pinned)

    def _combined(self, frames: dict[int, Frame], image: np.ndarray, legends: bool) -> Frame:
        first = frames.get(0, frames.get(1))
        panel = first.legend
        label_a, label_b = self.labels
        summary = Legend(
            title=panel.title,
            swatches=list(panel.swatches),
            colorbar=panel.colorbar,
            notes=[f"A = {label_a}, B = {label_b}"] + list(panel.notes),
        )
        timings: dict[str, float] = {}
        for frame in frames.values():
            for key, value in frame.timings.items():
                timings[key] = timings.get(key, 0.0) + value
        pending = frames[0].pending if 0 in frames else ()
        return Frame(image, summary, pending, timings, legend_drawn=legends)


def comparison_labels(a, b) -> tuple[str, str]:
    """Short labels for two field paths: their last path components, more of them until they differ
    (``run1/scene`` and ``run2/scene``)."""
    parts_a, parts_b = Path(a).parts, Path(b).parts
    for depth in range(1, max(len(parts_a), len(parts_b)) + 1):
        label_a, label_b = "/".join(parts_a[-depth:]), "/".join(parts_b[-depth:])
        if label_a != label_b:
            return label_a, label_b
    return str(a), str(b)
