"""Property-based tests of the Inria PLY reader: every file loads (and validates) or is one clear error."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.field.language_field import LanguageField
from gags_viewer.field.load import load_field
from gags_viewer.field.ply import DC, OPACITY, POSITION, ROTATION, SCALE, write_ply
from tests.fuzz import FLOATS, FUZZ_TIMEOUT_S, TEXT, Refused, examples, mostly, mutated, outcome, rarely

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)

PLY_TYPES = {
    "char": "i1",
    "uchar": "u1",
    "short": "i2",
    "ushort": "u2",
    "int": "i4",
    "uint": "u4",
    "float": "f4",
    "double": "f8",
}
FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def _small_field(n: int = 3, degree: int = 1, feature_dim: int = 4) -> LanguageField:
    g = torch.Generator().manual_seed(0)
    return LanguageField(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g),
        opacity_logits=torch.randn(n, generator=g),
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g),
        features=torch.randn(n, feature_dim, generator=g),
    )


def _valid_binary() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.ply"
        write_ply(_small_field(), path)
        return path.read_bytes()


VALID_BINARY = _valid_binary()
VALID_HEADER = VALID_BINARY.index(b"end_header\n") + len(b"end_header\n")


# -------------------------------------------------------------------------------------------------
# A PLY writer that can lie: any header, any property types, any declared count


def _ply_bytes(
    fmt: str, elements: list[tuple[str, int, list[tuple[str, str, str | None]], list[list]]], comments: list[str]
) -> bytes:
    """PLY bytes. ``elements``: (name, declared count, [(property, type, list count type)], rows)."""
    lines = ["ply", f"format {fmt} 1.0", *(f"comment {c}" for c in comments)]
    for name, count, props, _ in elements:
        lines.append(f"element {name} {count}")
        for prop, kind, list_count in props:
            lines.append(f"property list {list_count} {kind} {prop}" if list_count else f"property {kind} {prop}")
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    order = FORMATS[fmt]
    body = bytearray()
    for _, _, props, rows in elements:
        for row in rows:
            if order is None:
                body += (" ".join(_ascii(v) for v in row) + "\n").encode()
                continue
            for (_, kind, list_count), value in zip(props, row):
                if list_count:
                    body += np.array(len(value), dtype=order + PLY_TYPES[list_count]).tobytes()
                    body += np.array(value, dtype=order + PLY_TYPES[kind]).tobytes()
                else:
                    body += np.array(value, dtype=order + PLY_TYPES[kind]).tobytes()
    return header + bytes(body)


def _ascii(value) -> str:
    if isinstance(value, list):
        return " ".join([str(len(value)), *map(_ascii, value)])
    return repr(float(value)) if isinstance(value, float) else str(value)


def _value(draw, kind: str):
    dtype = np.dtype(PLY_TYPES[kind])
    if dtype.kind == "f":
        return draw(mostly(st.floats(-1e3, 1e3), FLOATS, odds=19))
    info = np.iinfo(dtype)
    return draw(st.one_of(st.integers(info.min, info.max), st.sampled_from([info.min, info.max, 0])))


@st.composite
def ply_documents(draw):
    """(PLY bytes, expected means or None when the file is not a consistent, finite field)."""
    n = draw(mostly(st.integers(1, 4), st.just(0)))
    rest = draw(mostly(st.sampled_from([0, 9, 24, 45]), st.sampled_from([3, 10])))
    features = draw(st.sampled_from([0, 1, 4, 16]))
    names = [
        *POSITION,
        "nx",
        "ny",
        "nz",
        *DC,
        *(f"f_rest_{i}" for i in range(rest)),
        *OPACITY,
        *SCALE,
        *ROTATION,
        *(f"semantic_{i}" for i in range(features)),
    ]
    consistent = rest in (0, 9, 24, 45)
    if draw(rarely(4)):
        name = draw(st.sampled_from(names))
        names.remove(name)
        consistent &= name in ("nx", "ny", "nz")
    extra = draw(
        mostly(
            st.just([]),
            st.lists(
                st.one_of(st.sampled_from(["semantic_99", "f_rest_x", "red", "opacity_1"]), TEXT),
                min_size=1,
                max_size=2,
                unique=True,
            ),
            odds=4,
        )
    )
    for name in extra:
        if name and name.isprintable() and " " not in name and name not in names and name.isascii():
            names.insert(draw(st.integers(0, len(names))), name)
            consistent &= name != "semantic_99"
    kinds = [draw(mostly(st.just("float"), st.sampled_from(list(PLY_TYPES)), odds=29)) for _ in names]
    list_at = draw(mostly(st.none(), st.integers(0, len(names) - 1))) if names else None
    props = [(name, kind, "uchar" if i == list_at else None) for i, (name, kind) in enumerate(zip(names, kinds))]
    if list_at is not None:
        consistent &= names[list_at] in ("nx", "ny", "nz", "red", "f_rest_x", "opacity_1") or not names[list_at]
    rows = [
        [[_value(draw, k) for _ in range(draw(st.integers(0, 2)))] if lc else _value(draw, k) for _, k, lc in props]
        for _ in range(n)
    ]
    declared = draw(
        mostly(st.just(n), st.one_of(st.integers(-2, 8), st.sampled_from([2**31, 2**40, 2**63 - 1, 2**64])), odds=4)
    )
    fmt = draw(st.sampled_from(list(FORMATS)))
    elements = [("vertex", declared, props, rows)]
    if draw(rarely(4)):
        elements.append(("face", 1, [("vertex_indices", "int", "uchar")], [[[0, 1, 2]]]))
    comments = draw(st.lists(st.sampled_from(["made by fuzz", "é 🙂", "end_header"]), max_size=2))
    consistent &= all(c.isascii() for c in comments)  # the PLY header is ASCII; plyfile refuses anything else
    data = _ply_bytes(fmt, elements, comments)

    used = [name for name in names if name in POSITION]
    expected = None
    if consistent and declared == n >= 1 and len(used) == 3 and "vertex" == elements[0][0]:
        columns = {
            name: np.array([row[i] for row in rows], dtype=PLY_TYPES[kinds[i]])
            for i, name in enumerate(names)
            if props[i][2] is None
        }
        with np.errstate(over="ignore", invalid="ignore"):
            matrix = np.stack([c.astype(np.float32) for c in columns.values()]) if columns else np.zeros((0, n))
        if np.isfinite(matrix).all():
            expected = np.stack([columns[a].astype(np.float32) for a in POSITION], axis=1)
    return data, expected


def _read(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.ply"
        path.write_bytes(data)
        return outcome(lambda: load_field(path))


def _check_loaded(field: LanguageField) -> None:
    assert field.validate() is field
    assert all(t.dtype == torch.float32 for t in (field.means, field.quats, field.log_scales, field.sh))


@examples(100)
@given(ply_documents())
def test_ply_documents_load_or_one_line_error(case):
    data, expected = case
    result = _read(data)
    if expected is not None:
        assert not isinstance(result, Refused), result
        assert torch.equal(result.means, torch.from_numpy(expected))
    if not isinstance(result, Refused):
        _check_loaded(result)


def _header_with_count(count: str, fmt: str = "binary_little_endian", extra: str = "") -> bytes:
    """The valid file with its vertex count, format and extra header lines (before end_header) changed."""
    header = VALID_BINARY[:VALID_HEADER].replace(b"element vertex 3", f"element vertex {count}".encode())
    header = header.replace(b"binary_little_endian", fmt.encode()).replace(b"end_header", f"{extra}end_header".encode())
    return header + VALID_BINARY[VALID_HEADER:]


@examples(150)
@given(mutated(VALID_BINARY, hot=VALID_HEADER))
@example(_header_with_count("99999999999"))
@example(_header_with_count("99999999999", "ascii"))  # plyfile allocated 99999999999 rows (MemoryError)
@example(_header_with_count("2147483648", extra="property list uchar float extra\n"))  # same, binary with a list
@example(_header_with_count("2147483648", "ascii", "comment end_header\n"))  # a comment hid the header's end
@example(_header_with_count(str(2**64)))  # was OverflowError inside plyfile
@example(_header_with_count("-1"))
@example(VALID_BINARY[:VALID_HEADER])
def test_mutated_ply_files_load_or_one_line_error(data):
    result = _read(data)
    if not isinstance(result, Refused):
        _check_loaded(result)
