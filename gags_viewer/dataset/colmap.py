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

This module is the format-neutral API (it picks the form by file extension) and the scene type; the data
types live in :mod:`~gags_viewer.dataset.colmap_types` and the two on-disk forms in
:mod:`~gags_viewer.dataset.colmap_binary` and :mod:`~gags_viewer.dataset.colmap_text`. The data types
are re-exported here, so callers import everything from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from gags_viewer.dataset import colmap_binary, colmap_text
from gags_viewer.dataset.colmap_types import (
    CAMERA_MODELS,
    MODEL_IDS,
    ColmapCamera,
    ColmapImage,
    ColmapPoints,
)
from gags_viewer.errors import FormatError

__all__ = [
    "CAMERA_MODELS",
    "MODEL_IDS",
    "ColmapCamera",
    "ColmapImage",
    "ColmapPoints",
    "ColmapScene",
    "PathLike",
    "find_sparse_folder",
    "read_cameras",
    "read_images",
    "read_points3d",
    "read_scene",
    "write_cameras",
    "write_images",
    "write_points3d",
]

PathLike = str | Path


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
            raise FormatError(
                self.folder, f"image '{image.name}' names camera {image.camera_id}, which does not exist"
            ) from None

    def find(self, name: str) -> ColmapImage | None:
        """The image whose name or name stem equals ``name`` (or whose stem equals ``name``'s stem)."""
        stem = Path(name).stem
        for image in self.images:
            if image.name == name:
                return image
        for image in self.images:
            if image.stem == stem:
                return image
        return None

    def render_camera(
        self,
        image: ColmapImage,
        width: int | None = None,
        height: int | None = None,
        centered_principal_point: bool = False,
    ):
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
    return _form(path).read_cameras(path)


def read_images(path: PathLike, read_points2d: bool = False) -> list[ColmapImage]:
    """Read ``images.bin`` or ``images.txt`` (by extension), in file order."""
    path = Path(path)
    return _form(path).read_images(path, read_points2d)


def read_points3d(path: PathLike) -> ColmapPoints:
    """Read ``points3D.bin`` or ``points3D.txt`` (by extension); tracks are skipped."""
    path = Path(path)
    return _form(path).read_points3d(path)


def write_cameras(path: PathLike, cameras: dict[int, ColmapCamera] | list[ColmapCamera]) -> None:
    """Write ``cameras.bin`` or ``cameras.txt`` (by extension), atomically."""
    path = Path(path)
    items = sorted(cameras.values() if isinstance(cameras, dict) else cameras, key=lambda c: c.camera_id)
    _form(path).write_cameras(path, items)


def write_images(path: PathLike, images: list[ColmapImage]) -> None:
    """Write ``images.bin`` or ``images.txt`` (by extension), atomically; keypoints if the images carry them."""
    path = Path(path)
    _form(path).write_images(path, images)


def write_points3d(path: PathLike, points: ColmapPoints) -> None:
    """Write ``points3D.bin`` or ``points3D.txt`` (by extension) with empty tracks, atomically."""
    path = Path(path)
    _form(path).write_points3d(path, points)


def _form(path: Path) -> ModuleType:
    """The module that reads and writes ``path``'s form: binary for ``.bin``, text for anything else."""
    return colmap_binary if path.suffix == ".bin" else colmap_text


def _pick(folder: Path, stem: str) -> Path:
    for ext in ("bin", "txt"):
        candidate = folder / f"{stem}.{ext}"
        if candidate.is_file():
            return candidate
    raise FormatError(folder, f"missing {stem}.bin or {stem}.txt")
