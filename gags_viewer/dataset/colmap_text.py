"""COLMAP's text form: ``cameras.txt``, ``images.txt`` and ``points3D.txt``, read and written.

Lines starting with ``#`` are comments. Malformed lines raise :class:`gags_viewer.errors.FormatError`
naming the file and the line number. Callers use the format-neutral API of
:mod:`gags_viewer.dataset.colmap`, which picks this module for paths not ending in ``.bin``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gags_viewer.dataset.colmap_types import (
    CAMERA_MODELS,
    MODEL_IDS,
    ColmapCamera,
    ColmapImage,
    ColmapPoints,
    make_camera,
    make_image,
)
from gags_viewer.errors import FormatError
from gags_viewer.fsutil import atomic_write_text

# ------------------------------------------------------------------------------------------ reading


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, content) of every line that is not a comment; blank lines are kept."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(path, f"cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise FormatError(path, "is not UTF-8 text") from None
    return [
        (number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if not line.lstrip().startswith("#")
    ]


def _tokens(path: Path, number: int, line: str, min_tokens: int, layout: str) -> list[str]:
    """The tokens of a data line; FormatError naming the expected ``layout`` for fewer than ``min_tokens``."""
    tokens = line.split()
    if len(tokens) < min_tokens:
        raise FormatError(path, f"line {number}: expected '{layout}'")
    return tokens


def _records(path: Path, min_tokens: int, layout: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, tokens) of each non-blank data line of a one-line-per-record file, checked by :func:`_tokens`."""
    for number, line in _text_lines(path):
        if line:
            yield number, _tokens(path, number, line, min_tokens, layout)


def _numbers(path: Path, number: int, tokens: list[str], kind, what: str) -> list:
    try:
        return [kind(token) for token in tokens]
    except ValueError:
        raise FormatError(path, f"line {number}: {what} must be numbers, got {' '.join(tokens)!r}") from None


def read_cameras(path: Path) -> dict[int, ColmapCamera]:
    """Read ``cameras.txt`` into ``{camera_id: ColmapCamera}``."""
    cameras = {}
    for number, tokens in _records(path, 4, "CAMERA_ID MODEL WIDTH HEIGHT PARAMS..."):
        camera_id, width, height = _numbers(
            path, number, [tokens[0], tokens[2], tokens[3]], int, "CAMERA_ID WIDTH HEIGHT"
        )
        model = tokens[1]
        if model not in MODEL_IDS:
            raise FormatError(path, f"line {number}: unknown camera model '{model}'")
        params = np.array(_numbers(path, number, tokens[4:], float, "camera parameters"), dtype=np.float64)
        expected = CAMERA_MODELS[MODEL_IDS[model]][1]
        if params.shape[0] != expected:
            raise FormatError(path, f"line {number}: model {model} takes {expected} parameters, got {params.shape[0]}")
        cameras[camera_id] = make_camera(path, camera_id, model, width, height, params)
    return cameras


def _looks_like_image_line(tokens: list[str]) -> bool:
    """An image line has 10+ tokens: 9 numbers, then a name that is not a number."""
    if len(tokens) < 10:
        return False
    try:
        float(tokens[-1])
        return False
    except ValueError:
        return True


def read_images(path: Path, read_points2d: bool) -> list[ColmapImage]:
    """Read ``images.txt`` in file order; keypoints only with ``read_points2d``."""
    # Each image takes two lines: "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME" and its keypoints
    # "X Y POINT3D_ID ..." (blank when it has none). Blank lines are only skipped where an image line is due.
    images = []
    lines = _text_lines(path)
    index = 0
    while index < len(lines):
        number, line = lines[index]
        index += 1
        if not line:
            continue
        tokens = _tokens(path, number, line, 10, "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        image_id = _numbers(path, number, tokens[:1], int, "IMAGE_ID")[0]
        pose = np.array(_numbers(path, number, tokens[1:8], float, "QW QX QY QZ TX TY TZ"), dtype=np.float64)
        camera_id = _numbers(path, number, tokens[8:9], int, "CAMERA_ID")[0]
        name = " ".join(tokens[9:])
        points2d = point3d_ids = None
        if index < len(lines) and not _looks_like_image_line(lines[index][1].split()):
            points_number, points_line = lines[index]
            index += 1
            if read_points2d:
                values = _numbers(path, points_number, points_line.split(), float, "keypoints")
                if len(values) % 3:
                    raise FormatError(path, f"line {points_number}: keypoints come in triples 'X Y POINT3D_ID'")
                triples = np.array(values, dtype=np.float64).reshape(-1, 3)
                points2d, point3d_ids = triples[:, :2], triples[:, 2].astype(np.int64)
        elif read_points2d:
            points2d, point3d_ids = np.zeros((0, 2)), np.zeros(0, np.int64)
        images.append(make_image(path, image_id, pose[:4], pose[4:], camera_id, name, points2d, point3d_ids))
    return images


def read_points3d(path: Path) -> ColmapPoints:
    """Read ``points3D.txt``; tracks are skipped."""
    rows = []
    for number, tokens in _records(path, 8, "POINT3D_ID X Y Z R G B ERROR TRACK..."):
        rows.append(_numbers(path, number, tokens[:8], float, "POINT3D_ID X Y Z R G B ERROR"))
    table = np.array(rows, dtype=np.float64).reshape(-1, 8)
    return ColmapPoints(
        ids=table[:, 0].astype(np.int64),
        xyz=table[:, 1:4],
        rgb=table[:, 4:7].astype(np.uint8),
        error=table[:, 7],
    )


# ------------------------------------------------------------------------------------------ writing


def write_cameras(path: Path, cameras: list[ColmapCamera]) -> None:
    """Write ``cameras.txt`` (cameras in the order given), atomically."""
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    for cam in cameras:
        lines.append(
            " ".join(
                [str(cam.camera_id), cam.model, str(cam.width), str(cam.height)] + [repr(float(p)) for p in cam.params]
            )
        )
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_images(path: Path, images: list[ColmapImage]) -> None:
    """Write ``images.txt``, atomically; keypoints if the images carry them (else a blank second line)."""
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for im in images:
        pose = " ".join(repr(float(v)) for v in (*im.qvec, *im.tvec))
        lines.append(f"{im.image_id} {pose} {im.camera_id} {im.name}")
        if im.points2d is None:
            lines.append("")
        else:
            lines.append(" ".join(f"{x!r} {y!r} {int(i)}" for (x, y), i in zip(im.points2d.tolist(), im.point3d_ids)))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_points3d(path: Path, points: ColmapPoints) -> None:
    """Write ``points3D.txt`` with empty tracks, atomically."""
    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
    ]
    for i in range(len(points.ids)):
        x, y, z = (repr(float(v)) for v in points.xyz[i])
        r, g, b = (int(v) for v in points.rgb[i])
        lines.append(f"{int(points.ids[i])} {x} {y} {z} {r} {g} {b} {float(points.error[i])!r}")
    atomic_write_text(path, "\n".join(lines) + "\n")
