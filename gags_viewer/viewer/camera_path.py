"""Camera paths: nerfview's (nerfstudio-style) JSON <-> :class:`Camera`, and default orbits.

nerfview's camera-path panel saves JSON whose poses differ from the viewer's cameras in two ways
(``nerfview/render_panel.py``, ``save_camera_path``; its ``Load Trajectory`` applies the inverse):

- rotation: ``R_json = R_viser @ Rx(pi)``: the OpenCV camera axes of viser (x right, y down,
  z forward) become nerfstudio's OpenGL ones (x right, y up, z backward);
- position: ``t_json = t_viser / scale_ratio`` with ``scale_ratio = 10``
  (``VISER_NERFSTUDIO_SCALE_RATIO``, the default of ``populate_general_render_tab``).

Each ``camera_path`` entry holds ``camera_to_world`` (a row-major 4x4, flattened), ``fov`` (vertical,
degrees) and ``aspect``; the file also holds ``render_width``, ``render_height``, ``fps`` and ``seconds``.
The viewer's cameras live in the field's world coordinates, so undoing both changes gives the camera
the viewer showed, and the headless ``render`` command reproduces the viewer's frames.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera, look_at

SCALE_RATIO = 10.0
"""nerfview's VISER_NERFSTUDIO_SCALE_RATIO: camera-path JSON positions are viewer positions / 10."""
MAX_IMAGE_SIDE = 16384
"""Largest render width or height a camera path may ask for."""
ROTATION_TOLERANCE = 1e-3
"""How far a camera_to_world rotation block may be from orthonormal (max |R^T R - I|)."""

_FLIP_YZ = np.diag([1.0, -1.0, -1.0])  # Rx(pi): OpenCV camera axes <-> OpenGL camera axes


@dataclass
class CameraPath:
    """Cameras of a path, ready to render.

    Attributes:
        cameras: one camera per frame, all ``width`` x ``height``.
        fps: frame rate of the video.
        width, height: image size in pixels.
    """

    cameras: list[Camera]
    fps: float
    width: int
    height: int


def wxyz_to_matrix(wxyz: Sequence[float]) -> np.ndarray:
    """Rotation matrix of a (w, x, y, z) quaternion (normalised here). [3, 3]"""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(np.asarray(wxyz, dtype=np.float64))
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def viewer_c2w(wxyz: Sequence[float], position: Sequence[float]) -> np.ndarray:
    """Camera-to-world matrix (OpenCV axes) of a viser camera pose, as nerfview renders it. [4, 4]"""
    c2w = np.eye(4)
    c2w[:3, :3] = wxyz_to_matrix(wxyz)
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    return c2w


def c2w_to_path_matrix(c2w: np.ndarray, scale_ratio: float = SCALE_RATIO) -> np.ndarray:
    """Viewer camera-to-world (OpenCV axes) -> nerfview JSON ``camera_to_world``. [4, 4]"""
    c2w = np.asarray(c2w, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = c2w[:3, :3] @ _FLIP_YZ
    out[:3, 3] = c2w[:3, 3] / scale_ratio
    return out


def path_matrix_to_c2w(matrix, scale_ratio: float = SCALE_RATIO) -> np.ndarray:
    """nerfview JSON ``camera_to_world`` (flat 16 or [4, 4], or [3, 4]) -> viewer camera-to-world. [4, 4]"""
    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 16:
        m = m.reshape(4, 4)
    elif m.size == 12:
        m = np.vstack([m.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])
    else:
        raise GagsError(f"a camera_to_world matrix needs 12 or 16 numbers, got {m.size}")
    if not np.isfinite(m).all():
        raise GagsError("a camera_to_world matrix contains NaN or Inf")
    rotation = m[:3, :3]
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.abs(rotation.T @ rotation - np.eye(3)).max() <= ROTATION_TOLERANCE:
            raise GagsError("a camera_to_world matrix does not hold a rotation (its 3x3 block is not orthonormal)")
        out = np.eye(4)
        out[:3, :3] = rotation @ _FLIP_YZ
        out[:3, 3] = m[:3, 3] * scale_ratio
    if not np.isfinite(out.astype(np.float32)).all():
        raise GagsError("a camera_to_world position is too large")
    return out


def camera_from_fov(c2w: np.ndarray, fov_y_rad: float, width: int, height: int) -> Camera:
    """The camera nerfview renders: principal point at the centre, focal = H / 2 / tan(fov_y / 2)."""
    return Camera.from_fov(
        torch.as_tensor(np.asarray(c2w), dtype=torch.float32), math.degrees(fov_y_rad), width, height
    )


def parse_camera_path(
    data: dict,
    width: int | None = None,
    height: int | None = None,
    scale_ratio: float = SCALE_RATIO,
    source: str = "camera path",
) -> CameraPath:
    """Cameras of a nerfview / nerfstudio camera-path JSON object.

    Args:
        data: the parsed JSON (needs ``camera_path``; ``render_width``/``render_height`` and ``fps`` are
            used when present).
        width, height: override the image size (one alone keeps the path's aspect ratio).
        scale_ratio: positions in the file are multiplied by this (10 for nerfview's panel; use 1 for
            a path written by nerfstudio in world units).
    """
    if not isinstance(data, dict) or not isinstance(data.get("camera_path"), list):
        raise GagsError(f"{source}: not a camera path (expected a JSON object with a 'camera_path' list)")
    entries = data["camera_path"]
    if not entries:
        raise GagsError(f"{source}: the camera path has no frames (add at least two keyframes and save again)")
    camera_type = data.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise GagsError(f"{source}: camera_type {camera_type!r:.40} is not supported (perspective only)")
    file_w = int(_finite(data.get("render_width", 0), "render_width", source)) or None
    file_h = int(_finite(data.get("render_height", 0), "render_height", source)) or None
    fps = _finite(data.get("fps", 30.0), "fps", source)

    def aspect() -> float:
        if file_w and file_h:
            return file_w / file_h
        value = entries[0].get("aspect", 4 / 3) if isinstance(entries[0], dict) else 4 / 3
        ratio = _finite(value, "frame 0 aspect", source)
        if ratio <= 0:
            raise GagsError(f"{source}: frame 0 aspect must be positive, got {value!r:.40}")
        return ratio

    if width is None and height is None:
        width, height = file_w or 640, file_h or None
        if height is None:
            height = _rounded(width / aspect())
    elif width is None:
        width = _rounded(height * aspect())
    elif height is None:
        height = _rounded(width / aspect())
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE) or not fps > 0:
        raise GagsError(
            f"{source}: image size {width}x{height} must be 1..{MAX_IMAGE_SIDE} pixels a side and fps {fps} positive"
        )
    cameras = []
    for i, entry in enumerate(entries):
        try:
            c2w = path_matrix_to_c2w(entry["camera_to_world"], scale_ratio)
            fov = math.radians(float(entry["fov"]))
            if not 0 < fov < math.pi:
                raise GagsError(f"has a field of view of {entry['fov']!r:.40} degrees")
            cameras.append(camera_from_fov(c2w, fov, width, height))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise GagsError(f"{source}: frame {i} needs camera_to_world and fov ({_one_line(exc)})") from None
        except GagsError as exc:
            raise GagsError(f"{source}: frame {i}: {exc}") from None
    return CameraPath(cameras=cameras, fps=fps, width=int(width), height=int(height))


def _finite(value, name: str, source: str) -> float:
    """``value`` (a JSON number or numeric string) as a finite float, else a :class:`GagsError`."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise GagsError(f"{source}: {name} must be a finite number, got {value!r:.40}")
    return number


def _rounded(pixels: float) -> int:
    """Nearest integer pixel count; an overflowing size becomes one past the limit (and is refused)."""
    return int(round(pixels)) if math.isfinite(pixels) else MAX_IMAGE_SIDE + 1


def _one_line(error: Exception) -> str:
    return str(error).replace("\n", " ")[:160]


def read_camera_path(
    path: str | Path, width: int | None = None, height: int | None = None, scale_ratio: float = SCALE_RATIO
) -> CameraPath:
    """Read a camera-path JSON file (see :func:`parse_camera_path`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GagsError(f"{path}: no such camera path file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GagsError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise GagsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # a 4300-digit integer, lists nested thousands deep
        raise GagsError(f"{path}: not valid JSON ({_one_line(exc) or 'nested too deeply'})") from None
    return parse_camera_path(data, width, height, scale_ratio, source=str(path))


def camera_path_json(
    poses: Sequence[tuple[np.ndarray, float]],
    width: int,
    height: int,
    fps: float,
    keyframes: Sequence[tuple[np.ndarray, float]] = (),
    default_fov_deg: float = 50.0,
    scale_ratio: float = SCALE_RATIO,
    loop: bool = False,
) -> dict:
    """A camera-path JSON object as nerfview's ``Save Trajectory`` writes it.

    Args:
        poses: per frame, the viewer camera-to-world matrix (OpenCV axes, [4, 4]) and vertical FOV
            in radians.
        keyframes: the same for the keyframes (kept so that nerfview's ``Load Trajectory`` can edit
            the path again).
    """
    aspect = width / height
    return {
        "default_fov": default_fov_deg,
        "default_transition_sec": (len(poses) / fps) / max(1, len(keyframes) - 1) if keyframes else 2.0,
        "keyframes": [
            {
                "matrix": c2w_to_path_matrix(c2w, scale_ratio).flatten().tolist(),
                "fov": math.degrees(fov),
                "aspect": aspect,
                "override_transition_enabled": False,
                "override_transition_sec": None,
            }
            for c2w, fov in keyframes
        ],
        "render_height": int(height),
        "render_width": int(width),
        "fps": fps,
        "seconds": len(poses) / fps,
        "is_cycle": loop,
        "smoothness_value": 0.0,
        "camera_path": [
            {
                "camera_to_world": c2w_to_path_matrix(c2w, scale_ratio).flatten().tolist(),
                "fov": math.degrees(fov),
                "aspect": aspect,
            }
            for c2w, fov in poses
        ],
    }


def camera_path_from_nerfview(panel_path, width: int, height: int, fps: float) -> dict | None:
    """The JSON nerfview's ``Save Trajectory`` would write for its camera-path panel object.

    ``panel_path`` is nerfview's ``render_panel.CameraPath`` (keyframes, splines, loop, default FOV).
    Frames are sampled exactly as nerfview samples them: ``int(fps * duration)`` frames at
    ``i / num_frames``. Returns None when the path has fewer than two keyframes.
    """
    from gags_viewer.viewer.nerfview_adapter import path_has_splines, path_keyframes

    keyframes = path_keyframes(panel_path)
    if len(keyframes) < 2:
        return None
    if not path_has_splines(panel_path):
        panel_path.update_spline()
    num_frames = int(fps * panel_path.compute_duration())
    if num_frames <= 0:
        return None
    poses = []
    for i in range(num_frames):
        pose_fov = panel_path.interpolate_pose_and_fov_rad(i / num_frames)
        if pose_fov is None:
            return None
        pose, fov = pose_fov[0], pose_fov[1]
        poses.append((viewer_c2w(pose.rotation().wxyz, pose.translation()), float(fov)))
    keyframe_poses = [
        (
            viewer_c2w(k.wxyz, k.position),
            k.override_fov_rad if k.override_fov_enabled else panel_path.default_fov,
        )
        for k in keyframes
    ]
    return camera_path_json(
        poses,
        width,
        height,
        fps,
        keyframes=keyframe_poses,
        default_fov_deg=math.degrees(panel_path.default_fov),
        loop=bool(panel_path.loop),
    )


@dataclass
class Framing:
    """Where to look from: a camera position, the point looked at, world up and a vertical FOV."""

    eye: np.ndarray
    target: np.ndarray
    up: np.ndarray
    fov_y_deg: float

    def c2w(self) -> np.ndarray:
        return look_at(self.eye, self.target, self.up).double().numpy()


def _scene_sphere(field: LanguageField) -> tuple[np.ndarray, float]:
    low, high = (t.detach().cpu().double().numpy() for t in field.bounds())
    center = (low + high) / 2
    radius = float(np.linalg.norm(high - low) / 2)
    return center, max(radius, 1e-3)


def _up(field: LanguageField) -> np.ndarray:
    up = np.asarray(field.metadata.up, dtype=np.float64)
    norm = np.linalg.norm(up)
    return up / norm if norm > 0 else np.array([0.0, -1.0, 0.0])


def orbit_poses(
    field: LanguageField, num_frames: int, fov_y_deg: float = 50.0, aspect: float = 4 / 3, elevation_deg: float = 25.0
) -> list[Framing]:
    """A full turn around the scene's bounds (1st-99th percentile of the centres), about world up.

    The distance makes the bounding sphere fit the narrower of the two fields of view.
    """
    if num_frames < 1:
        raise GagsError(f"an orbit needs at least one frame, got {num_frames}")
    center, radius = _scene_sphere(field)
    up = _up(field)
    # Two directions spanning the plane orthogonal to up.
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    a = np.cross(up, helper)
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    half_fov = math.radians(fov_y_deg) / 2
    half_fov_x = math.atan(math.tan(half_fov) * aspect)
    distance = radius / math.sin(min(half_fov, half_fov_x)) * 1.05
    elevation = math.radians(elevation_deg)
    out = []
    for i in range(num_frames):
        theta = 2 * math.pi * i / num_frames
        direction = math.cos(elevation) * (math.cos(theta) * a + math.sin(theta) * b) + math.sin(elevation) * up
        out.append(Framing(center + distance * direction, center.copy(), up.copy(), fov_y_deg))
    return out


def orbit_path(
    field: LanguageField,
    num_frames: int = 60,
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    fov_y_deg: float = 50.0,
    elevation_deg: float = 25.0,
) -> CameraPath:
    """:func:`orbit_poses` as cameras of ``width`` x ``height``."""
    framings = orbit_poses(field, num_frames, fov_y_deg, width / height, elevation_deg)
    cameras = [camera_from_fov(f.c2w(), math.radians(f.fov_y_deg), width, height) for f in framings]
    return CameraPath(cameras=cameras, fps=fps, width=width, height=height)


def default_framing(field: LanguageField, aspect: float = 4 / 3) -> Framing:
    """The first view of a field: its ``default_camera`` if it has one, else the first orbit pose."""
    spec = field.metadata.default_camera
    up = _up(field)
    if isinstance(spec, dict) and "c2w" in spec:
        try:
            c2w = np.asarray(spec["c2w"], dtype=np.float64).reshape(4, 4)
            fov = float(spec.get("fov_y_deg", 50.0))
            if np.isfinite(c2w).all() and 0 < fov < 180:
                center, radius = _scene_sphere(field)
                eye = c2w[:3, 3]
                forward = c2w[:3, 2] / np.linalg.norm(c2w[:3, 2])
                depth = max(float(np.dot(center - eye, forward)), radius * 0.1)
                return Framing(eye, eye + forward * depth, up, fov)
        except (TypeError, ValueError):
            pass
    return orbit_poses(field, 1, aspect=aspect)[0]
