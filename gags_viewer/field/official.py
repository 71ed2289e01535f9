"""Output directories of the official GAGS code (``output/<case>/``).

Read::

    point_cloud/iteration_<it>/point_cloud.ply   Inria PLY with semantic_0..15 (see :mod:`.ply`)
    decoder_chkpnt<it>.pth                       optional, CLIP decoder (16 -> 512)
    scale_decoder_chkpnt<it>.pth                 optional, granularity decoder (16 -> 3)
    cameras.json                                 optional, Inria camera list; the first is the default view

The highest iteration is used unless one is asked for. Decoders are loaded with
:func:`.checkpoint.load_torch_state_dict` (``weights_only=True``) and kept with their official keys and
``[out, in, 1, 1]`` shapes. An RGB-only Inria output directory loads too (no features, no decoders).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

from gags_viewer.errors import FormatError
from gags_viewer.field.checkpoint import (
    CLIP_DECODER_LAYERS,
    GRANULARITY_CLASSES,
    GRANULARITY_DECODER_LAYERS,
    check_decoder_state,
    load_torch_state_dict,
)
from gags_viewer.field.language_field import (
    GAGS_CLIP_MODEL,
    GAGS_CLIP_PRETRAINED,
    ClipSpec,
    FieldMetadata,
    LanguageField,
)
from gags_viewer.field.ply import read_ply

log = logging.getLogger(__name__)

_ITERATION_DIR = re.compile(r"iteration_(\d+)$")


def official_iterations(directory: str | Path) -> list[int]:
    """Iterations that have ``point_cloud/iteration_<it>/point_cloud.ply``, ascending."""
    root = Path(directory) / "point_cloud"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _ITERATION_DIR.match(child.name)
        if match and (child / "point_cloud.ply").is_file():
            found.append(int(match.group(1)))
    return sorted(found)


def is_official_dir(directory: str | Path) -> bool:
    """Whether ``directory`` looks like a GAGS / Inria output directory (has ``point_cloud/iteration_*``)."""
    root = Path(directory) / "point_cloud"
    return root.is_dir() and any(_ITERATION_DIR.match(c.name) for c in root.iterdir())


def read_official(directory: str | Path, iteration: int | None = None) -> LanguageField:
    """Read a GAGS output directory at ``iteration`` (default: the highest one). Not validated here."""
    directory = Path(directory)
    available = official_iterations(directory)
    if not available:
        raise FormatError(directory, "has no point_cloud/iteration_<N>/point_cloud.ply")
    if iteration is None:
        iteration = available[-1]
    elif iteration not in available:
        listed = ", ".join(map(str, available))
        raise FormatError(directory, f"has no iteration {iteration}; available iterations: {listed}")

    field = read_ply(directory / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply")
    decoder_path = directory / f"decoder_chkpnt{iteration}.pth"
    if decoder_path.is_file():
        field.decoder = load_torch_state_dict(decoder_path)
        check_decoder_state(field.decoder, CLIP_DECODER_LAYERS, decoder_path)
    scale_path = directory / f"scale_decoder_chkpnt{iteration}.pth"
    if scale_path.is_file():
        field.granularity_decoder = load_torch_state_dict(scale_path)
        check_decoder_state(field.granularity_decoder, GRANULARITY_DECODER_LAYERS, scale_path, GRANULARITY_CLASSES)

    field.metadata = FieldMetadata(
        clip=ClipSpec(model=GAGS_CLIP_MODEL, pretrained=GAGS_CLIP_PRETRAINED),
        decoder_kind="gags" if field.decoder is not None else None,
        default_camera=read_first_camera(directory / "cameras.json"),
        source=f"GAGS output {directory} (iteration {iteration})",
    )
    return field


def read_first_camera(path: Path) -> dict | None:
    """The first camera of an Inria ``cameras.json`` as ``{"c2w": 4x4 list, "fov_y_deg": float}``.

    Inria stores each camera's centre as ``position`` and its camera-to-world rotation (OpenCV axes:
    x right, y down, z forward) as ``rotation``, plus ``height`` and the focal length ``fy`` in pixels.
    The file is optional: a missing or malformed one gives None (malformed ones are logged).
    """
    if not path.is_file():
        return None
    try:
        camera = json.loads(path.read_text(encoding="utf-8"))[0]
        rotation = [[float(v) for v in row] for row in camera["rotation"]]
        position = [float(v) for v in camera["position"]]
        height, fy = float(camera["height"]), float(camera["fy"])
        if len(rotation) != 3 or any(len(r) != 3 for r in rotation) or len(position) != 3:
            raise ValueError("rotation must be 3x3 and position 3 long")
        if not (height > 0 and fy > 0) or not all(map(math.isfinite, position + sum(rotation, []))):
            raise ValueError("non-positive size or non-finite values")
    except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
        log.warning("%s: ignoring unreadable cameras.json (%s)", path, error)
        return None
    c2w = [rotation[i] + [position[i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]
    return {"c2w": c2w, "fov_y_deg": math.degrees(2.0 * math.atan(height / (2.0 * fy)))}
