"""One entry point to read a field from any supported on-disk form, and one to save it.

``load_field(path)`` accepts:

- a native field directory (has ``field.json``)                       -> :mod:`.native`
- a LangSplat output: a ``<scene>_<level>`` folder or the folder holding them -> :mod:`.langsplat`
- an official GAGS / Inria output directory (``point_cloud/iteration_*``) -> :mod:`.official`
- an Inria 3DGS ``.ply`` file (with or without ``semantic_*``)          -> :mod:`.ply`
- an antimatter15 ``.splat`` file                                      -> :mod:`.splat`

Every problem is a :class:`~gags_viewer.errors.FieldError` (usually a :class:`FormatError`) with a
one-line message naming the path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gags_viewer.errors import FieldError, FormatError
from gags_viewer.field.langsplat import is_langsplat_dir, read_langsplat
from gags_viewer.field.language_field import LanguageField
from gags_viewer.field.native import FIELD_JSON, is_native_dir, read_native, write_native
from gags_viewer.field.official import is_official_dir, read_official
from gags_viewer.field.ply import read_ply
from gags_viewer.field.splat import read_splat

EXPECTED = (
    "a native field directory (with field.json), a GAGS output directory (with point_cloud/iteration_<N>/), "
    "a LangSplat output (<scene>_<level>/chkpnt<N>.pth), a .ply file or a .splat file"
)


def load_field(path: str | Path, iteration: int | None = None, autoencoder: str | Path | None = None) -> LanguageField:
    """Read and validate the field at ``path`` (CPU tensors; see the module doc for accepted forms).

    ``iteration`` picks an iteration of a GAGS or LangSplat output directory (default: the highest) and is
    an error for every other form. ``autoencoder`` is a LangSplat output's autoencoder checkpoint (default:
    found where LangSplat writes it) and is an error for every other form. Validation problems (NaN values,
    mismatched shapes) come back as a :class:`FormatError` naming ``path``.
    """
    path = Path(path)
    try:
        if path.is_dir() and not is_native_dir(path) and is_langsplat_dir(path):
            return _validated(read_langsplat(path, autoencoder, iteration), path)
        if autoencoder is not None:
            raise FormatError(path, "--autoencoder only applies to LangSplat outputs (<scene>_<level> folders)")
        return _validated(_read(path, iteration), path)
    except OSError as error:  # e.g. a directory we may not list; readers convert their own file errors
        raise FormatError(path, f"cannot read ({error.strerror or error})") from None


def _read(path: Path, iteration: int | None) -> LanguageField:
    """Pick the reader for ``path`` and run it (see :func:`load_field`)."""
    if not path.exists():
        raise FormatError(path, f"no such file or directory; expected {EXPECTED}")
    if path.is_dir():
        if is_native_dir(path):
            reader: Callable[[Path], LanguageField] = read_native
        elif is_official_dir(path):
            return read_official(path, iteration)
        else:
            hint = " (to load only its point_cloud.ply, pass that file)" if (path / "point_cloud.ply").is_file() else ""
            raise FormatError(path, f"has no {FIELD_JSON} and no point_cloud/iteration_<N>/{hint}; expected {EXPECTED}")
    else:
        suffix = path.suffix.lower()
        if suffix == ".ply":
            reader = read_ply
        elif suffix == ".splat":
            reader = read_splat
        else:
            raise FormatError(path, f"unknown file type {suffix or '(no extension)'!r}; expected {EXPECTED}")
    if iteration is not None:
        raise FormatError(path, "iteration= only applies to GAGS output directories (point_cloud/iteration_<N>/)")
    return reader(path)


def save_field(field: LanguageField, directory: str | Path) -> Path:
    """Validate ``field`` and write it as a native directory at ``directory`` (atomically).

    An existing native field there is replaced; any other non-empty directory or file is left alone and
    reported as a :class:`FieldError`. Returns the directory path.
    """
    directory = Path(directory)
    field.validate()
    try:
        return write_native(field, directory)
    except OSError as error:
        raise FieldError(f"{directory}: cannot write the field ({error.strerror or error})") from None


def _validated(field: LanguageField, path: Path) -> LanguageField:
    try:
        return field.validate()
    except FormatError:
        raise
    except FieldError as error:
        raise FormatError(path, str(error)) from None
