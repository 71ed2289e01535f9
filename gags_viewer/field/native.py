"""The native on-disk form of a field: a directory that other tools can still read.

::

    <dir>/point_cloud.ply        Inria 3DGS PLY with semantic_0..D-1 (see :mod:`.ply`), float32
    <dir>/decoders.safetensors   decoder tensors (absent when the field has no decoder)
    <dir>/field.json             {"format_version": 1, **FieldMetadata.to_json()}

Safetensors keys are ``<slot>.<official key>``, where ``<slot>`` is ``clip_decoder`` (the D -> 512
decoder, :attr:`LanguageField.decoder`) or ``granularity_decoder``; the official key and shape are
kept, e.g. ``clip_decoder.decoder.0.weight`` of shape [256, 16, 1, 1]. Tensors keep their dtype.

The directory is written atomically (built as a hidden sibling, then renamed into place). Writing over
an existing directory is allowed only when it is empty or already a native field (has ``field.json``), so
a mistyped path cannot wipe unrelated files. A float32 field round-trips exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors
import safetensors.torch

from gags_viewer.errors import FieldError, FormatError
from gags_viewer.field.checkpoint import (
    CLIP_DECODER_LAYERS,
    GRANULARITY_CLASSES,
    GRANULARITY_DECODER_LAYERS,
    check_decoder_state,
)
from gags_viewer.field.language_field import FieldMetadata, LanguageField, StateDict
from gags_viewer.field.ply import read_ply, write_ply
from gags_viewer.fsutil import atomic_directory, read_json

FORMAT_VERSION = 1
VERSION_KEY = "format_version"
FIELD_JSON = "field.json"
POINT_CLOUD = "point_cloud.ply"
DECODERS = "decoders.safetensors"
SLOTS = {"clip_decoder": "decoder", "granularity_decoder": "granularity_decoder"}
"""Safetensors key prefix -> LanguageField attribute."""


def is_native_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a ``field.json``."""
    return (Path(directory) / FIELD_JSON).is_file()


def write_native(field: LanguageField, directory: str | Path) -> Path:
    """Write ``field`` as a native directory (see module doc), replacing a previous native field.

    The field should be validated first. Raises :class:`FieldError` if ``directory`` is a file or a
    non-empty directory that is not a native field, or if the metadata is not JSON-serialisable.
    """
    directory = Path(directory)
    _check_replaceable(directory)
    try:
        metadata = json.dumps({VERSION_KEY: FORMAT_VERSION, **field.metadata.to_json()}, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise FieldError(f"field metadata cannot be written as JSON: {error}") from None
    tensors = {
        f"{slot}.{key}": value.detach().cpu().contiguous().clone()
        for slot, attribute in SLOTS.items()
        for key, value in (getattr(field, attribute) or {}).items()
    }
    with atomic_directory(directory) as tmp:
        write_ply(field, tmp / POINT_CLOUD)
        if tensors:
            safetensors.torch.save_file(tensors, str(tmp / DECODERS), metadata={"format": "pt"})
        (tmp / FIELD_JSON).write_text(metadata + "\n", encoding="utf-8")
    return directory


def read_native(directory: str | Path) -> LanguageField:
    """Read a native field directory (not validated here; :func:`.load.load_field` does that)."""
    directory = Path(directory)
    metadata = read_metadata(directory / FIELD_JSON)
    ply_path = directory / POINT_CLOUD
    if not ply_path.is_file():
        raise FormatError(directory, f"native field directory has no {POINT_CLOUD}")
    field = read_ply(ply_path)
    field.metadata = metadata
    decoders_path = directory / DECODERS
    if decoders_path.is_file():
        for attribute, state in _read_decoders(decoders_path).items():
            setattr(field, attribute, state)
    if metadata.decoder_kind is not None and field.decoder is None:
        raise FormatError(
            directory,
            f"field.json says decoder_kind {metadata.decoder_kind!r} but there is no clip decoder in {DECODERS}",
        )
    if metadata.decoder_kind == "gags" and field.decoder is not None:
        check_decoder_state(field.decoder, CLIP_DECODER_LAYERS, decoders_path)
    if field.granularity_decoder is not None:
        check_decoder_state(field.granularity_decoder, GRANULARITY_DECODER_LAYERS, decoders_path, GRANULARITY_CLASSES)
    return field


def read_metadata(path: Path) -> FieldMetadata:
    """Parse ``field.json``: a JSON object with ``format_version`` and the FieldMetadata keys only."""
    data = read_json(path, FormatError)
    if not isinstance(data, dict):
        raise FormatError(path, "must hold a JSON object")
    version = data.pop(VERSION_KEY, None)
    if version is None:
        raise FormatError(path, f"has no '{VERSION_KEY}'")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise FormatError(path, f"has {VERSION_KEY} {version!r}; this gags-viewer reads versions 1..{FORMAT_VERSION}")
    try:
        return FieldMetadata.from_json(data)
    except FieldError as error:
        raise FormatError(path, str(error)) from None
    except (TypeError, ValueError) as error:
        raise FormatError(path, f"invalid metadata ({error})") from None


def _read_decoders(path: Path) -> dict[str, StateDict]:
    """Split ``decoders.safetensors`` into ``{field attribute: official-key state dict}``."""
    try:
        tensors = safetensors.torch.load(path.read_bytes())
    except OSError as error:
        raise FormatError(path, f"cannot read file ({error.strerror or error})") from None
    except safetensors.SafetensorError as error:
        raise FormatError(path, f"not a valid safetensors file ({error})") from None
    states: dict[str, StateDict] = {}
    for key, value in tensors.items():
        slot, _, rest = key.partition(".")
        if slot not in SLOTS or not rest:
            raise FormatError(path, f"unexpected tensor '{key}' (keys must start with {' or '.join(SLOTS)})")
        states.setdefault(SLOTS[slot], {})[rest] = value
    return states


def _check_replaceable(directory: Path) -> None:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise FieldError(f"{directory}: exists and is not a directory; refusing to replace it")
    if directory.is_dir() and any(directory.iterdir()) and not is_native_dir(directory):
        raise FieldError(
            f"{directory}: is a non-empty directory without {FIELD_JSON}; refusing to replace it with a field"
        )
