"""Writers of a preprocessed scene in the official GAGS layout (gags-method.md §1.2-1.3).

::

    <scene>/images/<name>                          the RGB images
    <scene>/sparse/0/{cameras,images,points3D}.txt COLMAP text model (one PINHOLE camera per image size)
    <scene>/language_features/<stem>_f.npy         (M, E) float32: unit mask embeddings of the levels
                                                   default, s, m, l, concatenated in that order
    <scene>/language_features/<stem>_s.npy         (4, H, W) float32: per level, the global row of _f.npy
                                                   painted over the mask's pixels, -1 where no mask

Within a level, masks are painted in list order, so a later mask overwrites an earlier one where they
overlap (§2.6); the rows of level k are offset by the mask counts of the levels before it (§1.3).
Every file is written atomically. ``E`` is the CLIP model's embedding width (512 for the official
ViT-B-16 and for the bundled demo model).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gags_viewer.fsutil import atomic_write_bytes
from gags_viewer.preprocess.masks import ALL_LEVELS, LevelMasks, MaskError

FEATURES_DIR = "language_features"
IMAGES_DIR = "images"
SPARSE_DIR = Path("sparse") / "0"


def segmentation_maps(
    masks: Mapping[str, Sequence[np.ndarray]], shape: tuple[int, int]
) -> tuple[np.ndarray, list[int]]:
    """The official ``_s`` array of one image.

    Args:
        masks: per level in :data:`ALL_LEVELS`, the masks in painting order, each [H, W] bool.
        shape: (H, W).

    Returns:
        (seg, counts): seg [4, H, W] float32 with global row indices or -1; counts: masks per level.
    """
    seg = np.full((len(ALL_LEVELS),) + tuple(shape), -1.0, dtype=np.float32)
    counts, offset = [], 0
    for channel, level in enumerate(ALL_LEVELS):
        level_masks = list(masks.get(level, []))
        for index, mask in enumerate(level_masks):
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != tuple(shape):
                raise MaskError(f"a {level} mask is {mask.shape[1]}x{mask.shape[0]}, expected {shape[1]}x{shape[0]}")
            seg[channel][mask] = offset + index
        counts.append(len(level_masks))
        offset += len(level_masks)
    return seg, counts


def feature_rows(embeddings: Mapping[str, Tensor | np.ndarray]) -> np.ndarray:
    """The official ``_f`` array: the per-level embeddings [M_k, E] stacked as default, s, m, l. -> [M, E] float32"""
    blocks = [np.asarray(embeddings[level], dtype=np.float32) for level in ALL_LEVELS if level in embeddings]
    dims = {b.shape[1] for b in blocks if b.size}
    if len(dims) > 1:
        raise MaskError(f"levels have embeddings of different widths: {sorted(dims)}")
    width = dims.pop() if dims else 0
    blocks = [b.reshape(-1, width) if b.size == 0 else b for b in blocks]
    return np.concatenate(blocks, axis=0) if blocks else np.zeros((0, width), np.float32)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (temporary file, then rename)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def language_feature_arrays(
    stem: str, masks: LevelMasks, embeddings: Mapping[str, Tensor | np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``_f`` and ``_s`` arrays of one image (see the module doc).

    Args:
        stem: image name without extension (for messages).
        masks: the image's masks per level.
        embeddings: per level, one unit embedding per mask of that level, in the same order. [M_k, E]

    Returns:
        (features [M, E] float32, seg [4, H, W] float32).
    """
    per_level = {level: masks.level(level) for level in ALL_LEVELS}
    for level in ALL_LEVELS:
        if len(per_level[level]) != len(embeddings[level]):
            raise MaskError(
                f"{stem}: level {level} has {len(per_level[level])} masks but {len(embeddings[level])} embeddings"
            )
    seg, _ = segmentation_maps(per_level, masks.shape())
    return feature_rows(embeddings), seg


def save_language_features(folder: str | Path, stem: str, features: np.ndarray, seg: np.ndarray) -> tuple[Path, Path]:
    """Write ``<stem>_f.npy`` then ``<stem>_s.npy`` into ``folder`` (created if needed), each atomically.

    ``_s.npy`` is written last, so an image counts as done (both files present) only once both are complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f_path, s_path = folder / f"{stem}_f.npy", folder / f"{stem}_s.npy"
    save_npy(f_path, features)
    save_npy(s_path, seg)
    return f_path, s_path


def write_language_features(
    folder: str | Path,
    stem: str,
    masks: LevelMasks,
    embeddings: Mapping[str, Tensor | np.ndarray],
) -> tuple[Path, Path]:
    """Write ``<stem>_f.npy`` and ``<stem>_s.npy`` of one image into ``folder``.

    Args:
        folder: the ``language_features`` directory (created if needed).
        stem: image name without extension.
        masks: the image's masks per level.
        embeddings: per level, one unit embedding per mask of that level, in the same order. [M_k, E]

    Returns:
        The two paths written.
    """
    features, seg = language_feature_arrays(stem, masks, embeddings)
    return save_language_features(folder, stem, features, seg)


def write_colmap_text(
    scene_dir: str | Path,
    names: Sequence[str],
    cameras: Sequence,
    points: np.ndarray | None = None,
    colors: np.ndarray | None = None,
) -> Path:
    """Write ``sparse/0/{cameras,images,points3D}.txt`` for posed pinhole cameras.

    Args:
        scene_dir: the scene directory.
        names: image file names (relative to ``images/``), one per camera.
        cameras: :class:`gags_viewer.render.camera.Camera` objects (world-to-camera pose, K, size).
        points: optional sparse points written to ``points3D.txt``. [P, 3]
        colors: their colours in [0, 1]. [P, 3]

    Returns:
        The ``sparse/0`` folder.
    """
    from gags_viewer.dataset.colmap import (
        ColmapCamera,
        ColmapImage,
        ColmapPoints,
        write_cameras,
        write_images,
        write_points3d,
    )

    sparse = Path(scene_dir) / SPARSE_DIR
    sparse.mkdir(parents=True, exist_ok=True)
    colmap_cameras: dict[tuple, ColmapCamera] = {}
    images = []
    for index, (name, camera) in enumerate(zip(names, cameras)):
        K = camera.K.double().numpy()
        key = (camera.width, camera.height, *np.round(K[[0, 1, 0, 1], [0, 1, 2, 2]], 6))
        if key not in colmap_cameras:
            colmap_cameras[key] = ColmapCamera(
                len(colmap_cameras) + 1, "PINHOLE", camera.width, camera.height, np.array(key[2:], dtype=np.float64)
            )
        w2c = camera.world_to_camera.double().numpy()
        images.append(
            ColmapImage(
                index + 1, name, rotation_to_quaternion(w2c[:3, :3]), w2c[:3, 3].copy(), colmap_cameras[key].camera_id
            )
        )
    write_cameras(sparse / "cameras.txt", list(colmap_cameras.values()))
    write_images(sparse / "images.txt", images)
    if points is None:
        points = np.zeros((0, 3))
        colors = np.zeros((0, 3))
    rgb = np.clip(np.round(np.asarray(colors if colors is not None else np.full_like(points, 0.5)) * 255), 0, 255)
    write_points3d(
        sparse / "points3D.txt",
        ColmapPoints(
            ids=np.arange(1, len(points) + 1),
            xyz=np.asarray(points, np.float64),
            rgb=rgb.astype(np.uint8),
            error=np.zeros(len(points)),
        ),
    )
    return sparse


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit (w, x, y, z) quaternion of a rotation matrix, w >= 0. [3, 3] -> [4] float64"""
    m = np.asarray(rotation, dtype=np.float64)
    # Symmetric 4x4 matrix whose top eigenvector is the quaternion (Bar-Itzhack's method): robust for any rotation.
    k = (
        np.array(
            [
                [m[0, 0] - m[1, 1] - m[2, 2], 0.0, 0.0, 0.0],
                [m[0, 1] + m[1, 0], m[1, 1] - m[0, 0] - m[2, 2], 0.0, 0.0],
                [m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], m[2, 2] - m[0, 0] - m[1, 1], 0.0],
                [m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], m[0, 0] + m[1, 1] + m[2, 2]],
            ]
        )
        / 3.0
    )
    values, vectors = np.linalg.eigh(k)
    x, y, z, w = vectors[:, np.argmax(values)]
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def save_image(path: str | Path, rgb: np.ndarray | Tensor) -> None:
    """Save an RGB image [H, W, 3] (float in [0, 1] or uint8) as PNG or JPEG (by extension), atomically."""
    from PIL import Image

    array = rgb.detach().cpu().numpy() if isinstance(rgb, Tensor) else np.asarray(rgb)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    suffix = Path(path).suffix.lower()
    fmt = "JPEG" if suffix in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    atomic_write_bytes(path, buffer.getvalue())


def image_to_array(image: np.ndarray | Tensor) -> np.ndarray:
    """[H, W, 3] float in [0, 1] or uint8 -> uint8 array."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype == np.uint8:
        return array
    return np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
