"""Atomic file and directory writes (gags_viewer.fsutil)."""

import os
import stat

import pytest

from gags_viewer import fsutil


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_bytes_and_text(tmp_path):
    fsutil.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    fsutil.atomic_write_text(tmp_path / "b.txt", "héllo\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert _names(tmp_path) == ["a.bin", "b.txt"]  # no temporary files left


def test_atomic_write_replaces_existing_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    fsutil.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["f.txt"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with fsutil.atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["f.txt"]


def test_atomic_write_permissions(tmp_path):
    old_mask = os.umask(0o022)
    try:
        fsutil.atomic_write_bytes(tmp_path / "new", b"x")
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o644  # not mkstemp's 0600
        existing = tmp_path / "existing"
        existing.write_bytes(b"x")
        existing.chmod(0o640)
        fsutil.atomic_write_bytes(existing, b"y")
        assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    finally:
        os.umask(old_mask)


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError):
        with fsutil.atomic_write(tmp_path / "x", "a"):
            pass


def test_atomic_directory_creates_new(tmp_path):
    target = tmp_path / "sub" / "out"
    with fsutil.atomic_directory(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert not target.exists()  # invisible until the block succeeds
        (tmp / "a.txt").write_text("a")
    assert _names(target) == ["a.txt"]
    assert _names(target.parent) == ["out"]


def test_atomic_directory_permissions(tmp_path):
    old_mask = os.umask(0o022)
    try:
        with fsutil.atomic_directory(tmp_path / "out"):
            pass
        assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # not mkdtemp's 0700
    finally:
        os.umask(old_mask)


def test_atomic_directory_replaces_existing_whole(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with fsutil.atomic_directory(target) as tmp:
        (tmp / "fresh.txt").write_text("new")
    assert _names(target) == ["fresh.txt"]
    assert _names(tmp_path) == ["out"]  # no backup or temp sibling left


def test_atomic_directory_failure_keeps_old(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with fsutil.atomic_directory(target) as tmp:
            (tmp / "partial.txt").write_text("x")
            raise RuntimeError("boom")
    assert _names(target) == ["keep.txt"]
    assert _names(tmp_path) == ["out"]


def test_atomic_directory_restores_old_when_final_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old -> backup succeeded; new -> target fails
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(fsutil.os, "rename", flaky_rename)
    with pytest.raises(OSError):
        with fsutil.atomic_directory(target) as tmp:
            (tmp / "new.txt").write_text("x")
    assert _names(target) == ["keep.txt"]
    assert _names(tmp_path) == ["out"]


def test_atomic_directory_refuses_file_target(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(NotADirectoryError):
        with fsutil.atomic_directory(target):
            pytest.fail("the block must not run")
    assert target.read_text() == "a file"
    assert _names(tmp_path) == ["out"]
