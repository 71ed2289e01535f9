"""LERF-OVS label files from ground-truth masks (gags-method.md §1.3, "label frame_XXXXX.json").

Each mask becomes one polygon per connected component, traced with marching squares (contourpy, which
matplotlib ships) and snapped onto the centres of the mask's boundary pixels, so that filling the
polygon the way the evaluator does (``cv2.fillPoly`` semantics: interior plus outline) gives back the
mask. A component with holes (the purple ring, the table around the objects) stays one polygon: each
hole is joined to the outer ring by a doubled "bridge" edge, which the even-odd fill leaves neutral, so
the hole stays empty.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gags_viewer.fsutil import atomic_write_text


def _snap(vertices: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Move marching-squares vertices (midpoints between an inside and an outside pixel centre) onto the
    inside pixel. vertices: [P, 2] (x, y) in unpadded pixel coordinates. -> [P, 2] int"""
    h, w = mask.shape
    out = np.empty_like(vertices, dtype=np.int64)
    for i, (x, y) in enumerate(vertices):
        if x != np.floor(x):
            a, b, row = int(np.floor(x)), int(np.ceil(x)), int(round(y))
            inside_a = 0 <= a < w and 0 <= row < h and mask[row, a]
            out[i] = (a if inside_a else b, row)
        else:
            a, b, col = int(np.floor(y)), int(np.ceil(y)), int(round(x))
            inside_a = 0 <= a < h and 0 <= col < w and mask[a, col]
            out[i] = (col, a if inside_a else b)
    keep = np.ones(len(out), dtype=bool)
    keep[1:] = np.any(out[1:] != out[:-1], axis=1)
    out = out[keep]
    if len(out) > 1 and np.all(out[0] == out[-1]):
        out = out[:-1]
    return out


def mask_polygons(mask: np.ndarray, min_pixels: int = 20) -> list[np.ndarray]:
    """Polygons of a binary mask, one per connected component (holes bridged in, see module doc).

    Args:
        mask: [H, W] bool
        min_pixels: components whose polygon encloses less area than this are dropped.

    Returns:
        Vertex lists (x, y) in integer pixel coordinates, each [P, 2] int64.
    """
    import contourpy

    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask.astype(np.float64), 1)
    generator = contourpy.contour_generator(z=padded, fill_type=contourpy.FillType.OuterOffset)
    points_list, offsets_list = generator.filled(0.5, 2.0)
    polygons = []
    for points, offsets in zip(points_list, offsets_list):
        rings = [points[offsets[i] : offsets[i + 1]] - 1.0 for i in range(len(offsets) - 1)]
        outer_raw = rings[0]
        area = 0.5 * abs(
            np.dot(outer_raw[:, 0], np.roll(outer_raw[:, 1], 1)) - np.dot(outer_raw[:, 1], np.roll(outer_raw[:, 0], 1))
        )
        if area < min_pixels:
            continue
        outer = _snap(outer_raw, mask)
        if len(outer) == 0:
            continue
        polygon = [outer]
        for hole_raw in rings[1:]:
            hole = _snap(hole_raw, mask)
            if len(hole) < 3:
                continue
            # bridge from the closest outer vertex to the closest hole vertex, around the hole and back
            d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
            i, j = np.unravel_index(np.argmin(d), d.shape)
            outer_rolled = np.roll(outer, -i, axis=0)
            hole_rolled = np.roll(hole, -j, axis=0)
            polygon = [np.concatenate([outer_rolled, outer_rolled[:1], hole_rolled, hole_rolled[:1]])]
            outer = np.concatenate([polygon[0], outer_rolled[:1]])  # next hole bridges from the same point
        polygons.append(np.concatenate(polygon) if len(polygon) > 1 else polygon[0])
    return polygons


def label_objects(
    masks: dict[str, np.ndarray], min_pixels: int = 20, levels: dict[str, str] | None = None
) -> list[dict]:
    """LERF-OVS ``objects`` entries: one per connected component of each category's mask.

    Args:
        masks: category -> [H, W] bool
        levels: category -> level ("object", "part", ...), written as each object's ``level`` (an
            addition to the LERF-OVS layout that ``eval`` reports per level).
    Returns:
        [{"category", "bbox": [x1, y1, x2, y2], "segmentation": [[x, y], ...], "level"}, ...]
    """
    objects = []
    for category, mask in masks.items():
        for polygon in mask_polygons(mask, min_pixels):
            x1, y1 = polygon.min(axis=0)
            x2, y2 = polygon.max(axis=0)
            objects.append(
                {
                    "category": category,
                    "bbox": [int(x1), int(y1), int(x2), int(y2)],
                    "segmentation": polygon.astype(int).tolist(),
                    **({"level": levels[category]} if levels and category in levels else {}),
                }
            )
    return objects


def write_label_file(
    folder: str | Path,
    frame: str,
    image_name: str,
    height: int,
    width: int,
    masks: dict[str, np.ndarray],
    min_pixels: int = 20,
    levels: dict[str, str] | None = None,
) -> Path:
    """Write ``<folder>/<frame>.json`` in the LERF-OVS layout (atomically). -> its path"""
    data = {
        "info": {"name": image_name, "height": int(height), "width": int(width)},
        "objects": label_objects(masks, min_pixels, levels),
    }
    path = Path(folder) / f"{frame}.json"
    atomic_write_text(path, json.dumps(data) + "\n")
    return path


def categories(objects: Sequence[dict]) -> list[str]:
    """Distinct categories of a label's objects, in first-appearance order."""
    return list(dict.fromkeys(o["category"] for o in objects))
