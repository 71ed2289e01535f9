"""Safe reading of PyTorch decoder checkpoints, and the layout checks shared by every decoder source.

Official GAGS decoders are pickled ``.pth`` files. They are only ever opened with
``torch.load(..., weights_only=True)``, whose restricted unpickler accepts tensors and plain containers
and refuses everything else (classes, functions, ``__reduce__`` payloads) *before* running it. A file that
needs more than that is reported as a :class:`FormatError`; it is never unpickled with the full
unpickler.

Decoder state dicts keep the official keys and shapes: ``decoder.<i>.weight`` is a 1x1-convolution
kernel ``[out, in, 1, 1]`` (a plain ``[out, in]`` matrix is accepted too) and ``decoder.<i>.bias`` is
``[out]``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gags_viewer.errors import FormatError
from gags_viewer.field.language_field import StateDict

CLIP_DECODER_LAYERS = (0, 2, 4, 6, 8, 10, 12, 14, 16)
"""Indices of the nine 1x1 convolutions of the GAGS ``CNN_decoder`` (16 -> 256 x 8 -> 512)."""
GRANULARITY_DECODER_LAYERS = (0, 2, 4, 6, 8, 10)
"""Indices of the six 1x1 convolutions of the GAGS ``CNN_scale_decoder`` (16->64->128->64->32->16->3)."""
GRANULARITY_CLASSES = 3


def read_torch_file(path: Path, accepted: str, safe_globals: Sequence = ()) -> Any:
    """Unpickle a ``.pth`` with ``torch.load(weights_only=True)`` onto the CPU, from memory.

    Args:
        path: the file.
        accepted: what the error says is accepted instead ("plain state-dict checkpoints").
        safe_globals: globals allowed beyond torch's own (e.g. numpy's scalar constructor).

    Raises:
        FormatError: one line for a pickle holding anything else (possibly code; never run), an
            unreadable file or a damaged one.
    """
    try:
        # From memory: the unpickler reads a pickled string's declared length with one read(n), which on
        # a file allocates n bytes up front, so a damaged legacy checkpoint could ask for gigabytes.
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FormatError(
            path,
            "holds pickled objects other than tensors, numbers and containers (possibly code); refusing to "
            f"unpickle it. Only {accepted} are accepted",
        ) from None
    except OSError as error:
        raise FormatError(path, f"cannot read file ({error.strerror or error})") from None
    except Exception as error:  # noqa: BLE001 - torch.load fails in many ways on corrupt files
        # weights_only=True has already refused any code, so what remains is a damaged or foreign
        # file: truncated zip (RuntimeError), empty file (EOFError), random bytes (KeyError), ...
        detail = str(error).splitlines()[0][:160] if str(error) else "unexpected end of data"
        raise FormatError(path, f"not a readable PyTorch checkpoint ({type(error).__name__}: {detail})") from None


def load_torch_state_dict(path: Path) -> StateDict:
    """Read a decoder ``.pth``: ``{'module_state_dict': sd, ...}`` or a bare state dict ``sd``.

    Returns the module state dict on the CPU with keys, shapes and dtypes unchanged. Raises
    :class:`FormatError` for unreadable files, for pickles that hold anything but tensors and plain
    containers, and for contents that are not a state dict.
    """
    path = Path(path)
    payload = read_torch_file(path, "plain state-dict checkpoints")
    if isinstance(payload, dict) and "module_state_dict" in payload:
        payload = payload["module_state_dict"]
    if not _is_state_dict(payload):
        raise FormatError(
            path,
            "is neither a {'module_state_dict': ...} checkpoint nor a bare state dict "
            f"(top level: {_describe(payload)})",
        )
    return {key: value.detach().contiguous() for key, value in payload.items()}


def check_decoder_state(state: StateDict, layers: tuple[int, ...], path: Path, out_dim: int | None = None) -> None:
    """Check that ``state`` has exactly the keys ``decoder.<i>.{weight,bias}`` for ``i`` in ``layers``.

    Also checks that each weight is ``[out, in, 1, 1]`` or ``[out, in]``, each bias ``[out]``, each layer
    reads what the previous one wrote, and (if given) that the last layer has ``out_dim`` outputs.
    Raises :class:`FormatError` naming ``path`` and the first problem.
    """
    expected = {f"decoder.{i}.{part}" for i in layers for part in ("weight", "bias")}
    missing = sorted(expected - set(state), key=_natural_key)
    extra = sorted(set(state) - expected, key=_natural_key)
    if missing:
        raise FormatError(path, f"decoder is missing keys: {', '.join(missing)}")
    if extra:
        raise FormatError(path, f"decoder has unexpected keys: {', '.join(extra)}")
    previous_out = None
    for i in layers:
        weight, bias = state[f"decoder.{i}.weight"], state[f"decoder.{i}.bias"]
        shape = tuple(weight.shape)
        if not (len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1))):
            raise FormatError(path, f"decoder.{i}.weight has shape {list(shape)}; expected [out, in, 1, 1]")
        if not weight.is_floating_point() or not bias.is_floating_point():
            raise FormatError(path, f"decoder layer {i} is not floating point ({weight.dtype})")
        if tuple(bias.shape) != (shape[0],):
            raise FormatError(path, f"decoder.{i}.bias has shape {list(bias.shape)}; expected [{shape[0]}]")
        if previous_out is not None and shape[1] != previous_out:
            raise FormatError(
                path, f"decoder layer {i} reads {shape[1]} channels but the previous layer writes {previous_out}"
            )
        previous_out = shape[0]
    if out_dim is not None and previous_out != out_dim:
        raise FormatError(path, f"decoder outputs {previous_out} channels; expected {out_dim}")


def _is_state_dict(value) -> bool:
    return (
        isinstance(value, dict)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())
    )


def _describe(value) -> str:
    if isinstance(value, dict):
        keys = sorted(map(str, value))[:6]
        return f"dict with keys {keys}" if keys else "empty dict"
    return type(value).__name__


def _natural_key(key: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split("."))
