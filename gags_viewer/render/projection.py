"""Projection of 3D Gaussians to screen-space ellipses, with gsplat's pinhole semantics.

Shared by the CPU backends (the differentiable torch one and the fast forward one). Semantics follow
gsplat 1.5 ``fully_fused_projection`` in "classic" mode: near plane 0.01, far plane 1e10, the Jacobian
evaluated at the view-frustum-clamped mean (1.3x the image half-extent), a 0.3 px² low-pass added to
the 2D covariance, radii of ceil(3.33 sigma) per axis, and Gaussians whose box misses the image culled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gags_viewer.render.camera import Camera, quat_to_rotation

NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EPS_2D = 0.3
RADIUS_SIGMAS = 3.33


@dataclass
class Projected:
    """Screen-space Gaussians for one camera.

    Attributes:
        means2d: Projected centres in pixels (pixel centres are at +0.5). [N, 2]
        conics: Upper triangle (a, b, c) of the inverse 2D covariance; the Gaussian's exponent at pixel
            offset (dx, dy) is 0.5 * (a dx² + c dy²) + b dx dy. [N, 3]
        depths: Camera-space z of the centres. [N]
        radii: Per-axis screen radius in pixels, 0 where the Gaussian is culled. [N, 2] int32
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor

    @property
    def visible(self) -> Tensor:
        """[N] bool"""
        return (self.radii > 0).all(dim=-1)


def project_gaussians(means: Tensor, unit_quats: Tensor, scales: Tensor, camera: Camera) -> Projected:
    """Project Gaussians into ``camera`` (differentiable w.r.t. means, quats and scales).

    Args:
        means: [N, 3] world-space centres.
        unit_quats: [N, 4] normalised (w, x, y, z) rotations.
        scales: [N, 3] per-axis standard deviations.
        camera: the pinhole camera.
    """
    viewmat = camera.world_to_camera.to(means)
    K = camera.K.to(means)
    rotation = viewmat[:3, :3]
    means_cam = means @ rotation.T + viewmat[:3, 3]
    tx, ty, tz = means_cam.unbind(-1)

    # Σ_cam = (W R S)(W R S)^T, built from the scaled rotation so we never form Σ_world.
    scaled_rot = quat_to_rotation(unit_quats) * scales[:, None, :]
    m = rotation @ scaled_rot  # [N, 3, 3]
    cov_cam = m @ m.transpose(1, 2)

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    width, height = camera.width, camera.height
    safe_z = torch.where(tz.abs() > 1e-12, tz, torch.full_like(tz, 1e-12))
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    clamped_x = safe_z * torch.clamp(tx / safe_z, min=-lim_x_neg, max=lim_x_pos)
    clamped_y = safe_z * torch.clamp(ty / safe_z, min=-lim_y_neg, max=lim_y_pos)
    zeros = torch.zeros_like(tz)
    jacobian = torch.stack(
        [fx / safe_z, zeros, -fx * clamped_x / safe_z**2, zeros, fy / safe_z, -fy * clamped_y / safe_z**2],
        dim=-1,
    ).reshape(-1, 2, 3)
    cov2d = jacobian @ cov_cam @ jacobian.transpose(1, 2)
    cov2d = cov2d + EPS_2D * torch.eye(2, dtype=means.dtype, device=means.device)

    a, b, c = cov2d[:, 0, 0], 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]), cov2d[:, 1, 1]
    det = a * c - b * b
    safe_det = det.clamp(min=1e-10)
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)
    means2d = torch.stack([fx * tx / safe_z + cx, fy * ty / safe_z + cy], dim=-1)

    with torch.no_grad():
        radii = torch.ceil(RADIUS_SIGMAS * torch.sqrt(torch.stack([a, c], dim=-1).clamp(min=0)))
        valid = (det > 0) & (tz > NEAR_PLANE) & (tz < FAR_PLANE)
        inside = (
            (means2d[:, 0] + radii[:, 0] > 0)
            & (means2d[:, 0] - radii[:, 0] < width)
            & (means2d[:, 1] + radii[:, 1] > 0)
            & (means2d[:, 1] - radii[:, 1] < height)
        )
        radii = torch.where((valid & inside)[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=tz, radii=radii)
