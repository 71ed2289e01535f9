"""Property-based tests of the ``.splat`` reader: every file loads (and validates) or is one clear error."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.field.load import load_field
from gags_viewer.field.splat import SPLAT_DTYPE
from tests.fuzz import FLOATS, FUZZ_TIMEOUT_S, Refused, examples, mutated, outcome, rarely

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)


def _rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = np.zeros(n, dtype=SPLAT_DTYPE)
    rows["position"] = rng.normal(size=(n, 3))
    rows["scale"] = rng.uniform(0.01, 0.1, size=(n, 3))
    rows["rgba"] = rng.integers(0, 256, size=(n, 4))
    rows["rotation"] = rng.integers(0, 256, size=(n, 4))
    return rows


VALID = _rows(4).tobytes()


@st.composite
def splat_rows(draw):
    """Rows with any position / scale floats (NaN, Inf, negative, subnormal) and any bytes."""
    n = draw(st.integers(0, 5))
    rows = _rows(n)
    for i in range(n):
        for field in ("position", "scale"):
            if draw(rarely(4)):
                values = [draw(FLOATS) for _ in range(3)]
                with np.errstate(over="ignore"):  # float64 values beyond float32 become Inf
                    rows[field][i] = values
        for field in ("rgba", "rotation"):
            if draw(rarely(1)):
                rows[field][i] = [draw(st.integers(0, 255)) for _ in range(4)]
    return rows


def _read(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.splat"
        path.write_bytes(data)
        return outcome(lambda: load_field(path))


@examples(100)
@given(splat_rows())
def test_splat_rows_load_exactly_when_finite_with_positive_scales(rows):
    result = _read(rows.tobytes())
    with np.errstate(invalid="ignore"):
        good = (
            len(rows) > 0
            and np.isfinite(rows["position"]).all()
            and (rows["scale"] > 0).all()
            and np.isfinite(np.log(rows["scale"].astype(np.float64)).astype(np.float32)).all()
        )
    assert isinstance(result, Refused) != good, result
    if good:
        assert result.validate() is result
        assert torch.equal(result.means, torch.from_numpy(rows["position"].copy()))


@examples(100)
@given(mutated(VALID))
@example(VALID[:-1])
@example(b"")
def test_mutated_splat_files_load_or_one_line_error(data):
    result = _read(data)
    if not isinstance(result, Refused):
        assert result.validate() is result
        assert result.num_gaussians == len(data) // SPLAT_DTYPE.itemsize
