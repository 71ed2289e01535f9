"""Showing a 3D selection in every display mode.

A browser's settings name a selection (:attr:`ViewSettings.selection_source`, the official per-Gaussian
query of :mod:`gags_viewer.language.selection`) and how to show it:

- ``alone`` / ``hidden``: the field is changed before rendering: :meth:`SelectionViews.view` returns a
  display copy with the same Gaussians in the same order, the others (or the selected ones) transparent,
  and a query engine on that copy which shares the original engine's per-Gaussian caches, so every display
  mode (RGB, relevancy, PCA, granularity, depth...) renders it and nothing is decoded again;
- ``tinted``: the selected Gaussians take on their query's colour. Where the display shows the field's
  colours (:data:`COLOUR_MODES`) their colours are changed before rendering (:func:`~gags_viewer.field.edit.tinted`,
  no extra pass); in the other modes (relevancy, PCA, depth, alpha) the same colours are composited in one
  more render pass and blended into the displayed image where those Gaussians are seen (:func:`tint_image`).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from gags_viewer.field.edit import shown_only, tinted
from gags_viewer.field.language_field import LanguageField
from gags_viewer.language.selection import GaussianSelector, OfficialRule, Selection, parse_selection
from gags_viewer.render.api import BackendName, render
from gags_viewer.render.camera import Camera
from gags_viewer.viewer.settings import LANGUAGE_DISPLAY_MODES, ViewSettings, default_query_color

TINT_STRENGTH = 0.65
"""How far a fully tinted Gaussian (or pixel fully covered by the selection) moves towards its query colour."""

COLOUR_MODES = frozenset({"rgb", "heatmap", "overlay", "mask", "granularity"})
"""Display modes that show the field's own colours: a tint there recolours the selected Gaussians."""


def engine_on(engine, field: LanguageField):
    """A shallow copy of ``engine`` that renders ``field`` (same Gaussians, same order as ``engine.field``).

    The copy shares the engine's decoders, text encoder, similarity cache and the per-Gaussian tensors
    already computed; the caller warms those it needs on the original first (:func:`warm`).
    """
    view = copy.copy(engine)
    view.field = field
    return view


def warm(engine, settings: ViewSettings) -> None:
    """Compute the per-Gaussian caches ``settings`` needs on ``engine`` itself, so copies share them."""
    if settings.display in LANGUAGE_DISPLAY_MODES and settings.query_mode == "gaussian" and settings.display != "pca":
        engine.gaussian_clip_features()
    if settings.display == "pca":
        engine.feature_pca()


def tint_channels(terms, term_masks: Tensor, mask: Tensor, colors) -> Tensor:
    """Per-Gaussian channels of a tint: (colour · m, m), m = 1 for a selected Gaussian. [N, 4]

    A selected Gaussian takes the colour of the last added term that selects it.

    Args:
        terms: the selection's terms (``-`` terms add no colour).
        term_masks: what each term selects. [T, N] bool
        mask: the combined selection. [N] bool
        colors: one (r, g, b) 0-255 per term.
    """
    selected = mask.float()
    rgb = torch.zeros(mask.shape[0], 3, dtype=torch.float32, device=mask.device)
    for term, term_mask, color in zip(terms, term_masks, colors):
        if not term.subtract:
            rgb[term_mask & mask] = torch.tensor(color, dtype=torch.float32, device=mask.device) / 255.0
    return torch.cat([rgb, selected[:, None]], dim=1)


def tint_image(
    image: np.ndarray,
    field: LanguageField,
    camera: Camera,
    channels: Tensor,
    strength: float = TINT_STRENGTH,
    backend: BackendName = "auto",
) -> Tensor:
    """Blend a selection's colours into a displayed image, where its Gaussians are seen.

    ``channels`` (:func:`tint_channels`) are composited like any per-Gaussian channel, so occlusion is
    respected: c = Σ wᵢ·mᵢ is the share of the pixel the selected Gaussians make, t = Σ wᵢ·mᵢ·colourᵢ;
    the pixel becomes (1 − strength·c)·pixel + strength·t. Any display mode's image can be tinted.

    Args:
        image: the composed frame. [H, W, 3] uint8 (H, W = camera.height, camera.width)
        field: the shown field. channels: [N, 4].

    Returns:
        The tinted image in [0, 1]. [H, W, 3] float
    """
    composited = render(field, camera, rgb=False, features=channels.to(field.means), depth=False, backend=backend)
    coverage = cast(Tensor, composited.features).float()
    pixel = torch.from_numpy(np.ascontiguousarray(image)).to(coverage.device, torch.float32) / 255.0
    return pixel * (1.0 - strength * coverage[..., 3:]) + strength * coverage[..., :3]


def term_color(settings: ViewSettings, phrase: str, position: int) -> tuple[int, int, int]:
    """A selection phrase's colour: its query colour when it is also a query, else the palette's."""
    queries = settings.queries
    if phrase in queries:
        return settings.color_of(queries.index(phrase), phrase)
    chosen = settings.colors.get(phrase)
    return tuple(chosen) if chosen is not None else default_query_color(position)  # type: ignore[return-value]


@dataclass
class SelectionView:
    """What a frame shows instead of the field: ``field``/``engine`` (display copies, or the originals),
    the selection, and a legend note; ``pending`` lists phrases still being encoded (then field/engine are
    the originals). ``tint``: the channels :func:`tint_image` blends in (shown ``tinted``), else None."""

    field: LanguageField
    engine: object
    selection: Selection | None
    note: str = ""
    pending: tuple[str, ...] = ()
    tint: Tensor | None = None


class SelectionViews:
    """Selectors (one per engine, i.e. per shown field) and the display copies of recent selections."""

    def __init__(self, capacity: int = 8):
        self._lock = threading.Lock()
        self._selectors: OrderedDict[int, tuple[object, GaussianSelector]] = OrderedDict()
        self._views: OrderedDict[tuple, tuple[object, SelectionView]] = OrderedDict()
        self._capacity = capacity

    def selector(self, engine) -> GaussianSelector:
        """The :class:`GaussianSelector` of ``engine`` (created once and kept while the engine is recent)."""
        with self._lock:
            entry = self._selectors.get(id(engine))
            if entry is None or entry[0] is not engine:
                entry = (engine, GaussianSelector(engine))
                self._selectors[id(engine)] = entry
            self._selectors.move_to_end(id(engine))
            while len(self._selectors) > self._capacity:
                self._selectors.popitem(last=False)
            return entry[1]

    def select(self, engine, settings: ViewSettings) -> Selection:
        """The official selection of ``settings.selection_source`` on ``engine``'s field."""
        rule = OfficialRule(threshold=float(settings.selection_threshold), radius=float(settings.selection_radius))
        with torch.no_grad():
            return self.selector(engine).select(settings.selection_source, settings.negatives, official=rule)

    def view(self, engine, settings: ViewSettings, wait_for_text: bool = True) -> SelectionView:
        """The display copy for ``settings`` (cached per field, phrases, threshold, display and colours)."""
        terms = parse_selection(settings.selection_source)
        phrases = [t.phrase for t in terms]
        if not wait_for_text and not engine.ready(phrases, settings.negatives):
            missing = tuple(p for p in phrases + settings.negatives if engine.text_encoder.cached(p) is None)
            return SelectionView(engine.field, engine, None, "encoding the selection…", missing)
        colors = tuple(term_color(settings, t.phrase, i) for i, t in enumerate(terms))
        key = (
            id(engine),
            settings.selection_source,
            tuple(settings.negatives),
            float(settings.selection_threshold),
            float(settings.selection_radius),
            settings.selection_show,
            colors,
            settings.display,
            settings.query_mode,
        )
        with self._lock:
            cached = self._views.get(key)
        if cached is not None and cached[0] is engine:
            return cached[1]
        selection = self.select(engine, settings)
        field = engine.field
        show = settings.selection_show
        note = f"selection {show}: {selection.count:,} of {field.num_gaussians:,} Gaussians (official rule > {settings.selection_threshold:.2f})"
        if show == "tinted":
            tint = tint_channels(selection.terms, selection.term_masks, selection.mask, colors)
            if settings.display not in COLOUR_MODES:  # blended into the image (tint_image)
                result = SelectionView(field, engine, selection, note, tint=tint)
            else:
                result = self._shown(engine, tinted(field, tint, TINT_STRENGTH), settings, selection, note)
        else:
            visible = selection.mask if show == "alone" else ~selection.mask
            result = self._shown(engine, shown_only(field, visible), settings, selection, note)
        with self._lock:
            self._views[key] = (engine, result)
            while len(self._views) > self._capacity:
                self._views.popitem(last=False)
        return result

    @staticmethod
    def _shown(engine, shown: LanguageField, settings: ViewSettings, selection: Selection, note: str) -> SelectionView:
        """A display copy of the field and an engine on it sharing ``engine``'s (warmed) caches."""
        warm(engine, settings)
        return SelectionView(shown, engine_on(engine, shown), selection, note)
