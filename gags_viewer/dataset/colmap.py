"""Reader for COLMAP sparse reconstructions (``sparse/0``): cameras, images and 3D points.

Both of COLMAP's on-disk forms are read: binary (``cameras.bin``, ``images.bin``, ``points3D.bin``) and
text (``cameras.txt``, ``images.txt``, ``points3D.txt``). When a folder holds both, binary wins (COLMAP
writes binary by default; the text form is usually an export of it).

Conventions (COLMAP's): an image pose is world-to-camera, ``x_cam = R(qvec) @ x_world + tvec`` with the
quaternion in (w, x, y, z) order and the camera looking down +z with y down (OpenCV axes), which is
exactly what :meth:`gags_viewer.render.camera.Camera.from_colmap` takes.

Pinhole use: PINHOLE and SIMPLE_PINHOLE are exact. Models with lens distortion but a pinhole core
(SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV) are accepted as pinhole with their distortion ignored, and
flagged by :attr:`ColmapCamera.distorted` so that callers can say so. Fisheye and other non-pinhole
models are refused by :meth:`ColmapCamera.pinhole`.

Malformed files raise :class:`gags_viewer.errors.FormatError` naming the file and the problem.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from gags_viewer.errors import FormatError

PathLike = Union[str, Path]

# model id -> (name, number of parameters), as in COLMAP's src/colmap/sensor/models.h.
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS = {name: model_id for model_id, (name, _) in CAMERA_MODELS.items()}

# Models whose projection is a pinhole followed by a lens distortion that we may ignore.
_PINHOLE_CORE = {
    "SIMPLE_PINHOLE": "exact",
    "PINHOLE": "exact",
    "SIMPLE_RADIAL": "distorted",
    "RADIAL": "distorted",
    "OPENCV": "distorted",
    "FULL_OPENCV": "distorted",
}


@dataclass(frozen=True)
class ColmapCamera:
    """One COLMAP camera (intrinsics shared by the images that name it).

    Attributes:
        camera_id: COLMAP's id.
        model: Model name, e.g. "PINHOLE".
        width, height: Image size in pixels the intrinsics refer to.
        params: The model's parameters in COLMAP's order. [P] float64
    """

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray

    @property
    def distorted(self) -> bool:
        """True for a pinhole-core model whose distortion :meth:`pinhole` ignores."""
        return _PINHOLE_CORE.get(self.model) == "distorted"

    def pinhole(self) -> tuple[float, float, float, float]:
        """Pinhole intrinsics ``(fx, fy, cx, cy)`` in pixels at ``width`` x ``height``.

        Raises FormatError for models without a pinhole core (fisheye, FOV, thin prism).
        """
        p = self.params
        if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            return float(p[0]), float(p[0]), float(p[1]), float(p[2])
        if self.model in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
            return float(p[0]), float(p[1]), float(p[2]), float(p[3])
        raise FormatError(
            f"camera {self.camera_id}",
            f"COLMAP model {self.model} is not a pinhole model; undistort the images first "
            "(colmap image_undistorter) to get PINHOLE cameras",
        )


@dataclass(frozen=True)
class ColmapImage:
    """One registered COLMAP image.

    Attributes:
        image_id: COLMAP's id.
        name: File name relative to the images folder (may contain sub-folders).
        qvec: World-to-camera rotation as a (w, x, y, z) quaternion. [4] float64
        tvec: World-to-camera translation. [3] float64
        camera_id: Id of its :class:`ColmapCamera`.
        points2d: Keypoints ``(x, y)`` if read, else None. [P, 2] float64
        point3d_ids: 3D point id of each keypoint (-1 for none) if read, else None. [P] int64
    """

    image_id: int
    name: str
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    points2d: Optional[np.ndarray] = None
    point3d_ids: Optional[np.ndarray] = None

    @property
    def stem(self) -> str:
        """File name without folders and without its last extension ("a/frame_1.jpg" -> "frame_1")."""
        return Path(self.name).stem

    def rotation(self) -> np.ndarray:
        """World-to-camera rotation matrix. [3, 3] float64"""
        w, x, y, z = self.qvec / np.linalg.norm(self.qvec)
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )

    def world_to_camera(self) -> np.ndarray:
        """[4, 4] float64"""
        w2c = np.eye(4)
        w2c[:3, :3] = self.rotation()
        w2c[:3, 3] = self.tvec
        return w2c

    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, ``-R^T t``. [3] float64"""
        return -self.rotation().T @ self.tvec


@dataclass(frozen=True)
class ColmapPoints:
    """The sparse point cloud.

    Attributes:
        ids: Point ids. [M] int64
        xyz: Positions. [M, 3] float64
        rgb: Colours. [M, 3] uint8
        error: Mean reprojection error in pixels. [M] float64
    """

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray


@dataclass
class ColmapScene:
    """Cameras and registered images of one reconstruction, with images sorted by name.

    Attributes:
        cameras: By camera id.
        images: Registered images sorted by ``name`` (the order the Inria/GAGS loaders use).
        folder: The ``sparse/0`` folder read.
    """

    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]
    folder: Path

    def camera_of(self, image: ColmapImage) -> ColmapCamera:
        try:
            return self.cameras[image.camera_id]
        except KeyError:
            raise FormatError(self.folder, f"image '{image.name}' names camera {image.camera_id}, which does not exist") from None

    def find(self, name: str) -> Optional[ColmapImage]:
        """The image whose name or name stem equals ``name`` (or whose stem equals ``name``'s stem)."""
        stem = Path(name).stem
        for image in self.images:
            if image.name == name:
                return image
        for image in self.images:
            if image.stem == stem:
                return image
        return None

    def render_camera(self, image: ColmapImage, width: Optional[int] = None, height: Optional[int] = None,
                      centered_principal_point: bool = False):
        """A :class:`~gags_viewer.render.camera.Camera` for ``image``, optionally resized.

        Args:
            image: one of :attr:`images`.
            width, height: output size; both None keeps the COLMAP size. Intrinsics scale per axis.
            centered_principal_point: put the principal point at the image centre, as the Inria/GAGS
                renderer does (it rebuilds K from the field of view and ignores COLMAP's cx, cy).
        """
        from gags_viewer.render.camera import Camera  # dataset readers do not need torch otherwise

        cam = self.camera_of(image)
        fx, fy, cx, cy = cam.pinhole()
        if centered_principal_point:
            cx, cy = cam.width / 2, cam.height / 2
        camera = Camera.from_colmap(image.qvec, image.tvec, fx, fy, cx, cy, cam.width, cam.height)
        if width is not None or height is not None:
            camera = camera.resized(int(width or cam.width), int(height or cam.height))
        return camera


def find_sparse_folder(scene_dir: PathLike) -> Path:
    """The reconstruction folder of a preprocessed scene: ``sparse/0``, else ``sparse``, else the folder itself."""
    scene_dir = Path(scene_dir)
    for candidate in (scene_dir / "sparse" / "0", scene_dir / "sparse", scene_dir):
        if any((candidate / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
            return candidate
    raise FormatError(scene_dir, "no COLMAP reconstruction found (expected sparse/0/cameras.bin or cameras.txt)")


def read_scene(folder: PathLike, read_points2d: bool = False) -> ColmapScene:
    """Read the cameras and images of a reconstruction folder (``sparse/0``) or of a scene folder above it.

    Args:
        folder: a folder holding ``cameras.{bin,txt}`` and ``images.{bin,txt}``, or a scene folder with
            ``sparse/0`` inside.
        read_points2d: also keep each image's keypoints (slower, more memory).
    """
    folder = find_sparse_folder(folder)
    cameras = read_cameras(_pick(folder, "cameras"))
    images = read_images(_pick(folder, "images"), read_points2d=read_points2d)
    images.sort(key=lambda im: im.name)
    scene = ColmapScene(cameras=cameras, images=images, folder=folder)
    for image in images:
        scene.camera_of(image)
    return scene


def read_cameras(path: PathLike) -> dict[int, ColmapCamera]:
    """Read ``cameras.bin`` or ``cameras.txt`` (by extension) into ``{camera_id: ColmapCamera}``."""
    path = Path(path)
    return _read_cameras_bin(path) if path.suffix == ".bin" else _read_cameras_txt(path)


def read_images(path: PathLike, read_points2d: bool = False) -> list[ColmapImage]:
    """Read ``images.bin`` or ``images.txt`` (by extension), in file order."""
    path = Path(path)
    return _read_images_bin(path, read_points2d) if path.suffix == ".bin" else _read_images_txt(path, read_points2d)


def read_points3d(path: PathLike) -> ColmapPoints:
    """Read ``points3D.bin`` or ``points3D.txt`` (by extension); tracks are skipped."""
    path = Path(path)
    return _read_points_bin(path) if path.suffix == ".bin" else _read_points_txt(path)


def _pick(folder: Path, stem: str) -> Path:
    for ext in ("bin", "txt"):
        candidate = folder / f"{stem}.{ext}"
        if candidate.is_file():
            return candidate
    raise FormatError(folder, f"missing {stem}.bin or {stem}.txt")


# ----------------------------------------------------------------------------------------- binary


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
        raw = self.data[self.offset:end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(self.path, f"{what} is not UTF-8") from None

    def check_end(self) -> None:
        if self.offset != len(self.data):
            raise FormatError(self.path, f"{len(self.data) - self.offset} unexpected bytes after the last record")


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    reader = _Reader(path)
    (count,) = reader.unpack("Q", "the camera count")
    cameras = {}
    for index in range(count):
        camera_id, model_id, width, height = reader.unpack("iiQQ", f"camera {index}")
        if model_id not in CAMERA_MODELS:
            raise FormatError(path, f"camera {camera_id} has unknown model id {model_id}")
        model, num_params = CAMERA_MODELS[model_id]
        params = reader.array("<f8", num_params, f"the parameters of camera {camera_id}")
        cameras[camera_id] = _make_camera(path, camera_id, model, width, height, params)
    reader.check_end()
    return cameras


def _read_images_bin(path: Path, read_points2d: bool) -> list[ColmapImage]:
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
            raw = reader.array(np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]), num_points, f"the keypoints of '{name}'")
            points2d = np.stack([raw["x"], raw["y"]], axis=1)
            point3d_ids = raw["id"].astype(np.int64)
        else:
            reader.skip(24 * num_points, f"the keypoints of '{name}'")
        images.append(_make_image(path, image_id, qvec, tvec, camera_id, name, points2d, point3d_ids))
    reader.check_end()
    return images


def _read_points_bin(path: Path) -> ColmapPoints:
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


# ------------------------------------------------------------------------------------------- text


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, content) of every line that is not a comment; blank lines are kept."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(path, f"cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise FormatError(path, "is not UTF-8 text") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if not line.lstrip().startswith("#")]


def _numbers(path: Path, number: int, tokens: list[str], kind, what: str) -> list:
    try:
        return [kind(token) for token in tokens]
    except ValueError:
        raise FormatError(path, f"line {number}: {what} must be numbers, got {' '.join(tokens)!r}") from None


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for number, line in _text_lines(path):
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 4:
            raise FormatError(path, f"line {number}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'")
        camera_id, width, height = _numbers(path, number, [tokens[0], tokens[2], tokens[3]], int, "CAMERA_ID WIDTH HEIGHT")
        model = tokens[1]
        if model not in MODEL_IDS:
            raise FormatError(path, f"line {number}: unknown camera model '{model}'")
        params = np.array(_numbers(path, number, tokens[4:], float, "camera parameters"), dtype=np.float64)
        expected = CAMERA_MODELS[MODEL_IDS[model]][1]
        if params.shape[0] != expected:
            raise FormatError(path, f"line {number}: model {model} takes {expected} parameters, got {params.shape[0]}")
        cameras[camera_id] = _make_camera(path, camera_id, model, width, height, params)
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


def _read_images_txt(path: Path, read_points2d: bool) -> list[ColmapImage]:
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
        tokens = line.split()
        if len(tokens) < 10:
            raise FormatError(path, f"line {number}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'")
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
        images.append(_make_image(path, image_id, pose[:4], pose[4:], camera_id, name, points2d, point3d_ids))
    return images


def _read_points_txt(path: Path) -> ColmapPoints:
    rows = []
    for number, line in _text_lines(path):
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 8:
            raise FormatError(path, f"line {number}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK...'")
        rows.append(_numbers(path, number, tokens[:8], float, "POINT3D_ID X Y Z R G B ERROR"))
    table = np.array(rows, dtype=np.float64).reshape(-1, 8)
    return ColmapPoints(
        ids=table[:, 0].astype(np.int64),
        xyz=table[:, 1:4],
        rgb=table[:, 4:7].astype(np.uint8),
        error=table[:, 7],
    )


# --------------------------------------------------------------------------------------- checking


def _make_camera(path: Path, camera_id: int, model: str, width: int, height: int, params: np.ndarray) -> ColmapCamera:
    if width < 1 or height < 1:
        raise FormatError(path, f"camera {camera_id} has size {width}x{height}")
    if not np.isfinite(params).all():
        raise FormatError(path, f"camera {camera_id} has NaN or Inf parameters")
    return ColmapCamera(camera_id=int(camera_id), model=model, width=int(width), height=int(height), params=params)


def _make_image(path, image_id, qvec, tvec, camera_id, name, points2d, point3d_ids) -> ColmapImage:
    if not name:
        raise FormatError(path, f"image {image_id} has an empty name")
    if not (np.isfinite(qvec).all() and np.isfinite(tvec).all()):
        raise FormatError(path, f"image '{name}' has a NaN or Inf pose")
    if np.linalg.norm(qvec) < 1e-12:
        raise FormatError(path, f"image '{name}' has a zero quaternion")
    return ColmapImage(
        image_id=int(image_id), name=name, qvec=np.asarray(qvec, np.float64), tvec=np.asarray(tvec, np.float64),
        camera_id=int(camera_id), points2d=points2d, point3d_ids=point3d_ids,
    )


# ---------------------------------------------------------------------------------------- writing


def write_cameras(path: PathLike, cameras: dict[int, ColmapCamera] | list[ColmapCamera]) -> None:
    """Write ``cameras.bin`` or ``cameras.txt`` (by extension), atomically."""
    from gags_viewer.fsutil import atomic_write_bytes, atomic_write_text

    path = Path(path)
    items = sorted(cameras.values() if isinstance(cameras, dict) else cameras, key=lambda c: c.camera_id)
    if path.suffix == ".bin":
        chunks = [struct.pack("<Q", len(items))]
        for cam in items:
            chunks.append(struct.pack("<iiQQ", cam.camera_id, MODEL_IDS[cam.model], cam.width, cam.height))
            chunks.append(np.asarray(cam.params, "<f8").tobytes())
        atomic_write_bytes(path, b"".join(chunks))
    else:
        lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
        for cam in items:
            lines.append(" ".join([str(cam.camera_id), cam.model, str(cam.width), str(cam.height)] + [repr(float(p)) for p in cam.params]))
        atomic_write_text(path, "\n".join(lines) + "\n")


def write_images(path: PathLike, images: list[ColmapImage]) -> None:
    """Write ``images.bin`` or ``images.txt`` (by extension), atomically; keypoints if the images carry them."""
    from gags_viewer.fsutil import atomic_write_bytes, atomic_write_text

    path = Path(path)
    if path.suffix == ".bin":
        chunks = [struct.pack("<Q", len(images))]
        for im in images:
            chunks.append(struct.pack("<idddddddi", im.image_id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id))
            chunks.append(im.name.encode("utf-8") + b"\x00")
            count = 0 if im.points2d is None else len(im.points2d)
            chunks.append(struct.pack("<Q", count))
            if count:
                raw = np.zeros(count, dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
                raw["x"], raw["y"], raw["id"] = im.points2d[:, 0], im.points2d[:, 1], im.point3d_ids
                chunks.append(raw.tobytes())
        atomic_write_bytes(path, b"".join(chunks))
    else:
        lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
        for im in images:
            pose = " ".join(repr(float(v)) for v in (*im.qvec, *im.tvec))
            lines.append(f"{im.image_id} {pose} {im.camera_id} {im.name}")
            if im.points2d is None:
                lines.append("")
            else:
                lines.append(" ".join(f"{x!r} {y!r} {int(i)}" for (x, y), i in zip(im.points2d.tolist(), im.point3d_ids)))
        atomic_write_text(path, "\n".join(lines) + "\n")


def write_points3d(path: PathLike, points: ColmapPoints) -> None:
    """Write ``points3D.bin`` or ``points3D.txt`` (by extension) with empty tracks, atomically."""
    from gags_viewer.fsutil import atomic_write_bytes, atomic_write_text

    path = Path(path)
    if path.suffix == ".bin":
        chunks = [struct.pack("<Q", len(points.ids))]
        for i in range(len(points.ids)):
            chunks.append(struct.pack("<QdddBBBdQ", int(points.ids[i]), *map(float, points.xyz[i]),
                                      *map(int, points.rgb[i]), float(points.error[i]), 0))
        atomic_write_bytes(path, b"".join(chunks))
    else:
        lines = ["# 3D point list with one line of data per point:",
                 "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
        for i in range(len(points.ids)):
            x, y, z = (repr(float(v)) for v in points.xyz[i])
            r, g, b = (int(v) for v in points.rgb[i])
            lines.append(f"{int(points.ids[i])} {x} {y} {z} {r} {g} {b} {float(points.error[i])!r}")
        atomic_write_text(path, "\n".join(lines) + "\n")
