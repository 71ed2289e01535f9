"""COLMAP's binary form: ``cameras.bin``, ``images.bin`` and ``points3D.bin``, read and written.

Little-endian records, as COLMAP writes them. Truncated files and bytes after the last record raise
:class:`gags_viewer.errors.FormatError`. Callers use the format-neutral API of
:mod:`gags_viewer.dataset.colmap`, which picks this module for ``.bin`` paths.
"""

from __future__ import annotations

import struct
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
from gags_viewer.fsutil import atomic_write_bytes

_KEYPOINT = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
"""One keypoint of ``images.bin``: position and 3D point id (-1 for none)."""

# ------------------------------------------------------------------------------------------ reading


class _Reader:
    """Sequential little-endian reader over a whole file that reports truncation as FormatError."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise FormatError(path, f"cannot read ({exc.strerror or exc})") from None
        self.offset = 0

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise FormatError(self.path, f"file ends inside {what} (offset {self.offset}); truncated?")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def skip(self, size: int, what: str) -> None:
        if self.offset + size > len(self.data):
            raise FormatError(self.path, f"file ends inside {what} (offset {self.offset}); truncated?")
        self.offset += size

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = dtype.itemsize * count
        if self.offset + size > len(self.data):
            raise FormatError(self.path, f"file ends inside {what} (offset {self.offset}); truncated?")
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset).copy()
        self.offset += size
        return values

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\x00", self.offset)
        if end < 0:
            raise FormatError(self.path, f"file ends inside {what}; truncated?")
        raw = self.data[self.offset : end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(self.path, f"{what} is not UTF-8") from None

    def check_end(self) -> None:
        if self.offset != len(self.data):
            raise FormatError(self.path, f"{len(self.data) - self.offset} unexpected bytes after the last record")


def read_cameras(path: Path) -> dict[int, ColmapCamera]:
    """Read ``cameras.bin`` into ``{camera_id: ColmapCamera}``."""
    reader = _Reader(path)
    (count,) = reader.unpack("Q", "the camera count")
    cameras = {}
    for index in range(count):
        camera_id, model_id, width, height = reader.unpack("iiQQ", f"camera {index}")
        if model_id not in CAMERA_MODELS:
            raise FormatError(path, f"camera {camera_id} has unknown model id {model_id}")
        model, num_params = CAMERA_MODELS[model_id]
        params = reader.array("<f8", num_params, f"the parameters of camera {camera_id}")
        cameras[camera_id] = make_camera(path, camera_id, model, width, height, params)
    reader.check_end()
    return cameras


def read_images(path: Path, read_points2d: bool) -> list[ColmapImage]:
    """Read ``images.bin`` in file order; keypoints only with ``read_points2d``."""
    reader = _Reader(path)
    (count,) = reader.unpack("Q", "the image count")
    images = []
    for index in range(count):
        values = reader.unpack("idddddddi", f"image {index}")
        image_id, qvec, tvec, camera_id = values[0], np.array(values[1:5]), np.array(values[5:8]), values[8]
        name = reader.cstring(f"the name of image {image_id}")
        (num_points,) = reader.unpack("Q", f"the keypoint count of image '{name}'")
        points2d = point3d_ids = None
        if read_points2d:
            raw = reader.array(_KEYPOINT, num_points, f"the keypoints of '{name}'")
            points2d = np.stack([raw["x"], raw["y"]], axis=1)
            point3d_ids = raw["id"].astype(np.int64)
        else:
            reader.skip(24 * num_points, f"the keypoints of '{name}'")
        images.append(make_image(path, image_id, qvec, tvec, camera_id, name, points2d, point3d_ids))
    reader.check_end()
    return images


def read_points3d(path: Path) -> ColmapPoints:
    """Read ``points3D.bin``; tracks are skipped."""
    reader = _Reader(path)
    (count,) = reader.unpack("Q", "the point count")
    ids = np.empty(count, np.int64)
    xyz = np.empty((count, 3), np.float64)
    rgb = np.empty((count, 3), np.uint8)
    error = np.empty(count, np.float64)
    for index in range(count):
        values = reader.unpack("QdddBBBdQ", f"point {index}")
        ids[index], xyz[index], rgb[index], error[index] = values[0], values[1:4], values[4:7], values[7]
        reader.skip(8 * values[8], f"the track of point {values[0]}")
    reader.check_end()
    return ColmapPoints(ids=ids, xyz=xyz, rgb=rgb, error=error)


# ------------------------------------------------------------------------------------------ writing


def write_cameras(path: Path, cameras: list[ColmapCamera]) -> None:
    """Write ``cameras.bin`` (cameras in the order given), atomically."""
    chunks = [struct.pack("<Q", len(cameras))]
    for cam in cameras:
        chunks.append(struct.pack("<iiQQ", cam.camera_id, MODEL_IDS[cam.model], cam.width, cam.height))
        chunks.append(np.asarray(cam.params, "<f8").tobytes())
    atomic_write_bytes(path, b"".join(chunks))


def write_images(path: Path, images: list[ColmapImage]) -> None:
    """Write ``images.bin``, atomically; keypoints if the images carry them."""
    chunks = [struct.pack("<Q", len(images))]
    for im in images:
        chunks.append(struct.pack("<idddddddi", im.image_id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id))
        chunks.append(im.name.encode("utf-8") + b"\x00")
        count = 0 if im.points2d is None else len(im.points2d)
        chunks.append(struct.pack("<Q", count))
        if count:
            raw = np.zeros(count, dtype=_KEYPOINT)
            raw["x"], raw["y"], raw["id"] = im.points2d[:, 0], im.points2d[:, 1], im.point3d_ids
            chunks.append(raw.tobytes())
    atomic_write_bytes(path, b"".join(chunks))


def write_points3d(path: Path, points: ColmapPoints) -> None:
    """Write ``points3D.bin`` with empty tracks, atomically."""
    chunks = [struct.pack("<Q", len(points.ids))]
    for i in range(len(points.ids)):
        chunks.append(
            struct.pack(
                "<QdddBBBdQ",
                int(points.ids[i]),
                *map(float, points.xyz[i]),
                *map(int, points.rgb[i]),
                float(points.error[i]),
                0,
            )
        )
    atomic_write_bytes(path, b"".join(chunks))
