"""LangSplat outputs (minghanqin/LangSplat), read as its training and evaluation code leave them.

Layout (gags-method.md §3.9, §4.6)::

    <out>/<scene>_1/chkpnt30000.pth      level 1 (subpart); also chkpnt7000.pth: the latest is read
    <out>/<scene>_2/chkpnt30000.pth      level 2 (part)
    <out>/<scene>_3/chkpnt30000.pth      level 3 (whole)
    <out>/<scene>_<level>/cameras.json   Inria cameras (default view, eval cameras)
    autoencoder: <root>/autoencoder/ckpt/<scene>/best_ckpt.pth (where its trainer writes it), or
                 <dir>/<scene>/ae_ckpt/best_ckpt.pth (where its evaluator reads it), or given explicitly

The level is split off a folder name at its *last* underscore (scene names contain underscores). Each
checkpoint is ``torch.save((capture, iteration))`` with the 13-item capture of ``GaussianModel``:
``(sh_degree, xyz, f_dc, f_rest, log_scales, quats, opacity_logits, language_feature, max_radii2D,
xyz_gradient_accum, denom, optimizer_state, spatial_lr_scale)``; the language feature (index 7) is raw
[N, 3] (zero where never trained), and the renderer divides it by (its norm + 1e-9) before blending, so
the field keeps it so normalised. The three levels are trained from one 3DGS checkpoint with the
geometry frozen, so their geometry is identical; levels whose geometry differs are refused.

Checkpoints are opened with ``torch.load(weights_only=True, map_location="cpu")`` (tensors were saved
from ``cuda:0``) with one allow-listed global beyond torch's: numpy's scalar constructor (and its dtype),
for ``spatial_lr_scale``. Anything else (code) is refused before it runs.

The autoencoder state dict has ``encoder.*`` (Linear 512 -> ... -> 3 with BatchNorm) and ``decoder.{0,2,..,12}``
(Linear 3 -> 16 -> ... -> 512, ReLU between); only the decoder is kept: it is the field's decoder
(kind "langsplat", output divided by its norm).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gags_viewer.errors import FormatError
from gags_viewer.field.checkpoint import check_decoder_state, load_torch_state_dict, read_torch_file
from gags_viewer.field.language_field import (
    GAGS_CLIP_MODEL,
    GAGS_CLIP_PRETRAINED,
    ClipSpec,
    FieldMetadata,
    LanguageField,
    StateDict,
)
from gags_viewer.field.official import read_first_camera

try:
    from numpy._core.multiarray import scalar as _numpy_scalar  # numpy 2
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar  # type: ignore[no-redef]

LEVEL_NAMES = {1: "subpart", 2: "part", 3: "whole"}
"""LangSplat's ``--feature_level`` values and the SAM mask level each one is trained on."""
CAPTURE_ITEMS = 13
"""Items of a language-feature capture (an RGB-only 3DGS capture has 12)."""
FEATURE_NORM_EPS = 1e-9
"""The renderer's ``f / (‖f‖ + 1e-9)``."""
AUTOENCODER_PATHS = ("autoencoder/ckpt/<scene>/best_ckpt.pth", "<dir>/<scene>/ae_ckpt/best_ckpt.pth")
"""Where LangSplat's trainer writes the autoencoder and where its evaluator reads it (for messages)."""

_CHECKPOINT = re.compile(r"chkpnt(\d+)\.pth$")
_SAFE_GLOBALS: list[Any] = [
    _numpy_scalar,
    (_numpy_scalar, "numpy.core.multiarray.scalar"),  # files pickled under numpy 1.x
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    type(np.dtype(np.float64)),
]
"""What a capture may hold beyond tensors and plain containers: ``spatial_lr_scale``, a numpy float64."""


def split_level(name: str) -> tuple[str, int] | None:
    """``"<scene>_<level>"`` -> (scene, level) for levels 1-3, split at the last underscore; else None."""
    scene, sep, level = name.rpartition("_")
    if not sep or not scene or level not in ("1", "2", "3"):
        return None
    return scene, int(level)


def checkpoints(folder: Path) -> dict[int, Path]:
    """``chkpnt<it>.pth`` files of a folder by iteration."""
    found = {}
    for child in folder.iterdir():
        match = _CHECKPOINT.fullmatch(child.name)
        if match and child.is_file():
            found[int(match.group(1))] = child
    return found


def _is_level_folder(folder: Path) -> bool:
    """A LangSplat level folder: named ``<scene>_<1|2|3>``, with ``chkpnt<it>.pth`` and no GAGS decoder."""
    if split_level(folder.name) is None or not folder.is_dir():
        return False
    names = [child.name for child in folder.iterdir()]
    return any(_CHECKPOINT.fullmatch(n) for n in names) and not any(n.startswith("decoder_chkpnt") for n in names)


def level_folders(path: str | Path) -> tuple[str, dict[int, Path]]:
    """The scene name and its level folders for a LangSplat path: one level folder (its sibling levels are
    found beside it) or the output folder that holds the level folders of exactly one scene.

    Raises:
        FormatError: no LangSplat level folder there, or several scenes.
    """
    path = Path(path)
    if _is_level_folder(path):
        scene, _ = split_level(path.name)  # type: ignore[misc]
        candidates = [c for c in path.parent.iterdir() if (split_level(c.name) or ("",))[0] == scene]
    else:
        candidates = list(path.iterdir()) if path.is_dir() else []
    by_scene: dict[str, dict[int, Path]] = {}
    for folder in candidates:
        if _is_level_folder(folder):
            scene, level = split_level(folder.name)  # type: ignore[misc]
            by_scene.setdefault(scene, {})[level] = folder
    if not by_scene:
        raise FormatError(path, "has no LangSplat level folders <scene>_<1|2|3> with chkpnt<iteration>.pth")
    if len(by_scene) > 1:
        scenes = ", ".join(sorted(by_scene))
        raise FormatError(
            path, f"holds LangSplat outputs of several scenes ({scenes}); pass one <scene>_<level> folder"
        )
    scene, levels = next(iter(by_scene.items()))
    return scene, dict(sorted(levels.items()))


def is_langsplat_dir(path: str | Path) -> bool:
    """Whether ``path`` is a LangSplat level folder or an output folder holding them."""
    path = Path(path)
    if not path.is_dir():
        return False
    return _is_level_folder(path) or any(_is_level_folder(child) for child in path.iterdir())


def load_capture(path: Path) -> tuple[tuple, int]:
    """Read one LangSplat checkpoint safely: ``(capture, iteration)`` with tensors on the CPU.

    Raises:
        FormatError: code or other foreign objects in the pickle, a damaged file, or not a 13-item capture.
    """
    payload = read_torch_file(path, "plain LangSplat checkpoints", _SAFE_GLOBALS)
    if not (isinstance(payload, (tuple, list)) and len(payload) == 2 and isinstance(payload[0], (tuple, list))):
        raise FormatError(path, "is not a LangSplat checkpoint (expected (capture, iteration))")
    capture, iteration = payload
    if len(capture) == CAPTURE_ITEMS - 1:
        raise FormatError(
            path,
            "is a 3DGS checkpoint without language features (12 items, not 13); to open the RGB splat, pass "
            "its point_cloud/iteration_<N>/point_cloud.ply",
        )
    if len(capture) != CAPTURE_ITEMS:
        raise FormatError(path, f"holds a {len(capture)}-item capture; LangSplat writes {CAPTURE_ITEMS} items")
    return tuple(capture), int(iteration)


def _capture_tensors(capture: tuple, path: Path) -> dict[str, Tensor]:
    """The geometry and the language feature of a capture, checked. Shapes: xyz [N, 3], sh [N, K, 3],
    log_scales [N, 3], quats [N, 4], opacity_logits [N], language [N, D] (D = 3)."""
    names = ("xyz", "f_dc", "f_rest", "log_scales", "quats", "opacity_logits", "language")
    values = dict(zip(names, capture[1:8]))
    for name, value in values.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise FormatError(path, f"capture item '{name}' is not a floating-point tensor")
    xyz = values["xyz"]
    n = xyz.shape[0] if xyz.ndim == 2 else -1
    expected = {"xyz": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "opacity_logits": (n, 1)}
    for name, shape in expected.items():
        if tuple(values[name].shape) != shape:
            raise FormatError(
                path, f"capture item '{name}' has shape {list(values[name].shape)}; expected {list(shape)}"
            )
    dc, rest, language = values["f_dc"], values["f_rest"], values["language"]
    if dc.shape != (n, 1, 3) or rest.ndim != 3 or rest.shape[0] != n or rest.shape[2] != 3:
        raise FormatError(path, f"colour coefficients have shapes {list(dc.shape)} and {list(rest.shape)}")
    if language.ndim != 2 or language.shape[0] != n:
        raise FormatError(path, f"language feature has shape {list(language.shape)}; expected [{n}, D]")
    return {
        "means": xyz.float(),
        "sh": torch.cat([dc, rest], dim=1).float(),
        "log_scales": values["log_scales"].float(),
        "quats": values["quats"].float(),
        "opacity_logits": values["opacity_logits"][:, 0].float(),
        "language": language.float(),
    }


def renderer_normalized(language: Tensor) -> Tensor:
    """LangSplat's renderer normalisation ``f / (‖f‖ + 1e-9)``: unit rows, zero rows stay zero. [N, D]"""
    return language / (language.norm(dim=-1, keepdim=True) + FEATURE_NORM_EPS)


def find_autoencoder(scene: str, folders: dict[int, Path]) -> Path | None:
    """The autoencoder checkpoint at one of the paths LangSplat's code uses, searched from the output folder
    holding the level folders and from the folder above it (the LangSplat checkout); None if absent."""
    output = next(iter(folders.values())).parent
    for base in (output, output.parent):
        for candidate in (
            base / "autoencoder" / "ckpt" / scene / "best_ckpt.pth",
            base / "autoencoder" / "ckpt" / scene / "ae_ckpt" / "best_ckpt.pth",
            base / scene / "ae_ckpt" / "best_ckpt.pth",
        ):
            if candidate.is_file():
                return candidate
    return None


def read_autoencoder_decoder(path: Path) -> StateDict:
    """The ``decoder.*`` part of a LangSplat autoencoder state dict: Linear layers at even indices
    0, 2, ..., 2(L-1) (ReLU between), keys as saved. Raises FormatError for anything else."""
    state = load_torch_state_dict(path)
    decoder = {key: value for key, value in state.items() if key.startswith("decoder.")}
    if not decoder:
        keys = sorted(state)[:4]
        raise FormatError(path, f"is not a LangSplat autoencoder (no decoder.* keys; found {keys})")
    indices = sorted({int(key.split(".")[1]) for key in decoder if key.split(".")[1].isdigit()})
    check_decoder_state(decoder, tuple(range(0, 2 * len(indices), 2)), path)
    return decoder


def read_langsplat(
    path: str | Path, autoencoder: str | Path | None = None, iteration: int | None = None
) -> LanguageField:
    """Read a LangSplat output (a level folder or the folder holding them) as one field.

    Features are the renderer-normalised language features of the levels found, side by side
    ([N, 3 x levels], level 1 first), with ``metadata.levels`` naming them and the autoencoder's decoder
    as the field's decoder. Not validated here (:func:`.load.load_field` does that).

    Args:
        path: a ``<scene>_<level>`` folder or its parent.
        autoencoder: the autoencoder checkpoint; default: found at LangSplat's own paths.
        iteration: read ``chkpnt<iteration>.pth`` of every level; default: each level's latest.

    Raises:
        FormatError: a missing autoencoder (naming the paths searched and ``--autoencoder``), unsafe or
            damaged checkpoints, levels whose geometry differs.
    """
    path = Path(path)
    scene, folders = level_folders(path)
    if autoencoder is None:
        autoencoder = find_autoencoder(scene, folders)
        if autoencoder is None:
            searched = " or ".join(p.replace("<scene>", scene) for p in AUTOENCODER_PATHS)
            raise FormatError(
                path,
                f"LangSplat autoencoder not found ({searched} in or above {next(iter(folders.values())).parent}); "
                "pass it with --autoencoder FILE",
            )
    autoencoder = Path(autoencoder)
    if not autoencoder.is_file():
        raise FormatError(autoencoder, "no such autoencoder checkpoint")
    decoder = read_autoencoder_decoder(autoencoder)

    geometry: dict[str, Tensor] | None = None
    features, read_from = [], []
    for level, folder in folders.items():
        found = checkpoints(folder)
        if iteration is not None and iteration not in found:
            listed = ", ".join(map(str, sorted(found)))
            raise FormatError(folder, f"has no chkpnt{iteration}.pth; available iterations: {listed}")
        chosen = max(found) if iteration is None else iteration
        checkpoint = found[chosen]
        capture, _ = load_capture(checkpoint)
        tensors = _capture_tensors(capture, checkpoint)
        language = tensors.pop("language")
        if geometry is None:
            geometry = tensors
        else:
            _check_same_geometry(geometry, tensors, checkpoint)
        features.append(renderer_normalized(language))
        read_from.append(f"{level} ({LEVEL_NAMES[level]}) @ {chosen}")
    assert geometry is not None  # level_folders found at least one folder

    first = next(iter(folders.values()))
    field = LanguageField(
        means=geometry["means"],
        quats=geometry["quats"],
        log_scales=geometry["log_scales"],
        opacity_logits=geometry["opacity_logits"],
        sh=geometry["sh"],
        features=torch.cat(features, dim=1).contiguous(),
        decoder=decoder,
        metadata=FieldMetadata(
            clip=ClipSpec(model=GAGS_CLIP_MODEL, pretrained=GAGS_CLIP_PRETRAINED),
            decoder_kind="langsplat",
            levels=tuple(LEVEL_NAMES[level] for level in folders),
            default_camera=read_first_camera(first / "cameras.json"),
            source=f"LangSplat output {first.parent} (scene {scene}; levels {', '.join(read_from)}; "
            f"autoencoder {autoencoder})",
        ),
    )
    return field


def cameras_json_path(path: str | Path) -> Path | None:
    """``cameras.json`` of the first LangSplat level folder that has one, or None."""
    _, folders = level_folders(path)
    for folder in folders.values():
        if (folder / "cameras.json").is_file():
            return folder / "cameras.json"
    return None


def _check_same_geometry(reference: dict[str, Tensor], other: dict[str, Tensor], path: Path) -> None:
    """Refuse a level whose Gaussians differ from the first level's (they must share one 3DGS model)."""
    for name, value in reference.items():
        if value.shape != other[name].shape or not torch.equal(value, other[name]):
            raise FormatError(
                path,
                f"its Gaussians ({name}) differ from the first level's; LangSplat levels trained from one 3DGS "
                "checkpoint share them, so these cannot be queried together",
            )
