"""COLMAP's data types: cameras (with the pinhole view of their intrinsics), images (poses) and points.

The binary (:mod:`gags_viewer.dataset.colmap_binary`) and text (:mod:`gags_viewer.dataset.colmap_text`)
readers build these through :func:`make_camera` and :func:`make_image`, which refuse malformed values with
a :class:`gags_viewer.errors.FormatError` naming the file. Conventions: see :mod:`gags_viewer.dataset.colmap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gags_viewer.errors import FormatError

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
    points2d: np.ndarray | None = None
    point3d_ids: np.ndarray | None = None

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


# --------------------------------------------------------------------------- checked construction


def make_camera(path: Path, camera_id: int, model: str, width: int, height: int, params: np.ndarray) -> ColmapCamera:
    """A :class:`ColmapCamera` read from ``path``; FormatError for a size below 1 or non-finite parameters."""
    if width < 1 or height < 1:
        raise FormatError(path, f"camera {camera_id} has size {width}x{height}")
    if not np.isfinite(params).all():
        raise FormatError(path, f"camera {camera_id} has NaN or Inf parameters")
    return ColmapCamera(camera_id=int(camera_id), model=model, width=int(width), height=int(height), params=params)


def make_image(path, image_id, qvec, tvec, camera_id, name, points2d, point3d_ids) -> ColmapImage:
    """A :class:`ColmapImage` read from ``path``; FormatError for an empty name or a non-finite or zero pose."""
    if not name:
        raise FormatError(path, f"image {image_id} has an empty name")
    if not (np.isfinite(qvec).all() and np.isfinite(tvec).all()):
        raise FormatError(path, f"image '{name}' has a NaN or Inf pose")
    if np.linalg.norm(qvec) < 1e-12:
        raise FormatError(path, f"image '{name}' has a zero quaternion")
    return ColmapImage(
        image_id=int(image_id),
        name=name,
        qvec=np.asarray(qvec, np.float64),
        tvec=np.asarray(tvec, np.float64),
        camera_id=int(camera_id),
        points2d=points2d,
        point3d_ids=point3d_ids,
    )
