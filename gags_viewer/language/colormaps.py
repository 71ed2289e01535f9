"""Colormaps and colour palettes for relevancy, masks and granularity maps.

The colormap names are nerfview's (``nerfview.Colormaps``: turbo, viridis, magma, inferno, cividis,
gray) so the viewer can offer the same list in its own dropdown. nerfview's ``apply_float_colormap`` is
not reused: importing nerfview imports viser, which this layer must not import (DESIGN.md, Layers), and
it asserts on out-of-range input and rebuilds its lookup table on every call. Both read the tables
from matplotlib, so colours are identical; here the 256-entry tables are cached per device.
"""

from __future__ import annotations

import threading
from typing import Literal

import torch
from torch import Tensor

from gags_viewer.errors import GagsError

Colormap = Literal["turbo", "viridis", "magma", "inferno", "cividis", "gray"]
COLORMAPS: tuple[str, ...] = ("turbo", "viridis", "magma", "inferno", "cividis", "gray")

GRANULARITY_NAMES = ("subpart", "part", "whole")
GRANULARITY_COLORS = torch.tensor([[0.90, 0.30, 0.25], [0.25, 0.75, 0.35], [0.25, 0.45, 0.95]])
"""Colours of the granularity classes (s, m, l): red, green, blue. [3, 3]"""

_luts: dict[tuple[str, str], Tensor] = {}
_lock = threading.Lock()


def colormap_lut(name: str, device: torch.device | str = "cpu") -> Tensor:
    """The 256-entry RGB table of a colormap, in [0, 1]. [256, 3] float32"""
    if name not in COLORMAPS:
        raise GagsError(f"unknown colormap '{name}'; choose one of {', '.join(COLORMAPS)}")
    key = (name, str(torch.device(device)))
    with _lock:
        lut = _luts.get(key)
        if lut is None:
            import matplotlib
            import numpy as np

            table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
            lut = _luts[key] = torch.as_tensor(table, dtype=torch.float32, device=device)
        return lut


def apply_colormap(values: Tensor, name: str = "turbo") -> Tensor:
    """Map values in [0, 1] to colours (NaN → 0, out of range clamped). [...] -> [..., 3]"""
    lut = colormap_lut(name, values.device)
    index = (torch.nan_to_num(values.float(), 0.0).clamp(0.0, 1.0) * 255.0).round().long()
    return lut[index]


QUERY_PALETTE_SIZE = 10
"""Colours in the query palette (matplotlib's tab10)."""


def query_colors(count: int, device: torch.device | str = "cpu") -> Tensor:
    """Distinct colours for ``count`` queries (matplotlib's tab10, cycled). [count, 3]"""
    import matplotlib

    table = torch.tensor(matplotlib.colormaps["tab10"](range(QUERY_PALETTE_SIZE))[:, :3], dtype=torch.float32)
    index = torch.arange(count) % table.shape[0]
    return table[index].to(device)
