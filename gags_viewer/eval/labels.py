"""LERF-OVS ground-truth labels: one ``frame_XXXXX.json`` per evaluated frame (gags-method.md §1.3).

File layout::

    {"info": {"name": "frame_00041.jpg", "height": 731, "width": 989},
     "objects": [{"category": "bear nose", "bbox": [x1, y1, x2, y2],
                  "segmentation": [[x, y], [x, y], ...]}, ...]}

One polygon per object; objects of the same category are unioned into one query (as the official
evaluator does): its GT mask is the union of the filled polygons and its boxes are all their boxes.
Categories keep the order of their first appearance in the file.

Polygons are filled by the official rule: the vertices are cast to int32 (truncated toward zero, as
``np.asarray(points, np.int32)`` does) and filled with OpenCV's ``cv2.fillPoly(mask, [points], 1)``,
which also paints the outline. (Filling the float vertices, or the integer ones with another
rasteriser, differs on slanted edges: ~1 % of the pixels of sparse sub-pixel polygons.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gags_viewer.errors import GagsError
from gags_viewer.fsutil import read_json

PathLike = str | Path
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
MAX_LABEL_PIXELS = 2**27
"""Largest label resolution (width x height) accepted: 128 Mpx, far above any dataset frame; each
category's mask is a bool array of this size."""


class LabelError(GagsError):
    """A label file or folder is malformed; the message names the file and the key."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass
class QueryLabel:
    """Ground truth of one query (category) in one frame.

    Attributes:
        category: The text query, e.g. "bear nose".
        mask: Union of the category's filled polygons. [H, W] bool
        boxes: Every box of the category, as written (x1, y1, x2, y2; not reordered). [B, 4] float64
        level: The query's level ("object", "part", ...) when the label says (an optional ``level``
            key of the objects; the demo's labels have it, LERF-OVS's do not), else "".
    """

    category: str
    mask: np.ndarray
    boxes: np.ndarray
    level: str = ""


@dataclass
class LabelFrame:
    """One labelled frame.

    Attributes:
        path: The JSON file.
        name: Frame name used to find its camera: the stem of ``info.name``, else of the JSON file.
        width, height: Label resolution (``info.width``, ``info.height``): the render size.
        queries: One entry per category, in first-appearance order.
        image_path: The frame's photo beside the JSON (``info.name``, or the JSON stem with an image
            suffix), or None.
    """

    path: Path
    name: str
    width: int
    height: int
    queries: list[QueryLabel] = field(default_factory=list)
    image_path: Path | None = None

    @property
    def categories(self) -> list[str]:
        return [q.category for q in self.queries]

    @property
    def frame_number(self) -> int | None:
        """The trailing number of the frame name ("frame_00041" -> 41), or None."""
        match = re.search(r"(\d+)$", self.name)
        return int(match.group(1)) if match else None

    def load_image(self) -> np.ndarray | None:
        """The photo at label resolution, or None when there is none. [H, W, 3] uint8"""
        if self.image_path is None:
            return None
        try:
            with Image.open(self.image_path) as image:
                image = image.convert("RGB")
                if image.size != (self.width, self.height):
                    image = image.resize((self.width, self.height), Image.BILINEAR)
                return np.asarray(image)
        except OSError:
            return None


def label_files(folder: PathLike) -> list[Path]:
    """The label JSONs of a folder, sorted by name: ``frame_*.json`` if any, else every ``*.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelError(folder, "labels folder does not exist" if not folder.exists() else "is not a folder")
    files = sorted(folder.glob("frame_*.json")) or sorted(folder.glob("*.json"))
    if not files:
        raise LabelError(folder, "no label files (frame_XXXXX.json) in the labels folder")
    return files


def load_labels(folder: PathLike) -> list[LabelFrame]:
    """Read every label file of a folder (see :func:`label_files`), sorted by file name."""
    frames = [load_label_file(path) for path in label_files(folder)]
    seen: dict[str, Path] = {}
    for frame in frames:
        if frame.name in seen:
            raise LabelError(frame.path, f"frame name '{frame.name}' is also used by {seen[frame.name].name}")
        seen[frame.name] = frame.path
    return frames


def load_label_file(path: PathLike) -> LabelFrame:
    """Read and check one label JSON; rasterise its polygons at the label resolution."""
    path = Path(path)
    data = read_json(path, LabelError)
    if not isinstance(data, dict):
        raise LabelError(path, f"top level must be an object with 'info' and 'objects', got {_json_type(data)}")

    info = _require(path, data, "info", dict, "info")
    height = _positive_int(path, info, "height", "info.height")
    width = _positive_int(path, info, "width", "info.width")
    if width * height > MAX_LABEL_PIXELS:
        raise LabelError(path, f"label resolution {width}x{height} is larger than {MAX_LABEL_PIXELS} pixels")
    image_name = info.get("name")
    if image_name is not None and (not isinstance(image_name, str) or not image_name.strip()):
        raise LabelError(path, f"info.name must be a file name, got {image_name!r}")
    name = Path(image_name).stem if image_name else path.stem

    objects = _require(path, data, "objects", list, "objects")
    by_category: dict[str, QueryLabel] = {}
    for index, obj in enumerate(objects):
        key = f"objects[{index}]"
        if not isinstance(obj, dict):
            raise LabelError(path, f"{key} must be an object, got {_json_type(obj)}")
        category = _require(path, obj, "category", str, key)
        if not category.strip():
            raise LabelError(path, f"{key}.category is empty")
        level = obj.get("level", "")
        if not isinstance(level, str):
            raise LabelError(path, f"{key}.level must be a string, got {_json_type(level)}")
        box = _box(path, obj, key)
        polygons = _polygons(path, obj, key)
        mask = np.zeros((height, width), dtype=bool)
        for polygon in polygons:
            mask |= polygon_mask(polygon, height, width)
        if category in by_category:
            query = by_category[category]
            query.mask |= mask
            query.boxes = np.concatenate([query.boxes, box[None]], axis=0)
        else:
            by_category[category] = QueryLabel(category=category, mask=mask, boxes=box[None], level=level)

    return LabelFrame(
        path=path,
        name=name,
        width=width,
        height=height,
        queries=list(by_category.values()),
        image_path=_find_image(path, image_name),
    )


def polygon_mask(points, height: int, width: int) -> np.ndarray:
    """Fill one polygon as the official evaluator does: ``cv2.fillPoly`` with int32 vertices.

    Args:
        points: vertices (x, y) in pixels; floats are truncated toward zero. [P, 2]
        height, width: mask size.
    Returns:
        [height, width] bool
    """
    import cv2

    vertices = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    vertices = np.trunc(vertices).clip(-(2**31), 2**31 - 1).astype(np.int32)
    mask = np.zeros((height, width), dtype=np.uint8)
    if len(vertices):
        cv2.fillPoly(mask, [vertices], 1)
    return mask.astype(bool)


# ------------------------------------------------------------------------------------------ checks


def _require(path: Path, container: dict, key: str, kind: type, where: str):
    if key not in container:
        raise LabelError(path, f"{where} has no '{key}'" if where != key else f"has no '{key}'")
    value = container[key]
    if not isinstance(value, kind):
        label = f"{where}.{key}" if where != key else key
        raise LabelError(path, f"{label} must be {_KIND_NAMES[kind]}, got {_json_type(value)}")
    return value


_KIND_NAMES = {dict: "an object", list: "a list", str: "a string"}


def _json_type(value) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _positive_int(path: Path, info: dict, key: str, label: str) -> int:
    if key not in info:
        raise LabelError(path, f"info has no '{key}'")
    value = info[key]
    if isinstance(value, float) and value.is_integer():  # False for NaN and Inf
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LabelError(path, f"{label} must be a positive integer, got {value!r:.40}")
    return int(value)


def _finite_numbers(value) -> np.ndarray | None:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float64
        return None
    if array.dtype == object or not np.isfinite(array).all():
        return None
    return array


def _box(path: Path, obj: dict, key: str) -> np.ndarray:
    if "bbox" not in obj:
        raise LabelError(path, f"{key} has no 'bbox'")
    box = _finite_numbers(obj["bbox"])
    if box is None or box.size != 4:
        raise LabelError(path, f"{key}.bbox must be 4 numbers [x1, y1, x2, y2], got {obj['bbox']!r:.80}")
    return box.reshape(4)


def _polygons(path: Path, obj: dict, key: str) -> list[np.ndarray]:
    """The object's polygon(s): ``[[x, y], ...]`` (official), or a list of such polygons."""
    field_name = "segmentation" if "segmentation" in obj else "polygon" if "polygon" in obj else None
    if field_name is None:
        raise LabelError(path, f"{key} has no 'segmentation'")
    raw = obj[field_name]
    points = _finite_numbers(raw)
    if points is not None and points.ndim == 2 and points.shape[1] == 2 and points.shape[0] >= 1:
        return [points]
    if isinstance(raw, list) and raw:
        parts = [_finite_numbers(part) for part in raw]
        if all(p is not None and p.ndim == 2 and p.shape[1] == 2 and p.shape[0] >= 1 for p in parts):
            return parts
    raise LabelError(path, f"{key}.{field_name} must be a polygon [[x, y], ...] of finite numbers")


def _find_image(path: Path, image_name: str | None) -> Path | None:
    candidates = []
    if image_name:
        candidates.append(path.parent / Path(image_name).name)
    candidates += [path.with_suffix(suffix) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None
