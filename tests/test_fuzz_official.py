"""Property-based tests of official GAGS output directories and their decoder ``.pth`` checkpoints.

Every directory loads (and validates) or is one clear error, and no checkpoint runs code: pickles with a
``__reduce__`` that would write a marker file are refused and the marker never appears.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.errors import FormatError
from gags_viewer.field.checkpoint import CLIP_DECODER_LAYERS, GRANULARITY_DECODER_LAYERS
from gags_viewer.field.load import load_field
from tests.fuzz import FLOATS, FUZZ_TIMEOUT_S, Refused, examples, json_values, mostly, mutated, nested, outcome, rarely
from tests.test_formats import _clip_decoder, _scale_decoder, _truth, _write_inria_ply

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)

ITERATION = 7000
CLIP_STATE = _clip_decoder().state_dict()
SCALE_STATE = _scale_decoder().state_dict()
SLOTS = {"decoder": (CLIP_STATE, CLIP_DECODER_LAYERS), "scale_decoder": (SCALE_STATE, GRANULARITY_DECODER_LAYERS)}
DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


def _save(payload, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


VALID_SCALE = _save({"module_state_dict": SCALE_STATE, "optimizer_state_dict": {"state": {}, "param_groups": []}})
VALID_SCALE_LEGACY = _save({"module_state_dict": SCALE_STATE}, legacy=True)


def _read(checkpoints: dict[str, bytes]):
    """Build an official directory with a valid PLY and the given ``<slot>_chkpnt<it>.pth`` bytes; load it."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cloud = root / "point_cloud" / f"iteration_{ITERATION}"
        cloud.mkdir(parents=True)
        _write_inria_ply(cloud / "point_cloud.ply", _truth(5, 1, 16))
        for slot, data in checkpoints.items():
            (root / f"{slot}_chkpnt{ITERATION}.pth").write_bytes(data)
        return outcome(lambda: load_field(root))


def _check_loaded(field, slots) -> None:
    assert field.validate() is field
    for slot in slots:
        state = field.decoder if slot == "decoder" else field.granularity_decoder
        assert set(state) == set(SLOTS[slot][0]) and all(v.is_floating_point() for v in state.values())


# -------------------------------------------------------------------------------------------------
# Checkpoints with hostile contents


@st.composite
def state_dicts(draw, slot: str):
    """The slot's official state dict after a few hostile edits (shapes, dtypes, values, keys, types)."""
    reference, layers = SLOTS[slot]
    state: dict = {key: value.clone() for key, value in reference.items()}
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(sorted(state) or ["decoder.0.weight"]))
        edit = draw(st.sampled_from(["shape", "dtype", "value", "drop", "add", "object", "scalar"]))
        if edit in ("dtype", "value") and not isinstance(state.get(key), torch.Tensor):
            edit = "shape"
        if edit == "shape":
            dims = draw(st.lists(st.integers(0, 5), max_size=4))
            state[key] = torch.zeros(dims)
        elif edit == "dtype":
            state[key] = state[key].to(draw(st.sampled_from(DTYPES)))
        elif edit == "value" and state[key].numel():
            state[key] = state[key].double()
            state[key].view(-1)[draw(st.integers(0, state[key].numel() - 1))] = draw(FLOATS)
        elif edit == "drop":
            state.pop(key, None)
        elif edit == "add":
            state[draw(st.sampled_from(["decoder.99.weight", "decoder.1.weight", "extra", ""]))] = torch.ones(2)
        elif edit == "object":
            state[key] = draw(json_values(4))
        else:
            state[key] = torch.tensor(draw(FLOATS))
    wrap = draw(mostly(st.sampled_from(["module", "bare"]), st.sampled_from(["list", "nested", "other"]), odds=4))
    if wrap == "module":
        return {"module_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}}
    if wrap == "list":
        return [state]
    if wrap == "nested":
        return {"module_state_dict": {"module_state_dict": state}}
    if wrap == "other":
        return draw(json_values(6))
    return state


@st.composite
def checkpoint_sets(draw):
    slots = draw(st.sets(st.sampled_from(sorted(SLOTS)), min_size=1))
    return {slot: _save(draw(state_dicts(slot)), legacy=draw(rarely(3))) for slot in slots}


@examples(40)
@given(checkpoint_sets())
@example({"scale_decoder": _save({"decoder.0.weight": torch.zeros(3)})})
@example({"scale_decoder": _save(nested(5000))})
def test_decoder_checkpoints_load_or_one_line_error(checkpoints):
    result = _read(checkpoints)
    if not isinstance(result, Refused):
        _check_loaded(result, checkpoints)


def test_valid_official_directory_still_loads():
    result = _read({"decoder": _save({"module_state_dict": CLIP_STATE}), "scale_decoder": VALID_SCALE})
    assert not isinstance(result, Refused), result
    _check_loaded(result, SLOTS)


# -------------------------------------------------------------------------------------------------
# Damaged checkpoints


@examples(80)
@given(mutated(VALID_SCALE, hot=256, hot_tail=512))
def test_mutated_zip_checkpoints_load_or_one_line_error(data):
    result = _read({"scale_decoder": data})
    if not isinstance(result, Refused):
        _check_loaded(result, ["scale_decoder"])


def _lying_string_length(data: bytes) -> bytes:
    """``data`` with the first pickled storage key (BINUNICODE "<digits>") declaring a 2 GiB length."""
    match = re.search(rb"X[\x01-\x20]\x00\x00\x00\d", data)
    out = bytearray(data)
    out[match.start() + 4] = 0x80
    return bytes(out)


@examples(60)
@given(mutated(VALID_SCALE_LEGACY, hot=1024))
@example(_lying_string_length(VALID_SCALE_LEGACY))  # torch.load(path) allocated the 2 GiB before failing
def test_mutated_legacy_checkpoints_load_or_one_line_error(data):
    result = _read({"scale_decoder": data})
    if not isinstance(result, Refused):
        _check_loaded(result, ["scale_decoder"])


# -------------------------------------------------------------------------------------------------
# Code in a checkpoint never runs


class _Payload:
    """Unpickling this object calls ``call(*args)``; every variant would create the marker file."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(marker: Path) -> list[_Payload]:
    return [
        _Payload(open, (str(marker), "w")),
        _Payload(os.system, (f"touch '{marker}'",)),
        _Payload(exec, (f"open({str(marker)!r}, 'w').close()",)),
        _Payload(eval, (f"open({str(marker)!r}, 'w')",)),
    ]


@examples(30)
@given(
    which=st.integers(0, 3),
    placement=st.sampled_from(["top", "state value", "optimizer", "in list", "dict key", "in tuple"]),
    container=st.sampled_from(["zip", "legacy", "raw pickle"]),
    protocol=st.integers(2, pickle.HIGHEST_PROTOCOL),
)
def test_pickled_code_is_refused_and_never_runs(which, placement, container, protocol):
    with tempfile.TemporaryDirectory() as marker_dir:
        marker = Path(marker_dir) / "pwned"
        payload = _payloads(marker)[which]
        state = dict(SCALE_STATE)
        document = {
            "top": payload,
            "state value": {"module_state_dict": {**state, "decoder.0.bias": payload}},
            "optimizer": {"module_state_dict": state, "optimizer_state_dict": payload},
            "in list": {"module_state_dict": state, "extra": [1, 2, payload]},
            "dict key": {"module_state_dict": state, "extra": {payload: 1}},
            "in tuple": {"module_state_dict": state, "extra": (payload,)},
        }[placement]
        if container == "raw pickle":
            data = pickle.dumps(document, protocol=protocol)
        else:
            buffer = io.BytesIO()
            torch.save(document, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=container == "zip")
            data = buffer.getvalue()
        result = _read({"scale_decoder": data})
        assert isinstance(result, Refused) and isinstance(result.error, FormatError), result
        assert not marker.exists(), "unpickling ran code from the checkpoint"


@pytest.mark.parametrize("which", range(4))
def test_payloads_do_run_when_unpickled_unsafely(which, tmp_path):
    """The payloads above are live: plain pickle runs them (so the refusal test can fail)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_payloads(marker)[which]))
    assert marker.exists()
