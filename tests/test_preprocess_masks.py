"""Mask sources and the preprocess pipeline (masks -> CLIP crops -> _f/_s files) on a tiny scene."""

import numpy as np
import pytest
import torch

from gags_viewer.preprocess import GroundTruthMaskSource, LevelMasks, MaskSource, extract_language_features
from gags_viewer.preprocess.clip_features import ClipImageEncoder, load_clip_model
from gags_viewer.preprocess.masks import MaskError, id_map_masks
from gags_viewer.preprocess.writer import save_image, write_colmap_text
from tests.tiny_clip import make_tiny_clip


def _id_maps(h=12, w=16):
    part = np.full((h, w), -1)
    part[:, :8] = 0
    part[:, 8:12] = 1
    part[:, 12:] = 2
    part[0, 0] = 3  # a one-pixel region
    obj = np.where(part == 1, 0, part)  # parts 0 and 1 form object 0
    group = np.where(part >= 0, 7, -1)
    return {"s": part, "m": obj, "l": group}


def test_id_map_masks_split_and_filter():
    ids = _id_maps()["s"]
    masks, regions = id_map_masks(ids, min_pixels=2)
    assert regions == [0, 1, 2]
    assert all(m.dtype == bool for m in masks)
    assert sum(m.sum() for m in masks) == (ids >= 0).sum() - 1


def test_ground_truth_source_levels():
    source = GroundTruthMaskSource({"a.png": _id_maps()}, names={0: "zero", 7: "group"}, min_pixels=2)
    assert isinstance(source, MaskSource)
    masks = source(np.zeros((12, 16, 3), np.uint8), "a.png")
    assert [len(masks.s), len(masks.m), len(masks.l)] == [3, 2, 1]
    assert masks.names["m"] == ["zero", "2"] and masks.names["l"] == ["group"]
    assert masks.shape() == (12, 16)
    # the default level pools the distinct masks, coarse first, so finer masks are painted last
    assert len(masks.default_masks()) == 5  # group, object 0, object 2 (= part 2), parts 0 and 1
    with pytest.raises(MaskError):
        source(np.zeros((12, 16, 3), np.uint8), "missing.png")
    with pytest.raises(MaskError):
        source(np.zeros((10, 16, 3), np.uint8), "a.png")


def test_level_masks_refuse_mixed_shapes():
    with pytest.raises(MaskError):
        LevelMasks(s=[np.ones((2, 2), bool)], m=[np.ones((3, 2), bool)], l=[np.ones((2, 2), bool)]).shape()


def test_pipeline_writes_files_the_trainer_reads(tmp_path):
    from gags_viewer.render.camera import Camera, look_at
    from gags_viewer.train.scene import read_preprocessed_scene

    scene_dir = tmp_path / "scene"
    (scene_dir / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names, cameras, maps = [], [], {}
    for i in range(2):
        name = f"frame_{i + 1:05d}.png"
        save_image(scene_dir / "images" / name, (rng.random((12, 16, 3)) * 255).astype(np.uint8))
        names.append(name)
        cameras.append(Camera.from_fov(look_at([2.0, i * 0.5, 1.0], [0, 0, 0], [0, 0, 1]), 50.0, 16, 12))
        maps[name] = _id_maps()
    write_colmap_text(scene_dir, names, cameras)
    encoder = ClipImageEncoder(load_clip_model(make_tiny_clip(tmp_path)))
    report = extract_language_features(scene_dir, GroundTruthMaskSource(maps, min_pixels=2), encoder, progress=False)
    assert report.images == names
    assert report.masks_per_level == {"default": 10, "s": 6, "m": 4, "l": 2}
    f = np.load(scene_dir / "language_features" / "frame_00001_f.npy")
    s = np.load(scene_dir / "language_features" / "frame_00001_s.npy")
    assert f.shape == (5 + 3 + 2 + 1, 512) and s.shape == (4, 12, 16)
    # level l (channel 3) points at the last row; the one-pixel part was dropped at level s only
    assert s[3, 5, 5] == 10 and s[1, 0, 0] == -1 and s[3, 0, 0] == 10
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=2e-3)

    scene = read_preprocessed_scene(scene_dir, resolution=1)
    assert [v.name for v in scene.views] == names
    view = scene.views[0]
    assert tuple(view.seg.shape) == (3, 12, 16)
    torch.testing.assert_close(view.seg.long(), torch.from_numpy(s[1:].astype(np.int64)))


def test_pipeline_refuses_an_empty_level(tmp_path):
    scene_dir = tmp_path / "scene"
    (scene_dir / "images").mkdir(parents=True)
    save_image(scene_dir / "images" / "a.png", np.zeros((12, 16, 3), np.uint8))
    maps = _id_maps()
    maps["l"] = np.full((12, 16), -1)
    encoder = ClipImageEncoder(load_clip_model(make_tiny_clip(tmp_path)))
    with pytest.raises(MaskError, match="no l-level mask"):
        extract_language_features(scene_dir, GroundTruthMaskSource({"a.png": maps}), encoder, progress=False)


def test_ambiguous_levels_stay_nested_and_deterministic():
    from gags_viewer.preprocess.masks import ambiguous_levels

    maps = _id_maps()
    always = ambiguous_levels(maps, 1.0, np.random.default_rng(0))
    assert (always["s"] == maps["s"]).all() and (always["m"] == maps["s"]).all() and (always["l"] == maps["s"]).all()
    never = ambiguous_levels(maps, 0.0, np.random.default_rng(0))
    assert all((never[k] == maps[k]).all() for k in "sml")
    source = GroundTruthMaskSource({"a.png": maps, "b.png": maps}, ambiguity=0.5, seed=3)
    first = source.level_maps("a.png")
    assert all((first[k] == source.level_maps("a.png")[k]).all() for k in "sml")
    for name in ("a.png", "b.png"):
        levels = source.level_maps(name)
        for fine, coarse in (("s", "m"), ("m", "l")):
            for region in np.unique(levels[fine][levels[fine] >= 0]):
                assert len(np.unique(levels[coarse][levels[fine] == region])) == 1
