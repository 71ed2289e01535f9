"""Camera conversions: nerfview CameraState, COLMAP poses, Inria cameras.json, resizing, look_at."""

import math

import numpy as np
import pytest
import torch
from nerfview import CameraState

from gags_viewer.errors import RenderError
from gags_viewer.render.camera import Camera, intrinsics, look_at, quat_to_rotation


def _project(camera: Camera, point) -> torch.Tensor:
    """Pixel coordinates of a world point, written out from the pinhole definition."""
    p = camera.world_to_camera @ torch.tensor([*point, 1.0])
    uvw = camera.K @ p[:3]
    return uvw[:2] / uvw[2]


def test_from_nerfview_uses_the_inverse_of_c2w_and_its_intrinsics():
    c2w = look_at([1.0, 2.0, -3.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]).numpy()
    state = CameraState(fov=math.radians(60), aspect=4 / 3, c2w=c2w)
    camera = Camera.from_nerfview(state, 640, 480)
    assert torch.allclose(camera.world_to_camera, torch.linalg.inv(torch.as_tensor(c2w)), atol=1e-6)
    assert torch.allclose(camera.K, torch.as_tensor(state.get_K((640, 480)), dtype=torch.float32))
    # the look-at target lands on the principal point, the camera centre is where c2w puts it
    assert torch.allclose(_project(camera, [0.0, 0.0, 0.0]), torch.tensor([320.0, 240.0]), atol=1e-3)
    assert torch.allclose(camera.center, torch.tensor([1.0, 2.0, -3.0]), atol=1e-5)


def test_from_colmap_applies_the_world_to_camera_pose():
    qvec = torch.nn.functional.normalize(torch.tensor([0.9, 0.1, -0.3, 0.2]), dim=0)
    tvec = torch.tensor([0.5, -0.2, 4.0])
    camera = Camera.from_colmap(qvec, tvec, fx=500, fy=480, cx=300, cy=250, width=640, height=480)
    world = torch.tensor([0.3, 0.1, -0.4])
    in_camera = quat_to_rotation(qvec) @ world + tvec
    expected = torch.tensor([500 * in_camera[0] / in_camera[2] + 300, 480 * in_camera[1] / in_camera[2] + 250])
    assert torch.allclose(_project(camera, world.tolist()), expected, atol=1e-3)
    assert torch.allclose(camera.center, -quat_to_rotation(qvec).T @ tvec, atol=1e-5)


def test_cameras_json_entry_equals_the_colmap_pose_it_was_written_from():
    # The Inria writer stores the camera centre and the camera-to-world rotation of a COLMAP pose.
    qvec, tvec = torch.tensor([0.8, -0.2, 0.5, 0.1]), torch.tensor([1.0, 0.5, 3.0])
    colmap = Camera.from_colmap(qvec, tvec, fx=400, fy=400, cx=160, cy=120, width=320, height=240)
    c2w = torch.linalg.inv(colmap.world_to_camera)
    entry = {
        "id": 0,
        "img_name": "frame_00001",
        "width": 320,
        "height": 240,
        "fx": 400.0,
        "fy": 400.0,
        "position": c2w[:3, 3].tolist(),
        "rotation": c2w[:3, :3].tolist(),
    }
    camera = Camera.from_cameras_json(entry)
    assert torch.allclose(camera.world_to_camera, colmap.world_to_camera, atol=1e-5)
    assert torch.allclose(camera.K, colmap.K)


def test_bad_cameras_json_entry_is_one_clear_error():
    with pytest.raises(RenderError, match="bad cameras.json entry frame_7") as excinfo:
        Camera.from_cameras_json({"img_name": "frame_7", "width": 10, "height": 10, "fx": 1.0})
    assert "\n" not in str(excinfo.value)


def test_resized_scales_the_intrinsics_per_axis():
    camera = Camera.from_camera_to_world(torch.eye(4), intrinsics(100, 90, 200, 100, 110, 40), 200, 100)
    half = camera.resized(100, 25)
    assert torch.allclose(half.K, torch.tensor([[50.0, 0, 55], [0, 22.5, 10], [0, 0, 1]]))
    assert torch.equal(half.world_to_camera, camera.world_to_camera)


def test_look_at_is_a_right_handed_opencv_frame():
    c2w = look_at([0.0, -2.0, -5.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0])
    rotation = c2w[:3, :3]
    assert torch.allclose(rotation.T @ rotation, torch.eye(3), atol=1e-6)
    assert torch.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
    # image "down" (+y) points against world up
    assert float(rotation[:, 1] @ torch.tensor([0.0, -1.0, 0.0])) < 0


@pytest.mark.parametrize("bad", [np.full((4, 4), np.nan), np.eye(3)])
def test_invalid_camera_matrices_are_refused(bad):
    with pytest.raises(RenderError):
        Camera(torch.as_tensor(bad, dtype=torch.float32), intrinsics(1, 1, 2, 2), 2, 2)
