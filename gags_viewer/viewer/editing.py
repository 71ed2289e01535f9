"""Editing the viewer's field: delete or keep only a selection, undo, redo, save.

The field is shared by every browser, so edits are too: an edit makes a new field
(:mod:`gags_viewer.field.edit`) with its own query engine and shows it in every browser; undo shows the
previous (field, engine) again, with its caches still warm. Saving writes the shown field, natively
(features, decoders, CLIP reference) or as a plain Inria PLY.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gags_viewer.errors import GagsError
from gags_viewer.field.edit import EditHistory, delete, keep_only
from gags_viewer.field.language_field import LanguageField
from gags_viewer.viewer.settings import ViewSettings

log = logging.getLogger(__name__)

EditKind = Literal["delete", "keep"]


def engine_for_field(old, field: LanguageField):
    """A query engine on ``field`` with ``old``'s text encoder (encoded phrases stay cached) and settings;
    None when ``old`` is None or the field has no language features."""
    from gags_viewer.language.engine import QueryEngine

    if old is None or not field.has_language:
        return None
    engine = QueryEngine(
        field,
        old.text_encoder,
        backend=old.backend,
        chunk_size=old.chunk_size,
        temperature=old.temperature,
        alpha_normalize=old.alpha_normalize,
        min_alpha=old.min_alpha,
        neighbours=old.neighbours,
        profile=old.profile,
    )
    engine.negatives = old.negatives
    return engine


@dataclass(frozen=True)
class Shown:
    """One state of the edit history: a field and its engine (None for an RGB-only field)."""

    field: LanguageField
    engine: object
    description: str


class FieldEditor:
    """Edits of a :class:`~gags_viewer.viewer.frame.FrameSource`'s field, with undo and redo.

    Args:
        source: the frame source (the viewer app); its ``field``/``engine`` are replaced on every change.
        field_dir: where the shown field was loaded from (relative CLIP paths are rebased when saving).
    """

    def __init__(self, source, field_dir: Path | None = None):
        self.source = source
        self.field_dir = field_dir
        self._lock = threading.Lock()
        self.history: EditHistory[Shown] = EditHistory(Shown(source.field, source.engine, "as loaded"))

    @property
    def current(self) -> Shown:
        return self.history.current

    def edit(self, kind: EditKind, settings: ViewSettings) -> Shown:
        """Delete (``"delete"``) or keep only (``"keep"``) what ``settings`` selects; returns the new state.

        Raises:
            GagsError: no language features, no selection text, an empty selection, or nothing left.
        """
        with self._lock:
            state = self.history.current
            if state.engine is None:
                raise GagsError("this field has no language features: nothing can be selected by text")
            if not settings.selection_source.strip():
                raise GagsError("type a query (or a selection) first: edits apply to the Gaussians it selects")
            selection = self.source.selections.select(state.engine, settings)
            if selection.count == 0:
                raise GagsError(f"'{settings.selection_source}' selects no Gaussian; lower the selection threshold")
            reason = f"'{settings.selection_source}' by the {selection.description}"
            if kind == "delete":
                field = delete(state.field, selection.mask, reason)
                text = f"deleted {selection.count:,} Gaussians ('{settings.selection_source}')"
            elif kind == "keep":
                field = keep_only(state.field, selection.mask, reason)
                text = f"kept {selection.count:,} Gaussians ('{settings.selection_source}')"
            else:
                raise GagsError(f"unknown edit '{kind}'; choose delete or keep")
            return self._show(self.history.push(Shown(field, engine_for_field(state.engine, field), text)))

    def undo(self) -> Shown:
        with self._lock:
            return self._show(self.history.undo())

    def redo(self) -> Shown:
        with self._lock:
            return self._show(self.history.redo())

    def save(self, out: Path, save_format: Literal["native", "ply"] = "native") -> Path:
        """Write the shown field to ``out`` (see :func:`~gags_viewer.viewer.select_command.save_edited`)."""
        from gags_viewer.viewer.select_command import save_edited

        return save_edited(self.current.field.to("cpu"), Path(out), save_format, self.field_dir)

    def _show(self, state: Shown) -> Shown:
        # Engine first: FrameSource.compose reads the field from the engine, so a frame sees one pair.
        self.source.engine = state.engine
        self.source.field = state.field
        rerender_all(self.source)
        return state


def rerender_all(source) -> None:
    """Ask every browser of ``source`` (a ViewerApp; a bare FrameSource has none) to render again."""
    sessions = source.all_sessions() if hasattr(source, "all_sessions") else []
    for session in sessions:
        try:
            session.rerender()
        except Exception:  # noqa: BLE001 - a closed browser must not stop the caller
            log.debug("rerender failed", exc_info=True)
