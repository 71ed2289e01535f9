"""Camera paths: nerfview JSON <-> cameras, against nerfview's own save and load code."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
import viser
import viser.transforms as tf

from gags_viewer.errors import GagsError
from gags_viewer.render.camera import Camera
from gags_viewer.viewer import camera_path as cp
from gags_viewer.viewer import nerfview_adapter as nv
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


def _random_pose(rng):
    wxyz = rng.normal(size=4)
    wxyz /= np.linalg.norm(wxyz)
    return wxyz, rng.normal(size=3) * 3


def test_nerfview_scale_ratio_is_ten():
    import inspect

    from nerfview.render_panel import populate_general_render_tab

    assert inspect.signature(populate_general_render_tab).parameters["scale_ratio"].default == cp.SCALE_RATIO


def test_matrix_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(10):
        wxyz, position = _random_pose(rng)
        c2w = cp.viewer_c2w(wxyz, position)
        back = cp.path_matrix_to_c2w(cp.c2w_to_path_matrix(c2w).flatten().tolist())
        np.testing.assert_allclose(back, c2w, atol=1e-12)


def test_matches_nerfview_transforms():
    """Our JSON <-> viewer transforms are the ones in nerfview's save_camera_path / Load Trajectory."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        wxyz, position = _random_pose(rng)
        # nerfview's save: rotation @ Rx(pi), translation / scale_ratio
        saved = tf.SE3.from_rotation_and_translation(tf.SO3(wxyz) @ tf.SO3.from_x_radians(np.pi), position / 10.0)
        ours = cp.c2w_to_path_matrix(cp.viewer_c2w(wxyz, position))
        np.testing.assert_allclose(ours, saved.as_matrix(), atol=1e-9)
        # nerfview's load: rotation @ Rx(pi), translation * scale_ratio
        loaded = tf.SE3.from_matrix(saved.as_matrix())
        loaded = tf.SE3.from_rotation_and_translation(
            loaded.rotation() @ tf.SO3.from_x_radians(np.pi), loaded.translation() * 10.0
        )
        np.testing.assert_allclose(cp.path_matrix_to_c2w(saved.as_matrix()), loaded.as_matrix(), atol=1e-9)


def test_camera_matches_nerfview_intrinsics():
    from nerfview import CameraState

    rng = np.random.default_rng(2)
    wxyz, position = _random_pose(rng)
    c2w = cp.viewer_c2w(wxyz, position)
    state = CameraState(fov=math.radians(40), aspect=4 / 3, c2w=c2w)
    ours = cp.camera_from_fov(c2w, math.radians(40), 320, 240)
    theirs = Camera.from_nerfview(state, 320, 240)
    torch.testing.assert_close(ours.K, theirs.K)
    torch.testing.assert_close(ours.world_to_camera, theirs.world_to_camera, atol=1e-5, rtol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_panel_path_equals_nerfview_saved_file(scene, tmp_path):
    """The path the viewer renders is the one nerfview's 'Save Trajectory' writes, frame for frame."""
    from nerfview.render_panel import Keyframe
    from viser._gui_handles import GuiEvent

    from gags_viewer.viewer.camera_path_panel import add_camera_path_panel

    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    try:
        panel = add_camera_path_panel(server, tmp_path, (640, 480))
        path, handles = panel.path, panel.handles
        rng = np.random.default_rng(3)
        for _ in range(3):
            wxyz, position = _random_pose(rng)
            path.add_camera(
                Keyframe.from_camera(type("Cam", (), {"position": position, "wxyz": wxyz, "fov": 0.8})(), aspect=4 / 3)
            )
        handles["duration_number"].value = path.compute_duration()
        path.update_spline()
        handles["framerate_number"].value = 10.0
        button = handles["save_camera_path_button"]
        for callback in button._impl.update_cb:
            callback(GuiEvent(client=object(), client_id=None, target=button))  # no file yet: no modal
        saved = json.loads((tmp_path / "camera_paths" / "default.json").read_text())

        ours = cp.camera_path_from_nerfview(path, saved["render_width"], saved["render_height"], saved["fps"])
        assert len(ours["camera_path"]) == len(saved["camera_path"]) == int(10 * path.compute_duration())
        for a, b in zip(ours["camera_path"], saved["camera_path"]):
            np.testing.assert_allclose(a["camera_to_world"], b["camera_to_world"], atol=1e-9)
            assert a["fov"] == pytest.approx(b["fov"])
        for a, b in zip(ours["keyframes"], saved["keyframes"]):
            np.testing.assert_allclose(a["matrix"], b["matrix"], atol=1e-9)

        # Both files give the same cameras, and the keyframes' cameras are the viewer's poses.
        from_saved = cp.parse_camera_path(saved)
        from_ours = cp.parse_camera_path(ours)
        for a, b in zip(from_saved.cameras, from_ours.cameras):
            torch.testing.assert_close(a.world_to_camera, b.world_to_camera, atol=1e-5, rtol=1e-5)
        first_keyframe = nv.path_keyframes(path)[0]
        expected = cp.viewer_c2w(first_keyframe.wxyz, first_keyframe.position)
        np.testing.assert_allclose(from_saved.cameras[0].camera_to_world.numpy(), expected, atol=1e-4)
        assert (from_saved.width, from_saved.height) == (saved["render_width"], saved["render_height"])
    finally:
        server.stop()


def test_parse_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GagsError, match="not valid JSON"):
        cp.read_camera_path(bad)
    with pytest.raises(GagsError, match="no such camera path"):
        cp.read_camera_path(tmp_path / "missing.json")
    with pytest.raises(GagsError, match="camera_path"):
        cp.parse_camera_path({"keyframes": []})
    with pytest.raises(GagsError, match="no frames"):
        cp.parse_camera_path({"camera_path": []})
    with pytest.raises(GagsError, match="frame 0"):
        cp.parse_camera_path({"camera_path": [{"fov": 50}]})


def test_size_overrides_keep_aspect():
    entry = {"camera_to_world": np.eye(4).flatten().tolist(), "fov": 50.0, "aspect": 2.0}
    data = {"camera_path": [entry], "render_width": 400, "render_height": 200, "fps": 24}
    assert (cp.parse_camera_path(data).width, cp.parse_camera_path(data).height) == (400, 200)
    path = cp.parse_camera_path(data, width=100)
    assert (path.width, path.height, path.fps) == (100, 50, 24)


def test_orbit_frames_the_scene(scene):
    """Every orbit camera sees the whole scene: the bounds' corners project inside the image."""
    path = cp.orbit_path(scene.field, num_frames=8, width=160, height=120)
    low, high = scene.field.bounds()
    corners = torch.stack(
        [torch.where(torch.tensor([i >> k & 1 for k in range(3)], dtype=torch.bool), high, low) for i in range(8)]
    )
    for camera in path.cameras:
        cam = corners @ camera.world_to_camera[:3, :3].T + camera.world_to_camera[:3, 3]
        assert (cam[:, 2] > 0).all()
        uv = (cam @ camera.K.T)[:, :2] / cam[:, 2:3]
        assert (uv[:, 0] > -1).all() and (uv[:, 0] < 161).all() and (uv[:, 1] > -1).all() and (uv[:, 1] < 121).all()
    centers = torch.stack([c.center for c in path.cameras])
    assert torch.linalg.norm(centers[0] - centers[4]) > 1.0  # it really goes around
