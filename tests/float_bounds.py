"""Forward error bounds for the float32 projection, so tests compare two float paths by what float32
guarantees for each input rather than by what one machine produced.

Every bound is a first-order running-error analysis of the formulas in
:func:`gags_viewer.render.projection.project_gaussians`, done in float64 with absolute values: a dot product
of n terms evaluated in float32 in ANY order (with or without fused multiply-adds, any blocking of a BLAS
kernel) is within gamma(n) * sum |a_i| |b_i| of the exact value, and errors already present in the factors
are carried through with absolute values. A safety factor of 2 covers the neglected second-order terms.
So a conic of an ill-conditioned 2-D covariance (a long thin ellipse, or a Gaussian near the near plane)
gets a wide bound and a well-conditioned one a tight bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gags_viewer.render.camera import Camera, quat_to_rotation
from gags_viewer.render.projection import EPS_2D, NEAR_PLANE, RADIUS_SIGMAS, project_gaussians

UNIT_ROUNDOFF = 2.0**-24  # float32
SAFETY = 2.0


def gamma(n: int) -> float:
    """Bound on the relative error of n float32 roundings in sequence (Higham's gamma_n)."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


@dataclass
class ProjectionBounds:
    """The float64 projection of float32 inputs, and how far any float32 evaluation may be from it.

    Attributes:
        exact: the projection computed in float64 from the (float32) inputs.
        means2d: [N, 2], conics: [N, 3], depths: [N]: absolute error bounds of a float32 evaluation.
        radius_argument: [N, 2] the float64 values that radii are ``ceil`` of, and radius_error [N, 2]
            their error bounds: a float32 radius may differ by one where the argument is that close to
            an integer.
    """

    exact: object
    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radius_argument: Tensor
    radius_error: Tensor


def projection_bounds(means: Tensor, quats: Tensor, scales: Tensor, camera: Camera) -> ProjectionBounds:
    """Error bounds of a float32 :func:`project_gaussians` on these inputs.

    Args:
        means [N, 3], quats [N, 4] (wxyz, any norm), scales [N, 3]: the float32 inputs.
        camera: the pinhole camera (its float32 matrices are taken as exact inputs).
    """
    u = UNIT_ROUNDOFF
    means, quats, scales = (t.double() for t in (means, quats, scales))
    exact = project_gaussians(means, quats, scales, camera)
    viewmat = camera.world_to_camera.double()
    K = camera.K.double()
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))

    # camera-space centre: a 4-term dot product per coordinate
    cam = means @ rotation.T + translation
    e_cam = gamma(4) * (means.abs() @ rotation.abs().T + translation.abs())
    x, y, z = cam.unbind(-1)
    e_x, e_y, e_z = e_cam.unbind(-1)

    # rotation of the normalised quaternion: unit components with a few roundings each, entries
    # 1 - 2(y² + z²) or 2(xy ± wz): every product of two components is off by at most 2 * 8u
    e_rotation = 2 * (2 * 16 * u) + gamma(4)
    unit = torch.nn.functional.normalize(quats, dim=-1)
    scaled_rot = quat_to_rotation(unit) * scales[:, None, :]
    e_scaled = (e_rotation + u) * scales[:, None, :].expand_as(scaled_rot)
    m = rotation @ scaled_rot
    abs_m = rotation.abs() @ scaled_rot.abs()
    e_m = rotation.abs() @ e_scaled + gamma(3) * abs_m
    cov_cam = m @ m.transpose(1, 2)
    e_cov_cam = e_m @ abs_m.transpose(1, 2) + abs_m @ e_m.transpose(1, 2) + gamma(3) * abs_m @ abs_m.transpose(1, 2)

    # Jacobian at the frustum-clamped centre
    width, height = camera.width, camera.height
    lim_x = max((width - cx) / fx, cx / fx) + 0.3 * (0.5 * width / fx)
    lim_y = max((height - cy) / fy, cy / fy) + 0.3 * (0.5 * height / fy)
    jac = exact_jacobian = _jacobian(x, y, z, fx, fy, cx, cy, width, height)
    clamped_x = -jac[:, 0, 2] * z**2 / fx
    clamped_y = -jac[:, 1, 2] * z**2 / fy
    e_cx = e_x + lim_x * e_z + 2 * u * clamped_x.abs()
    e_cy = e_y + lim_y * e_z + 2 * u * clamped_y.abs()
    az = z.abs()
    e_jac = torch.zeros_like(exact_jacobian)
    e_jac[:, 0, 0] = fx * e_z / az**2 + u * fx / az
    e_jac[:, 1, 1] = fy * e_z / az**2 + u * fy / az
    e_jac[:, 0, 2] = fx * (e_cx / az**2 + 2 * clamped_x.abs() * e_z / az**3) + 4 * u * jac[:, 0, 2].abs()
    e_jac[:, 1, 2] = fy * (e_cy / az**2 + 2 * clamped_y.abs() * e_z / az**3) + 4 * u * jac[:, 1, 2].abs()

    abs_j, abs_c = jac.abs(), cov_cam.abs()
    e_cov2d = (
        e_jac @ abs_c @ abs_j.transpose(1, 2)
        + abs_j @ e_cov_cam @ abs_j.transpose(1, 2)
        + abs_j @ abs_c @ e_jac.transpose(1, 2)
        + (gamma(6) * abs_j @ abs_c @ abs_j.transpose(1, 2))
    )
    cov2d = jac @ cov_cam @ jac.transpose(1, 2) + EPS_2D * torch.eye(2, dtype=torch.float64)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    e_a, e_b, e_c = e_cov2d[:, 0, 0] + u * a, e_cov2d[:, 0, 1] + u * b.abs(), e_cov2d[:, 1, 1] + u * c
    det = a * c - b * b
    e_det = e_a * c.abs() + a.abs() * e_c + 2 * b.abs() * e_b + gamma(2) * (a * c).abs() + gamma(2) * b * b
    numerators = torch.stack([c, -b, a], dim=-1)
    e_numerators = torch.stack([e_c, e_b, e_a], dim=-1)
    e_conics = (e_numerators + numerators.abs() * (e_det / det.abs())[:, None]) / det.abs()[:, None]
    e_conics = e_conics + u * exact.conics.abs()

    e_means2d = torch.stack(
        [
            fx * (e_x / az + x.abs() * e_z / az**2) + gamma(3) * (fx * x.abs() / az + abs(cx)),
            fy * (e_y / az + y.abs() * e_z / az**2) + gamma(3) * (fy * y.abs() / az + abs(cy)),
        ],
        dim=-1,
    )
    diag = torch.stack([a, c], dim=-1).clamp(min=1e-300)
    e_diag = torch.stack([e_a, e_c], dim=-1)
    radius_argument = RADIUS_SIGMAS * diag.sqrt()
    radius_error = RADIUS_SIGMAS * e_diag / (2 * diag.sqrt()) + gamma(3) * radius_argument
    return ProjectionBounds(
        exact=exact,
        means2d=SAFETY * e_means2d,
        conics=SAFETY * e_conics,
        depths=SAFETY * e_z,
        radius_argument=radius_argument,
        radius_error=SAFETY * radius_error,
    )


def _jacobian(x, y, z, fx, fy, cx, cy, width, height) -> Tensor:
    """[N, 2, 3] the projection's Jacobian at the frustum-clamped centre, as project_gaussians builds it."""
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    clamped_x = z * torch.clamp(x / z, min=-lim_x_neg, max=lim_x_pos)
    clamped_y = z * torch.clamp(y / z, min=-lim_y_neg, max=lim_y_pos)
    zeros = torch.zeros_like(z)
    rows = [fx / z, zeros, -fx * clamped_x / z**2, zeros, fy / z, -fy * clamped_y / z**2]
    return torch.stack(rows, dim=-1).reshape(-1, 2, 3)


def projection_violations(bounds: ProjectionBounds, means2d, conics, depths, radii, camera: Camera) -> dict:
    """Where a float32 projection (arrays or tensors of the shapes of :class:`Projected`) leaves the bounds.

    Radii and visibility may differ from the float64 projection only where the float64 value is within
    its error bound of a cut (the near plane, an integer before ``ceil``, the image border); values are
    compared on the Gaussians both call visible. Returns {name: [N] bool of violations} (all False = pass).
    """
    means2d, conics, depths = (torch.as_tensor(v).double() for v in (means2d, conics, depths))
    radii = torch.as_tensor(radii).long()
    exact = bounds.exact
    exact_radii = exact.radii.long()
    argument, slack = bounds.radius_argument, bounds.radius_error
    radius_may_flip = ((argument - argument.round()).abs() <= slack).any(dim=-1)
    near_plane = (exact.depths - NEAR_PLANE).abs() <= bounds.depths
    edge_slack = bounds.means2d + radius_may_flip[:, None].double()
    unclipped = torch.ceil(argument)
    size = torch.tensor([camera.width, camera.height], dtype=torch.float64)
    near_edge = (
        ((exact.means2d + unclipped).abs() <= edge_slack) | ((exact.means2d - unclipped - size).abs() <= edge_slack)
    ).any(dim=-1)
    visible = (radii > 0).all(dim=-1)
    at_a_cut = radius_may_flip | near_plane | near_edge
    both = visible & exact.visible
    radius_wrong = both & ((radii - exact_radii).abs().amax(dim=-1) > radius_may_flip.long())
    return {
        "visibility": (visible != exact.visible) & ~at_a_cut,
        "radii": radius_wrong,
        "means2d": both & ((means2d - exact.means2d).abs() > bounds.means2d).any(dim=-1),
        "conics": both & ((conics - exact.conics).abs() > bounds.conics).any(dim=-1),
        "depths": both & ((depths - exact.depths).abs() > bounds.depths),
    }
