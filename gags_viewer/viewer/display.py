"""Display modes as a table: each one is a render pass (camera + the settings it depends on) and a paint
step (the pass + settings-only choices such as threshold, colours, colormap -> image and legend).

:func:`~gags_viewer.viewer.frame.compose_frame` looks a mode up in :data:`DISPLAYS`, runs (or reuses)
its pass, then paints it. Keeping the two apart is what lets a settings-only change recomposite the last
relevancy without rendering again: the pass's :attr:`Display.key` does not contain those settings.

Modes (see :data:`~gags_viewer.viewer.settings.DISPLAY_MODES`):

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
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np
import torch
from torch import Tensor

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
from gags_viewer.viewer.settings import DISPLAY_LABELS, ViewSettings

MASK_OPACITY = 1.0
"""Masks are solid: the binary mask as evaluated, distinct from the graded overlay."""
MIN_DECODE_ALPHA = 0.5 / 255.0
"""Pixel mode decodes only pixels more opaque than this in the viewer: every display mode weighs a
highlight by the pixel's α (or needs α > 0.5), so a fainter pixel cannot change a displayed colour by a
full level; the evaluation keeps the official protocol (every rendered pixel decoded)."""


@dataclass
class View:
    """What a pass and a paint step see: the field, its engine, the camera and the settings."""

    field: LanguageField
    engine: object
    camera: Camera
    settings: ViewSettings
    backend: str

    @property
    def background(self) -> tuple[float, float, float]:
        return tuple(float(v) / 255.0 for v in self.settings.background)


@dataclass
class Pass:
    """What a render pass produced (only what painting needs).

    Attributes:
        rgb: [H, W, 3] or None; alpha: [H, W]; depth: [H, W] or None.
        features: the D-channel feature map (pca mode). [H, W, D]
        relevancy: [K, H, W] (query modes); probabilities: [H, W, 3] (granularity).
        timings: seconds per phase of the pass.
        level_note: fields with several feature levels (LangSplat): the level each query kept, for the legend.
    """

    alpha: Tensor
    rgb: Tensor | None = None
    depth: Tensor | None = None
    features: Tensor | None = None
    relevancy: Tensor | None = None
    probabilities: Tensor | None = None
    timings: dict = dc_field(default_factory=dict)
    level_note: str = ""


@dataclass(frozen=True)
class Display:
    """One display mode: ``key(settings)`` names what its pass depends on besides the camera and field,
    ``run(view)`` makes the pass, ``paint(pass, view)`` turns it into (image [H, W, 3] float, legend)."""

    key: Callable[[ViewSettings], tuple]
    run: Callable[[View], Pass]
    paint: Callable[[Pass, View], tuple[Tensor, Legend]]


def colorbar(name: str, low: str, high: str) -> tuple[np.ndarray, str, str]:
    lut = (colormap_lut(name).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return lut, low, high


@functools.lru_cache(maxsize=64)
def _constant(values: tuple, device: torch.device) -> Tensor:
    """A small float32 constant on ``device``, made once (no host-to-device copy per frame). [len(values), ...]"""
    return torch.tensor(values, dtype=torch.float32).to(device)


def over_background(colors: Tensor, alpha: Tensor, background: tuple) -> Tensor:
    a = alpha.to(colors)[..., None].clamp(0.0, 1.0)
    return colors * a + _constant(tuple(background), colors.device).to(colors.dtype) * (1.0 - a)


def _timed(timings: dict, phase: str, fn: Callable):
    start = time.perf_counter()
    out = fn()
    timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
    return out


# -- passes -----------------------------------------------------------------------------------------


def run_rgb(view: View) -> Pass:
    timings: dict = {}
    out = _timed(
        timings,
        "render",
        lambda: render(
            view.field, view.camera, rgb=True, background=view.background, backend=view.backend, depth=False
        ),
    )
    return Pass(alpha=out.alpha, rgb=out.rgb, timings=timings)


def _run_geometry(view: View) -> Pass:
    timings: dict = {}
    out = _timed(
        timings, "render", lambda: render(view.field, view.camera, rgb=False, backend=view.backend, depth=True)
    )
    return Pass(alpha=out.alpha, depth=out.depth, timings=timings)


def _run_pca(view: View) -> Pass:
    timings: dict = {}
    out = _timed(timings, "render", lambda: view.engine.render_features(view.camera, rgb=False))
    return Pass(alpha=out.alpha, features=out.features, timings=timings)


def _run_granularity(view: View) -> Pass:
    timings: dict = {}
    probabilities, out = _timed(
        timings,
        "render",
        lambda: view.engine.granularity(view.camera, view.settings.query_mode, rgb=True, background=view.background),
    )
    return Pass(alpha=out.alpha, rgb=out.rgb, probabilities=probabilities, timings=timings)


def _run_query(view: View) -> Pass:
    s = view.settings
    result = view.engine.query(
        view.camera,
        s.queries,
        s.negatives,
        s.query_mode,
        background=view.background,
        rgb=True,
        min_decode_alpha=MIN_DECODE_ALPHA,
    )
    note = ""
    if result.levels is not None:
        names = view.field.metadata.levels
        kept = "; ".join(f"{q} → {names[level]}" for q, level in zip(result.queries, result.levels))
        note = f"level kept (LangSplat rule): {kept}"
    return Pass(
        alpha=result.render.alpha,
        rgb=result.render.rgb,
        relevancy=result.relevancy,
        timings=dict(result.timings),
        level_note=note,
    )


# -- paint steps ------------------------------------------------------------------------------------


def _paint_rgb(p: Pass, view: View) -> tuple[Tensor, Legend]:
    return p.rgb, Legend()


def _paint_alpha(p: Pass, view: View) -> tuple[Tensor, Legend]:
    cmap = view.settings.colormap
    return apply_colormap(p.alpha, cmap), Legend(title="alpha", colorbar=colorbar(cmap, "0", "1"))


def _paint_depth(p: Pass, view: View) -> tuple[Tensor, Legend]:
    cmap = view.settings.colormap
    covered = p.alpha > 0.5
    values = p.depth[covered] if bool(covered.any()) else p.depth[p.alpha > 0]
    if values.numel() == 0:
        near, far = 0.0, 1.0
    else:
        sample = values.float()
        if sample.numel() > 100_000:
            sample = sample[:: sample.numel() // 100_000 + 1]
        near, far = (float(v) for v in torch.quantile(sample, torch.tensor([0.01, 0.99], device=sample.device)))
    scaled = (p.depth - near) / max(far - near, 1e-6)
    image = over_background(apply_colormap(scaled, cmap), p.alpha, view.background)
    return image, Legend(title="depth", colorbar=colorbar(cmap, f"{near:.2f}", f"{far:.2f}"))


def _paint_pca(p: Pass, view: View) -> tuple[Tensor, Legend]:
    image = view.engine.feature_pca().colorize(p.features, p.alpha, view.background)
    return image, Legend(title=f"feature PCA ({view.field.feature_dim}-D → RGB)")


def _paint_granularity(p: Pass, view: View) -> tuple[Tensor, Legend]:
    image = granularity_image(p.probabilities, rgb=p.rgb, alpha=p.alpha)
    swatches = [
        (name, tuple(int(round(float(c) * 255)) for c in rgb))
        for name, rgb in zip(GRANULARITY_NAMES, GRANULARITY_COLORS)
    ]
    return image, Legend(title=f"granularity ({view.settings.query_mode})", swatches=swatches)


def with_contrasting_colors(settings: ViewSettings, engine, wait: bool = True) -> ViewSettings:
    """``settings`` with a colour for every query: the one the user chose, else the palette colour that
    stands out against what the query matches (:meth:`QueryEngine.contrasting_colors`). Unchanged when
    the queries cannot be scored yet (no engine, no negatives, text still encoding, or, unless ``wait``,
    the field's Gaussians not decoded yet); the viewer, its legend and colour pickers, and
    ``gags-viewer render`` all colour queries through this function."""
    queries, negatives = settings.queries, settings.negatives
    missing = [q for q in queries if q not in settings.colors]
    if engine is None or not missing or not negatives or not engine.field.has_language:
        return settings
    if not engine.ready(queries, negatives) or not (wait or engine.gaussians_decoded):
        return settings
    defaults = engine.contrasting_colors(queries, negatives)
    colors = dict(settings.colors)
    for phrase, rgb in zip(queries, defaults.tolist()):
        colors.setdefault(phrase, tuple(int(round(c * 255)) for c in rgb))
    return dataclasses.replace(settings, colors=colors)


def _query_colors(settings: ViewSettings, device: torch.device) -> Tensor:
    """[K, 3] in [0, 1] on ``device``."""
    return _constant(tuple(tuple(float(v) / 255.0 for v in c) for c in settings.query_colors()), device)


def _paint_relevancy(p: Pass, view: View) -> tuple[Tensor, Legend]:
    heat = apply_colormap(p.relevancy.max(dim=0).values, view.settings.colormap)
    return over_background(heat, p.alpha, view.background), query_legend(view.settings, "relevancy", p.level_note)


def _paint_heatmap(p: Pass, view: View) -> tuple[Tensor, Legend]:
    s = view.settings
    image = heatmap_overlay(p.rgb, p.relevancy.max(dim=0).values, s.threshold, s.colormap, alpha=p.alpha)
    return image, query_legend(s, "heatmap", p.level_note)


def _paint_overlay(p: Pass, view: View) -> tuple[Tensor, Legend]:
    s = view.settings
    image = multi_query_overlay(p.rgb, p.relevancy, s.threshold, _query_colors(s, p.rgb.device), alpha=p.alpha)
    return image, query_legend(s, "overlay", p.level_note)


def _paint_mask(p: Pass, view: View) -> tuple[Tensor, Legend]:
    s = view.settings
    mask = binary_mask(p.relevancy, s.threshold, p.alpha)
    image = mask_image(mask, _query_colors(s, p.rgb.device), rgb=p.rgb, opacity=MASK_OPACITY)
    return image, query_legend(s, "mask", p.level_note)


def query_legend(settings: ViewSettings, mode: str, level_note: str = "") -> Legend:
    """The legend of a query display mode (``level_note``: a line saying which level each query kept)."""
    legend = _query_legend(settings, mode)
    if level_note:
        legend.notes.append(level_note)
    return legend


def _query_legend(settings: ViewSettings, mode: str) -> Legend:
    swatches = [(q, settings.color_of(i, q)) for i, q in enumerate(settings.queries)]
    phrases = "; ".join(settings.queries)
    if mode == "relevancy":
        return Legend(
            title=f"relevancy ({settings.query_mode}): {phrases}", colorbar=colorbar(settings.colormap, "0", "1")
        )
    if mode == "heatmap":
        return Legend(
            title=f"relevancy > {settings.threshold:.2f} ({settings.query_mode}): {phrases}",
            colorbar=colorbar(settings.colormap, f"{settings.threshold:.2f}", "1"),
        )
    label = DISPLAY_LABELS.get(mode, mode)
    return Legend(title=f"{label}: relevancy > {settings.threshold:.2f} ({settings.query_mode})", swatches=swatches)


def _rgb_key(s: ViewSettings) -> tuple:
    return ("rgb", tuple(s.background))


def _query_key(s: ViewSettings) -> tuple:
    return ("query", tuple(s.queries), tuple(s.negatives), s.query_mode, tuple(s.background))


DISPLAYS: dict[str, Display] = {
    "rgb": Display(_rgb_key, run_rgb, _paint_rgb),
    "depth": Display(lambda s: ("geometry",), _run_geometry, _paint_depth),
    "alpha": Display(lambda s: ("geometry",), _run_geometry, _paint_alpha),
    "pca": Display(lambda s: ("pca",), _run_pca, _paint_pca),
    "granularity": Display(
        lambda s: ("granularity", s.query_mode, tuple(s.background)), _run_granularity, _paint_granularity
    ),
    "relevancy": Display(_query_key, _run_query, _paint_relevancy),
    "heatmap": Display(_query_key, _run_query, _paint_heatmap),
    "overlay": Display(_query_key, _run_query, _paint_overlay),
    "mask": Display(_query_key, _run_query, _paint_mask),
}
"""Every display mode by name (the keys are :data:`~gags_viewer.viewer.settings.DISPLAY_MODES`)."""
