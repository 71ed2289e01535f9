"""LERF-OVS polygons from masks: the evaluator's polygon fill gives the mask back, holes included."""

import json

import numpy as np
import pytest

from gags_viewer.demo.labels import mask_polygons, write_label_file
from gags_viewer.eval.labels import load_label_file, polygon_mask


def _fill(polygons, shape):
    out = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        out |= polygon_mask(polygon, *shape)
    return out


def test_polygons_reproduce_masks_with_holes_and_pieces():
    yy, xx = np.mgrid[:60, :80]
    ring = ((xx - 25) ** 2 + (yy - 30) ** 2 < 18**2) & ((xx - 25) ** 2 + (yy - 30) ** 2 >= 8**2)
    square = (xx >= 55) & (xx < 70) & (yy >= 10) & (yy < 20)
    mask = ring | square
    polygons = mask_polygons(mask)
    assert len(polygons) == 2
    filled = _fill(polygons, mask.shape)
    iou = (filled & mask).sum() / (filled | mask).sum()
    assert iou > 0.98
    assert not filled[30, 25], "the ring's hole stays empty"


def test_tiny_components_are_dropped():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:4, 2:4] = True
    assert mask_polygons(mask, min_pixels=20) == []


def test_label_file_reads_back(tmp_path):
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:20, 10:30] = True
    path = write_label_file(tmp_path, "frame_00001", "frame_00001.jpg", 30, 40, {"red cube": mask})
    data = json.loads(path.read_text())
    assert data["info"] == {"name": "frame_00001.jpg", "height": 30, "width": 40}
    assert data["objects"][0]["bbox"] == [10, 5, 29, 19]
    frame = load_label_file(path)
    assert frame.categories == ["red cube"]
    assert (frame.queries[0].mask == mask).all()


def test_committed_demo_labels_carry_the_level_the_build_writes():
    import json
    from pathlib import Path

    from gags_viewer.demo.build import category_level

    files = sorted((Path(__file__).resolve().parents[1] / "scenes" / "demo" / "labels").glob("frame_*.json"))
    if not files:
        pytest.skip("the demo labels are not in this checkout")
    for path in files:
        for obj in json.loads(path.read_text())["objects"]:
            assert obj["level"] == category_level(obj["category"]), path.name
    frame = load_label_file(files[0])
    assert {q.level for q in frame.queries} <= {"object", "part", "group"} and all(q.level for q in frame.queries)
