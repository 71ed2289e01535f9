"""The box filter of the LERF-OVS protocol, shared by the evaluation and LangSplat's level rule.

``box30`` is ``cv2.filter2D`` with a 30×30 kernel of 1/900 at its default anchor and
``BORDER_REFLECT_101`` (gags-method.md §4.3); ``½ (r + box30(r))`` is the smoothing before the mask
threshold, and LangSplat picks a level per query by the peak of that smoothed map (§4.6).

:func:`box_filter` (numpy, scipy) is the reference, used by the evaluation; :func:`box_filter_tensor` is
the same filter on a torch tensor's own device, so that a viewer frame on a GPU picks LangSplat's levels
without copying its maps to the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

BOX_SIZE = 30
"""Side of the box filter (``scale = 30`` in the official code)."""


def box_filter(relevancy: np.ndarray, size: int = BOX_SIZE) -> np.ndarray:
    """Mean over a ``size``×``size`` window with ``cv2.filter2D``'s semantics.

    The kernel is ``ones((size, size)) / size²`` at cv2's default anchor ``(size // 2, size // 2)``:
    output pixel (i, j) averages rows ``i − size//2 … i + size − 1 − size//2`` and the same columns
    (for 30: 15 before, 14 after). Pixels outside the image come from ``BORDER_REFLECT_101``
    (``gfedcb|abcdefgh|gfedcba``), reflected as often as needed on images smaller than the kernel.

    Args:
        relevancy: maps on the last two axes. [..., H, W] float
    Returns:
        The filtered maps. [..., H, W] float64
    """
    values = np.asarray(relevancy, dtype=np.float64)
    if values.ndim < 2:
        raise ValueError(f"box_filter needs [..., H, W], got shape {values.shape}")
    ones = np.ones(size, dtype=np.float64)
    # scipy's "mirror" is reflect-101; with an even window and origin 0, scipy centres it at size // 2,
    # which is cv2's default anchor. Summing the 1-D windows of ones keeps equal windows bit-equal.
    rows = ndimage.correlate1d(values, ones, axis=-2, mode="mirror", origin=0)
    sums = ndimage.correlate1d(rows, ones, axis=-1, mode="mirror", origin=0)
    return sums / float(size * size)


def smooth_relevancy(relevancy: np.ndarray, size: int = BOX_SIZE) -> np.ndarray:
    """``½ (r + box30(r))``, the official smoothing before the mask threshold. [..., H, W] -> float64"""
    values = np.asarray(relevancy, dtype=np.float64)
    return 0.5 * (values + box_filter(values, size))


def box_filter_tensor(maps: Tensor, size: int = BOX_SIZE) -> Tensor:
    """:func:`box_filter` on the tensor's device, in float64, from an integral image of the maps padded by
    reflection (torch's ``"reflect"`` is reflect-101). Maps smaller than the padding go through
    :func:`box_filter` itself.

    Args:
        maps: [..., H, W] float
    Returns:
        [..., H, W] float64 on ``maps.device``
    """
    height, width = maps.shape[-2:]
    before, after = size // 2, size - 1 - size // 2
    if min(height, width) <= before:  # reflect padding needs a pad narrower than the map
        return torch.from_numpy(box_filter(maps.detach().cpu().numpy(), size)).to(maps.device)
    flat = maps.detach().to(torch.float64).reshape(-1, 1, height, width)
    padded = F.pad(flat, (before, after, before, after), mode="reflect")
    sums = F.pad(padded.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    window = sums[..., size:, size:] - sums[..., :-size, size:] - sums[..., size:, :-size] + sums[..., :-size, :-size]
    return (window / float(size * size)).reshape(maps.shape)
