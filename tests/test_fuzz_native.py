"""Property-based tests of native field directories (field.json + point_cloud.ply + decoders.safetensors).

Every directory loads (and validates, with metadata of the documented types) or is one clear error.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.field.language_field import FieldMetadata, LanguageField
from gags_viewer.field.load import load_field, save_field
from gags_viewer.field.native import DECODERS, FIELD_JSON
from tests.fuzz import FLOATS, FUZZ_TIMEOUT_S, Refused, examples, json_values, mostly, mutated, nested, outcome, rarely
from tests.test_formats import _clip_decoder, _scale_decoder, _truth

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.uint8, torch.bool]


def _native_bytes(clip_decoder: bool) -> dict[str, bytes]:
    field = LanguageField(**_truth(5, 1, 16), metadata=FieldMetadata(example_queries=("mug",), source="fuzz"))
    field.granularity_decoder = _scale_decoder().state_dict()
    if clip_decoder:
        field.decoder = _clip_decoder().state_dict()
        field.metadata.decoder_kind = "gags"
    with tempfile.TemporaryDirectory() as tmp:
        root = save_field(field, Path(tmp) / "field")
        return {p.name: p.read_bytes() for p in root.iterdir()}


SMALL = _native_bytes(clip_decoder=False)
FULL = _native_bytes(clip_decoder=True)
VALID_JSON = json.loads(SMALL[FIELD_JSON])


def _read(files: dict[str, bytes]):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "field"
        root.mkdir()
        for name, data in files.items():
            (root / name).write_bytes(data)
        return outcome(lambda: load_field(root))


def _check_loaded(field: LanguageField) -> None:
    assert field.validate() is field
    meta = field.metadata
    assert isinstance(meta.clip.model, str)
    for value in (meta.clip.pretrained, meta.clip.config_file, meta.clip.checkpoint_file, meta.decoder_kind):
        assert value is None or isinstance(value, str)
    assert all(isinstance(q, str) for q in meta.negatives + meta.example_queries)
    assert len(meta.up) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in meta.up)
    assert meta.default_camera is None or isinstance(meta.default_camera, dict)
    assert isinstance(meta.source, str)


# -------------------------------------------------------------------------------------------------
# field.json


@st.composite
def field_documents(draw):
    """field.json close to what save_field writes, with hostile values and keys dropped or added."""
    document = json.loads(json.dumps(VALID_JSON))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(sorted(VALID_JSON) + ["unknown", "clip.model", "clip.extra", "up.0"]))
        value = draw(st.one_of(json_values(6), st.sampled_from([10**400, -(10**400)]), FLOATS))
        if key.startswith("clip."):
            if isinstance(document.get("clip"), dict):
                document["clip"][key[5:]] = value
        elif key == "up.0":
            document["up"] = [value, 0, 1]
        elif draw(rarely(4)):
            document.pop(key, None)
        else:
            document[key] = value
    return draw(mostly(st.just(document), json_values(5), odds=19))


@examples(60)
@given(field_documents(), st.sampled_from([False, False, False, True]))  # the CLIP decoder is 2.4 MB
@example({**VALID_JSON, "up": ["a", "b", "c"]}, False)  # was accepted; the viewer crashed on it
@example({**VALID_JSON, "negatives": [1, None]}, False)  # was accepted; text encoding crashed on it
@example({**VALID_JSON, "clip": {"model": 5}}, False)  # was accepted; open_clip crashed on it
@example({**VALID_JSON, "up": [float("nan"), 0, 1]}, False)
@example({**VALID_JSON, "up": [10**400, 0, 1]}, False)  # was OverflowError in the check added for "up"
@example({**VALID_JSON, "format_version": 10**400}, False)
def test_field_json_documents_load_or_one_line_error(document, full):
    files = dict(FULL if full else SMALL)
    files[FIELD_JSON] = json.dumps(
        {**document, "decoder_kind": "gags"}
        if full and isinstance(document, dict) and "decoder_kind" not in document
        else document
    ).encode()
    result = _read(files)
    if not isinstance(result, Refused):
        _check_loaded(result)


@examples(60)
@given(mutated(SMALL[FIELD_JSON], hot=200))
@example(nested(100_000).encode())
def test_mutated_field_json_loads_or_one_line_error(data):
    result = _read({**SMALL, FIELD_JSON: data})
    if not isinstance(result, Refused):
        _check_loaded(result)


# -------------------------------------------------------------------------------------------------
# decoders.safetensors


@st.composite
def decoder_tensors(draw):
    """A decoders.safetensors dict: the valid granularity decoder with hostile edits."""
    tensors = {f"granularity_decoder.{k}": v.clone() for k, v in _scale_decoder().state_dict().items()}
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(sorted(tensors) or ["granularity_decoder.decoder.0.weight"]))
        edit = draw(st.sampled_from(["shape", "dtype", "value", "drop", "rename", "clip"]))
        if edit == "shape":
            tensors[key] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=4)))
        elif edit == "dtype" and key in tensors:
            tensors[key] = tensors[key].to(draw(st.sampled_from(DTYPES)))
        elif edit == "value" and key in tensors and tensors[key].numel():
            tensors[key] = tensors[key].double()
            tensors[key].view(-1)[0] = draw(FLOATS)
        elif edit == "drop":
            tensors.pop(key, None)
        elif edit == "rename":
            tensors[draw(st.sampled_from(["granularity_decoder", "x.decoder.0.weight", "clip_decoder.", "é"]))] = (
                torch.ones(2)
            )
        else:  # a CLIP decoder of some made-up layout
            tensors[f"clip_decoder.decoder.0.{draw(st.sampled_from(['weight', 'bias']))}"] = torch.zeros(
                draw(st.lists(st.integers(0, 17), max_size=3))
            )
    return tensors


def _raw_safetensors(header: dict, data: bytes = bytes(64), declared: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if declared is None else declared) + text + data


RAW_HEADERS = st.one_of(
    st.builds(
        lambda shape, dtype, end: {
            "clip_decoder.decoder.0.weight": {"dtype": dtype, "shape": shape, "data_offsets": [0, end]}
        },
        st.lists(st.sampled_from([0, 1, 4, 2**31, 2**62]), max_size=3),
        st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "C64", "XYZ"]),
        st.sampled_from([0, 16, 64, 2**40]),
    ),
    st.builds(lambda value: {"__metadata__": value}, json_values(4)),
)


@examples(80)
@given(
    mostly(
        decoder_tensors().map(safetensors.torch.save),
        st.one_of(
            RAW_HEADERS.map(_raw_safetensors),
            st.sampled_from([2**64 - 1, 2**40, 0, 7]).map(lambda n: _raw_safetensors({}, declared=n)),
        ),
        odds=2,
    )
)
@example(safetensors.torch.save({"clip_decoder.decoder.0.weight": torch.zeros(5)}))  # was IndexError in validate
def test_decoder_files_load_or_one_line_error(data):
    result = _read({**SMALL, DECODERS: data})
    if not isinstance(result, Refused):
        _check_loaded(result)


@examples(60)
@given(mutated(SMALL[DECODERS], hot=600))
def test_mutated_decoder_files_load_or_one_line_error(data):
    result = _read({**SMALL, DECODERS: data})
    if not isinstance(result, Refused):
        _check_loaded(result)


def test_valid_native_directories_still_load():
    for files in (SMALL, FULL):
        result = _read(files)
        assert not isinstance(result, Refused), result
        _check_loaded(result)
