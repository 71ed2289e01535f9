"""Atomic writes of files and directories.

A reader (another process, or the viewer reloading a field) must never see a half-written file: every
writer here builds its output under a temporary name in the *same* directory as the target, flushes it
to disk, then swaps it in with :func:`os.replace` / :func:`os.rename`, which are atomic on one file
system. If anything fails before the swap, the temporary output is removed and the target is untouched.

Directories cannot be swapped atomically on every platform, so :func:`atomic_directory` renames the old
directory aside, renames the new one into place and only then deletes the old one; if the second rename
fails, the old directory is put back. A crash between the two renames leaves the complete old directory
as a hidden sibling ``.<name>.old-*``, never a half-written one at the target path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike


def _umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    with suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    # Fallback: set-and-restore (not thread-safe, but only used where /proc is missing).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(target: Path, default: int) -> int:
    """Permissions for the new ``target``: those of the file it replaces, else ``default`` & ~umask."""
    with suppress(OSError):
        return target.stat().st_mode & 0o7777
    return default & ~_umask()


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort; not every platform allows it)."""
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``; on success it is renamed onto ``path`` atomically.

    For writers that take a file name (imageio, plyfile): ``with atomic_path(p) as tmp: write(tmp)``.
    The temporary name keeps the suffix of ``path`` so that writers choosing a format by extension
    work. If the block raises, ``path`` is left as it was and no temporary file remains. The new file
    keeps the permissions of the file it replaces, or gets the usual umask ones.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _final_mode(target, 0o666))
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_directory(target.parent)


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path`` atomically.

    Usage: ``with atomic_write(p) as f: f.write(data)``. ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8
    unless ``encoding`` is given). Same guarantees as :func:`atomic_path`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; on success it replaces ``path``.

    Usage: ``with atomic_directory(d) as tmp: (tmp / "a.txt").write_text(...)``. The parent of ``path``
    is created if needed. An existing directory at ``path`` is replaced as a whole (files that the new
    one lacks disappear). If the block raises, ``path`` is untouched and the temporary directory is
    removed. ``path`` existing as something other than a directory is a :class:`NotADirectoryError`,
    raised before the block runs.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, _final_mode(target, 0o777))
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(source: PathLike, target: PathLike) -> None:
    """Move directory ``source`` to ``target``, replacing any directory already there.

    Both must be on the same file system (use a sibling of ``target`` as ``source``). The old target is
    renamed aside first and restored if moving ``source`` in fails; it is deleted only afterwards.
    """
    source, target = Path(source), Path(target)
    if not (target.exists() or target.is_symlink()):
        os.rename(source, target)
        _fsync_directory(target.parent)
        return
    if not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a directory")
    backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
    os.rename(target, backup)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(backup, target)
        raise
    _fsync_directory(target.parent)
    if backup.is_symlink():
        backup.unlink()
    else:
        shutil.rmtree(backup, ignore_errors=True)


def read_json(path: PathLike, error: Callable[[Path, str], Exception]) -> Any:
    """Parse a UTF-8 JSON file; any problem raises ``error(path, one-line reason)``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(path, f"cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(path, "is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise error(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise error(path, f"not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    except RecursionError:
        raise error(path, "not valid JSON (nested too deeply)") from None
