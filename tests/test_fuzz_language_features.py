"""Property-based tests of the ``_f.npy`` / ``_s.npy`` readers of a preprocessed training scene.

A one-image synthetic scene is written once; each example replaces its two feature files and reads the
scene: it loads (with embeddings [M, 512] finite and indices in -1..M-1) or is one clear error.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.train.scene import CLIP_DIM, read_preprocessed_scene
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene
from tests.fuzz import FLOATS, FUZZ_TIMEOUT_S, Refused, examples, mostly, mutated, outcome

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)

WIDTH, HEIGHT, ROWS = 16, 12, 3
DTYPES = ["<f4", ">f4", "<f2", "<f8", "<i4", "<i8", "|u1", "|b1", "<c8", "<U3", "|V4", "O", np.dtype([("a", "<f4")])]


@pytest.fixture(scope="module")
def scene_root():
    tmp = Path(tempfile.mkdtemp(prefix="gags-fuzz-scene-"))
    scene = make_synthetic_scene(num_objects=1, gaussians_per_object=10, num_views=1, width=WIDTH, height=HEIGHT)
    write_synthetic_scene(scene, tmp)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _valid_f() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(ROWS, CLIP_DIM)).astype(np.float32)


def _valid_s() -> np.ndarray:
    return np.random.default_rng(1).integers(-1, ROWS, size=(4, HEIGHT, WIDTH)).astype(np.float32)


VALID_F, VALID_S = _npy(_valid_f()), _npy(_valid_s())


def _lying_header(shape: tuple, descr: str = "<f4", fortran: bool = False, version=(1, 0)) -> bytes:
    """A .npy header that declares ``shape`` followed by only 64 bytes of data."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    writer = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    writer(buffer, header)
    return buffer.getvalue() + bytes(64)


def _array(draw, shape: tuple, values) -> np.ndarray:
    dtype = np.dtype(draw(mostly(st.just("<f4"), st.sampled_from(DTYPES), odds=4)))
    flat = [draw(values) for _ in range(min(int(np.prod(shape)), 8))]
    base = np.resize(np.array(flat or [0.0], dtype=np.float64), shape)
    if dtype.kind in "fc":
        with np.errstate(over="ignore"):
            return base.astype(dtype)
    if dtype.kind in "iub":
        return np.nan_to_num(base, posinf=0, neginf=0).clip(-100, 100).astype(dtype)
    return np.zeros(shape, dtype=dtype)


@st.composite
def feature_files(draw):
    """(_f.npy bytes, _s.npy bytes) with hostile shapes, dtypes and values, or lying headers."""
    rows = draw(mostly(st.integers(1, 4), st.just(0)))
    f_shape = draw(mostly(st.just((rows, CLIP_DIM)), st.sampled_from([(rows, 511), (rows,), (rows, CLIP_DIM, 1), ()])))
    f = _npy(_array(draw, f_shape, mostly(st.floats(-1, 1), FLOATS)))
    s_shape = draw(
        mostly(
            st.sampled_from([(4, HEIGHT, WIDTH), (4, 6, 8)]),
            st.sampled_from([(3, HEIGHT, WIDTH), (4, 0, WIDTH), (4, 24, 8), (4, HEIGHT * WIDTH)]),
        )
    )
    index = mostly(st.integers(-1, max(rows - 1, -1)), st.one_of(st.sampled_from([-2, rows, 0.5, 1e30]), FLOATS), 19)
    s = _npy(_array(draw, s_shape, index))
    lie = draw(mostly(st.none(), st.sampled_from(["f", "s"]), odds=4))
    if lie:
        shape = draw(st.sampled_from([(2**20, CLIP_DIM), (2**40, CLIP_DIM), (4, 2**20, 2**20), (2**62, 2)]))
        fake = _lying_header(
            shape,
            draw(st.sampled_from(["<f4", "<f8", "|O"])),
            draw(st.booleans()),
            draw(st.sampled_from([(1, 0), (2, 0)])),
        )
        f, s = (fake, s) if lie == "f" else (f, fake)
    return f, s


def _read(root: Path, f: bytes, s: bytes):
    features = root / "language_features"
    (features / "frame_1_f.npy").write_bytes(f)
    (features / "frame_1_s.npy").write_bytes(s)
    return outcome(lambda: read_preprocessed_scene(root, resolution=1))


def _check_loaded(scene) -> None:
    (view,) = scene.views
    rows = view.embeddings.shape[0]
    assert view.embeddings.shape == (rows, CLIP_DIM) and view.embeddings.isfinite().all()
    assert view.seg.shape == (3, HEIGHT, WIDTH)
    assert int(view.seg.min()) >= -1 and int(view.seg.max()) < rows


@examples(100)
@given(feature_files())
@example((_lying_header((2**40, CLIP_DIM)), VALID_S))  # np.load would allocate 2 PiB (MemoryError)
@example((VALID_F, _npy(_valid_s().astype(np.complex64))))  # was TypeError: int() of a complex
@example((VALID_F, _npy(np.full((4, HEIGHT, WIDTH), None, dtype=object))))  # a pickle: refused
def test_feature_files_load_or_one_line_error(scene_root, case):
    result = _read(scene_root, *case)
    if not isinstance(result, Refused):
        _check_loaded(result)


@examples(100)
@given(st.booleans(), st.data())
def test_mutated_feature_files_load_or_one_line_error(scene_root, mutate_f, data):
    f = data.draw(mutated(VALID_F, hot=128)) if mutate_f else VALID_F
    s = VALID_S if mutate_f else data.draw(mutated(VALID_S, hot=128))
    result = _read(scene_root, f, s)
    if not isinstance(result, Refused):
        _check_loaded(result)


def test_valid_feature_files_still_load(scene_root):
    result = _read(scene_root, VALID_F, VALID_S)
    assert not isinstance(result, Refused), result
    _check_loaded(result)
