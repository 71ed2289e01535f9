"""Readers for preprocessed scenes (COLMAP reconstructions and their images)."""

from gags_viewer.dataset.colmap import (
    ColmapCamera,
    ColmapImage,
    ColmapPoints,
    ColmapScene,
    find_sparse_folder,
    read_cameras,
    read_images,
    read_points3d,
    read_scene,
)

__all__ = [
    "ColmapCamera",
    "ColmapImage",
    "ColmapPoints",
    "ColmapScene",
    "find_sparse_folder",
    "read_cameras",
    "read_images",
    "read_points3d",
    "read_scene",
]
