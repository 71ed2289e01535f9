"""Resume state of a training run: tensors in safetensors, everything else in JSON. Never pickle.

One file, ``<out>/resume/state.safetensors``, holds every tensor (features, decoder parameters, the
three Adam states, torch RNG state) and, in its header metadata under the key ``"state"``, a JSON
document with the iteration, the Python RNG state, the remaining view stack, the config and the loss
history. It is written to a temporary sibling and renamed over the old one, so a process killed at any
moment leaves either the previous complete state or the new complete state. ``state.json`` next to it
is a human-readable copy of the JSON part; it is informational and never read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from gags_viewer.errors import FormatError
from gags_viewer.fsutil import atomic_write_bytes, atomic_write_text

STATE_DIR = "resume"
STATE_FILE = "state.safetensors"
FORMAT_VERSION = 1


def state_path(out: Path) -> Path:
    """Where the resume state of the run in ``out`` lives."""
    return Path(out) / STATE_DIR / STATE_FILE


def save_state(out: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write the resume state of a run into ``out/resume/``.

    Args:
        out: The run's output directory.
        tensors: Name -> tensor (any device; stored on the CPU, contiguous).
        meta: JSON-serialisable run state.

    Returns:
        The path of the state file.
    """
    path = state_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = json.dumps({"format_version": FORMAT_VERSION, **meta}, separators=(",", ":"))
    cpu = {name: value.detach().to("cpu").contiguous() for name, value in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(cpu, metadata={"state": document}))
    atomic_write_text(path.with_name("state.json"), json.dumps(_summary(meta), indent=1))
    return path


def load_state(out: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the resume state written by :func:`save_state`. -> (tensors on the CPU, meta)

    Raises :class:`FormatError` naming the file when it is missing or unreadable.
    """
    path = state_path(out)
    if not path.is_file():
        raise FormatError(path, "no training state to resume from (run without --resume first)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise FormatError(path, f"unreadable training state ({error})") from None
    if "state" not in metadata:
        raise FormatError(path, "training state has no 'state' metadata")
    try:
        meta = json.loads(metadata["state"])
    except json.JSONDecodeError as error:
        raise FormatError(path, f"training state metadata is not JSON ({error})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise FormatError(path, f"training state format {meta.get('format_version')} is not supported")
    return tensors, meta


def flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer's state dict into tensors (``opt.<name>.<param>.<key>``) and JSON.

    Returns:
        (tensors, json_part) where json_part holds the param groups and any non-tensor state.
    """
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"opt.{name}.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], json_part: dict) -> None:
    """Load what :func:`flatten_optimizer` produced back into ``optimizer`` (same parameter layout)."""
    prefix = f"opt.{name}."
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(index), {})[field] = value
    for index, entry in json_part.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": json_part["param_groups"]})


def _summary(meta: dict) -> dict:
    """The JSON part without the bulky Python RNG state, for humans."""
    return {key: value for key, value in meta.items() if key not in ("python_rng",)}
