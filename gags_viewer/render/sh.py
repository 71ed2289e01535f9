"""View-dependent colour from real spherical harmonics (degrees 0-3), as in 3DGS and gsplat."""

from __future__ import annotations

import torch
from torch import Tensor

from gags_viewer.errors import RenderError

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis values for unit directions. [N, 3] -> [N, (degree + 1)²]"""
    x, y, z = dirs.unbind(-1)
    terms = [torch.full_like(x, C0)]
    if degree >= 1:
        terms += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        terms += [
            C2[0] * xy,
            C2[1] * yz,
            C2[2] * (2 * zz - xx - yy),
            C2[3] * xz,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        terms += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(terms, dim=-1)


def sh_to_rgb(sh: Tensor, means: Tensor, camera_center: Tensor) -> Tensor:
    """Colour of each Gaussian seen from ``camera_center``, clamped at 0 like gsplat. -> [N, 3]

    Args:
        sh: [N, K, 3] coefficients, K = (degree + 1)².
        means: [N, 3] Gaussian centres.
        camera_center: [3] camera position.
    """
    degree = int(round(sh.shape[1] ** 0.5)) - 1
    dirs = torch.nn.functional.normalize(means - camera_center.to(means), dim=-1)
    basis = sh_basis(degree, dirs)  # [N, K]
    return torch.clamp_min(torch.bmm(basis[:, None, :], sh)[:, 0] + 0.5, 0.0)


def rgb_then_channels(sh: Tensor | None, colors: Tensor | None, means: Tensor, camera_center: Tensor) -> Tensor:
    """The channels a backend composites: the colour from ``sh`` (if given), then ``colors`` (if given).

    Args:
        sh: [N, K, 3] SH coefficients, or None.
        colors: [N, C] further per-Gaussian channels, or None.
        means: [N, 3] Gaussian centres; camera_center: [3].

    Returns:
        [N, 3 + C] (3 only with ``sh``, C only with ``colors``).
    """
    if sh is None:
        if colors is None:
            raise RenderError("nothing to composite: give sh, colors or both")
        return colors
    rgb = sh_to_rgb(sh, means, camera_center)
    return rgb if colors is None else torch.cat([rgb, colors.to(rgb.dtype)], dim=-1)
