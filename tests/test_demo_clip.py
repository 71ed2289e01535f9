"""The demo CLIP model: its vocabulary and targets, and the committed weights loaded through open_clip."""

import os

import pytest
import torch

from gags_viewer.demo import clip_model as dclip
from gags_viewer.demo.scene import CATALOG, NODE_INDEX
from gags_viewer.field.language_field import DEFAULT_NEGATIVES

ASSETS = dclip.ASSETS_DIR


def _target(phrases, targets, region, text):
    return int(targets[NODE_INDEX[region], [p.text for p in phrases].index(text)])


def test_vocabulary_targets_follow_the_hierarchy():
    phrases = dclip.vocabulary()
    texts = [p.text for p in phrases]
    assert len(texts) == len(set(texts))
    assert not set(DEFAULT_NEGATIVES) & set(texts), "the default negatives are not vocabulary phrases"
    targets = dclip.target_matrix(phrases)
    assert _target(phrases, targets, "lamp_shade", "lamp shade") == 1
    assert _target(phrases, targets, "lamp_shade", "lamp") == 1  # a part is part of its object
    assert _target(phrases, targets, "lamp", "lamp shade") == -1  # the whole lamp contains a shade: no target
    assert _target(phrases, targets, "lamp_base", "lamp shade") == 0
    assert _target(phrases, targets, "red_cube", "tower") == 1
    assert _target(phrases, targets, "tower", "red cube") == -1
    assert _target(phrases, targets, "tower", "red") == -1
    assert _target(phrases, targets, "green_ball", "red cube") == 0
    assert _target(phrases, targets, "red_cube", "red object") == 1
    assert (targets[NODE_INDEX["background"]] <= 0).sum() == len(phrases) - len(CATALOG[NODE_INDEX["background"]].names)


def test_augment_keeps_shape_and_range():
    images = torch.rand(5, 3, 48, 48)
    out = dclip._augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1


def test_multi_positive_loss_prefers_positives():
    targets = torch.tensor([[1, 0, -1], [0, 1, 1]])
    good = dclip._multi_positive_nll(torch.tensor([[5.0, -5.0, 9.0], [-5.0, 5.0, 5.0]]), targets)
    bad = dclip._multi_positive_nll(torch.tensor([[-5.0, 5.0, 9.0], [5.0, -5.0, -5.0]]), targets)
    assert good < 0.01 < bad


needs_assets = pytest.mark.skipif(not (ASSETS / dclip.CHECKPOINT_FILE).is_file(), reason="demo CLIP not built")


@needs_assets
def test_committed_model_size_and_config():
    assert (ASSETS / dclip.CHECKPOINT_FILE).stat().st_size <= 15 * 1024 * 1024
    import json

    assert json.loads((ASSETS / dclip.CONFIG_FILE).read_text()) == dclip.DEMO_CLIP_CONFIG


@needs_assets
def test_committed_model_loads_through_open_clip_and_separates_the_vocabulary():
    """Loaded by the project's text encoder (open_clip config registration + pretrained=<file>)."""
    from gags_viewer.language.clip_text import TextEncoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    encoder = TextEncoder(dclip.clip_spec(ASSETS), device="cpu")
    names = [node.name for node in CATALOG]
    embeds = encoder.encode(names)
    assert embeds.shape == (len(names), 512)
    sims = embeds @ embeds.T
    off_diagonal = sims[~torch.eye(len(names), dtype=torch.bool)]
    assert off_diagonal.max() < 0.95, "every region name has its own embedding"


@needs_assets
def test_committed_model_recognises_crops_of_a_render():
    """Crops of a fresh view (not a training view): each object's name is its most relevant object name."""
    from gags_viewer.demo.build import region_masks
    from gags_viewer.demo.scene import SceneConfig, _camera_pose, make_scene
    from gags_viewer.preprocess.clip_features import mask_crops
    from gags_viewer.render.camera import Camera

    model = dclip.load_model(ASSETS)
    scene = make_scene(SceneConfig(seed=0, width=320, height=240))
    camera = Camera.from_fov(_camera_pose(200.0, 50.0, 2.3, (0.0, 0.0, 0.1)), 50.0, 320, 240)
    ids = scene.id_maps(camera)
    masks, regions = region_masks(ids)
    crops = mask_crops(scene.render_rgb(camera), masks)
    small = torch.nn.functional.interpolate(crops, size=(48, 48), mode="bicubic", antialias=True).clamp(0, 1)
    objects = [n.name for n in CATALOG if n.kind == "object"]
    table = dclip.relevancy_table(model, (small * 255).round().to(torch.uint8), torch.tensor(regions), objects)
    checked = 0
    for region in set(regions):
        node = CATALOG[region]
        if node.kind != "object":
            continue
        row = table[region]
        assert objects[int(torch.argmax(row))] == node.name, f"{node.name}: {dict(zip(objects, row.tolist()))}"
        assert row[objects.index(node.name)] > 0.5
        checked += 1
    assert checked >= 6
