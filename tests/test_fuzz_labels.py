"""Property-based tests of the LERF-OVS label JSON reader: every file loads or is one clear error."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.eval.labels import LabelFrame, load_label_file
from tests.fuzz import (
    FLOATS,
    FUZZ_TIMEOUT_S,
    INTS,
    TEXT,
    Refused,
    examples,
    json_values,
    mostly,
    mutated,
    nested,
    outcome,
)

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)

VALID = {
    "info": {"name": "frame_00001.jpg", "height": 12, "width": 16},
    "objects": [
        {"category": "mug", "bbox": [1, 2, 8, 9], "segmentation": [[1, 2], [8, 2], [8, 9], [1, 9]]},
        {"category": "mug", "bbox": [9, 1, 15, 5], "segmentation": [[9.5, 1], [15, 1], [12, 5]]},
        {"category": "plant leaf", "bbox": [0, 0, 3, 3], "segmentation": [[0, 0], [3, 0], [3, 3]]},
    ],
}

NUMBERS = st.one_of(INTS, FLOATS, st.sampled_from([10**400, -(10**400)]))
SIZE = mostly(st.integers(1, 40), st.one_of(NUMBERS, TEXT, st.none(), st.booleans(), st.just([12])))
COORD = st.one_of(st.integers(-5, 45), st.floats(-5, 45))
POLYGON = st.lists(st.lists(COORD, min_size=2, max_size=2), min_size=1, max_size=8)
POINTS = mostly(
    st.one_of(POLYGON, st.lists(POLYGON, min_size=1, max_size=3)),
    st.one_of(st.lists(st.lists(NUMBERS, min_size=2, max_size=2), max_size=8), json_values()),
)


@st.composite
def label_documents(draw):
    """A label document close to the official layout, with hostile values and keys dropped or added."""
    info = {
        "name": draw(mostly(st.just("frame_00001.jpg"), st.one_of(TEXT, json_values(4)))),
        "height": draw(SIZE),
        "width": draw(SIZE),
    }
    objects = []
    for _ in range(draw(st.integers(0, 4))):
        obj = {
            "category": draw(mostly(st.sampled_from(["mug", "plant"]), st.one_of(TEXT, json_values(3)))),
            "bbox": draw(
                mostly(
                    st.lists(COORD, min_size=4, max_size=4),
                    st.one_of(st.lists(NUMBERS, min_size=4, max_size=4), json_values(6)),
                )
            ),
            draw(st.sampled_from(["segmentation", "polygon"])): draw(POINTS),
        }
        for key in draw(mostly(st.just(set()), st.sets(st.sampled_from(sorted(obj)), min_size=1, max_size=1))):
            del obj[key]
        obj.update(draw(st.dictionaries(TEXT, json_values(3), max_size=2)))
        objects.append(draw(mostly(st.just(obj), json_values(3), odds=9)))
    document = {"info": info, "objects": objects}
    for key in draw(mostly(st.just(set()), st.sets(st.sampled_from(["info", "objects"]), min_size=1, max_size=1), 9)):
        document[key] = draw(json_values(4))
    return document


def _read(text: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frame_00001.json"
        path.write_bytes(text)
        return outcome(lambda: load_label_file(path))


def _check_loaded(frame: LabelFrame) -> None:
    assert frame.width >= 1 and frame.height >= 1
    for query in frame.queries:
        assert isinstance(query.category, str) and query.category.strip()
        assert query.mask.shape == (frame.height, frame.width) and query.mask.dtype == bool
        assert query.boxes.ndim == 2 and query.boxes.shape[1] == 4 and np.isfinite(query.boxes).all()


@examples(100)
@given(label_documents())
@example({"info": {"height": 1e999, "width": 4}, "objects": []})  # was OverflowError: int(inf)
@example({"info": {"height": float("nan"), "width": 4}, "objects": []})  # was ValueError: int(nan)
@example(
    {
        "info": {"height": 10**9, "width": 10**9},
        "objects": [  # was a 10^18-pixel mask (MemoryError)
            {"category": "a", "bbox": [0, 0, 1, 1], "segmentation": [[0, 0], [1, 1], [0, 1]]}
        ],
    }
)
@example(
    {
        "info": {"height": 4, "width": 4},
        "objects": [  # was OverflowError: int too large for a float
            {"category": "a", "bbox": [10**400, 0, 1, 1], "segmentation": [[0, 0], [1, 1], [0, 1]]}
        ],
    }
)
@example({"info": {"height": 4, "width": 4, "name": "a\x00b.jpg"}, "objects": []})
def test_label_documents_load_or_one_line_error(document):
    result = _read(json.dumps(document).encode())
    if not isinstance(result, Refused):
        _check_loaded(result)


@examples(150)
@given(mutated(json.dumps(VALID, indent=1).encode(), hot=80))
@example(nested(100_000).encode())  # was RecursionError from the JSON parser
@example(b"\xff\xfe" + json.dumps(VALID).encode("utf-16-le"))
def test_mutated_label_files_load_or_one_line_error(data):
    result = _read(data)
    if not isinstance(result, Refused):
        _check_loaded(result)


def test_valid_label_file_still_loads():
    result = _read(json.dumps(VALID).encode())
    assert not isinstance(result, Refused), result
    assert result.categories == ["mug", "plant leaf"]
    assert result.queries[0].boxes.shape == (2, 4)
