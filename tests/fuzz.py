"""Shared machinery of the property-based tests of the readers (``tests/test_fuzz_*.py``).

Every reader gets two kinds of inputs: structurally valid files with hostile values (NaN, Inf, huge
counts, wrong dtypes, missing or extra keys, deep nesting, unicode) and byte-level mutations of a valid
file (:func:`mutated`). :func:`outcome` runs the reader and asserts the contract: it returns, or it
raises a :class:`GagsError` whose message is one line; any other exception fails the test, and so does
an allocation far beyond the input's size (a lying header).

The number of examples per test is the test's modest default, or ``GAGS_FUZZ_EXAMPLES`` when set
(``GAGS_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_*.py --hypothesis-show-statistics``). Runs are
deterministic (the ``gags`` hypothesis profile in ``tests/conftest.py``).
"""

from __future__ import annotations

import math
import os
import tracemalloc
from collections.abc import Callable

from hypothesis import currently_in_test_context, event, settings
from hypothesis import strategies as st

from gags_viewer.errors import GagsError

FUZZ_TIMEOUT_S = 240 * max(1, int(os.environ.get("GAGS_FUZZ_EXAMPLES") or 0) // 100)
"""pytest-timeout of one fuzz test: a hanging reader fails the test instead of stalling the suite."""
MAX_TRACED_BYTES = 256 * 2**20
"""Most Python/numpy memory one read of a (kilobyte-sized) fuzzed file may allocate."""


def examples(default: int) -> settings:
    """Hypothesis settings with ``default`` examples, or ``GAGS_FUZZ_EXAMPLES`` of them when set."""
    return settings(max_examples=int(os.environ.get("GAGS_FUZZ_EXAMPLES") or default))


class Refused:
    """The one-line :class:`GagsError` a reader raised instead of returning."""

    def __init__(self, error: GagsError):
        self.error = error
        self.message = str(error)

    def __repr__(self) -> str:
        return f"Refused({self.message!r})"


def outcome(read: Callable[[], object], max_bytes: int = MAX_TRACED_BYTES):
    """``read()``'s result, or :class:`Refused` when it raised a one-line :class:`GagsError`.

    Any other exception propagates (failing the test). The peak of traced allocations (Python objects
    and numpy arrays; not torch storages) must stay under ``max_bytes``.
    """
    tracemalloc.start()
    try:
        result = read()
    except GagsError as error:
        result = Refused(error)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= max_bytes, f"reading allocated {peak / 2**20:.0f} MiB"
    if isinstance(result, Refused):
        assert result.message.strip(), "empty error message"
        assert "\n" not in result.message, f"error message is not one line: {result.message!r}"
    if currently_in_test_context():
        event(f"refused ({type(result.error).__name__})" if isinstance(result, Refused) else "loaded")
    return result


# -------------------------------------------------------------------------------------------------
# Values

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-45, 1e38, 3.4e38, -3.4e38, 1.8e308, math.nan, math.inf, -math.inf]),
)
"""Floats with a strong bias to the edges (NaN, +-Inf, subnormals, float32 overflow)."""

INTS = st.one_of(
    st.integers(-10, 10),
    st.sampled_from([2**15, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**64, -(2**31), -(2**63), 10**30]),
    st.integers(),
)
"""Integers with a bias to small values and to the edges of the machine types."""

TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\x00", "\n", "../..", "/etc/passwd", "C:\\x", "\u202e", "\ud7ff", "é" * 3, "🙂"]),
)
"""Short strings, including control characters, path fragments and non-ASCII text."""

JSON_SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)


def json_values(max_leaves: int = 12):
    """Any JSON value (NaN/Infinity included, as Python's json writes them) of bounded size."""
    return st.recursive(
        JSON_SCALARS,
        lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(TEXT, children, max_size=5)),
        max_leaves=max_leaves,
    )


def rarely(odds: int = 9):
    """True about once in ``odds + 1`` draws (hypothesis' own booleans and small integers are not uniform)."""
    return st.sampled_from([False] * odds + [True])


def mostly(valid, hostile, odds: int = 9):
    """``valid`` about ``odds`` times in ``odds + 1``, else ``hostile``: most inputs stay close enough to
    the format that the reader gets past its first check, so the later checks are exercised too."""
    return rarely(odds).flatmap(lambda bad: hostile if bad else valid)


def nested(depth: int) -> str:
    """JSON text of ``depth`` nested lists: deep enough to overflow a recursive parser."""
    return "[" * depth + "]" * depth


# -------------------------------------------------------------------------------------------------
# Byte mutations

_INTERESTING = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\xff\xff\xff\x7f",
    b"\xff" * 8,
    b"\x00\x00\xc0\x7f",
    b"\x00\x00\x80\x7f",
    b"-1",
    b"99999999999",
]


@st.composite
def mutated(draw, data: bytes, hot: int | None = None, hot_tail: int | None = None, max_ops: int = 4) -> bytes:
    """``data`` after 1..``max_ops`` random edits: truncate, flip, overwrite, insert, delete, splice.

    ``hot`` biases positions to the first ``hot`` bytes (a header), where one edit changes the most;
    ``hot_tail`` to the last ``hot_tail`` bytes (a zip file's directory).
    """
    out = bytearray(data)

    def position() -> int:
        top = len(out)
        choices = [st.integers(0, top)]
        if hot:
            choices.append(st.integers(0, min(hot, top)))
        if hot_tail:
            choices.append(st.integers(max(0, top - hot_tail), top))
        return draw(st.one_of(*choices))

    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "splice", "interesting"]))
        if not out and op != "insert":
            op = "insert"
        if op == "truncate":
            del out[position() :]
        elif op == "flip":
            at = min(position(), len(out) - 1)
            out[at] ^= draw(st.integers(1, 255))
        elif op == "overwrite":
            at = position()
            chunk = draw(st.binary(min_size=1, max_size=8))
            out[at : at + len(chunk)] = chunk
        elif op == "interesting":
            at = position()
            chunk = draw(st.sampled_from(_INTERESTING))
            out[at : at + len(chunk)] = chunk
        elif op == "insert":
            at = position()
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            at = position()
            del out[at : at + draw(st.integers(1, 64))]
        else:  # splice: copy one stretch of the file over another place
            start, at = position(), position()
            length = draw(st.integers(1, 64))
            out[at : at + length] = bytes(out[start : start + length])
    return bytes(out)
