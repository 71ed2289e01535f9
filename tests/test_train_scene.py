"""Preprocessed-scene reader: pairing by stem, resizing, COLMAP variants, geometry, and clear errors."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gags_viewer.dataset.colmap import ColmapCamera, ColmapImage, read_scene, write_cameras, write_images
from gags_viewer.errors import FormatError, GagsError
from gags_viewer.train.scene import load_geometry, read_preprocessed_scene, render_size
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene
from tests.train_helpers import one_thread  # noqa: F401 (autouse: one torch thread in this module)

NAMES = ["frame_1.png", "frame_10.png", "frame_2.png"]  # "frame_1" is a prefix of "frame_10"


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    synthetic = make_synthetic_scene(
        num_objects=2, gaussians_per_object=40, num_views=3, width=64, height=48, names=NAMES
    )
    write_synthetic_scene(synthetic, root)
    # COLMAP lists images in an order unrelated to names, plus one image without features.
    sparse = root / "sparse" / "0"
    images = read_scene(sparse).images
    extra = ColmapImage(99, "frame_3.png", images[0].qvec, images[0].tvec, 1)
    write_images(sparse / "images.txt", [images[2], extra, images[0], images[1]])
    # A feature pair that matches no image.
    features = root / "language_features"
    shutil.copy(features / "frame_2_f.npy", features / "orphan_f.npy")
    shutil.copy(features / "frame_2_s.npy", features / "orphan_s.npy")
    return root


def copy_scene(scene_dir, tmp_path):
    target = tmp_path / "scene"
    shutil.copytree(scene_dir, target)
    return target


def test_pairs_features_by_stem_and_reports_missing(scene_dir):
    scene = read_preprocessed_scene(scene_dir, resolution=2)
    assert [v.name for v in scene.views] == sorted(NAMES)
    for view in scene.views:
        stem = view.name.rsplit(".", 1)[0]
        f = np.load(scene_dir / "language_features" / f"{stem}_f.npy")
        assert torch.equal(view.embeddings, torch.from_numpy(f))
        s = torch.from_numpy(np.load(scene_dir / "language_features" / f"{stem}_s.npy"))
        expected = F.interpolate(s[None, 1:], size=(24, 32), mode="nearest")[0].long()
        assert torch.equal(view.seg.long(), expected)
        assert (view.width, view.height) == (32, 24)
        assert view.camera.K[0, 2].item() == 16 and view.camera.K[1, 2].item() == 12
    assert scene.missing_features == ["frame_3.png"]
    assert scene.unused_features == ["orphan"]
    assert any("frame_3.png" in line for line in scene.report())


def test_binary_colmap_and_opencv_as_pinhole(scene_dir, tmp_path):
    root = copy_scene(scene_dir, tmp_path)
    sparse = root / "sparse" / "0"
    colmap = read_scene(sparse)
    cam = colmap.cameras[1]
    fx, fy, cx, cy = cam.params
    opencv = ColmapCamera(1, "OPENCV", cam.width, cam.height, np.array([fx, fy, cx, cy, 0.01, 0.0, 0.0, 0.0]))
    write_cameras(sparse / "cameras.bin", [opencv])
    write_images(sparse / "images.bin", colmap.images)
    for name in ("cameras.txt", "images.txt"):
        (sparse / name).unlink()
    scene = read_preprocessed_scene(root, resolution=1)
    reference = read_preprocessed_scene(scene_dir, resolution=1)
    assert scene.distorted and any("distortion" in line for line in scene.report())
    for a, b in zip(scene.views, reference.views):
        assert a.name == b.name and torch.allclose(a.camera.K, b.camera.K)
        assert torch.allclose(a.camera.world_to_camera, b.camera.world_to_camera, atol=1e-6)


def test_simple_pinhole_and_colmap_principal_point(scene_dir, tmp_path):
    root = copy_scene(scene_dir, tmp_path)
    sparse = root / "sparse" / "0"
    cam = read_scene(sparse).cameras[1]
    write_cameras(
        sparse / "cameras.txt", [ColmapCamera(1, "SIMPLE_PINHOLE", cam.width, cam.height, np.array([50.0, 30.0, 20.0]))]
    )
    view = read_preprocessed_scene(root, resolution=2, center_principal_point=False).views[0]
    assert torch.allclose(view.camera.K, torch.tensor([[25.0, 0, 15.0], [0, 25.0, 10.0], [0, 0, 1]]))


def test_render_size_rules():
    assert render_size(1000, 750, 2) == (500, 375)
    assert render_size(3200, 2400, -1) == (1600, 1200)
    assert render_size(1000, 750, 500) == (500, 375)
    with pytest.raises(GagsError, match="resolution"):
        render_size(100, 100, 3)


def corrupt(scene_dir, tmp_path, stem, kind, array=None):
    root = copy_scene(scene_dir, tmp_path)
    path = root / "language_features" / f"{stem}_{kind}.npy"
    if array is None:
        path.unlink()
    else:
        np.save(path, array)
    return root, path


def test_missing_s_npy_is_a_clear_error(scene_dir, tmp_path):
    root, path = corrupt(scene_dir, tmp_path, "frame_10", "s")
    with pytest.raises(FormatError, match="frame_10_s.npy: missing"):
        read_preprocessed_scene(root)


def test_feature_dim_not_512_is_a_clear_error(scene_dir, tmp_path):
    f = np.load(scene_dir / "language_features" / "frame_2_f.npy")
    root, path = corrupt(scene_dir, tmp_path, "frame_2", "f", f[:, :256])
    with pytest.raises(FormatError, match="frame_2_f.npy: feature dimension is 256, expected 512"):
        read_preprocessed_scene(root)


def test_index_out_of_range_is_a_clear_error(scene_dir, tmp_path):
    s = np.load(scene_dir / "language_features" / "frame_1_s.npy")
    rows = np.load(scene_dir / "language_features" / "frame_1_f.npy").shape[0]
    s[2, 0, 0] = rows
    root, path = corrupt(scene_dir, tmp_path, "frame_1", "s", s)
    with pytest.raises(FormatError, match=f"frame_1_s.npy: index out of range: row {rows} but .* has {rows} rows"):
        read_preprocessed_scene(root)


@pytest.mark.parametrize(
    "shape, message", [((4, 48, 48), "shape mismatch"), ((3, 48, 64), r"must have shape \(4, H, W\)")]
)
def test_segmentation_shape_mismatch_is_a_clear_error(scene_dir, tmp_path, shape, message):
    root, path = corrupt(scene_dir, tmp_path, "frame_2", "s", np.zeros(shape, np.float32))
    with pytest.raises(FormatError, match=f"frame_2_s.npy: {message}"):
        read_preprocessed_scene(root)


def test_no_features_at_all_is_a_clear_error(scene_dir, tmp_path):
    root = copy_scene(scene_dir, tmp_path)
    for path in (root / "language_features").glob("*.npy"):
        path.unlink()
    with pytest.raises(GagsError, match="no registered image .* has language features"):
        read_preprocessed_scene(root)


def test_geometry_from_ply_gsplat_and_inria_checkpoints(scene_dir, tmp_path):
    ply = load_geometry(scene_dir / "init" / "point_cloud.ply")
    splats = {
        "means": ply.means,
        "quats": ply.quats,
        "scales": ply.log_scales,
        "opacities": ply.opacity_logits,
        "sh0": ply.sh[:, :1],
        "shN": ply.sh[:, 1:],
    }
    torch.save({"step": 29999, "splats": splats}, tmp_path / "ckpt_29999_rank0.pt")
    gs = load_geometry(tmp_path / "ckpt_29999_rank0.pt")
    n = ply.num_gaussians
    capture = (
        0,
        ply.means,
        ply.sh[:, :1],
        ply.sh[:, 1:],
        ply.log_scales,
        ply.quats,
        ply.opacity_logits[:, None],
        torch.zeros(n),
        torch.zeros(n, 1),
        torch.zeros(n, 1),
        {},
        1.0,
    )
    torch.save((capture, 30000), tmp_path / "chkpnt30000.pth")
    inria = load_geometry(tmp_path / "chkpnt30000.pth")
    for other in (gs, inria):
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            assert torch.equal(getattr(other, name), getattr(ply, name))
        assert other.features is None
    with pytest.raises(GagsError, match="does not exist"):
        load_geometry(tmp_path / "nope.ply")
