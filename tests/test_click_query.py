"""Click-to-query on the demo field: a feature click on a known object becomes a query that highlights
that object (2D and as a 3D selection); the SAM path runs with a tiny random-weight SAM and returns a mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gags_viewer.demo import DEMO_FIELD
from gags_viewer.errors import GagsError
from gags_viewer.viewer.click_query import ClickQueries, click_pixel, load_sam_predictor
from tests.test_select_command import demo_camera
from tests.tiny_sam import save_tiny_sam

needs_demo = pytest.mark.skipif(not (DEMO_FIELD / "field.json").is_file(), reason="demo field not built")


@pytest.fixture(scope="module")
def demo():
    from gags_viewer.demo.scene import NODE_INDEX, SceneConfig, make_scene
    from gags_viewer.field.load import load_field
    from gags_viewer.viewer.commands import build_engine

    field = load_field(DEMO_FIELD)
    scene = make_scene(SceneConfig(seed=0))
    return field, build_engine(field, DEMO_FIELD, torch.device("cpu")), scene, NODE_INDEX


def object_pixel(scene, camera, leaf_id):
    """The object's mask in this view and its pixel nearest to the mask's centroid."""
    mask = scene.leaf_map(camera) == leaf_id
    ys, xs = np.nonzero(mask)
    i = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return mask, int(xs[i]), int(ys[i])


def test_click_pixel():
    assert click_pixel((0.0, 0.0), 64, 48) == (0, 0)
    assert click_pixel((0.999, 0.5), 64, 48) == (63, 24)
    assert click_pixel((1.0, 1.2), 64, 48) == (63, 47)


@needs_demo
@pytest.mark.parametrize("key", ["red_cube", "green_ball", "lamp_shade"])
def test_feature_click_highlights_the_clicked_object(demo, key):
    from gags_viewer.language.relevancy import normalize_scores
    from gags_viewer.language.selection import GaussianSelector

    field, engine, scene, node_index = demo
    camera = demo_camera(160, 120)
    mask, x, y = object_pixel(scene, camera, node_index[key])
    clicks = ClickQueries()
    result = clicks.query(engine, camera, x, y)
    assert result.phrase.startswith("[click ") and result.mask is None
    relevancy = engine.query(camera, [result.phrase], mode="pixel").relevancy[0]
    highlighted = normalize_scores(relevancy).numpy() > 0.4  # the GAGS mask threshold (§4.3, unsmoothed)
    iou = (highlighted & mask).sum() / (highlighted | mask).sum()
    assert iou > 0.75, f"{key}: IoU {iou:.2f} of the clicked query's mask with the object"
    truth = scene.leaf == node_index[key]
    selected = GaussianSelector(engine).select(result.phrase).mask
    assert (selected & truth).sum() >= 0.8 * truth.sum() and (selected & truth).sum() >= 0.7 * selected.sum()


@needs_demo
def test_click_on_empty_space_is_a_clear_error(demo):
    field, engine, scene, node_index = demo
    with pytest.raises(GagsError, match="nothing of the field"):
        ClickQueries().query(engine, demo_camera(160, 120), 0, 0)


@needs_demo
def test_sam_click_runs_and_returns_a_mask_and_a_query(demo, tmp_path):
    field, engine, scene, node_index = demo
    camera = demo_camera(160, 120)
    _, x, y = object_pixel(scene, camera, node_index["red_cube"])
    # as `view --sam-checkpoint` builds it: SAM read from the file, CLIP's image tower from the field's model
    clicks = ClickQueries(sam_checkpoint=save_tiny_sam(tmp_path / "sam.pth"))
    assert clicks.uses_sam
    result = clicks.query(engine, camera, x, y)
    encoder = clicks.sam(engine).image_encoder
    assert result.phrase.startswith("[sam ") and result.mask.shape == (120, 160) and result.mask.dtype == bool
    assert result.mask.any()
    embedding = engine.text_encoder.cached(result.phrase)
    assert embedding is not None and abs(float(embedding.norm()) - 1.0) < 1e-5
    # the embedding is the CLIP image embedding of that masked crop (the preprocessing crop rule)
    rgb = (engine.render_features(camera, rgb=True).rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    expected = encoder.encode_masks(rgb, [result.mask])[0]
    assert torch.allclose(embedding.cpu(), expected, atol=1e-6)
    assert engine.query(camera, [result.phrase], mode="gaussian").relevancy.shape == (1, 120, 160)


def test_sam_checkpoint_is_loaded_safely(tmp_path):
    assert not ClickQueries().uses_sam
    with pytest.raises(GagsError, match="segment-anything checkpoint"):
        ClickQueries().sam(engine=None)
    bad = tmp_path / "bad.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(64, 3, 16, 16)}, bad)
    with pytest.raises(GagsError, match="not a segment-anything checkpoint"):
        load_sam_predictor(bad)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(GagsError, match="not a readable SAM checkpoint"):
        load_sam_predictor(evil)
    with pytest.raises(GagsError, match="not found"):
        load_sam_predictor(tmp_path / "missing.pth")
