"""LERF-OVS label files: parsing, category union, polygon fill (cv2.fillPoly parity), clear errors."""

import json

import numpy as np
import pytest

from gags_viewer.errors import GagsError
from gags_viewer.eval.labels import LabelError, load_label_file, load_labels, polygon_mask


def rows(*lines):
    return np.array([[c == "1" for c in line] for line in lines])


# Expected masks produced by cv2.fillPoly(zeros((8, 9)), [np.asarray(points, np.int32)], 1) (OpenCV 5.0).
FILLPOLY_CASES = [
    (
        [[0, 0], [6, 2], [2, 6]],
        rows("110000000", "111110000", "011111100", "011111000", "011110000", "001100000", "001000000", "000000000"),
    ),
    (
        [[2, 1], [7, 1], [7, 6], [5, 6], [5, 3], [2, 3]],
        rows("000000000", "001111110", "001111110", "001111110", "000001110", "000001110", "000001110", "000000000"),
    ),
    (  # float vertices are truncated toward zero, as np.asarray(points, dtype=np.int32) does
        [[0.9, 0.9], [5.7, 1.2], [3.2, 6.9]],
        rows("111000000", "111111000", "011111000", "011110000", "001110000", "001100000", "000100000", "000000000"),
    ),
    (  # partly outside the image
        [[-3, -3], [4, -3], [4, 4], [-3, 4]],
        rows("111110000", "111110000", "111110000", "111110000", "111110000", "000000000", "000000000", "000000000"),
    ),
]


@pytest.mark.parametrize("points, expected", FILLPOLY_CASES)
def test_polygon_mask_matches_fillpoly(points, expected):
    np.testing.assert_array_equal(polygon_mask(points, 8, 9), expected)


def test_polygon_mask_of_sparse_subpixel_vertices_matches_fillpoly():
    """Sparse sub-pixel vertices, as in the real LERF-OVS labels: the official GT mask is
    cv2.fillPoly(zeros((10, 12)), [np.asarray(points, np.int32)], 1); expected rows produced by OpenCV 5.1
    (a Pillow fill of the same integer vertices differs on 5 of these pixels)."""
    points = [[4.1, 4.7], [10.8, 4.5], [6.7, 10.5], [1.9, 10.4]]
    expected = rows(
        "000000000000",
        "000000000000",
        "000000000000",
        "000000000000",
        "000011111110",
        "000111111100",
        "000111111000",
        "001111111000",
        "001111110000",
        "011111100000",
    )
    np.testing.assert_array_equal(polygon_mask(points, 10, 12), expected)


def test_polygon_mask_rectangle_is_inclusive():
    mask = polygon_mask([[1, 1], [4, 1], [4, 3], [1, 3]], 6, 7)
    expected = np.zeros((6, 7), dtype=bool)
    expected[1:4, 1:5] = True
    np.testing.assert_array_equal(mask, expected)


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def frame_json(name="frame_00001.jpg", h=20, w=30, objects=None):
    if objects is None:
        objects = [
            {"category": "mug", "bbox": [2, 3, 6, 8], "segmentation": [[2, 3], [6, 3], [6, 8], [2, 8]]},
            {"category": "plant", "bbox": [20, 10, 10, 2], "segmentation": [[10, 2], [20, 2], [20, 10], [10, 10]]},
            {"category": "mug", "bbox": [[15, 15], [17, 18]], "segmentation": [[15, 15], [17, 15], [17, 18], [15, 18]]},
        ]
    return {"info": {"name": name, "height": h, "width": w}, "objects": objects}


def test_label_file_unions_categories(tmp_path):
    frame = load_label_file(write(tmp_path / "frame_00001.json", frame_json()))
    assert frame.name == "frame_00001" and (frame.width, frame.height) == (30, 20)
    assert frame.frame_number == 1
    assert frame.categories == ["mug", "plant"]
    mug = frame.queries[0]
    expected = np.zeros((20, 30), dtype=bool)
    expected[3:9, 2:7] = True
    expected[15:19, 15:18] = True
    np.testing.assert_array_equal(mug.mask, expected)
    np.testing.assert_array_equal(mug.boxes, [[2, 3, 6, 8], [15, 15, 17, 18]])
    np.testing.assert_array_equal(frame.queries[1].boxes, [[20, 10, 10, 2]])  # kept as written
    assert frame.image_path is None


def test_label_folder_sorted_and_image_found(tmp_path):
    write(tmp_path / "frame_00002.json", frame_json("frame_00002.jpg"))
    write(tmp_path / "frame_00001.json", frame_json("frame_00001.jpg"))
    from PIL import Image

    Image.new("RGB", (15, 10), (255, 0, 0)).save(tmp_path / "frame_00002.jpg")
    frames = load_labels(tmp_path)
    assert [f.name for f in frames] == ["frame_00001", "frame_00002"]
    assert frames[1].image_path == tmp_path / "frame_00002.jpg"
    image = frames[1].load_image()
    assert image.shape == (20, 30, 3) and image[..., 0].mean() > 200  # resized to the label size


def test_name_falls_back_to_json_stem(tmp_path):
    data = frame_json()
    del data["info"]["name"]
    assert load_label_file(write(tmp_path / "view_7.json", data)).name == "view_7"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["objects"][2].pop("bbox"), r"frame_00001\.json: objects\[2\] has no 'bbox'"),
        (lambda d: d["objects"][1].pop("segmentation"), r"frame_00001\.json: objects\[1\] has no 'segmentation'"),
        (lambda d: d["objects"][0].pop("category"), r"frame_00001\.json: objects\[0\] has no 'category'"),
        (lambda d: d["objects"][0].update(category=3), r"objects\[0\]\.category must be a string, got a number"),
        (lambda d: d["objects"][1].update(bbox=[1, 2, 3]), r"objects\[1\]\.bbox must be 4 numbers"),
        (lambda d: d["objects"][1].update(bbox=[1, 2, "x", 4]), r"objects\[1\]\.bbox must be 4 numbers"),
        (lambda d: d["objects"][0].update(segmentation=[[1, 2, 3]]), r"objects\[0\]\.segmentation must be a polygon"),
        (lambda d: d["objects"][0].update(segmentation=[]), r"objects\[0\]\.segmentation must be a polygon"),
        (lambda d: d["info"].pop("height"), r"frame_00001\.json: info has no 'height'"),
        (lambda d: d["info"].update(width=-4), r"info\.width must be a positive integer, got -4"),
        (lambda d: d["info"].update(width="989"), r"info\.width must be a positive integer"),
        (lambda d: d.pop("info"), r"frame_00001\.json: has no 'info'"),
        (lambda d: d.pop("objects"), r"frame_00001\.json: has no 'objects'"),
        (lambda d: d.update(objects={"a": 1}), r"objects must be a list, got an object"),
        (lambda d: d["objects"].append("mug"), r"objects\[3\] must be an object, got a string"),
    ],
)
def test_malformed_label_names_file_and_key(tmp_path, mutate, message):
    data = frame_json()
    mutate(data)
    path = write(tmp_path / "frame_00001.json", data)
    with pytest.raises(LabelError, match=message) as info:
        load_label_file(path)
    assert isinstance(info.value, GagsError)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_json_and_missing_folder(tmp_path):
    bad = tmp_path / "frame_00003.json"
    bad.write_text('{"info": {"name": "frame_00003.jpg",}')
    with pytest.raises(LabelError, match=r"frame_00003\.json: not valid JSON \(line 1, column"):
        load_label_file(bad)
    with pytest.raises(LabelError, match="labels folder does not exist"):
        load_labels(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LabelError, match="no label files"):
        load_labels(empty)
    with pytest.raises(LabelError, match="top level must be an object"):
        load_label_file(write(tmp_path / "frame_00004.json", [1, 2]))


def test_duplicate_frame_names_are_refused(tmp_path):
    write(tmp_path / "frame_00001.json", frame_json("frame_00001.jpg"))
    write(tmp_path / "frame_00002.json", frame_json("frame_00001.jpg"))
    with pytest.raises(
        LabelError, match=r"frame_00002\.json: frame name 'frame_00001' is also used by frame_00001\.json"
    ):
        load_labels(tmp_path)
