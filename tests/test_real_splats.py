"""Load the real splat scenes of ../shared/data/real-splats (skipped when that folder is absent)."""

import os

import pytest
import torch

from gags_viewer.field.load import load_field, save_field

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real-splats")

# file -> Gaussian count (from the folder's README)
SCENES = {
    "donut_fused.ply": 45_624,
    "plant.splat": 113_648,
    "spot_10k.splat": 10_000,
    "teapot_10k.splat": 10_000,
}


def _path(name):
    path = os.path.join(REAL, name)
    if not os.path.isfile(path):
        pytest.skip(f"real splat scene {name} not available (expected at {os.path.normpath(path)})")
    return path


@pytest.mark.parametrize("name", sorted(SCENES))
def test_real_scene_loads_with_plausible_values(name):
    field = load_field(_path(name))  # validate() already checked shapes and finiteness
    n = SCENES[name]
    assert field.num_gaussians == n
    assert field.sh.shape == (n, 1, 3)  # all four are SH degree 0
    assert field.features is None and field.decoder is None
    scales = field.scales()
    assert (scales > 0).all() and scales.max() < 10
    low, high = field.bounds()
    assert ((high - low) > 0).all() and ((high - low) < 100).all()
    assert torch.isfinite(field.opacity_logits).all()
    opacities = field.opacities()
    assert opacities.min() >= 0 and opacities.max() <= 1 and opacities.mean() > 0.05
    norms = field.quats.norm(dim=-1)
    assert (norms > 0).all()
    colour = 0.5 + 0.28209479177387814 * field.sh[:, 0, :]
    if name.endswith(".splat"):
        # Colour came from 8-bit RGB, so it is in [0, 1] up to float rounding; quaternions are ~unit.
        assert colour.min() >= -1e-6 and colour.max() <= 1 + 1e-6
        assert ((norms - 1).abs() < 0.05).all()
    else:
        # A trained PLY: DC colour may leave [0, 1] (the renderer clamps; donut has 86 % inside).
        inside = ((colour >= 0) & (colour <= 1)).all(dim=1).float().mean()
        assert inside > 0.75
        median = colour.median(dim=0).values
        assert (median > 0).all() and (median < 1).all()


def test_real_splat_sizes_match_readme():
    for name, count in SCENES.items():
        if name.endswith(".splat"):
            assert os.path.getsize(_path(name)) == 32 * count


def test_real_ply_native_round_trip(tmp_path):
    field = load_field(_path("donut_fused.ply"))
    save_field(field, tmp_path / "donut")
    again = load_field(tmp_path / "donut")
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(field, name), getattr(again, name)), name
    assert again.metadata == field.metadata
