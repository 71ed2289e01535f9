"""Writers for a trained field in the official GAGS output layout (read by the official eval scripts).

::

    <out>/point_cloud/iteration_<it>/point_cloud.ply   Inria PLY with semantic_0..15
    <out>/decoder_chkpnt<it>.pth                       {'module_state_dict', 'optimizer_state_dict'}
    <out>/scale_decoder_chkpnt<it>.pth                 same, for the granularity decoder
    <out>/cfg_args                                     Namespace(...) string the official scripts require

The ``.pth`` files are written with ``torch.save`` but hold only tensors and plain containers, so they
load with ``torch.load(..., weights_only=True)`` (and by the official code). Every file is written
atomically. The RGB model's files are never touched: the trainer refuses an output directory that
holds its input model.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from gags_viewer.field.language_field import LanguageField, StateDict
from gags_viewer.fsutil import atomic_write_bytes, atomic_write_text


def official_paths(out: Path, iteration: int) -> dict[str, Path]:
    """The files :func:`write_official` writes for ``iteration``."""
    out = Path(out)
    return {
        "ply": out / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply",
        "decoder": out / f"decoder_chkpnt{iteration}.pth",
        "scale_decoder": out / f"scale_decoder_chkpnt{iteration}.pth",
        "cfg_args": out / "cfg_args",
    }


def write_official(
    field: LanguageField,
    out: Path,
    iteration: int,
    decoder_optimizer: dict | None = None,
    scale_decoder_optimizer: dict | None = None,
    source_path: Path | None = None,
    resolution: int = 2,
) -> dict[str, Path]:
    """Write ``field`` (features, ``decoder``, ``granularity_decoder`` in official keys) for ``iteration``.

    Args:
        field: the trained field; ``features`` [N, 16] become ``semantic_0..15``.
        out: output directory.
        iteration: the iteration number in the file names.
        decoder_optimizer, scale_decoder_optimizer: ``optimizer.state_dict()`` of each decoder (or None).
        source_path: the preprocessed scene, recorded in ``cfg_args``.
        resolution: the ``-r`` value, recorded in ``cfg_args``.

    Returns:
        The paths written.
    """
    from gags_viewer.field.ply import write_ply

    paths = official_paths(out, iteration)
    paths["ply"].parent.mkdir(parents=True, exist_ok=True)
    write_ply(field, paths["ply"])
    for key, state, optimizer in (
        ("decoder", field.decoder, decoder_optimizer),
        ("scale_decoder", field.granularity_decoder, scale_decoder_optimizer),
    ):
        if state is not None:
            atomic_write_bytes(paths[key], _torch_bytes(state, optimizer))
    atomic_write_text(paths["cfg_args"], cfg_args(Path(out), field.sh_degree, source_path, resolution))
    return paths


def cfg_args(model_path: Path, sh_degree: int, source_path: Path | None, resolution: int) -> str:
    """The ``cfg_args`` text (``str(argparse.Namespace(...))``) the official scripts merge their flags into.

    Only the model parameters the official readers need; the scripts fill the rest from their defaults.
    """
    source = str(Path(source_path).resolve()) if source_path is not None else ""
    return (
        f"Namespace(sh_degree={sh_degree}, source_path={source!r}, model_path={str(model_path.resolve())!r}, "
        f"images='images', resolution={resolution}, white_background=False, data_device='cuda', eval=False)"
    )


def _torch_bytes(state: StateDict, optimizer: dict | None) -> bytes:
    buffer = io.BytesIO()
    payload = {
        "module_state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()},
        "optimizer_state_dict": _cpu(optimizer) if optimizer is not None else {},  # 2-D moments as [out, in, 1, 1]
    }
    torch.save(payload, buffer)
    return buffer.getvalue()


def _cpu(value):
    if isinstance(value, torch.Tensor):
        # Linear-weight moments become 1x1-conv shaped, matching the official parameters.
        return value.detach().cpu()[:, :, None, None] if value.ndim == 2 else value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value
