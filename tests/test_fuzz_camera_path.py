"""Property-based tests of the camera-path JSON reader: every file loads or is one clear error."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.viewer.camera_path import CameraPath, camera_path_json, read_camera_path
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
    rarely,
)

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)


def _valid_document() -> dict:
    poses = []
    for angle in (0.0, 0.4, 0.8):
        c2w = np.eye(4)
        c2w[:3, :3] = [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
        c2w[:3, 3] = [math.sin(angle), 0.1, -2.0]
        poses.append((c2w, math.radians(50)))
    return camera_path_json(poses, 64, 48, 10.0, keyframes=poses[:2])


VALID = _valid_document()
NUMBERS = st.one_of(INTS, FLOATS, st.sampled_from([10**400, -(10**400)]))
SCALARS = st.one_of(NUMBERS, TEXT, st.none(), st.booleans())


@st.composite
def camera_path_documents(draw):
    """A camera path close to nerfview's layout, with hostile values and keys dropped or added."""
    document = json.loads(json.dumps(VALID))
    for key in ("render_width", "render_height", "fps", "camera_type"):
        if draw(rarely(4)):
            document[key] = draw(st.one_of(SCALARS, json_values(3)))
    frames = []
    for entry in document["camera_path"][: draw(st.integers(0, 3))]:
        if draw(rarely(4)):
            matrix = entry["camera_to_world"]
            size = draw(st.sampled_from([16, 12, 9, 0, 17]))
            entry["camera_to_world"] = draw(
                st.one_of(
                    st.lists(NUMBERS, min_size=size, max_size=size),
                    st.just([matrix[i : i + 4] for i in range(0, 16, 4)]),
                    st.just([v * draw(FLOATS) for v in matrix]),
                    json_values(4),
                )
            )
        for key in ("fov", "aspect"):
            if draw(rarely(4)):
                entry[key] = draw(st.one_of(SCALARS, json_values(2)))
        if draw(rarely()):
            del entry[draw(st.sampled_from(sorted(entry)))]
        frames.append(draw(mostly(st.just(entry), json_values(3))))
    document["camera_path"] = draw(mostly(st.just(frames), json_values(3)))
    return draw(mostly(st.just(document), json_values(5), odds=19))


def _read(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "path.json"
        path.write_bytes(data)
        return outcome(lambda: read_camera_path(path))


def _check_loaded(path: CameraPath) -> None:
    assert isinstance(path.width, int) and isinstance(path.height, int)
    assert path.width >= 1 and path.height >= 1
    assert math.isfinite(path.fps) and path.fps > 0
    assert path.cameras
    for camera in path.cameras:
        assert (camera.width, camera.height) == (path.width, path.height)
        assert torch.isfinite(camera.world_to_camera).all() and torch.isfinite(camera.K).all()
        assert torch.isfinite(camera.camera_to_world).all()


def _document(**changes) -> dict:
    document = json.loads(json.dumps(VALID))
    frame_changes = changes.pop("frame", {})
    document.update(changes)
    document["camera_path"][0].update(frame_changes)
    return document


@examples(150)
@given(camera_path_documents())
@example(_document(render_width=float("inf")))  # was OverflowError: int(inf)
@example(_document(render_width=float("nan")))  # was ValueError outside the try
@example(_document(render_height=None, frame={"aspect": 0}))  # was ZeroDivisionError
@example(_document(render_height=None, frame={"aspect": "wide"}))  # was ValueError: float('wide')
@example(_document(fps=float("inf")))  # was accepted: an infinite frame rate
@example(_document(frame={"fov": 10**400}))  # was OverflowError: int too large to convert to float
@example(_document(frame={"camera_to_world": [0.0] * 15 + [1.0]}))  # was torch LinAlgError (singular)
@example(_document(frame={"camera_to_world": [1e308] * 16}))  # finite in the file, Inf once scaled
@example(_document(render_width=10**12))  # was accepted: a 10^12-pixel-wide render
def test_camera_path_documents_load_or_one_line_error(document):
    result = _read(json.dumps(document).encode())
    if not isinstance(result, Refused):
        _check_loaded(result)


@examples(150)
@given(mutated(json.dumps(VALID).encode(), hot=120))
@example(nested(100_000).encode())  # was RecursionError from the JSON parser
@example(b'{"camera_path": [' + b"1" * 5000 + b"]}")  # was ValueError: too many digits
def test_mutated_camera_path_files_load_or_one_line_error(data):
    result = _read(data)
    if not isinstance(result, Refused):
        _check_loaded(result)


def test_valid_camera_path_still_loads():
    result = _read(json.dumps(VALID).encode())
    assert not isinstance(result, Refused), result
    assert (result.width, result.height, len(result.cameras)) == (64, 48, 3)
