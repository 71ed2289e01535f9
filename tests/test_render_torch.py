"""The differentiable torch backend against the brute-force reference compositor, plus gradients."""

import pytest
import torch

from gags_viewer.field.language_field import LanguageField
from gags_viewer.render import torch_backend
from gags_viewer.render.api import get_backend, render
from gags_viewer.render.camera import Camera, intrinsics, look_at
from gags_viewer.render.projection import project_gaussians
from gags_viewer.render.torch_backend import BACKEND, TILE, TorchBackend, bin_tiles
from tests.reference_render import compare_to_reference, reference_rasterize, reference_rasterize_with_cuts

# The default backend, and one with tiny batches and depth chunks so that tiny scenes exercise several
# tile batches, several depth chunks, early stops and the dropping of finished tiles.
BACKENDS = {"default": BACKEND, "tiny-chunks": TorchBackend(tiles_per_batch=2, depth_chunk=3)}


def _camera(width: int, height: int, eye=(0.0, -0.5, -4.0)) -> Camera:
    return Camera.from_fov(look_at(list(eye), [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]), 55.0, width, height)


def _scene(n: int, channels: int, seed: int):
    """Random anisotropic Gaussians: a few behind the camera or off-screen, an opaque overlapping third."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.8, 1.0])
    means[: n // 8, 2] = -6.0 - torch.rand(n // 8, generator=g)  # behind the camera at z = -4
    means[n // 8 : n // 4, 0] = 6.0 + torch.rand(n // 4 - n // 8, generator=g)  # off-screen
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.exp(torch.rand(n, 3, generator=g) * 3.0 - 4.0)  # 0.02 .. 0.37 per axis
    opacities = torch.rand(n, generator=g)
    opaque = slice(n // 4, n // 4 + n // 3)  # a cluster of large opaque ones: pixels there stop early
    means[opaque] *= 0.3
    scales[opaque] = 0.15 + 0.25 * torch.rand(n // 3, 3, generator=g)
    opacities[opaque] = 0.97 + 0.02 * torch.rand(n // 3, generator=g)
    colors = torch.rand(n, channels, generator=g) * 2 - 0.5
    background = torch.rand(channels, generator=g)
    return means, quats, scales, opacities, colors, background


@pytest.mark.parametrize("backend", BACKENDS.values(), ids=BACKENDS.keys())
@pytest.mark.parametrize(
    "n, channels, width, height, seed",
    [(20, 3, 24, 18, 0), (40, 16, 40, 30, 1), (30, 3, 33, 21, 2), (36, 16, 17, 35, 3)],
)
def test_matches_reference(backend, n, channels, width, height, seed):
    means, quats, scales, opacities, colors, background = _scene(n, channels, seed)
    camera = _camera(width, height)
    image, alpha = backend.rasterize(means, quats, scales, opacities, colors, camera, background)
    reference = reference_rasterize_with_cuts(means, quats, scales, opacities, colors, camera, background)
    ref_image, ref_alpha, _ = reference

    assert image.shape == (height, width, channels) and alpha.shape == (height, width)
    assert image.dtype == torch.float32
    compare_to_reference(image, alpha, reference)
    # in float64 the only differences left are rounding
    inputs64 = (t.double() for t in (means, quats, scales, opacities, colors))
    image64, alpha64 = backend.rasterize(*inputs64, camera, background)
    assert image64.dtype == torch.float64
    assert (image64 - ref_image).abs().max() <= 1e-9 and (alpha64 - ref_alpha).abs().max() <= 1e-9
    alphas = _pixel_alphas(means, quats, scales, opacities, camera)
    assert (torch.prod(1 - alphas, dim=0) <= 1e-4).any(), "some pixel should stop early"
    assert ref_alpha.min() < 0.5


def test_exclusive_early_stop_on_one_pixel():
    """Ten stacked Gaussians of opacity 0.95 centred on one pixel: only the first three contribute.

    After three, T = 0.05³ = 1.25e-4; the fourth would bring T to 6.25e-6 <= 1e-4, so the pixel stops
    before it (gsplat's exclusive rule) and alpha = 1 - 1.25e-4, not 1 - 6.25e-6.
    """
    n = 10
    camera = Camera.from_camera_to_world(torch.eye(4), intrinsics(20.0, 20.0, 9, 7), 9, 7)  # pixel (4, 3) on axis
    means = torch.zeros(n, 3)
    means[:, 2] = torch.linspace(1.0, 3.0, n).flip(0)  # listed back to front: the sort must reorder them
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)
    scales = torch.full((n, 3), 0.05)
    opacities = torch.full((n,), 0.95)
    colors = torch.eye(n)  # one channel per Gaussian shows its weight
    background = torch.full((n,), 0.25)
    for backend in BACKENDS.values():
        image, alpha = backend.rasterize(means, quats, scales, opacities, colors, camera, background)
        pixel = image[3, 4] - 1.25e-4 * background
        front_three = torch.tensor([0.95, 0.95 * 0.05, 0.95 * 0.05**2])
        torch.testing.assert_close(pixel[-3:].flip(0), front_three, atol=1e-5, rtol=1e-4)
        assert torch.all(pixel[:-3].abs() < 1e-7)
        assert abs(float(alpha[3, 4]) - (1 - 1.25e-4)) < 2e-6
        ref_image, ref_alpha = reference_rasterize(means, quats, scales, opacities, colors, camera, background)
        assert (image.double() - ref_image).abs().max() <= 1e-4
        assert (alpha.double() - ref_alpha).abs().max() <= 1e-5


def test_nothing_visible_gives_background_and_zero_gradients():
    means, quats, scales, opacities, colors, background = _scene(12, 3, 4)
    means = means.clone()
    means[:, 2] = -10.0  # all behind the camera
    means.requires_grad_()
    colors.requires_grad_()
    image, alpha = BACKEND.rasterize(means, quats, scales, opacities, colors, _camera(16, 12), background)
    assert torch.equal(image, background.expand(12, 16, 3)) and torch.equal(alpha, torch.zeros(12, 16))
    (image.sum() + alpha.sum()).backward()
    assert torch.equal(means.grad, torch.zeros_like(means)) and torch.equal(colors.grad, torch.zeros_like(colors))


def _smooth_scene():
    """Three soft Gaussians on an 8x6 image, away from every kink (all alphas in (1.5/255, 0.9), T >> 1e-4)."""
    camera = Camera.from_camera_to_world(torch.eye(4), intrinsics(10.0, 10.0, 8, 6), 8, 6)
    camera = Camera(camera.world_to_camera.double(), camera.K.double(), 8, 6)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.3, -0.1, 2.5], [-0.4, 0.2, 3.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0.2, -0.1, 0.3], [0.9, -0.3, 0.4, 0.1], [0.5, 0.5, 0.1, -0.2]], dtype=torch.float64)
    quats = torch.nn.functional.normalize(quats, dim=-1)
    scales = torch.tensor([[0.6, 0.4, 0.5], [0.5, 0.8, 0.3], [0.9, 0.6, 0.7]], dtype=torch.float64)
    opacities = torch.tensor([0.5, 0.7, 0.6], dtype=torch.float64)
    colors = torch.tensor([[0.9, 0.1, 0.3, 0.5], [0.2, 0.8, 0.4, -0.3], [0.1, 0.3, 0.9, 1.2]], dtype=torch.float64)
    background = torch.tensor([0.2, 0.1, 0.4, 0.0], dtype=torch.float64)
    return means, quats, scales, opacities, colors, camera, background


def _pixel_alphas(means, quats, scales, opacities, camera, skip=True):
    """Alpha of every visible Gaussian at every pixel, before any early stop. [N, H, W] float64"""
    proj = project_gaussians(means.double(), quats.double(), scales.double(), camera)
    x, y = torch.meshgrid(torch.arange(camera.width) + 0.5, torch.arange(camera.height) + 0.5, indexing="xy")
    dx = proj.means2d[:, 0, None, None] - x
    dy = proj.means2d[:, 1, None, None] - y
    a, b, c = (v[:, None, None] for v in proj.conics.unbind(-1))
    alphas = opacities.double()[:, None, None] * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
    if skip:
        alphas = torch.where(alphas < 1 / 255, 0.0, alphas.clamp(max=0.999))
    return alphas[proj.visible]


def test_smooth_scene_is_away_from_the_kinks():
    means, quats, scales, opacities, colors, camera, _ = _smooth_scene()
    assert bool(project_gaussians(means, quats, scales, camera).visible.all())
    alphas = _pixel_alphas(means, quats, scales, opacities, camera, skip=False)
    assert alphas.shape == (3, 6, 8)
    assert alphas.min() > 1.5 / 255 and alphas.max() < 0.9
    assert torch.prod(1 - alphas, dim=0).min() > 1e-3  # no early stop anywhere


GRAD_BACKENDS = {**BACKENDS, "autograd": TorchBackend(tiles_per_batch=2, depth_chunk=3, analytic_backward=False)}


@pytest.mark.parametrize("backend", GRAD_BACKENDS.values(), ids=GRAD_BACKENDS.keys())
def test_gradcheck(backend):
    means, quats, scales, opacities, colors, camera, background = _smooth_scene()

    def run(means, quats, scales, opacities, colors):
        image, alpha = backend.rasterize(means, quats, scales, opacities, colors, camera, background)
        return image, alpha

    inputs = tuple(t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors))
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("max_opacity", [0.99, 0.99995], ids=["unclamped", "clamped"])
def test_analytic_backward_matches_autograd(max_opacity):
    """Also where alpha = min(0.999, o exp(-sigma)) clamps: no gradient flows there, as in gsplat."""
    means, quats, scales, opacities, colors, background = _scene(40, 16, 1)
    opacities = opacities * max_opacity / opacities.max()
    scales[opacities.argmax()] = 1.5  # large on screen: its alpha clamps around its centre if o > 0.999
    camera = _camera(40, 30)
    clamped = _pixel_alphas(means, quats, scales, opacities, camera, skip=False) > 0.999
    assert bool(clamped.any()) == (max_opacity > 0.999)
    grads = []
    for backend in (TorchBackend(analytic_backward=False), BACKEND, *GRAD_BACKENDS.values()):
        inputs = [t.double().requires_grad_() for t in (means, quats, scales, opacities, colors)]
        image, alpha = backend.rasterize(*inputs, camera, background)
        weights = torch.linspace(-1, 1, image.numel(), dtype=image.dtype).reshape(image.shape)
        ((image * weights).sum() + alpha.square().sum()).backward()
        grads.append([t.grad for t in inputs])
    for other in grads[1:]:
        for first, second in zip(grads[0], other):
            torch.testing.assert_close(first, second, atol=1e-9, rtol=1e-7)
    assert all(g.abs().sum() > 0 for g in grads[0])


def test_colour_only_gradients():
    """Distilling features with frozen geometry: only the colours require grad."""
    means, quats, scales, opacities, colors, background = _scene(40, 16, 1)
    grads = []
    means, quats, scales, opacities, background = (t.double() for t in (means, quats, scales, opacities, background))
    for backend in (BACKEND, TorchBackend(analytic_backward=False)):
        features = colors.double().requires_grad_()
        image, _ = backend.rasterize(means, quats, scales, opacities, features, _camera(40, 30), background)
        image.square().sum().backward()
        grads.append(features.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-9, rtol=1e-7)


def test_render_api_with_torch_backend():
    n, dim, width, height = 3, 16, 25, 19  # the centre pixel lies on the optical axis
    means = torch.tensor([[0.0, 0.0, 2.0], [0.05, 0.0, 3.0], [5.0, 5.0, -1.0]])  # an opaque one in front
    field = LanguageField(
        means=means,
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        log_scales=torch.log(torch.full((n, 3), 0.2)),
        opacity_logits=torch.full((n,), 12.0),
        sh=torch.randn(n, 4, 3, generator=torch.Generator().manual_seed(0)) * 0.3,
        features=torch.randn(n, dim, generator=torch.Generator().manual_seed(1)),
    ).validate()
    camera = Camera.from_camera_to_world(torch.eye(4), intrinsics(20.0, 20.0, width, height), width, height)
    assert get_backend("torch") is BACKEND and BACKEND.differentiable
    out = render(field, camera, features=field.features, background=(1.0, 1.0, 1.0), backend="torch")
    assert out.rgb.shape == (height, width, 3) and out.features.shape == (height, width, dim)
    assert out.depth.shape == (height, width) and out.alpha.shape == (height, width)
    centre = (height // 2, width // 2)
    assert abs(float(out.alpha[centre]) - 0.999) < 1e-5  # alpha clamp; the one behind is stopped early
    assert abs(float(out.depth[centre]) - 2.0) < 1e-4
    torch.testing.assert_close(out.features[centre], 0.999 * field.features[0], atol=1e-5, rtol=1e-5)
    assert torch.all(out.depth[out.alpha == 0] == 0) and (out.alpha == 0).any()


def test_tile_culling_keeps_every_pair_that_can_contribute():
    means, quats, scales, opacities, _, _ = _scene(60, 3, 5)
    opacities = opacities * torch.linspace(0.02, 1.0, 60)  # many faint Gaussians: smaller reach
    camera = _camera(64, 48)
    proj = project_gaussians(means, quats, scales, camera)
    gauss, tiles, tiles_x, tiles_y = bin_tiles(proj, opacities, 64, 48)
    binned = set(zip(gauss.tolist(), tiles.tolist()))
    assert len(binned) == len(gauss)
    assert torch.all(tiles[1:] >= tiles[:-1])
    same_tile = tiles[1:] == tiles[:-1]
    assert torch.all(proj.depths[gauss[1:]][same_tile] >= proj.depths[gauss[:-1]][same_tile])

    alphas = _pixel_alphas(means, quats, scales, opacities, camera)  # [V, H, W], 0 where skipped
    per_tile = alphas.reshape(len(alphas), tiles_y, TILE, tiles_x, TILE).amax(dim=(2, 4)).reshape(len(alphas), -1)
    visible_ids = proj.visible.nonzero().squeeze(1)
    needed = {(int(visible_ids[v]), int(t)) for v, t in (per_tile > 0).nonzero().tolist()}
    assert needed <= binned
    centre, radius = proj.means2d[visible_ids], proj.radii[visible_ids]
    limit = torch.tensor([tiles_x, tiles_y])
    low = torch.floor((centre - radius) / TILE).long().clamp(min=0).minimum(limit)
    high = torch.ceil((centre + radius) / TILE).long().clamp(min=0).minimum(limit)
    in_boxes = int((high - low).prod(-1).sum())
    assert len(binned) < 0.8 * in_boxes, "culling should drop tiles that the radius boxes touch needlessly"


def test_batches_limited_by_list_entries(monkeypatch):
    means, quats, scales, opacities, colors, background = _scene(40, 16, 1)
    camera = _camera(40, 30)
    image, alpha = BACKEND.rasterize(means, quats, scales, opacities, colors, camera, background)
    monkeypatch.setattr(torch_backend, "MAX_BATCH_ENTRIES", 10)  # one tile per batch
    small_image, small_alpha = BACKEND.rasterize(means, quats, scales, opacities, colors, camera, background)
    torch.testing.assert_close(small_image, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(small_alpha, alpha, atol=1e-5, rtol=0)
