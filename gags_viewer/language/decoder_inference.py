"""Decoder inference on a CPU: activations in reusable buffers, unit-major, without the zero units.

Three things make a CPU decode of a chunk of pixels cheaper than ``torch.relu(layer(x))`` layer by layer:

- **Reused buffers** (:class:`Scratch`, one per thread): a fresh activation tensor per layer costs the
  allocator page faults and zeroing, and ReLU and the residual additions another pass over memory each.
- **Unit-major activations**: each activation is stored as [units, rows] and handed on as its
  transposed view [rows, units], so the units of a chunk are contiguous rows of memory.
- **Units that are zero on every row of the chunk are skipped**: a unit that no pixel of the chunk
  activates (its ReLU is 0 throughout) adds nothing to the next layer, so the next product reads only
  the other units (:func:`active_units`). In a trained decoder neighbouring pixels switch on similar
  units (pixel mode decodes them in tiles: :func:`~gags_viewer.language.pixel_relevancy.in_tiles`): on
  the demo field a chunk of 2k pixels leaves about a third of each layer's 256 units unused (per layer
  0-50 %), so the products do about a third fewer multiplications; the result is the same sum without
  its zero terms. Gathering the active units and their weights costs ~4 % of a product; a chunk where
  nearly all are active (e.g. a random decoder) runs the dense product, ~5 % slower unit-major than
  row-major.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DENSE_ABOVE = 0.9
"""Fraction of active units above which a product reads all units (a gather would cost more than the
few skipped rows save)."""

GATHER_SLOT = -1
"""The :class:`Scratch` slot the active units are gathered into."""


class Scratch:
    """Activation buffers reused from chunk to chunk by inference (:meth:`_Decoder.hidden`): slot ``k``
    is one [units, rows] tensor, grown when a larger one is asked for. Not thread-safe: one per thread
    (:func:`thread_scratch`)."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}

    def take(self, slot: int, units: int, rows: int, like: Tensor) -> Tensor:
        """Slot ``slot`` as a contiguous [units, rows] tensor of ``like``'s dtype and device (contents
        undefined)."""
        key = (slot, like.dtype, like.device)
        buffer = self._slots.get(key)
        if buffer is None or buffer.numel() < units * rows:
            buffer = self._slots[key] = torch.empty(units * rows, dtype=like.dtype, device=like.device)
        return buffer[: units * rows].view(units, rows)


_THREAD = threading.local()


def thread_scratch() -> Scratch:
    """This thread's :class:`Scratch` (each thread that decodes keeps four [256, 2k] buffers, 8 MB for
    the GAGS decoder in chunks of 2k rows)."""
    scratch = getattr(_THREAD, "scratch", None)
    if scratch is None:
        scratch = _THREAD.scratch = Scratch()
    return scratch


def active_units(x_t: Tensor, scratch: Scratch) -> tuple[Tensor | None, Tensor]:
    """The units of a unit-major activation that are nonzero (or NaN) on some row, and those rows of it
    (gathered into ``scratch``); (None, ``x_t``) when more than :data:`DENSE_ABOVE` of them are.
    [units, P] -> ([k] int64 ascending | None, [k, P])"""
    # amax and amin: 20x faster than aminmax here; NaN propagates, and NaN != 0 keeps the unit
    units = ((x_t.amax(dim=1) != 0) | (x_t.amin(dim=1) != 0)).nonzero().squeeze(1)
    if units.numel() > DENSE_ABOVE * x_t.shape[0]:
        return None, x_t
    gathered = scratch.take(GATHER_SLOT, units.numel(), x_t.shape[1], x_t)
    return units, torch.index_select(x_t, 0, units, out=gathered)


class Layers:
    """Linear + ReLU layers and residual additions, either allocating their outputs (training: autograd
    needs every activation) or, with a :class:`Scratch` (inference), unit-major in its buffers and
    skipping the units that are zero throughout the chunk. ``slot`` names the buffer an output goes to;
    None: a new tensor (the result the caller keeps). Inference outputs are transposed views of
    [units, rows] tensors."""

    def __init__(self, scratch: Scratch | None):
        self.scratch = scratch

    def linear_relu(self, layer: nn.Linear, x: Tensor, slot: int | None) -> Tensor:
        """relu(layer(x)). [P, in] -> [P, out]"""
        if self.scratch is None:
            return F.relu(layer(x))
        rows, width = x.shape[0], layer.out_features
        out_t = (
            torch.empty(width, rows, dtype=x.dtype, device=x.device)
            if slot is None
            else self.scratch.take(slot, width, rows, x)
        )
        units, x_active = active_units(x.t(), self.scratch)
        weight = layer.weight if units is None else layer.weight.index_select(1, units)
        return torch.addmm(layer.bias[:, None], weight, x_active, out=out_t).clamp_(min=0).t()

    def add(self, into: Tensor, other: Tensor) -> Tensor:
        """into + other, into ``into``'s buffer when in place."""
        return into + other if self.scratch is None else into.add_(other)
