"""Pinhole camera in the OpenCV convention (x right, y down, z forward), as gsplat uses it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gags_viewer.errors import RenderError


@dataclass(frozen=True)
class Camera:
    """A pinhole camera.

    Attributes:
        world_to_camera: World-to-camera rigid transform (gsplat's ``viewmat``). [4, 4] float32
        K: Intrinsics in pixels. [3, 3] float32
        width: Image width in pixels.
        height: Image height in pixels.
    """

    world_to_camera: Tensor
    K: Tensor
    width: int
    height: int

    def __post_init__(self):
        if tuple(self.world_to_camera.shape) != (4, 4) or tuple(self.K.shape) != (3, 3):
            raise RenderError("camera needs a [4,4] world_to_camera and a [3,3] K")
        if self.width < 1 or self.height < 1:
            raise RenderError(f"camera image size must be positive, got {self.width}x{self.height}")
        if not (torch.isfinite(self.world_to_camera).all() and torch.isfinite(self.K).all()):
            raise RenderError("camera matrices contain NaN or Inf")

    def key(self) -> tuple:
        """A hashable value equal for cameras that render the same image (size, pose, intrinsics)."""
        return (
            self.width,
            self.height,
            tuple(self.world_to_camera.reshape(-1).tolist()),
            tuple(self.K.reshape(-1).tolist()),
        )

    @property
    def camera_to_world(self) -> Tensor:
        """[4, 4]"""
        return torch.linalg.inv(self.world_to_camera)

    @property
    def center(self) -> Tensor:
        """Camera position in world coordinates. [3]"""
        rotation = self.world_to_camera[:3, :3]
        return -rotation.T @ self.world_to_camera[:3, 3]

    @staticmethod
    def from_camera_to_world(c2w, K, width: int, height: int) -> Camera:
        """Camera from a camera-to-world matrix ([4,4] or [3,4], OpenCV axes) and intrinsics."""
        c2w = _as_tensor(c2w)
        if tuple(c2w.shape) == (3, 4):
            c2w = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]])], dim=0)
        return Camera(torch.linalg.inv(c2w), _as_tensor(K), int(width), int(height))

    @staticmethod
    def from_fov(c2w, fov_y_deg: float, width: int, height: int) -> Camera:
        """Camera with square pixels, a vertical field of view and the principal point at the centre."""
        focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        return Camera.from_camera_to_world(c2w, intrinsics(focal, focal, width, height), width, height)

    @staticmethod
    def from_nerfview(camera_state, width: int, height: int) -> Camera:
        """Camera from nerfview's ``CameraState`` (fields ``c2w`` and ``get_K((W, H))``)."""
        return Camera.from_camera_to_world(camera_state.c2w, camera_state.get_K((width, height)), width, height)

    @staticmethod
    def from_colmap(qvec, tvec, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> Camera:
        """Camera from a COLMAP image pose (world-to-camera quaternion wxyz and translation) and intrinsics."""
        rotation = quat_to_rotation(_as_tensor(qvec))
        w2c = torch.eye(4)
        w2c[:3, :3] = rotation
        w2c[:3, 3] = _as_tensor(tvec)
        return Camera(w2c, intrinsics(fx, fy, width, height, cx, cy), int(width), int(height))

    @staticmethod
    def from_cameras_json(entry: dict) -> Camera:
        """Camera from one entry of the Inria ``cameras.json`` (position, c2w rotation, fx, fy, size).

        Principal point at the image centre, as the Inria/GAGS renderer assumes.
        """
        try:
            c2w = torch.eye(4)
            c2w[:3, :3] = _as_tensor(entry["rotation"])
            c2w[:3, 3] = _as_tensor(entry["position"])
            width, height = int(entry["width"]), int(entry["height"])
            K = intrinsics(float(entry["fx"]), float(entry["fy"]), width, height)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RenderError(
                f"bad cameras.json entry {entry.get('img_name', '?') if isinstance(entry, dict) else ''}: {exc}"
            ) from None
        return Camera.from_camera_to_world(c2w, K, width, height)

    def resized(self, width: int, height: int) -> Camera:
        """The same view at another image size (intrinsics scaled per axis)."""
        K = self.K.clone()
        K[0] *= width / self.width
        K[1] *= height / self.height
        K[2] = torch.tensor([0.0, 0.0, 1.0])
        return Camera(self.world_to_camera, K, int(width), int(height))


def intrinsics(
    fx: float, fy: float, width: int, height: int, cx: float | None = None, cy: float | None = None
) -> Tensor:
    """[3, 3] pinhole intrinsics; the principal point defaults to the image centre."""
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def quat_to_rotation(quat: Tensor) -> Tensor:
    """Rotation matrices from (w, x, y, z) quaternions (normalised here). [..., 4] -> [..., 3, 3]"""
    w, x, y, z = torch.nn.functional.normalize(quat, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quat.shape[:-1] + (3, 3))


def look_at(eye, target, up) -> Tensor:
    """Camera-to-world matrix (OpenCV axes) at ``eye`` looking at ``target``; ``up`` is world up. [4, 4]"""
    eye, target, up = (_as_tensor(v) for v in (eye, target, up))
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def _as_tensor(value) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to(torch.float32).cpu()
    return torch.as_tensor(np.asarray(value, dtype=np.float32))
