"""What one browser (or one headless render) asks to see: queries, display mode, colours, resolution.

:class:`ViewSettings` is a plain value: the panels edit a copy per client, the frame composer reads it,
and the ``render`` command builds one from its flags. Nothing here touches viser or the field.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

from gags_viewer.errors import GagsError
from gags_viewer.language.colormaps import COLORMAPS, query_colors
from gags_viewer.language.relevancy import parse_queries

DisplayMode = Literal["rgb", "relevancy", "heatmap", "overlay", "mask", "granularity", "pca", "depth", "alpha"]
QueryMode = Literal["gaussian", "pixel"]
Rendering = Literal["server", "browser"]

DISPLAY_MODES: tuple[str, ...] = (
    "rgb",
    "relevancy",
    "heatmap",
    "overlay",
    "mask",
    "granularity",
    "pca",
    "depth",
    "alpha",
)
"""Every display mode, in the order the viewer lists them."""

__all__ = ["COLORMAPS", "DISPLAY_MODES", "QUERY_MODES", "ViewSettings", "settings_for_render"]

DISPLAY_LABELS: dict[str, str] = {
    "rgb": "RGB",
    "relevancy": "Relevancy heat-map",
    "heatmap": "Heat-map over RGB",
    "overlay": "Query colours over RGB",
    "mask": "Solid masks over RGB",
    "granularity": "Granularity map",
    "pca": "Feature PCA",
    "depth": "Depth",
    "alpha": "Alpha",
}
"""How the viewer names each display mode."""

QUERY_DISPLAY_MODES = frozenset({"relevancy", "heatmap", "overlay", "mask"})
"""Display modes that show query relevancy (they need text queries and language features)."""

LANGUAGE_DISPLAY_MODES = QUERY_DISPLAY_MODES | {"granularity", "pca"}
"""Display modes that need a field with language features."""

QUERY_MODES: tuple[str, ...] = ("gaussian", "pixel")

RENDERINGS: tuple[str, ...] = ("server", "browser")
"""Where a browser's view is drawn: streamed images rendered by the server, or the field's Gaussians sent
once and splatted by the browser (:mod:`gags_viewer.viewer.browser_side`)."""

SELECTION_SHOWS: tuple[str, ...] = ("off", "tinted", "alone", "hidden")
"""How the selected Gaussians are shown: not marked, tinted in their query colour, alone, or hidden."""

COMPARE_LAYOUTS: tuple[str, ...] = ("side", "split", "a", "b")
"""How two compared fields share the image (:mod:`gags_viewer.viewer.compare`): side by side,
split-screen, A alone or B alone."""


DEFAULT_NEGATIVES_TEXT = "object; things; stuff; texture"


def default_query_color(index: int) -> tuple[int, int, int]:
    """Default colour of the ``index``-th query: the language layer's query palette, in 0-255."""
    rgb = query_colors(index + 1)[index]
    return tuple(int(round(float(c) * 255)) for c in rgb)  # type: ignore[return-value]


_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")

RGB = tuple[int, int, int]


def split_phrases(text: str) -> list[str]:
    """Phrases of a ``;``-separated box ("mug; plant") as :func:`parse_queries` splits them, with inner
    whitespace collapsed and repeats dropped, ignoring case and spacing ("lamp; LAMP" is one query; the
    first spelling and the order are kept)."""
    seen: dict[str, str] = {}
    for part in parse_queries(text):
        phrase = " ".join(part.split())
        seen.setdefault(phrase.casefold(), phrase)
    return list(seen.values())


def parse_color(value: str | tuple | list) -> RGB:
    """An RGB colour from "#rrggbb", "rrggbb", "r,g,b" (0-255) or a 3-tuple; a :class:`GagsError` otherwise."""
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        text = str(value).strip()
        match = _HEX.match(text)
        if match:
            code = match.group(1)
            return (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))
        parts = [p for p in re.split(r"[,\s]+", text) if p]
    try:
        rgb = tuple(int(round(float(p))) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise GagsError(f"'{value}' is not a colour; use #rrggbb or r,g,b with values 0-255")
    return rgb  # type: ignore[return-value]


def color_hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


@dataclass
class ViewSettings:
    """Display and query settings of one client (or of one headless render).

    Attributes:
        queries_text: the query box, phrases separated by ``;``.
        negatives_text: the negatives box, phrases separated by ``;``.
        colors: colour chosen for a query phrase (phrases without an entry take the palette colour of
            their position).
        threshold: relevancy threshold of the overlay and mask modes, in [0, 1].
        query_mode: "gaussian" (relevancy per Gaussian, then rendered) or "pixel" (rendered features,
            decoded per pixel, as GAGS evaluates).
        display: what the image shows; see :data:`DISPLAY_MODES`.
        colormap: colormap of the heat-map, depth and alpha modes.
        background: RGB background colour, 0-255.
        viewer_res: longest side of the streamed image while the camera rests, in pixels.
        moving_fps: frame rate aimed for while the camera moves (the resolution drops to reach it).
        selection_text: phrases of the 3D selection (``-`` subtracts: "table; -mug"); empty: the queries.
        selection_threshold: the official rule's threshold on normalised relevancy (0.4 in GAGS).
        selection_radius: the official rule's neighbour-vote radius in world units (0.05 in GAGS, made for
            scenes at COLMAP scale; a field at another scale needs another radius).
        selection_show: how the selection is shown, see :data:`SELECTION_SHOWS` (every display mode).
        compare_layout: with two fields, how they share the image, see :data:`COMPARE_LAYOUTS`.
        compare_split: the split-screen's dividing column as a fraction of the width, in [0, 1].
        rendering: "server" (streamed frames) or "browser" (the browser splats the Gaussians, recoloured
            per query; see :mod:`gags_viewer.viewer.browser_side`).
    """

    queries_text: str = ""
    negatives_text: str = DEFAULT_NEGATIVES_TEXT
    colors: dict[str, RGB] = field(default_factory=dict)
    threshold: float = 0.5
    query_mode: QueryMode = "gaussian"
    display: DisplayMode = "overlay"
    colormap: str = "turbo"
    background: RGB = (0, 0, 0)
    viewer_res: int = 640
    moving_fps: float = 10.0
    selection_text: str = ""
    selection_threshold: float = 0.4
    selection_radius: float = 0.05
    selection_show: str = "off"
    compare_layout: str = "side"
    compare_split: float = 0.5
    rendering: Rendering = "server"

    @property
    def queries(self) -> list[str]:
        return split_phrases(self.queries_text)

    @property
    def negatives(self) -> list[str]:
        return split_phrases(self.negatives_text)

    def color_of(self, index: int, phrase: str) -> RGB:
        """Colour of the query ``phrase`` at position ``index`` of the query list."""
        chosen = self.colors.get(phrase)
        return tuple(chosen) if chosen is not None else default_query_color(index)  # type: ignore[return-value]

    def query_colors(self) -> list[RGB]:
        return [self.color_of(i, q) for i, q in enumerate(self.queries)]

    @property
    def selection_source(self) -> str:
        """The text the 3D selection is made from: the selection box, or the query box when it is empty."""
        return self.selection_text if self.selection_text.strip() else self.queries_text

    @property
    def shows_selection(self) -> bool:
        return self.selection_show != "off" and bool(self.selection_source.strip())

    @property
    def shows_queries(self) -> bool:
        """Whether the display mode shows relevancy (and so needs the query phrases encoded)."""
        return self.display in QUERY_DISPLAY_MODES and bool(self.queries)

    def copy(self, **changes) -> ViewSettings:
        """An independent copy (the colour table is copied too) with ``changes`` applied."""
        out = dataclasses.replace(self, colors=dict(self.colors))
        for key, value in changes.items():
            setattr(out, key, value)
        return out.checked()

    def checked(self) -> ViewSettings:
        """Validate every field; raise :class:`GagsError` naming the first bad one.

        Returns a normalised copy (colours parsed to RGB tuples). ``self`` is never modified: one settings
        object is read by a browser's render thread while its GUI thread replaces it."""
        if self.display not in DISPLAY_MODES:
            raise GagsError(f"unknown display mode '{self.display}'; choose one of {', '.join(DISPLAY_MODES)}")
        if self.query_mode not in QUERY_MODES:
            raise GagsError(f"unknown query mode '{self.query_mode}'; choose gaussian or pixel")
        if self.colormap not in COLORMAPS:
            raise GagsError(f"unknown colormap '{self.colormap}'; choose one of {', '.join(COLORMAPS)}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise GagsError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= float(self.selection_threshold) <= 1.0:
            raise GagsError(f"selection threshold must be in [0, 1], got {self.selection_threshold}")
        if not float(self.selection_radius) >= 0.0:
            raise GagsError(f"selection radius must be 0 or more, got {self.selection_radius}")
        if self.selection_show not in SELECTION_SHOWS:
            raise GagsError(
                f"unknown selection display '{self.selection_show}'; choose one of {', '.join(SELECTION_SHOWS)}"
            )
        if self.compare_layout not in COMPARE_LAYOUTS:
            raise GagsError(
                f"unknown comparison layout '{self.compare_layout}'; choose one of {', '.join(COMPARE_LAYOUTS)}"
            )
        if not 0.0 <= float(self.compare_split) <= 1.0:
            raise GagsError(f"comparison split must be in [0, 1], got {self.compare_split}")
        if self.rendering not in RENDERINGS:
            raise GagsError(f"unknown rendering '{self.rendering}'; choose server or browser")
        background = parse_color(self.background)
        colors = {str(k): parse_color(v) for k, v in self.colors.items()}
        if not 16 <= int(self.viewer_res) <= 4096:
            raise GagsError(f"viewer resolution must be 16-4096 pixels, got {self.viewer_res}")
        if not 0.5 <= float(self.moving_fps) <= 60:
            raise GagsError(f"moving frame rate must be 0.5-60, got {self.moving_fps}")
        return dataclasses.replace(self, background=background, colors=colors)


def settings_for_render(
    queries: str | None,
    mode: str | None,
    negatives: str | None = None,
    threshold: float = 0.5,
    query_mode: str = "gaussian",
    colormap: str = "turbo",
    background: str = "0,0,0",
    colors: str | None = None,
) -> ViewSettings:
    """Settings from the ``render`` command's flags.

    ``mode`` defaults to "overlay" when there are queries and "rgb" otherwise. ``colors`` is a
    ``;``-separated list of colours given to the queries in order.
    """
    queries = queries or ""
    if mode is None:
        mode = "overlay" if split_phrases(queries) else "rgb"
    settings = ViewSettings(
        queries_text=queries,
        negatives_text=DEFAULT_NEGATIVES_TEXT if negatives is None else negatives,
        threshold=threshold,
        query_mode=query_mode,  # type: ignore[arg-type]
        display=mode,  # type: ignore[arg-type]
        colormap=colormap,
        background=parse_color(background),
    )
    if colors:
        phrases = settings.queries
        given = [c for c in colors.split(";") if c.strip()]
        if len(given) > len(phrases):
            raise GagsError(f"{len(given)} colours given for {len(phrases)} queries")
        settings.colors = {phrase: parse_color(c) for phrase, c in zip(phrases, given)}
    if mode in QUERY_DISPLAY_MODES and not settings.queries:
        raise GagsError(f"display mode '{mode}' needs at least one query (--query \"mug; plant\")")
    return settings.checked()
