"""Neighbour-averaged per-Gaussian features (the fast query mode's decode input)."""

import torch

from gags_viewer.field.neighbours import nearest_neighbours, neighbour_smoothed_features


def brute_force_smoothing(means, sizes, features, k, bandwidth=2.0):
    """Reference: all pairwise distances, the k smallest per row, Gaussian weights times the clamped cosine
    of the features, weighted mean."""
    distances = torch.cdist(means.double(), means.double())  # [N, N]
    nearest, index = distances.topk(k, dim=1, largest=False)
    weights = torch.exp(-0.5 * (nearest / (bandwidth * sizes.double()[:, None])) ** 2)
    unit = torch.nn.functional.normalize(features.double(), dim=-1)
    weights = weights * (unit[:, None, :] * unit[index]).sum(-1).clamp_min(0)
    weights[:, 0] = 1.0
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (weights[..., None] * features.double()[index]).sum(dim=1).to(features.dtype)


def cloud(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g), torch.rand(n, generator=g) * 0.05 + 0.02, torch.randn(n, 16, generator=g)


def test_matches_brute_force():
    means, sizes, features = cloud()
    for k in (2, 8, 20):
        expected = brute_force_smoothing(means, sizes, features, k)
        torch.testing.assert_close(
            neighbour_smoothed_features(means, sizes, features, k), expected, atol=1e-5, rtol=1e-5
        )


def test_nearest_neighbours_start_with_the_point_itself():
    means, _, _ = cloud(50)
    distances, indices = nearest_neighbours(means, 5)
    assert distances.shape == indices.shape == (50, 5)
    assert torch.equal(indices[:, 0], torch.arange(50)) and torch.all(distances[:, 0] == 0)
    assert torch.all(distances[:, 1:] >= distances[:, :-1])
    assert nearest_neighbours(means[:3], 8)[1].shape == (3, 3)  # k clamped to N


def test_isolated_gaussians_and_constant_features_are_unchanged():
    means, sizes, features = cloud(40)
    spread = means * 100.0  # neighbours are thousands of sizes away: weight ~ 0
    torch.testing.assert_close(neighbour_smoothed_features(spread, sizes, features, 8), features)
    constant = torch.ones(40, 16) * 0.3
    torch.testing.assert_close(neighbour_smoothed_features(means, sizes, constant, 8), constant)


def test_k_one_is_the_identity_and_noise_around_a_shared_feature_shrinks():
    means, sizes, noise = cloud(400)
    features = torch.ones(400, 16) + 0.3 * noise
    assert neighbour_smoothed_features(means, sizes, features, 1) is features
    smoothed = neighbour_smoothed_features(means, sizes * 4, features, 8)
    assert (smoothed - 1).var() < 0.5 * (features - 1).var()  # independent noise averaged over neighbours


def test_touching_objects_with_different_features_do_not_bleed():
    means, sizes, _ = cloud(400)
    features = torch.zeros(400, 16)
    left = means[:, 0] < 0.5
    features[left, 0], features[~left, 1] = 1.0, 2.0  # orthogonal features, objects in contact at x = 0.5
    smoothed = neighbour_smoothed_features(means, sizes * 4, features, 8)
    torch.testing.assert_close(smoothed, features)


def test_zero_features_stay_zero():
    means, sizes, features = cloud(50)
    features[::2] = 0.0
    smoothed = neighbour_smoothed_features(means, sizes * 4, features, 8)
    assert torch.isfinite(smoothed).all() and torch.all(smoothed[::2] == 0)
