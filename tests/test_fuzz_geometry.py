"""Property-based tests of the initial-3DGS checkpoint reader of training (gsplat ``.pt``, Inria ``chkpnt``)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.train.scene import load_geometry
from tests.fuzz import FLOATS, FUZZ_TIMEOUT_S, Refused, examples, json_values, mutated, outcome
from tests.test_fuzz_official import _payloads

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)

N = 4
GSPLAT = {"means": (N, 3), "quats": (N, 4), "scales": (N, 3), "opacities": (N,), "sh0": (N, 1, 3), "shN": (N, 3, 3)}
INRIA = [(N, 3), (N, 1, 3), (N, 3, 3), (N, 3), (N, 4), (N, 1)]


def _save(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _gsplat() -> dict:
    return {
        "step": 10,
        "splats": {k: torch.randn(shape, generator=torch.Generator().manual_seed(0)) for k, shape in GSPLAT.items()},
    }


def _inria() -> tuple:
    g = torch.Generator().manual_seed(0)
    return (3, *[torch.randn(shape, generator=g) for shape in INRIA], 0, None, None, None, None, 0.5), 30000


@st.composite
def checkpoints(draw):
    """A gsplat or Inria checkpoint payload with a few hostile edits."""
    if draw(st.booleans()):
        payload = _gsplat()
        entries = payload["splats"]
        keys = list(GSPLAT)
    else:
        capture, iteration = _inria()
        entries = dict(enumerate(capture))
        keys = list(range(1, 7))
        payload = None
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(keys))
        edit = draw(st.sampled_from(["shape", "dtype", "value", "object", "drop"]))
        if edit == "shape":
            entries[key] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=4)))
        elif edit == "dtype" and isinstance(entries.get(key), torch.Tensor):
            entries[key] = entries[key].to(
                draw(st.sampled_from([torch.int64, torch.bool, torch.float16, torch.complex64]))
            )
        elif edit == "value" and isinstance(entries.get(key), torch.Tensor) and entries[key].numel():
            entries[key] = entries[key].double()
            entries[key].view(-1)[0] = draw(FLOATS)
        elif edit == "object":
            entries[key] = draw(json_values(3))
        else:
            entries.pop(key, None)
    if payload is None:
        payload = (tuple(entries.get(i) for i in range(max(entries, default=0) + 1)), iteration)
    return payload


def _read(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chkpnt30000.pth"
        path.write_bytes(data)
        return outcome(lambda: load_geometry(path))


@examples(80)
@given(checkpoints())
@example({"splats": {**_gsplat()["splats"], "sh0": [1.0]}})  # was AttributeError: list has no .float()
@example({"splats": {**_gsplat()["splats"], "shN": torch.zeros(N, 3)}})  # was RuntimeError from torch.cat
@example(((3, *([torch.zeros(3)] * 6), 0, None, None, None, None, 0.5), 1))  # was IndexError from torch.cat
def test_geometry_checkpoints_load_or_one_line_error(payload):
    result = _read(_save(payload))
    if not isinstance(result, Refused):
        assert result.validate() is result and result.features is None


@examples(60)
@given(mutated(_save(_gsplat()), hot=256, hot_tail=512))
def test_mutated_geometry_checkpoints_load_or_one_line_error(data):
    result = _read(data)
    if not isinstance(result, Refused):
        assert result.validate() is result


@pytest.mark.parametrize("which", range(4))
def test_geometry_checkpoint_code_never_runs(which, tmp_path):
    marker = tmp_path / "pwned"
    result = _read(_save({"splats": {**_gsplat()["splats"], "means": _payloads(marker)[which]}}))
    assert isinstance(result, Refused) and not marker.exists()
