"""Editing a field by a per-Gaussian mask. Every edit returns a NEW field; the input is never changed.

So undo is keeping the old field (:class:`EditHistory`), and saving is ``save_field`` / ``write_ply`` of
the result. Decoders, granularity decoder and metadata travel with every edit (an edited field stays
queryable). :func:`shown_only` / :func:`tinted` make display variants of a field with the same Gaussians in
the same order (only opacities or colours change), so per-Gaussian caches of the original stay valid.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

import torch
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import SH_C0, LanguageField

PER_GAUSSIAN = ("means", "quats", "log_scales", "opacity_logits", "sh", "features")
"""LanguageField attributes with one row per Gaussian."""

HIDDEN_OPACITY_LOGIT = -1e4
"""Opacity logit of a hidden Gaussian: sigmoid gives exactly 0 in float32."""


def _check_mask(field: LanguageField, mask: Tensor) -> Tensor:
    if mask.dtype != torch.bool or mask.ndim != 1 or mask.shape[0] != field.num_gaussians:
        raise GagsError(
            f"a selection must be a boolean mask of {field.num_gaussians} Gaussians, got "
            f"{mask.dtype} {list(mask.shape)}"
        )
    return mask.to(field.means.device)


def subset(field: LanguageField, keep: Tensor, note: str = "selection") -> LanguageField:
    """The Gaussians of ``field`` where ``keep`` [N] bool is True, in order (decoders and metadata kept).

    ``note`` is prefixed to the metadata's ``source`` (provenance). Raises GagsError when nothing is kept.
    """
    keep = _check_mask(field, keep)
    if not bool(keep.any()):
        raise GagsError("the edit would leave no Gaussian")
    changes = {name: getattr(field, name)[keep] for name in PER_GAUSSIAN if getattr(field, name) is not None}
    source = field.metadata.source or "a field"
    metadata = dataclasses.replace(field.metadata, source=f"{note} of {source}")
    return dataclasses.replace(field, metadata=metadata, **changes)


def _edit_note(action: str, count: int, reason: str) -> str:
    return f"{count} Gaussians {action}" + (f" ({reason})" if reason else "")


def delete(field: LanguageField, selection: Tensor, reason: str = "") -> LanguageField:
    """A new field without the selected Gaussians. selection: [N] bool; ``reason`` (how they were
    selected) goes into the metadata's ``source``."""
    selection = _check_mask(field, selection)
    return subset(field, ~selection, note=_edit_note("deleted", int(selection.sum()), reason))


def keep_only(field: LanguageField, selection: Tensor, reason: str = "") -> LanguageField:
    """A new field with only the selected Gaussians. selection: [N] bool; ``reason`` (how they were
    selected) goes into the metadata's ``source``."""
    selection = _check_mask(field, selection)
    return subset(field, selection, note=_edit_note("kept", int(selection.sum()), reason))


def shown_only(field: LanguageField, visible: Tensor) -> LanguageField:
    """A display copy where the Gaussians outside ``visible`` [N] bool are fully transparent (same N)."""
    visible = _check_mask(field, visible)
    logits = torch.where(visible, field.opacity_logits, torch.full_like(field.opacity_logits, HIDDEN_OPACITY_LOGIT))
    return dataclasses.replace(field, opacity_logits=logits)


def tinted(field: LanguageField, channels: Tensor, strength: float) -> LanguageField:
    """A display copy whose Gaussians take on colours (same N).

    The base colour (SH degree 0) of Gaussian i becomes (1 − strength·mᵢ)·base + strength·mᵢ·colourᵢ and
    its view-dependent coefficients are scaled by (1 − strength·mᵢ).

    Args:
        channels: per Gaussian (colour·m, m): colour in [0, 1], m in [0, 1] how much it is tinted. [N, 4]
        strength: 0 keeps the colours, 1 paints the fully tinted Gaussians flat.
    """
    if channels.ndim != 2 or channels.shape != (field.num_gaussians, 4):
        raise GagsError(f"tint channels must be [{field.num_gaussians}, 4], got {list(channels.shape)}")
    channels = channels.to(field.sh)
    rows = channels[:, 3] > 0  # the others keep their coefficients bit for bit
    keep = 1.0 - strength * channels[rows, 3:]  # [R, 1]
    sh = field.sh.clone()
    sh[rows] *= keep[:, None, :]
    base = field.sh[rows, 0, :] * SH_C0 + 0.5
    sh[rows, 0, :] = (keep * base + strength * channels[rows, :3] - 0.5) / SH_C0
    return dataclasses.replace(field, sh=sh)


T = TypeVar("T")


class EditHistory(Generic[T]):
    """Undo/redo over immutable states (fields, or whatever travels with one)."""

    def __init__(self, initial: T, limit: int = 32):
        self._states: list[T] = [initial]
        self._index = 0
        self.limit = limit

    @property
    def current(self) -> T:
        return self._states[self._index]

    @property
    def can_undo(self) -> bool:
        return self._index > 0

    @property
    def can_redo(self) -> bool:
        return self._index < len(self._states) - 1

    def push(self, state: T) -> T:
        """Make ``state`` current; the redo branch is dropped, the oldest states beyond ``limit`` too."""
        del self._states[self._index + 1 :]
        self._states.append(state)
        if len(self._states) > self.limit + 1:
            del self._states[: len(self._states) - self.limit - 1]
        self._index = len(self._states) - 1
        return state

    def undo(self) -> T:
        if not self.can_undo:
            raise GagsError("nothing to undo")
        self._index -= 1
        return self.current

    def redo(self) -> T:
        if not self.can_redo:
            raise GagsError("nothing to redo")
        self._index += 1
        return self.current
