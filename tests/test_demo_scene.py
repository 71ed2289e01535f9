"""The demo's synthetic scene: deterministic from its seed, three nested granularities, rendered masks."""

import numpy as np
import pytest
import torch

from gags_viewer.demo.scene import (
    BACKGROUND,
    CATALOG,
    NODE_INDEX,
    SceneConfig,
    ancestors,
    level_region,
    make_scene,
)

SMALL = dict(width=96, height=72, spacing=0.03, table_spacing=0.06, train_views=3, test_views=2)


@pytest.fixture(scope="module")
def scene():
    return make_scene(SceneConfig(seed=0, **SMALL))


def test_catalog_has_eight_to_twelve_objects_with_parts_and_a_group():
    objects = [n for n in CATALOG if n.kind == "object"]
    assert 8 <= len(objects) <= 12
    assert {n.key for n in CATALOG if n.kind == "part"} >= {"lamp_shade", "lamp_base", "mushroom_cap", "mushroom_stem"}
    assert any(n.kind == "group" for n in CATALOG)
    colours = [n.colour for n in CATALOG if n.colour]
    assert len(colours) == len(set(colours)), "every coloured region has its own colour"
    names = [name for n in CATALOG for name in n.names]
    assert len(names) == len(set(names)), "a name refers to one region"


def test_levels_nest():
    assert level_region("lamp_shade", "s") == "lamp_shade"
    assert level_region("lamp_shade", "m") == "lamp" and level_region("lamp_shade", "l") == "lamp"
    assert level_region("red_cube", "s") == "red_cube" and level_region("red_cube", "l") == "tower"
    assert level_region("background", "l") == "background"
    assert ancestors("mushroom_cap") == ["mushroom_cap", "mushroom"]


def test_same_seed_same_scene_other_seed_other_scene(scene):
    again = make_scene(SceneConfig(seed=0, **SMALL))
    other = make_scene(SceneConfig(seed=1, **SMALL))
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(scene.field, name), getattr(again.field, name))
    assert torch.equal(scene.leaf, again.leaf)
    for a, b in zip(scene.cameras, again.cameras):
        assert torch.equal(a.world_to_camera, b.world_to_camera)
    assert not torch.equal(scene.field.means[:100], other.field.means[:100])
    assert scene.field.metadata.up == (0.0, 0.0, 1.0)
    assert scene.train_names[0] == "frame_00001.png" and scene.test_names[0] == "frame_00004.png"


def test_held_out_views_are_new_views(scene):
    train = torch.stack([c.center for c in scene.train_cameras])
    for camera in scene.test_cameras:
        assert torch.cdist(camera.center[None], train).min() > 0.1


def test_masks_nest_part_in_object_in_group(scene):
    camera = scene.train_cameras[1]
    ids = scene.id_maps(camera)
    assert set(ids) == {"s", "m", "l"} and ids["s"].shape == (camera.height, camera.width)
    for coarse, fine in (("m", "s"), ("l", "m")):
        for region in np.unique(ids[fine]):
            inside = np.unique(ids[coarse][ids[fine] == region])
            assert len(inside) == 1, f"{CATALOG[region].name} spans several {coarse}-level regions"
            assert CATALOG[inside[0]].key in ancestors(CATALOG[region].key)
    seen = {CATALOG[i].key for i in np.unique(ids["s"])}
    assert {"table", "background"} <= seen and len(seen) >= 6


def test_masks_follow_the_renderer(scene):
    """The mask of a region is where the rendered one-hot channel of that region dominates."""
    camera = scene.test_cameras[0]
    leaf = scene.leaf_map(camera)
    from gags_viewer.render import render

    with torch.no_grad():
        out = render(
            scene.field,
            camera,
            rgb=False,
            features=(scene.leaf == NODE_INDEX["table"]).float()[:, None],
            backend="numba",
        )
    table = out.features[..., 0].numpy()
    background = out.alpha.numpy() <= 0.5
    assert ((leaf == BACKGROUND) == background).all()
    assert (table[leaf == NODE_INDEX["table"]] > 0.25).all()
    rgb = scene.render_rgb(camera)
    assert rgb.shape == (camera.height, camera.width, 3) and 0 <= rgb.min() and rgb.max() <= 1
