"""The official _f.npy / _s.npy layout written by gags_viewer.preprocess, and the COLMAP text export."""

import numpy as np
import pytest
import torch

from gags_viewer.preprocess.masks import LevelMasks, MaskError
from gags_viewer.preprocess.writer import (
    feature_rows,
    rotation_to_quaternion,
    segmentation_maps,
    write_colmap_text,
    write_language_features,
)
from gags_viewer.render.camera import Camera, look_at, quat_to_rotation


def _box(h, w, y0, y1, x0, x1):
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_segmentation_global_rows_offsets_and_overwrite():
    h, w = 6, 8
    a, b = _box(h, w, 0, 4, 0, 4), _box(h, w, 2, 6, 2, 8)  # overlap at rows 2-3, cols 2-3
    masks = {"default": [a], "s": [a, b], "m": [b], "l": []}
    seg, counts = segmentation_maps(masks, (h, w))
    assert counts == [1, 2, 1, 0]
    assert seg.shape == (4, h, w) and seg.dtype == np.float32
    assert set(np.unique(seg[0])) == {-1.0, 0.0}
    # level s: rows 1 (a) and 2 (b), offset by the one default mask; b painted later wins the overlap
    assert seg[1, 0, 0] == 1 and seg[1, 5, 7] == 2 and seg[1, 3, 3] == 2
    assert seg[2, 5, 7] == 3 and seg[2, 0, 0] == -1  # level m: offset 1 + 2
    assert (seg[3] == -1).all()  # an empty level stays -1


def test_feature_rows_concatenate_in_level_order():
    emb = {
        level: torch.full((n, 4), float(i))
        for i, (level, n) in enumerate([("default", 1), ("s", 2), ("m", 1), ("l", 3)])
    }
    rows = feature_rows(emb)
    assert rows.shape == (7, 4) and rows.dtype == np.float32
    assert rows[:, 0].tolist() == [0, 1, 1, 2, 3, 3, 3]


def test_write_language_features_roundtrip(tmp_path):
    h, w = 5, 7
    masks = LevelMasks(
        s=[_box(h, w, 0, 2, 0, 3), _box(h, w, 2, 5, 0, 7)], m=[_box(h, w, 0, 5, 0, 7)], l=[_box(h, w, 0, 5, 0, 7)]
    )
    default = masks.default_masks()
    assert len(default) == 3  # the identical m and l masks are pooled once
    emb = {
        level: torch.nn.functional.normalize(torch.randn(len(masks.level(level)), 512), dim=-1)
        for level in ("default", "s", "m", "l")
    }
    f_path, s_path = write_language_features(tmp_path, "frame_00001", masks, emb)
    f, s = np.load(f_path), np.load(s_path)
    assert f.shape == (3 + 2 + 1 + 1, 512) and s.shape == (4, h, w)
    for level, channel in (("s", 1), ("m", 2), ("l", 3)):
        for index, mask in enumerate(masks.level(level)):
            rows = np.unique(s[channel][mask])
            assert len(rows) == 1
            np.testing.assert_allclose(f[int(rows[0])], emb[level][index].numpy(), atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))


def test_mismatched_embeddings_are_refused(tmp_path):
    masks = LevelMasks(s=[_box(3, 3, 0, 3, 0, 3)], m=[_box(3, 3, 0, 3, 0, 3)], l=[_box(3, 3, 0, 3, 0, 3)])
    emb = {"default": torch.zeros(1, 8), "s": torch.zeros(2, 8), "m": torch.zeros(1, 8), "l": torch.zeros(1, 8)}
    with pytest.raises(MaskError):
        write_language_features(tmp_path, "x", masks, emb)


@pytest.mark.parametrize("seed", range(5))
def test_rotation_to_quaternion_inverts_quat_to_rotation(seed):
    q = torch.nn.functional.normalize(torch.randn(4, generator=torch.Generator().manual_seed(seed)), dim=0)
    rotation = quat_to_rotation(q).double().numpy()
    q2 = rotation_to_quaternion(rotation)
    np.testing.assert_allclose(quat_to_rotation(torch.tensor(q2)).numpy(), rotation, atol=1e-6)
    assert q2[0] >= 0


def test_colmap_text_export_reads_back(tmp_path):
    from gags_viewer.dataset.colmap import read_scene

    cameras = [
        Camera.from_fov(look_at([2.0 * np.cos(a), 2.0 * np.sin(a), 1.0], [0, 0, 0], [0, 0, 1]), 50.0, 64, 48)
        for a in (0.0, 1.0, 2.0)
    ]
    names = ["frame_00001.png", "frame_00002.png", "frame_00003.png"]
    write_colmap_text(tmp_path, names, cameras, points=np.zeros((2, 3)), colors=np.ones((2, 3)))
    scene = read_scene(tmp_path)
    assert [im.name for im in scene.images] == names
    assert len(scene.cameras) == 1 and scene.cameras[1].model == "PINHOLE"
    for image, camera in zip(scene.images, cameras):
        back = scene.render_camera(image)
        torch.testing.assert_close(back.world_to_camera, camera.world_to_camera, atol=1e-5, rtol=0)
        torch.testing.assert_close(back.K, camera.K)
