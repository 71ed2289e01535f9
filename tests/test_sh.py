"""SH colour against gsplat's pure-torch oracle (private API, used only as a test oracle)."""

import pytest
import torch
from gsplat.cuda._torch_impl import _spherical_harmonics

from gags_viewer.render.sh import sh_to_rgb


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colour_matches_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    n, k = 500, (degree + 1) ** 2
    sh = torch.randn(n, k, 3, generator=g, dtype=torch.float64)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64)
    center = torch.tensor([0.3, -2.0, 4.0], dtype=torch.float64)
    expected = torch.clamp_min(_spherical_harmonics(degree, means - center, sh) + 0.5, 0.0)
    assert torch.allclose(sh_to_rgb(sh, means, center), expected, atol=1e-10)


def test_colour_depends_on_the_view_only_from_degree_one():
    sh = torch.zeros(1, 4, 3)
    sh[0, 0] = 0.5
    sh[0, 3] = 1.0  # the x-linear band
    means = torch.zeros(1, 3)
    left, right = sh_to_rgb(sh, means, torch.tensor([-1.0, 0, 0])), sh_to_rgb(sh, means, torch.tensor([1.0, 0, 0]))
    assert not torch.allclose(left, right)
    assert torch.allclose(
        sh_to_rgb(sh[:, :1], means, torch.tensor([-1.0, 0, 0])), sh_to_rgb(sh[:, :1], means, torch.tensor([1.0, 0, 0]))
    )
