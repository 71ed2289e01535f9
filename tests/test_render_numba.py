"""The fast forward-only numba backend: against the brute-force reference, the shared projection, the
torch backend, across thread counts, and with numba's on-disk cache unavailable."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from gags_viewer.render import numba_kernels, projection
from gags_viewer.render.api import get_backend
from gags_viewer.render.camera import Camera, intrinsics, look_at
from gags_viewer.render.numba_backend import BACKEND, NumbaBackend
from gags_viewer.render.projection import project_gaussians
from tests.float_bounds import projection_bounds, projection_violations
from tests.reference_render import (
    compare_renders,
    compare_to_reference,
    near_cut_pixels,
    reference_rasterize,
    reference_rasterize_with_cuts,
)

REPO = Path(__file__).resolve().parents[1]


def _camera(width: int, height: int, eye=(0.3, -0.6, -4.0), fov=55.0) -> Camera:
    return Camera.from_fov(look_at(list(eye), [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]), fov, width, height)


def _random_scene(n: int, channels: int, seed: int):
    """Anisotropic Gaussians around the origin; some behind the camera, some off-screen, some straddling
    the image border, one huge one covering several tiles, some sub-pixel ones, some (nearly) transparent,
    and a cluster of large opaque ones in which pixels saturate and stop early."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.2, 0.9, 1.0])
    quats = torch.randn(n, 4, generator=g)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    scales = torch.exp(torch.rand(n, 3, generator=g) * 3.0 - 4.2)  # 0.015 .. 0.3, anisotropic
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g)
    k = max(1, n // 10)
    means[0:k, 2] = -5.0 - torch.rand(k, generator=g)  # behind the camera (at z = -4)
    means[k : 2 * k, 0] = 7.0 + torch.rand(k, generator=g)  # off-screen to the side
    means[2 * k, :] = torch.tensor([2.05, 0.2, 0.0])  # straddles the right border
    means[2 * k + 1, :] = torch.tensor([0.1, -1.55, 0.3])  # straddles the top border
    scales[2 * k + 2] = torch.tensor([0.9, 0.5, 0.4])  # huge: covers many tiles
    opacities[2 * k + 2] = 0.35
    scales[2 * k + 3] = 1e-4  # sub-pixel: only the 0.3 px² low-pass keeps it visible
    opacities[2 * k + 4] = 0.0
    opacities[2 * k + 5] = 0.5 / 255.0  # never reaches alpha 1/255
    opaque = slice(2 * k + 6, 2 * k + 6 + n // 3)  # overlapping opaque cluster: early stops
    count = len(range(n)[opaque])
    means[opaque] = means[opaque] * 0.25
    scales[opaque] = 0.12 + 0.2 * torch.rand(count, 3, generator=g)
    opacities[opaque] = 0.96 + 0.039 * torch.rand(count, generator=g)
    colors = torch.rand(n, channels, generator=g) * 2.0 - 0.5
    background = 0.2 + 0.6 * torch.rand(channels, generator=g)
    return means, quats, scales, opacities, colors, background


def _saturated_pixels(means, quats, scales, opacities, camera) -> int:
    """Pixels whose product of (1 - alpha) over all Gaussians falls to the stop threshold."""
    proj = project_gaussians(means.double(), quats.double(), scales.double(), camera)
    ys, xs = torch.meshgrid(torch.arange(camera.height) + 0.5, torch.arange(camera.width) + 0.5, indexing="ij")
    dx = proj.means2d[:, 0, None, None] - xs
    dy = proj.means2d[:, 1, None, None] - ys
    a, b, c = (proj.conics[:, i, None, None] for i in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = (opacities.double()[:, None, None] * torch.exp(-sigma)).clamp(max=0.999)
    alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255) & proj.visible[:, None, None], alpha, 0.0)
    return int((torch.prod(1 - alpha, dim=0) <= 1e-4).sum())


@pytest.mark.parametrize(
    "n, channels, width, height, seed",
    [(20, 3, 24, 18, 0), (40, 16, 40, 30, 1), (30, 3, 37, 29, 2), (36, 16, 17, 33, 3), (32, 3, 40, 30, 4)],
)
def test_matches_reference(n, channels, width, height, seed):
    means, quats, scales, opacities, colors, background = _random_scene(n, channels, seed)
    camera = _camera(width, height)
    image, alpha = BACKEND.rasterize(means, quats, scales, opacities, colors, camera, background)
    reference = reference_rasterize_with_cuts(means, quats, scales, opacities, colors, camera, background)
    ref_image, ref_alpha, _ = reference

    assert image.shape == (height, width, channels) and alpha.shape == (height, width)
    assert image.dtype == torch.float32 and alpha.dtype == torch.float32
    compare_to_reference(image, alpha, reference)
    # the scene exercises what it claims: early stops, uncovered background, culling
    assert _saturated_pixels(means, quats, scales, opacities, camera) > 0
    assert ref_alpha.min() < 0.05
    assert not project_gaussians(means, quats, scales, camera).visible.all()


def test_stop_rule_is_exclusive():
    """Two large opaque Gaussians on the optical axis, both at the 0.999 alpha clamp near the centre:
    the back one would bring T from 1e-3 to 1e-6 <= 1e-4, so it is skipped."""
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2)
    scales = torch.full((2, 3), 3.0)
    opacities = torch.tensor([1.0, 1.0])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    background = torch.tensor([0.0, 0.0, 0.5])
    camera = Camera.from_camera_to_world(
        look_at([0.0, 0.0, -4.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]), intrinsics(40.0, 40.0, 16, 16), 16, 16
    )
    image, alpha = BACKEND.rasterize(means, quats, scales, opacities, colors, camera, background)
    pixel = image[7, 7].double()  # centre (7.5, 7.5), half a pixel from both means
    assert float(alpha[7, 7]) == pytest.approx(0.999, abs=1e-6)
    assert pixel[1] == 0.0  # the green (back) Gaussian never contributes
    assert pixel[0] == pytest.approx(0.999, abs=1e-6)
    assert pixel[2] == pytest.approx(0.5 * 0.001, abs=1e-6)
    ref_image, ref_alpha = reference_rasterize(means, quats, scales, opacities, colors, camera, background)
    assert (image.double() - ref_image).abs().max() <= 1e-5


def _hard_projection_case(width: int, height: int):
    """Gaussians around the near plane, unnormalised quaternions and very anisotropic scales."""
    g = torch.Generator().manual_seed(7)
    n = 3000
    means = torch.randn(n, 3, generator=g) * torch.tensor([3.0, 2.0, 3.0])
    means[:50, 2] = torch.linspace(-4.0 + 0.005, -4.0 + 0.02, 50)  # around the near plane (camera at z=-4)
    quats = torch.randn(n, 4, generator=g) * torch.rand(n, 1, generator=g) * 3  # not normalised
    scales = torch.exp(torch.rand(n, 3, generator=g) * 8 - 8)  # 3e-4 .. 1, very anisotropic
    camera = Camera.from_camera_to_world(
        look_at([0.0, 0.0, -4.0], [0.2, 0.1, 0.0], [0.0, -1.0, 0.0]),
        intrinsics(70.0, 55.0, width, height, 0.4 * width, 0.55 * height),
        width,
        height,
    )
    return means, quats, scales, camera


def _one_ulp_apart(tensor: torch.Tensor, seed: int) -> torch.Tensor:
    """Each float32 value moved up, down or not at all by one unit in the last place, at random."""
    direction = torch.randint(-1, 2, tensor.shape, generator=torch.Generator().manual_seed(seed)).numpy()
    values = tensor.numpy()
    moved = np.where(
        direction > 0, np.nextafter(values, np.inf), np.where(direction < 0, np.nextafter(values, -np.inf), values)
    )
    return torch.from_numpy(moved.astype(np.float32))


def _violations(bounds, projected, camera) -> dict:
    return {name: int(bad.sum()) for name, bad in projection_violations(bounds, *projected, camera).items()}


@pytest.mark.parametrize("width, height", [(64, 48), (50, 70)])
def test_projection_twin_matches_shared_projection(width, height):
    """The numba projection and project_gaussians (the semantics' one source) both stay within what
    float32 guarantees of the float64 projection, Gaussian by Gaussian (tests/float_bounds.py): any
    summation order of their products, fused or not, passes; nothing here depends on this CPU."""
    means, quats, scales, camera = _hard_projection_case(width, height)
    bounds = projection_bounds(means, quats, scales, camera)
    assert 0 < int(bounds.exact.visible.sum()) < len(means)
    shared = project_gaussians(means, quats, scales, camera)
    numba_twin = NumbaBackend("numba").project(means, quats, scales, camera)
    clean = dict.fromkeys(("visibility", "radii", "means2d", "conics", "depths"), 0)
    assert _violations(bounds, (shared.means2d, shared.conics, shared.depths, shared.radii), camera) == clean
    assert _violations(bounds, numba_twin, camera) == clean


@pytest.mark.parametrize("width, height", [(64, 48), (50, 70)])
def test_projection_bounds_hold_for_inputs_one_ulp_apart(width, height):
    """A rounding anywhere is no bigger than moving an input by one ulp: projecting inputs moved by one ulp
    at random must stay inside the same bounds, on both paths."""
    means, quats, scales, camera = _hard_projection_case(width, height)
    bounds = projection_bounds(means, quats, scales, camera)
    moved = [_one_ulp_apart(t, seed) for seed, t in enumerate((means, quats, scales))]
    shared = project_gaussians(*moved, camera)
    clean = dict.fromkeys(("visibility", "radii", "means2d", "conics", "depths"), 0)
    assert _violations(bounds, (shared.means2d, shared.conics, shared.depths, shared.radii), camera) == clean
    assert _violations(bounds, NumbaBackend("numba").project(*moved, camera), camera) == clean


def test_projection_bounds_catch_a_wrong_low_pass(monkeypatch):
    """The bounds are tight enough to matter: a low-pass of 0.3001 px² instead of 0.3 is caught."""
    means, quats, scales, camera = _hard_projection_case(64, 48)
    bounds = projection_bounds(means, quats, scales, camera)
    monkeypatch.setattr(projection, "EPS_2D", 0.3001)
    wrong = project_gaussians(means, quats, scales, camera)
    assert _violations(bounds, (wrong.means2d, wrong.conics, wrong.depths, wrong.radii), camera)["conics"] > 100


def test_projection_choice_gives_the_same_image():
    means, quats, scales, opacities, colors, background = _random_scene(300, 5, 11)
    camera = _camera(70, 45)
    fast = NumbaBackend("numba").rasterize(means, quats, scales, opacities, colors, camera, background)
    shared = NumbaBackend("torch").rasterize(means, quats, scales, opacities, colors, camera, background)
    compare_renders(
        *fast, *shared, near_cut_pixels(means, quats, scales, opacities, camera), atol=1e-5, max_near_cut=0.1
    )


def test_thread_count_does_not_change_the_result(monkeypatch):
    """Force the parallel paths (they only start above a size) and compare with one thread: bitwise."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    means, quats, scales, opacities, colors, background = _random_scene(600, 4, 5)
    camera = _camera(96, 80)
    images = []
    for threads in (1, 2):
        monkeypatch.setattr(numba_kernels, "PARALLEL_MIN_GAUSSIANS", 0)
        monkeypatch.setattr(numba_kernels, "_PARALLEL_MIN_WORK", 0)
        with numba_kernels.using_threads(threads):
            images.append(BACKEND.rasterize(means, quats, scales, opacities, colors, camera, background))
    assert torch.equal(images[0][0], images[1][0]) and torch.equal(images[0][1], images[1][1])


def test_no_gradients_and_degenerate_inputs():
    means, quats, scales, opacities, colors, background = _random_scene(25, 3, 9)
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    assert BACKEND.differentiable is False
    image, alpha = BACKEND.rasterize(*leaves, _camera(20, 20), background)
    assert not image.requires_grad and not alpha.requires_grad

    camera = _camera(19, 13)
    empty = torch.zeros(0, 3)
    image, alpha = BACKEND.rasterize(
        empty, torch.zeros(0, 4), empty, torch.zeros(0), torch.zeros(0, 2), camera, torch.tensor([0.25, 0.5])
    )
    assert torch.equal(image, torch.tensor([0.25, 0.5]).expand(13, 19, 2)) and torch.equal(alpha, torch.zeros(13, 19))

    behind = means.clone()
    behind[:, 2] = -10.0  # everything behind the camera
    image, alpha = BACKEND.rasterize(behind, quats, scales, opacities, colors, camera, background)
    assert torch.equal(image, background.expand(13, 19, 3)) and torch.equal(alpha, torch.zeros(13, 19))

    # float64 inputs are accepted (and composited in float32)
    image64, _ = BACKEND.rasterize(
        means.double(),
        quats.double(),
        scales.double(),
        opacities.double(),
        colors.double(),
        _camera(20, 20),
        background.double(),
    )
    image32, _ = BACKEND.rasterize(means, quats, scales, opacities, colors, _camera(20, 20), background)
    assert image64.dtype == torch.float32 and (image64 - image32).abs().max() <= 1e-5


def test_matches_torch_backend_at_medium_size():
    g = torch.Generator().manual_seed(3)
    n = 3000
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.5, 1.0, 1.5])
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.5 - 3.5)
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 6, generator=g)
    background = torch.tensor([0.1, 0.2, 0.3, 0.0, 0.0, 1.0])
    camera = _camera(160, 120)
    ours = BACKEND.rasterize(means, quats, scales, opacities, colors, camera, background)
    with torch.no_grad():
        theirs = get_backend("torch").rasterize(means, quats, scales, opacities, colors, camera, background)
    compare_renders(
        *ours, *theirs, near_cut_pixels(means, quats, scales, opacities, camera), atol=1e-4, max_near_cut=0.1
    )
    assert 0.05 < float(ours[1].mean()) < 0.95


def test_render_entry_point_uses_numba():
    from gags_viewer.field.language_field import LanguageField
    from gags_viewer.render.api import render

    means, quats, scales, opacities, colors, _ = _random_scene(40, 4, 8)
    field = LanguageField(
        means=means,
        quats=quats,
        log_scales=scales.log(),
        opacity_logits=torch.logit(opacities.clamp(1e-4, 1 - 1e-4)),
        sh=torch.rand(40, 4, 3),
        features=colors,
    )
    camera = _camera(30, 22)
    with torch.no_grad():
        out = render(field, camera, features=field.features, background=(1.0, 1.0, 1.0), backend="numba")
        auto = render(field, camera, features=field.features, background=(1.0, 1.0, 1.0))
    assert out.rgb.shape == (22, 30, 3) and out.features.shape == (22, 30, 4) and out.depth.shape == (22, 30)
    assert torch.equal(out.rgb, auto.rgb) and torch.equal(out.alpha, auto.alpha)
    hit = out.alpha > 0.5
    assert hit.any() and (out.depth[hit] > 0).all()


_CACHE_PROBE = textwrap.dedent(
    """
    import os, shutil, sys, warnings
    import numpy as np
    from gags_viewer.render.numba_kernels import _kernel

    @_kernel()
    def double(x):
        return x * 2.0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if os.environ.get("BREAK_CACHE_DIR_AFTER_IMPORT"):
            path = os.environ["NUMBA_CACHE_DIR"]
            shutil.rmtree(path)
            open(path, "w").close()  # the directory picked at import time is now a file
        result = double(np.arange(3.0))
    assert list(result) == [0.0, 2.0, 4.0], result
    print("WARNINGS:", " | ".join(str(w.message) for w in caught))
    """
)


@pytest.mark.parametrize("case", ["user-cache-dir", "no-writable-location", "cache-dir-broken-after-import"])
def test_kernels_cache_with_a_read_only_package(tmp_path, case):
    """With a read-only package directory numba caches in the user's cache directory; when no location
    is writable it raises, and the kernels warn and compile in memory instead.

    A read-only package directory is simulated with a ``__pycache__`` that is a file (this also holds
    for root, who ignores permission bits)."""
    package = tmp_path / "readonly_pkg"
    package.mkdir()
    (package / "__pycache__").write_text("not a directory")
    (package / "probe.py").write_text(_CACHE_PROBE)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("NUMBA_CACHE_DIR", None)
    if case == "user-cache-dir":
        env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    elif case == "no-writable-location":
        env.update(NUMBA_CACHE_DIR="/dev/null/numba", XDG_CACHE_HOME="/dev/null/xdg", HOME="/dev/null/home")
    else:
        cache = tmp_path / "cache"
        cache.mkdir()
        env.update(NUMBA_CACHE_DIR=str(cache), BREAK_CACHE_DIR_AFTER_IMPORT="1")
    done = subprocess.run(
        [sys.executable, str(package / "probe.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    if case == "user-cache-dir":
        assert "compiled in memory" not in done.stdout + done.stderr
        assert list((tmp_path / "xdg" / "numba").rglob("probe.double-*.nbi")), "no cache index written"
    else:
        assert "compiled in memory" in done.stdout + done.stderr  # the warning (at import or first call)
