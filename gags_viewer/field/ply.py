"""Inria 3DGS point-cloud PLY files, optionally carrying GAGS language features.

Layout (one ``vertex`` element, every property ``float``; values are raw, pre-activation)::

    x y z [nx ny nz] f_dc_0..2 f_rest_0..M-1 opacity scale_0..2 rot_0..3 [semantic_0..D-1]

- ``f_rest`` holds ``M = 3 (K - 1)`` higher-order SH coefficients, **channel-major**: the ``K - 1``
  coefficients of red, then green, then blue. ``M`` in (0, 9, 24, 45) gives SH degree 0..3.
- ``rot`` is a (w, x, y, z) quaternion, not necessarily normalised; ``scale`` is the log of the standard
  deviations; ``opacity`` the logit.
- ``semantic_*`` (GAGS) is the raw D-dimensional feature per Gaussian; absent in RGB-only splats.
- ``nx ny nz`` are written as zeros (as the official code writes them) and ignored when read; other
  extra properties are ignored too.

Binary (either byte order) and ASCII files are read. This module is shared by the plain-PLY, official
GAGS and native loaders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import plyfile
import torch

from gags_viewer.errors import FormatError
from gags_viewer.field.language_field import FieldMetadata, LanguageField
from gags_viewer.fsutil import atomic_write

POSITION = ("x", "y", "z")
NORMALS = ("nx", "ny", "nz")
DC = ("f_dc_0", "f_dc_1", "f_dc_2")
OPACITY = ("opacity",)
SCALE = ("scale_0", "scale_1", "scale_2")
ROTATION = ("rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = POSITION + DC + OPACITY + SCALE + ROTATION
REST_PREFIX = "f_rest_"
FEATURE_PREFIX = "semantic_"
SH_DEGREE_BY_REST_COUNT = {0: 0, 9: 1, 24: 2, 45: 3}


def property_names(sh_coeffs: int, feature_dim: int) -> list[str]:
    """Vertex property names in file order for ``K = sh_coeffs`` SH coefficients and D features."""
    rest = [f"{REST_PREFIX}{i}" for i in range(3 * (sh_coeffs - 1))]
    features = [f"{FEATURE_PREFIX}{i}" for i in range(feature_dim)]
    return [*POSITION, *NORMALS, *DC, *rest, *OPACITY, *SCALE, *ROTATION, *features]


def read_ply(path: str | Path) -> LanguageField:
    """Read an Inria 3DGS PLY into a field (``features`` is None when there are no ``semantic_*``).

    Tensors are float32 on the CPU: means [N,3], quats [N,4], log_scales [N,3], opacity_logits [N],
    sh [N,K,3], features [N,D] or None. The metadata only records the source; the field is not
    validated here (:func:`gags_viewer.field.load.load_field` does that).
    """
    path = Path(path)
    vertex = _read_vertex_element(path)
    names = {prop.name for prop in vertex.properties}
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise FormatError(path, f"missing required vertex properties: {', '.join(missing)}")
    rest_names = _numbered(names, REST_PREFIX, path)
    if len(rest_names) not in SH_DEGREE_BY_REST_COUNT:
        raise FormatError(
            path,
            f"has {len(rest_names)} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0-3)",
        )
    feature_names = _numbered(names, FEATURE_PREFIX, path)
    list_props = {p.name for p in vertex.properties if isinstance(p, plyfile.PlyListProperty)}
    used_lists = sorted(list_props & set(REQUIRED + tuple(rest_names) + tuple(feature_names)))
    if used_lists:
        raise FormatError(path, f"vertex properties must be scalars, not lists: {', '.join(used_lists)}")

    data = vertex.data
    n, rest_per_channel = len(data), len(rest_names) // 3
    rest = _columns(data, rest_names).reshape(n, 3, rest_per_channel).transpose(1, 2)  # channel-major -> [N, K-1, 3]
    sh = torch.cat([_columns(data, DC)[:, None, :], rest], dim=1).contiguous()
    return LanguageField(
        means=_columns(data, POSITION),
        quats=_columns(data, ROTATION),
        log_scales=_columns(data, SCALE),
        opacity_logits=_columns(data, OPACITY)[:, 0].contiguous(),
        sh=sh,
        features=_columns(data, feature_names) if feature_names else None,
        metadata=FieldMetadata(source=str(path)),
    )


def write_ply(field: LanguageField, path: str | Path) -> None:
    """Write the geometry and features of ``field`` as a binary little-endian Inria PLY, atomically.

    Every value is stored as float32 (exact for float32 fields); ``nx ny nz`` are zeros. Decoders and
    metadata are not part of a PLY.
    """
    n = field.num_gaussians
    sh = field.sh.detach().cpu()
    blocks = [
        field.means.detach().cpu(),
        torch.zeros(n, 3),
        sh[:, 0, :],
        sh[:, 1:, :].transpose(1, 2).reshape(n, 3 * (sh.shape[1] - 1)),  # [N,K-1,3] -> channel-major [N,3(K-1)]
        field.opacity_logits.detach().cpu().reshape(n, 1),
        field.log_scales.detach().cpu(),
        field.quats.detach().cpu(),
    ]
    if field.features is not None:
        blocks.append(field.features.detach().cpu())
    matrix = np.ascontiguousarray(torch.cat([b.float() for b in blocks], dim=1).numpy(), dtype="<f4")
    names = property_names(sh.shape[1], field.feature_dim)
    assert matrix.shape[1] == len(names), (matrix.shape, len(names))
    records = matrix.view(np.dtype([(name, "<f4") for name in names])).reshape(n)
    element = plyfile.PlyElement.describe(records, "vertex")
    with atomic_write(path, "wb") as handle:
        plyfile.PlyData([element], text=False, byte_order="<").write(handle)


def _read_vertex_element(path: Path) -> plyfile.PlyElement:
    """Parse ``path`` with plyfile and return its ``vertex`` element, converting every failure."""
    try:
        # Binary files are memory-mapped (mmap="c"), which also makes plyfile check the declared
        # vertex count against the file size before allocating anything; the rest is checked here.
        _check_declared_counts(path)
        ply = plyfile.PlyData.read(str(path))
    except plyfile.PlyParseError as error:
        raise FormatError(path, f"not a valid PLY file, or truncated ({error})") from None
    except UnicodeDecodeError:
        raise FormatError(path, "not a valid PLY file (its header is not ASCII text)") from None
    except (ValueError, MemoryError, OverflowError) as error:  # e.g. a negative or absurd element count
        raise FormatError(path, f"not a valid PLY file (bad header: {error})") from None
    except OSError as error:
        raise FormatError(path, f"cannot read file ({error.strerror or error})") from None
    try:
        return ply["vertex"]
    except KeyError:
        elements = ", ".join(e.name for e in ply.elements) or "none"
        raise FormatError(path, f"has no 'vertex' element (elements: {elements})") from None


def _check_declared_counts(path: Path) -> None:
    """Refuse a PLY whose header declares more rows than its body can hold.

    plyfile allocates an element's array from the declared count before parsing whenever it cannot
    memory-map it (ASCII files, elements with list properties), so a header that lies ("element vertex
    99999999999") would ask for terabytes. A row takes at least one byte per property in a binary file,
    and two (a digit and a separator) in an ASCII one. Unreadable headers are left to plyfile.
    """
    with open(path, "rb") as handle:
        head = handle.read(_MAX_HEADER_BYTES)
        end_line = _END_HEADER.search(head)
        if not head.startswith(b"ply") or end_line is None:
            return
        end = end_line.start()
        body_bytes = os.fstat(handle.fileno()).st_size - end
    counts: list[list[int]] = []  # [declared rows, properties] per element
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["element"] and len(words) == 3 and words[2].lstrip("-").isdigit():
            counts.append([int(words[2]), 0])
        elif words[:1] == ["property"] and counts:
            counts[-1][1] += 1
    bytes_per_value = 2 if b"format ascii" in head[:end] else 1
    needed = sum(max(rows, 0) * bytes_per_value * max(props, 1) for rows, props in counts)
    if needed > body_bytes:
        raise FormatError(path, f"header declares more rows than the file holds ({body_bytes} bytes of data)")


_MAX_HEADER_BYTES = 1 << 20
_END_HEADER = re.compile(rb"^end_header\r?$", re.MULTILINE)


def _numbered(names: set[str], prefix: str, path: Path) -> list[str]:
    """Properties ``<prefix><i>`` sorted by ``i``, which must run 0..M-1 without gaps or repeats."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    by_index: dict[int, str] = {}
    for name in sorted(names):
        match = pattern.match(name)
        if match:
            index = int(match.group(1))
            if index in by_index:
                raise FormatError(path, f"properties {by_index[index]} and {name} have the same index")
            by_index[index] = name
    if sorted(by_index) != list(range(len(by_index))):
        gap = min(set(range(max(by_index) + 1)) - set(by_index))
        raise FormatError(path, f"{prefix}* properties are not numbered 0..{len(by_index) - 1} (missing {prefix}{gap})")
    return [by_index[i] for i in range(len(by_index))]


def _columns(data: np.ndarray, names) -> torch.Tensor:
    """Stack structured-array columns into a fresh float32 tensor. [N, len(names)]"""
    matrix = np.empty((len(data), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        matrix[:, j] = data[name]
    return torch.from_numpy(matrix)
