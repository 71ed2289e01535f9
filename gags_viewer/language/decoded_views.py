"""Pixel mode's last decoded view, kept so that a query change at rest decodes nothing.

Decoding every covered pixel through the MLP is nearly all of a pixel-mode frame (about a second at
640×480 on two CPU cores), and it depends on the view only: with the decoder's last layer folded into
the phrases, the relevancy of any phrases follows from each pixel's last hidden activation and the norm
of its decoded vector (:class:`~gags_viewer.language.pixel_relevancy.DecodedPixels`). The query engine
keeps those, with the render pass, for the last view it decoded, so a new query on that view costs one
[P, width] × [width, K + M] product and no render.

One view per engine (display copies of an engine share its cache, and entries are checked against the
field they were decoded from), and only while it fits a memory budget: the hidden activations take
width × 4 bytes per pixel in float32 (about 300 MB for a fully covered 640×480 view with GAGS's
256-wide decoder), so larger views are decoded chunk by chunk and not kept.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from gags_viewer.field.language_field import LanguageField
from gags_viewer.language.pixel_relevancy import DecodedPixels
from gags_viewer.render.api import RenderOutput

DEFAULT_MAX_BYTES = 512 * 2**20


@dataclass(frozen=True)
class DecodedView:
    """A rendered view (its render pass) and its decoded pixels, one :class:`DecodedPixels` per level."""

    render: RenderOutput
    levels: tuple[DecodedPixels, ...]


class DecodedViewCache:
    """One :class:`DecodedView`, by (field, key); ``max_bytes`` bounds what may be kept (0: nothing)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entry: tuple[tuple, weakref.ref, DecodedView] | None = None

    def get(self, field: LanguageField, key: tuple) -> DecodedView | None:
        """The view decoded from ``field`` under ``key``, or None."""
        with self._lock:
            entry = self._entry
        if entry is None or entry[0] != key or entry[1]() is not field:
            return None
        return entry[2]

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.max_bytes

    def clear(self) -> None:
        """Let the kept view go (before decoding another, so that two never coexist)."""
        with self._lock:
            self._entry = None

    def put(self, field: LanguageField, key: tuple, view: DecodedView) -> None:
        with self._lock:
            self._entry = (key, weakref.ref(field), view)
