"""The LERF-OVS evaluation protocol of the official GAGS code, as pure vectorised functions.

Each function reproduces one step of ``evaluate_iou_loc.py`` / ``eval/utils.py`` (gags-method.md §4.3,
§4.4) on numpy arrays, with the official border behaviour, and without per-pixel Python loops.

mIoU, per (frame, query) pair::

    r' = ½ (r + box30(r))                              smooth_relevancy
    o  = (r' − min r') / (max(r' − min r') + 1e-9)      normalize_clip
    o  = clip(2 o − 1, 0, 1)
    m  = majority7(o > 0.4)                             predict_mask (threshold, majority_filter)
    IoU(m, GT)                                         iou

Localization, per (frame, query) pair: the argmax pixels (all ties) of box30(r) on the *unsmoothed*
relevancy r; a hit when any of them lies in any GT box of the query (inclusive)   localize

box30 and the ½ mixing live in :mod:`gags_viewer.language.smoothing` (LangSplat's level rule in the
query engine uses them too). Numerics: box30 is summed in float64 (the official code gets float32 out of
cv2.filter2D, which uses a DFT for kernels this large), so values agree to ~1e-7 and maps are never
bit-identical. Two windows with the same contents sum to the same value here, so plateau ties in the
localization argmax are kept as ties (the official DFT rounding breaks them arbitrarily).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gags_viewer.language.smoothing import BOX_SIZE, box_filter, smooth_relevancy

MASK_THRESHOLD = 0.4
"""Threshold on the clipped map (``--mask_thresh 0.4`` in ``eval.sh``): 0.7 on the min–max-normalised map."""
MAJORITY_RADIUS = 3
"""Half-size of the majority window (``scale = 3`` in ``eval/utils.py::smooth``): 7×7."""


def normalize_clip(smoothed: np.ndarray) -> np.ndarray:
    """Min–max normalise each map, then ``clip(2 o − 1, 0, 1)``.

    ``o = (r' − min r') / (max(r' − min r') + 1e-9)``, per map over its last two axes.

    Args:
        smoothed: [..., H, W]
    Returns:
        [..., H, W] float64 in [0, 1]
    """
    values = np.asarray(smoothed, dtype=np.float64)
    shifted = values - values.min(axis=(-2, -1), keepdims=True)
    scaled = shifted / (shifted.max(axis=(-2, -1), keepdims=True) + 1e-9)
    return np.clip(2.0 * scaled - 1.0, 0.0, 1.0)


def majority_filter(mask: np.ndarray, radius: int = MAJORITY_RADIUS) -> np.ndarray:
    """The official 7×7 majority (mode) filter of a binary mask, border quirks included.

    Output (i, j) is 1 iff the window holds more ones than zeros (ties go to 0, as ``argmax`` of a
    ``bincount`` does). The window is rows ``[max(0, i − r), min(i + r + 1, H − 1))`` and likewise for
    columns: the start is clamped at 0, while the end is clamped at ``H − 1`` instead of ``H``, so the
    last row and column never vote and windows near the far border shrink. Computed with an integral
    image in O(H·W).

    On an image one pixel high or wide the official window is empty (its ``argmax`` raises); here the
    output is 0 there.

    Args:
        mask: binary masks on the last two axes. [..., H, W] bool or {0, 1}
    Returns:
        [..., H, W] bool
    """
    ones = np.asarray(mask).astype(bool)
    if ones.ndim < 2:
        raise ValueError(f"majority_filter needs [..., H, W], got shape {ones.shape}")
    height, width = ones.shape[-2:]
    integral = np.zeros(ones.shape[:-2] + (height + 1, width + 1), dtype=np.int32)
    integral[..., 1:, 1:] = ones.cumsum(axis=-2, dtype=np.int32).cumsum(axis=-1, dtype=np.int32)

    def bounds(n: int) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(n)
        return np.maximum(index - radius, 0), np.minimum(index + radius + 1, n - 1)

    r0, r1 = bounds(height)
    c0, c1 = bounds(width)
    r0, r1 = r0[:, None], r1[:, None]
    count = integral[..., r1, c1] - integral[..., r0, c1] - integral[..., r1, c0] + integral[..., r0, c0]
    total = np.maximum(r1 - r0, 0) * np.maximum(c1 - c0, 0)
    return 2 * count > total


def predict_mask(relevancy: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """The official predicted mask: smooth, normalise and clip, threshold, majority filter.

    Args:
        relevancy: raw relevancy maps. [..., H, W]
        threshold: on the clipped map (0.4 in the official ``eval.sh``).
    Returns:
        [..., H, W] bool
    """
    clipped = normalize_clip(smooth_relevancy(relevancy))
    return majority_filter(clipped > threshold)


def iou(prediction: np.ndarray, ground_truth: np.ndarray) -> float:
    """Intersection over union of two masks of the same shape; 1.0 when both are empty (the official
    code divides 0 by 0 there and poisons the mean with NaN).

    Args:
        prediction, ground_truth: [H, W] bool
    """
    prediction = np.asarray(prediction, dtype=bool)
    ground_truth = np.asarray(ground_truth, dtype=bool)
    if prediction.shape != ground_truth.shape:
        raise ValueError(f"mask shapes differ: {prediction.shape} vs {ground_truth.shape}")
    union = int(np.count_nonzero(prediction | ground_truth))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(prediction & ground_truth)) / union


@dataclass
class Localization:
    """Result of the localization test for one (frame, query) pair.

    Attributes:
        hit: Whether any peak lies inside any GT box.
        peaks: All argmax pixels of box30(r), as (x, y) = (column, row). [P, 2] int64
        score: The peak value of box30(r).
    """

    hit: bool
    peaks: np.ndarray
    score: float


def localize(relevancy: np.ndarray, boxes: np.ndarray, size: int = BOX_SIZE) -> Localization:
    """The official localization test on an unsmoothed relevancy map.

    The peaks are every pixel where ``box30(r)`` equals its maximum (no ½ mixing). A box
    ``[x1, y1, x2, y2]`` contains (x, y) when ``min(x1, x2) ≤ x ≤ max(x1, x2)`` and likewise for y,
    with x the column and y the row.

    Args:
        relevancy: one raw relevancy map. [H, W]
        boxes: GT boxes of the query in this frame. [B, 4] (x1, y1, x2, y2), pixels
    """
    relevancy = np.asarray(relevancy)
    if relevancy.ndim != 2:
        raise ValueError(f"localize needs one [H, W] map, got shape {relevancy.shape}")
    return localize_filtered(box_filter(relevancy, size), boxes)


def localize_filtered(filtered: np.ndarray, boxes: np.ndarray) -> Localization:
    """:func:`localize` on an already box-filtered map ``box30(r)`` [H, W] (the runner computes box30(r)
    once per map and shares it with the smoothing)."""
    filtered = np.asarray(filtered)
    score = filtered.max()
    rows, cols = np.nonzero(filtered == score)
    peaks = np.stack([cols, rows], axis=1).astype(np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x_min = np.minimum(boxes[:, 0], boxes[:, 2])
    x_max = np.maximum(boxes[:, 0], boxes[:, 2])
    y_min = np.minimum(boxes[:, 1], boxes[:, 3])
    y_max = np.maximum(boxes[:, 1], boxes[:, 3])
    x, y = peaks[:, 0:1], peaks[:, 1:2]  # [P, 1] against [B]
    inside = (x >= x_min) & (x <= x_max) & (y >= y_min) & (y <= y_max)
    return Localization(hit=bool(inside.any()), peaks=peaks, score=float(score))
