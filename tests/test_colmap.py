"""COLMAP sparse reader: binary and text forms, hand-packed here byte by byte, and the cameras they give."""

import math
import struct

import numpy as np
import pytest
import torch

from gags_viewer.dataset import colmap
from gags_viewer.errors import FormatError

# qvec of a 90° rotation about y: (cos 45°, 0, sin 45°, 0)
Q90Y = (math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0)


def pack_cameras():
    data = struct.pack("<Q", 3)
    data += struct.pack("<iiQQ", 1, 1, 640, 480) + struct.pack("<4d", 500.0, 510.0, 320.5, 239.5)  # PINHOLE
    data += struct.pack("<iiQQ", 2, 0, 100, 50) + struct.pack("<3d", 80.0, 50.0, 25.0)  # SIMPLE_PINHOLE
    data += struct.pack("<iiQQ", 7, 4, 200, 100) + struct.pack(
        "<8d", 90.0, 91.0, 100.0, 50.0, 0.1, 0.01, 0.0, 0.0
    )  # OPENCV
    return data


def pack_images():
    data = struct.pack("<Q", 3)
    # image 5: identity pose, camera 1, two keypoints
    data += struct.pack("<idddddddi", 5, 1.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 1) + b"frame_00002.jpg\x00"
    data += struct.pack("<Q", 2) + struct.pack("<ddq", 1.5, 2.5, 7) + struct.pack("<ddq", 3.0, 4.0, -1)
    # image 3: rotated, camera 2, no keypoints
    data += struct.pack("<idddddddi", 3, *Q90Y, 1.0, 0.0, 2.0, 2) + b"frame_00001.jpg\x00" + struct.pack("<Q", 0)
    # image 9: camera 7 (OPENCV), in a sub-folder
    data += (
        struct.pack("<idddddddi", 9, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7)
        + b"sub/frame_00003.png\x00"
        + struct.pack("<Q", 0)
    )
    return data


CAMERAS_TXT = """# Camera list with one line of data per camera:
#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]
# Number of cameras: 3
1 PINHOLE 640 480 500 510 320.5 239.5
2 SIMPLE_PINHOLE 100 50 80 50 25

7 OPENCV 200 100 90 91 100 50 0.1 0.01 0 0
"""

IMAGES_TXT = f"""# Image list with two lines of data per image:
#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME
#   POINTS2D[] as (X, Y, POINT3D_ID)
5 1 0 0 0 0.1 0.2 0.3 1 frame_00002.jpg
1.5 2.5 7 3 4 -1
3 {Q90Y[0]!r} 0 {Q90Y[2]!r} 0 1 0 2 2 frame_00001.jpg

9 1 0 0 0 0 0 0 7 sub/frame_00003.png

"""


def write_bin(folder):
    folder.mkdir(parents=True)
    (folder / "cameras.bin").write_bytes(pack_cameras())
    (folder / "images.bin").write_bytes(pack_images())
    return folder


def write_txt(folder):
    folder.mkdir(parents=True)
    (folder / "cameras.txt").write_text(CAMERAS_TXT)
    (folder / "images.txt").write_text(IMAGES_TXT)
    return folder


def check_scene(scene):
    assert sorted(scene.cameras) == [1, 2, 7]
    pinhole, simple, opencv = scene.cameras[1], scene.cameras[2], scene.cameras[7]
    assert (pinhole.model, pinhole.width, pinhole.height) == ("PINHOLE", 640, 480)
    assert pinhole.pinhole() == (500.0, 510.0, 320.5, 239.5) and not pinhole.distorted
    assert simple.pinhole() == (80.0, 80.0, 50.0, 25.0)
    assert opencv.pinhole() == (90.0, 91.0, 100.0, 50.0) and opencv.distorted
    np.testing.assert_allclose(opencv.params[4:6], [0.1, 0.01])
    # sorted by name, as the Inria/GAGS loaders do
    assert [im.name for im in scene.images] == ["frame_00001.jpg", "frame_00002.jpg", "sub/frame_00003.png"]
    assert [im.image_id for im in scene.images] == [3, 5, 9]
    assert [im.stem for im in scene.images] == ["frame_00001", "frame_00002", "frame_00003"]
    first = scene.images[1]
    np.testing.assert_allclose(first.qvec, [1, 0, 0, 0])
    np.testing.assert_allclose(first.tvec, [0.1, 0.2, 0.3])
    assert first.camera_id == 1
    assert scene.find("frame_00003") is scene.images[2]
    assert scene.find("frame_00001.png") is scene.images[0]
    assert scene.find("frame_00009") is None


@pytest.mark.parametrize("writer", [write_bin, write_txt])
def test_read_scene(tmp_path, writer):
    writer(tmp_path / "scene" / "sparse" / "0")
    check_scene(colmap.read_scene(tmp_path / "scene"))


@pytest.mark.parametrize("writer", [write_bin, write_txt])
def test_keypoints(tmp_path, writer):
    folder = writer(tmp_path / "s")
    scene = colmap.read_scene(folder, read_points2d=True)
    by_id = {im.image_id: im for im in scene.images}
    np.testing.assert_allclose(by_id[5].points2d, [[1.5, 2.5], [3.0, 4.0]])
    np.testing.assert_array_equal(by_id[5].point3d_ids, [7, -1])
    assert by_id[3].points2d.shape == (0, 2)


def test_binary_wins_over_text(tmp_path):
    folder = write_bin(tmp_path / "s")
    (folder / "cameras.txt").write_text("1 PINHOLE 1 1 1 1 1 1\n")
    assert colmap.read_scene(folder).cameras[1].width == 640


def test_camera_pose_and_projection(tmp_path):
    scene = colmap.read_scene(write_bin(tmp_path / "s"))
    image = scene.images[0]  # rotated 90° about y, t = (1, 0, 2), SIMPLE_PINHOLE f=80 at 100x50
    R = image.rotation()
    np.testing.assert_allclose(R, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    camera = scene.render_camera(image)
    np.testing.assert_allclose(camera.world_to_camera.numpy(), image.world_to_camera(), atol=1e-6)
    np.testing.assert_allclose(camera.center.numpy(), image.center(), atol=1e-6)
    # A world point straight ahead of the camera lands on the principal point.
    point = image.center() + R.T @ np.array([0.0, 0.0, 3.0])
    cam = camera.world_to_camera.double().numpy() @ np.append(point, 1.0)
    pixel = camera.K.double().numpy() @ cam[:3]
    np.testing.assert_allclose(pixel[:2] / pixel[2], [50.0, 25.0], atol=1e-5)


def test_render_camera_resized_and_centered(tmp_path):
    scene = colmap.read_scene(write_bin(tmp_path / "s"))
    image = scene.images[1]  # PINHOLE 640x480, cx=320.5, cy=239.5
    half = scene.render_camera(image, 320, 240)
    assert (half.width, half.height) == (320, 240)
    np.testing.assert_allclose(half.K.numpy(), [[250, 0, 160.25], [0, 255, 119.75], [0, 0, 1]])
    centered = scene.render_camera(image, 320, 240, centered_principal_point=True)
    np.testing.assert_allclose(centered.K.numpy()[:2, 2], [160, 120])
    assert torch.equal(centered.world_to_camera, half.world_to_camera)


def test_non_pinhole_model_is_refused(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "cameras.txt").write_text("1 OPENCV_FISHEYE 10 10 5 5 5 5 0 0 0 0\n")
    (folder / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.jpg\n\n")
    scene = colmap.read_scene(folder)
    with pytest.raises(FormatError, match="OPENCV_FISHEYE is not a pinhole model"):
        scene.render_camera(scene.images[0])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cameras.bin", pack_cameras()[:-5], r"cameras\.bin: file ends inside the parameters of camera 7"),
        ("cameras.bin", pack_cameras() + b"\x00", r"cameras\.bin: 1 unexpected bytes after the last record"),
        ("images.bin", pack_images()[:60], r"images\.bin: file ends inside"),
        (
            "cameras.txt",
            "1 PINHOLE 640 480 500 510 320\n",
            r"cameras\.txt: line 1: model PINHOLE takes 4 parameters, got 3",
        ),
        ("cameras.txt", "1 WEIRD 640 480 1\n", r"cameras\.txt: line 1: unknown camera model 'WEIRD'"),
        ("cameras.txt", "1 PINHOLE 640 abc 1 1 1 1\n", r"cameras\.txt: line 1: CAMERA_ID WIDTH HEIGHT must be numbers"),
        ("images.txt", "1 1 0 0 0 0 0 0 1\n", r"images\.txt: line 1: expected 'IMAGE_ID QW"),
        ("images.txt", "1 0 0 0 0 0 0 0 1 a.jpg\n\n", r"images\.txt: image 'a\.jpg' has a zero quaternion"),
    ],
)
def test_malformed_files(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    reader = colmap.read_cameras if name.startswith("cameras") else colmap.read_images
    with pytest.raises(FormatError, match=message):
        reader(path)


def test_missing_reconstruction(tmp_path):
    with pytest.raises(FormatError, match="no COLMAP reconstruction found"):
        colmap.read_scene(tmp_path)
    (tmp_path / "cameras.txt").write_text("")
    with pytest.raises(FormatError, match="missing images.bin or images.txt"):
        colmap.read_scene(tmp_path)


def test_missing_camera_is_reported(tmp_path):
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 4 4 1 1 2 2\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 3 a.jpg\n\n")
    with pytest.raises(FormatError, match="image 'a.jpg' names camera 3, which does not exist"):
        colmap.read_scene(tmp_path)


@pytest.mark.parametrize("ext", ["bin", "txt"])
def test_writers_round_trip(tmp_path, ext):
    scene = colmap.read_scene(write_bin(tmp_path / "src"), read_points2d=True)
    out = tmp_path / "out"
    out.mkdir()
    colmap.write_cameras(out / f"cameras.{ext}", scene.cameras)
    colmap.write_images(out / f"images.{ext}", scene.images)
    again = colmap.read_scene(out, read_points2d=True)
    check_scene(again)
    np.testing.assert_allclose(again.images[1].points2d, scene.images[1].points2d)

    points = colmap.ColmapPoints(
        ids=np.array([4, 9]),
        xyz=np.array([[0.5, 1.0, -2.0], [3.0, 4.0, 5.0]]),
        rgb=np.array([[255, 0, 10], [1, 2, 3]], np.uint8),
        error=np.array([0.25, 1.5]),
    )
    colmap.write_points3d(out / f"points3D.{ext}", points)
    read = colmap.read_points3d(out / f"points3D.{ext}")
    np.testing.assert_array_equal(read.ids, points.ids)
    np.testing.assert_allclose(read.xyz, points.xyz)
    np.testing.assert_array_equal(read.rgb, points.rgb)
    np.testing.assert_allclose(read.error, points.error)


def test_points3d_with_tracks(tmp_path):
    data = struct.pack("<Q", 2)
    data += struct.pack("<QdddBBBdQ", 1, 0.0, 1.0, 2.0, 10, 20, 30, 0.5, 2) + struct.pack("<iiii", 1, 0, 2, 5)
    data += struct.pack("<QdddBBBdQ", 2, 3.0, 4.0, 5.0, 1, 2, 3, 0.1, 0)
    (tmp_path / "points3D.bin").write_bytes(data)
    (tmp_path / "points3D.txt").write_text("# comment\n1 0 1 2 10 20 30 0.5 1 0 2 5\n2 3 4 5 1 2 3 0.1\n")
    for ext in ("bin", "txt"):
        points = colmap.read_points3d(tmp_path / f"points3D.{ext}")
        np.testing.assert_array_equal(points.ids, [1, 2])
        np.testing.assert_allclose(points.xyz, [[0, 1, 2], [3, 4, 5]])
        np.testing.assert_array_equal(points.rgb, [[10, 20, 30], [1, 2, 3]])
