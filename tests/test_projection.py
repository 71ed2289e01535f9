"""project_gaussians against gsplat's pure-torch projection (a private API, used only as a test oracle)."""

import pytest
import torch

from gags_viewer.render.camera import Camera, intrinsics, look_at
from gags_viewer.render.projection import project_gaussians
from tests.float_bounds import projection_bounds, projection_violations

torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")


def _gaussians(n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = (torch.randn(n, 3, generator=g) * torch.tensor([2.0, 1.5, 2.5])).to(dtype)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1).to(dtype)
    scales = torch.exp(torch.rand(n, 3, generator=g) * 4 - 5).to(dtype)  # 0.007 .. 0.37, anisotropic
    return means, quats, scales


def _oracle(means, quats, scales, camera):
    covars, _ = torch_impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        means,
        covars,
        camera.world_to_camera.to(means)[None],
        camera.K.to(means)[None],
        camera.width,
        camera.height,
        eps2d=0.3,
        near_plane=0.01,
        far_plane=1e10,
    )
    return radii[0], means2d[0], depths[0], conics[0]


CAMERAS = [
    Camera.from_fov(look_at([0.0, 0.0, -4.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]), 60.0, 64, 48),
    Camera.from_camera_to_world(  # off-centre principal point, non-square pixels, camera inside the cloud
        look_at([1.0, -0.5, -1.5], [0.0, 0.3, 1.0], [0.0, -1.0, 0.0]),
        intrinsics(90.0, 70.0, 96, 72, 40.0, 30.0),
        96,
        72,
    ),
]


@pytest.mark.parametrize("camera", CAMERAS, ids=["centred", "offset"])
@pytest.mark.parametrize("seed", [0, 1])
def test_projection_matches_gsplat(camera, seed):
    """In float64 the two formulas agree to rounding (a radius could only flip within 1e-9 of an integer)."""
    means, quats, scales = _gaussians(400, seed)
    proj = project_gaussians(means, quats, scales, camera)
    radii, means2d, depths, conics = _oracle(means, quats, scales, camera)

    assert torch.equal(proj.radii, radii.to(proj.radii.dtype))
    visible = proj.visible
    assert 20 < int(visible.sum()) < len(means), "the scene should mix visible and culled Gaussians"
    assert (proj.depths <= 0).any(), "some Gaussians should be behind the camera"
    torch.testing.assert_close(proj.depths, depths, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(proj.means2d[visible], means2d[visible], rtol=1e-12, atol=1e-9)
    relative = (proj.conics[visible] - conics[visible]).abs() / conics[visible].abs().amax(-1, keepdim=True)
    assert relative.max() < 1e-9


def test_projection_matches_gsplat_in_float32():
    """Both float32 projections stay within what float32 guarantees of the float64 one, per Gaussian."""
    camera = CAMERAS[0]
    means, quats, scales = _gaussians(400, 2, torch.float32)
    bounds = projection_bounds(means, quats, scales, camera)
    proj = project_gaussians(means, quats, scales, camera)
    radii, means2d, depths, conics = _oracle(means, quats, scales, camera)
    for name, outputs in (
        ("ours", (proj.means2d, proj.conics, proj.depths, proj.radii)),
        ("gsplat", (means2d, conics, depths, radii)),
    ):
        violations = projection_violations(bounds, *outputs, camera)
        assert {key: int(bad.sum()) for key, bad in violations.items()} == dict.fromkeys(violations, 0), name


def test_projection_is_differentiable():
    means, quats, scales = (t.requires_grad_() for t in _gaussians(50, 3))
    proj = project_gaussians(means, quats, scales, CAMERAS[0])
    visible = proj.visible
    (proj.means2d[visible].sum() + proj.conics[visible].sum()).backward()
    for tensor in (means, quats, scales):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad[visible].abs().sum() > 0
