"""Property-based tests of export file names: user text never leaves the output directory.

Names come from queries, trajectory names and camera-path file names; whatever the text (``../``,
absolute paths, drive letters, control characters, unicode, reserved device names), the file lands
directly in the chosen directory under a plain, visible name.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gags_viewer.viewer.export import (
    _WINDOWS_RESERVED,
    MAX_NAME_LENGTH,
    export_stem,
    sanitize_filename,
    unique_path,
    write_png,
    write_png_sequence,
)
from tests.fuzz import FUZZ_TIMEOUT_S, examples

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)

FRAGMENTS = [
    "../",
    "..",
    "/",
    "\\",
    "\x00",
    "C:",
    "C:\\Windows\\",
    "~",
    "~/",
    "\n",
    "\r",
    "\t",
    "\x1b[31m",
    ".",
    "con",
    "NUL",
    "lpt1",
    "com¹",
    "\u202e",
    "\u0301",
    "ﬁ",
    "é",
    "/etc/passwd",
    "//server/share/",
    "$HOME",
    "%APPDATA%",
    " ",
    "-",
    "_",
    "...",
    ".hidden",
    "a" * 300,
]
USER_TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=8).map("".join)
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def _assert_plain_name(name: str) -> None:
    assert SAFE_NAME.match(name), repr(name)
    assert ".." not in name and "/" not in name and "\\" not in name
    assert name.split(".")[0].lower() not in _WINDOWS_RESERVED, name


@examples(200)
@given(USER_TEXT)
@example("../../etc/passwd")
@example("/absolute/path")
@example("C:\\Windows\\system32")
@example("\x00\n\r\x1b")
@example("CON")
@example("lpt1./etc/passwd")  # was "lpt1._etc_passwd_": still the LPT1 device on Windows
@example("....")
def test_sanitized_names_are_plain(text):
    name = sanitize_filename(text)
    _assert_plain_name(name)
    assert len(name) <= MAX_NAME_LENGTH + 1  # + the "_" of a reserved device name


@examples(50)
@given(stem=USER_TEXT, suffix=USER_TEXT, kind=USER_TEXT, hint=USER_TEXT)
@example(stem="../../escape", suffix="/../../png", kind="..", hint="../")
@example(stem="x", suffix="png", kind="com1.2o", hint="")  # was "com1.2o-<time>_.png", the COM1 device
def test_export_paths_stay_inside_the_directory(stem, suffix, kind, hint):
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp)
        directory = outside / "exports"
        directory.mkdir()
        image = np.zeros((2, 3, 3), dtype=np.uint8)
        written = []
        for candidate in (
            unique_path(directory, stem, suffix),
            unique_path(directory, export_stem(kind, hint), ".png"),
        ):
            assert candidate.parent == directory
            _assert_plain_name(candidate.name)
            written.append(write_png(candidate, image))
        written += write_png_sequence(directory / "frames", [image, image], stem=stem)
        for path in written:
            assert path.resolve().parent in (directory.resolve(), (directory / "frames").resolve())
            assert path.is_file()
        assert sorted(p.name for p in outside.iterdir()) == ["exports"]
        assert len(list(directory.rglob("*"))) == len(written) + 1  # + the frames folder


def test_taken_names_get_a_number(tmp_path):
    first = unique_path(tmp_path, "../view", ".png")
    first.write_bytes(b"x")
    second = unique_path(tmp_path, "../view", ".png")
    assert (first.name, second.name) == ("view.png", "view-2.png")
