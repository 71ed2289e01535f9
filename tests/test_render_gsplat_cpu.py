"""The gsplat backend's pipeline (projection, SH for visible Gaussians only, channel groups) run on the CPU
with pure-torch twins of gsplat's primitives (tests/gsplat_cpu_ops.py), against the brute-force reference
and the torch backend."""

import pytest
import torch

from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.api import activations, render
from gags_viewer.render.camera import Camera, look_at
from gags_viewer.render.channel_groups import CALL_COST_IN_CHANNELS, channel_groups, padded_channels
from gags_viewer.render.gsplat_backend import GsplatBackend
from gags_viewer.render.projection import project_gaussians
from gags_viewer.render.sh import sh_to_rgb
from tests.gsplat_cpu_ops import CpuOps
from tests.reference_render import compare_renders, compare_to_reference, near_cut_pixels, reference_rasterize_with_cuts

BEHIND, OFF_SCREEN = 5, 4  # Gaussians of _field that no camera of _camera sees


def _camera(width: int, height: int) -> Camera:
    return Camera.from_fov(look_at([0.3, -0.5, -4.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]), 55.0, width, height)


def _field(n: int, seed: int, degree: int = 3, channels: int = 16) -> LanguageField:
    """Random anisotropic Gaussians with SH colours: BEHIND of them metres behind the camera, OFF_SCREEN
    far to the side, the rest in view (some large and opaque, so that pixels stop early)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.8, 0.6, 0.8])
    means[:BEHIND, 2] = -8.0 - torch.rand(BEHIND, generator=g)  # the camera is at z = -4, looking at +z
    means[BEHIND : BEHIND + OFF_SCREEN, 0] = 20.0 + torch.rand(OFF_SCREEN, generator=g)
    log_scales = torch.rand(n, 3, generator=g) * 2.5 - 4.0  # 0.02 .. 0.22
    log_scales[-n // 4 :] = torch.log(0.2 + 0.2 * torch.rand(n // 4, 3, generator=g))
    opacity_logits = torch.randn(n, generator=g) * 2
    opacity_logits[-n // 4 :] = 4.0 + torch.rand(n // 4, generator=g)  # opacity > 0.98
    return LanguageField(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        log_scales=log_scales,
        opacity_logits=opacity_logits,
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.4,
        features=torch.randn(n, channels, generator=g),
    )


def _inputs(field: LanguageField):
    """(means, unit quats, scales, opacities) as the backends take them."""
    return (field.means, *activations(field))


# -- the channel-group rule ------------------------------------------------------------------------------


def test_padded_channels_follows_gsplat():
    assert [padded_channels(c) for c in (1, 3, 5, 6, 7, 9, 10, 16, 17, 18, 19, 20, 33, 34, 513)] == [
        1, 3, 5, 8, 8, 9, 16, 16, 17, 32, 32, 32, 33, 64, 513
    ]  # fmt: skip
    for bad in (0, 514):
        with pytest.raises(ValueError):
            padded_channels(bad)


@pytest.mark.parametrize(
    "blocks, expected",
    [
        ((3,), [(0, 3)]),
        ((16,), [(0, 16)]),
        ((17,), [(0, 17)]),  # 16 features + depth
        ((3, 16), [(0, 19)]),  # 1 call + 32 channels = 56 < 2 calls + 19 = 67
        ((3, 17), [(0, 20)]),
        ((3, 1), [(0, 4)]),
        ((3, 3), [(0, 6)]),  # 24 + 8 < 48 + 6
        ((3, 9), [(0, 12)]),
        ((3, 30), [(0, 33)]),  # no padding
    ],
)
def test_channel_groups_for_the_viewer_modes(blocks, expected):
    assert CALL_COST_IN_CHANNELS == 24  # the expected splits are worked out by hand for this cost
    assert channel_groups(blocks) == expected


@pytest.mark.parametrize(
    "blocks, call_cost, expected",
    [
        ((3, 16), 8, [(0, 3), (3, 19)]),  # 16 + 19 = 35 < 8 + 32; the cut at the rgb block, not 16 + 3
        ((3, 17), 8, [(0, 3), (3, 20)]),  # 36 < 40
        ((3, 16), 13, [(0, 19)]),  # 45 = 26 + 19: a tie, and fewer calls win
        ((2, 32), 24, [(0, 2), (2, 34)]),  # 48 + 34 = 82 < 24 + 64 = 88
    ],
)
def test_channel_groups_split_where_the_call_cost_allows(blocks, call_cost, expected):
    assert channel_groups(blocks, call_cost) == expected


def _work(sizes) -> int:
    return sum(CALL_COST_IN_CHANNELS + padded_channels(s) for s in sizes)


def _partitions(total: int, largest: int):
    """Every multiset of positive sizes summing to ``total`` (the work of a split does not depend on order)."""
    if total == 0:
        yield []
    for first in range(min(total, largest), 0, -1):
        for rest in _partitions(total - first, first):
            yield [first, *rest]


@pytest.mark.parametrize("total", range(1, 41))
def test_channel_groups_minimise_work_over_all_splits(total):
    groups = channel_groups([total])
    sizes = [stop - start for start, stop in groups]
    assert groups[0][0] == 0 and groups[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
    assert _work(sizes) == min(_work(sizes) for sizes in _partitions(total, total))


def test_channel_groups_split_more_than_513_channels():
    groups = channel_groups([3, 600])
    assert groups[-1][1] == 603 and all(1 <= b - a <= 513 for a, b in groups)
    assert _work([b - a for a, b in groups]) <= _work([3, 513, 87])


# -- the pipeline against the reference -------------------------------------------------------------------


@pytest.mark.parametrize(
    "with_sh, channels",
    [(True, 0), (False, 16), (True, 16), (True, 17), (True, 1), (True, 3), (True, 32)],  # 3 + 32: two calls
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(with_sh, channels, dtype):
    field = _field(40, seed=channels, channels=max(channels, 1))
    camera = _camera(40, 30)
    means, quats, scales, opacities = (t.to(dtype) for t in _inputs(field))
    sh = field.sh.to(dtype) if with_sh else None
    colors = field.features[:, :channels].to(dtype) if channels else None
    background = torch.linspace(0.2, 0.9, 3 * with_sh + channels, dtype=dtype)
    ops = CpuOps()
    image, alpha = GsplatBackend(ops.ops()).rasterize(
        means, quats, scales, opacities, colors, camera, background, sh=sh
    )

    w2c = camera.world_to_camera.double()
    centre = -w2c[:3, :3].T @ w2c[:3, 3]  # in float64: Camera.center rounds to float32
    expected_colors = [sh_to_rgb(field.sh.double(), means.double(), centre)] if with_sh else []
    expected_colors += [colors.double()] if channels else []
    reference = reference_rasterize_with_cuts(
        means.double(), quats.double(), scales.double(), opacities.double(), torch.cat(expected_colors, -1), camera,
        background.double(),
    )  # fmt: skip
    assert image.dtype == dtype and image.shape == (30, 40, 3 * with_sh + channels) and alpha.shape == (30, 40)
    if dtype == torch.float32:
        compare_to_reference(image, alpha, reference)
    else:  # in float64 only rounding is left
        assert (image - reference[0]).abs().max() <= 1e-9 and (alpha - reference[1]).abs().max() <= 1e-9
    assert reference[1].max() > 0.99 and reference[1].min() < 0.5  # opaque and see-through pixels


def test_sh_is_evaluated_for_visible_gaussians_only():
    field = _field(60, seed=7)
    camera = _camera(32, 24)
    ops = CpuOps()
    means, quats, scales, opacities = _inputs(field)
    image, _ = GsplatBackend(ops.ops()).rasterize(
        means, quats, scales, opacities, None, camera, torch.zeros(3), sh=field.sh
    )
    visible = int(project_gaussians(means.double(), quats.double(), scales.double(), camera).visible.sum())
    assert visible <= 60 - BEHIND - OFF_SCREEN
    assert [rows for name, rows in ops.calls if name == "spherical_harmonics"] == [visible]
    assert torch.isfinite(image).all()  # the rows left unevaluated (NaN in the twin) never reach a pixel


@pytest.mark.parametrize(
    "with_sh, channels, calls",
    [
        (True, 0, [3]),
        (False, 16, [16]),
        (True, 16, [32]),
        (True, 17, [32]),
        (True, 3, [8]),
        (True, 30, [33]),
        (True, 32, [3, 32]),
    ],
)
def test_one_projection_and_intersection_per_frame(with_sh, channels, calls):
    field = _field(12, seed=1, channels=max(channels, 1))
    ops = CpuOps()
    colors = field.features[:, :channels] if channels else None
    background = torch.zeros(3 * with_sh + channels)
    GsplatBackend(ops.ops()).rasterize(
        *_inputs(field), colors, _camera(20, 16), background, sh=field.sh if with_sh else None
    )
    names = [name for name, _ in ops.calls]
    expected = ["fully_fused_projection"] + ["spherical_harmonics"] * with_sh + ["isect_tiles", "isect_offset_encode"]
    assert names == expected + ["rasterize_to_pixels"] * len(calls)
    assert [channels for name, channels in ops.calls if name == "rasterize_to_pixels"] == calls


# -- through render(), against the torch backend ------------------------------------------------------------


@pytest.mark.parametrize(
    "rgb, features, depth",
    [
        (True, None, False),  # rgb mode
        (False, 16, False),  # pixel mode, features only
        (True, 16, False),  # pixel mode with rgb
        (True, 16, True),
        (True, 1, False),  # gaussian mode, K = 1
        (True, 3, True),  # gaussian mode, K = 3, with depth
        (True, 32, True),  # two rasterizer calls: 3 + 33
    ],
)
def test_render_matches_torch_backend(rgb, features, depth):
    """Both float32 paths are within 1e-4 of the float64 reference away from cuts (the backend tests
    above and tests/test_render_torch.py), so within 2e-4 of each other."""
    field = _field(48, seed=11, channels=32)
    camera = _camera(36, 28)
    scores = None if features is None else field.features[:, :features]
    background = (0.1, 0.5, 0.8)
    kwargs = dict(rgb=rgb, features=scores, depth=depth, background=background)
    ours = render(field, camera, backend=GsplatBackend(CpuOps().ops()), **kwargs)
    theirs = render(field, camera, backend="torch", **kwargs)

    def channels(out):
        parts = [out.rgb] if rgb else []
        parts += [out.features] if features else []
        parts += [(out.depth * out.alpha)[..., None]] if depth else []  # the composited depth
        return torch.cat(parts, dim=-1)

    assert (ours.rgb is None) == (not rgb) and (ours.features is None) == (features is None)
    assert (ours.depth is None) == (not depth)
    near_cut = near_cut_pixels(*_inputs(field), camera)
    compare_renders(channels(ours), ours.alpha, channels(theirs), theirs.alpha, near_cut, atol=2e-4)
