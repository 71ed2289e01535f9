"""antimatter15 ``.splat`` files: a headerless array of 32-byte Gaussians (RGB only, SH degree 0).

Row layout (little-endian)::

    position  float32 x3   world-space centre
    scale     float32 x3   per-axis standard deviation, linear (not log)
    rgba      uint8   x4   colour (0.5 + C0 * f_dc, clipped to [0, 1]) and opacity, times 255
    rotation  uint8   x4   quaternion (w, x, y, z) stored as q * 128 + 128

Reading converts to the field's pre-activation form: ``f_dc = (rgb / 255 - 0.5) / C0``,
``opacity_logit = logit(alpha / 255)`` (alpha clamped to [1e-6, 1 - 1e-6] so 0 and 255 stay finite),
``log_scale = log(scale)``, ``quat = (q - 128) / 128``. Writing is the inverse, keeping only the SH DC
term and dropping language features; it keeps the Gaussian order (no sorting).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gags_viewer.errors import FormatError
from gags_viewer.field.language_field import SH_C0, FieldMetadata, LanguageField
from gags_viewer.fsutil import atomic_write_bytes

ALPHA_EPS = 1e-6
SPLAT_DTYPE = np.dtype(
    [("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rotation", "u1", (4,))]
)
ROW_BYTES = SPLAT_DTYPE.itemsize  # 32


def read_splat(path: str | Path) -> LanguageField:
    """Read a ``.splat`` file into an RGB-only field (sh [N,1,3]; float32 CPU tensors; not validated)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise FormatError(path, f"cannot read file ({error.strerror or error})") from None
    if not raw:
        raise FormatError(path, "is empty")
    if len(raw) % ROW_BYTES:
        raise FormatError(
            path,
            f"size {len(raw)} bytes is not a multiple of {ROW_BYTES} (one .splat Gaussian); "
            "the file is truncated or not a .splat file",
        )
    rows = np.frombuffer(raw, dtype=SPLAT_DTYPE)
    scale = rows["scale"].astype(np.float64)
    bad = ~(np.isfinite(scale) & (scale > 0)).all(axis=1)
    if bad.any():
        raise FormatError(path, f"{int(bad.sum())} Gaussians have a scale that is not a positive finite number")
    rgba = rows["rgba"].astype(np.float64) / 255.0
    alpha = np.clip(rgba[:, 3], ALPHA_EPS, 1.0 - ALPHA_EPS)
    dc = (rgba[:, :3] - 0.5) / SH_C0
    return LanguageField(
        means=_tensor(rows["position"]),
        quats=_tensor((rows["rotation"].astype(np.float32) - 128.0) / 128.0),
        log_scales=_tensor(np.log(scale)),
        opacity_logits=_tensor(np.log(alpha) - np.log1p(-alpha)),
        sh=_tensor(dc[:, None, :]),
        metadata=FieldMetadata(source=str(path)),
    )


def write_splat(field: LanguageField, path: str | Path) -> None:
    """Write ``field`` as a ``.splat`` file, atomically (lossy: 8-bit colour/opacity/rotation, DC only)."""
    n = field.num_gaussians
    rows = np.zeros(n, dtype=SPLAT_DTYPE)
    rows["position"] = field.means.detach().cpu().numpy()
    rows["scale"] = field.scales().detach().cpu().numpy()
    rgb = 0.5 + SH_C0 * field.sh[:, 0, :].detach().cpu().double().numpy()
    alpha = field.opacities().detach().cpu().double().numpy()
    rows["rgba"] = _to_byte(np.concatenate([rgb, alpha[:, None]], axis=1) * 255.0)
    rows["rotation"] = _to_byte(field.unit_quats().detach().cpu().double().numpy() * 128.0 + 128.0)
    atomic_write_bytes(path, rows.tobytes())


def _to_byte(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _tensor(values: np.ndarray) -> torch.Tensor:
    """A float32 tensor owning a fresh copy of ``values`` (never a view of the read-only file buffer)."""
    return torch.from_numpy(np.array(values, dtype=np.float32, order="C", copy=True))
