"""Vectorised region losses against direct per-region loops, and the loss composition of one view."""

import pytest
import torch

from gags_viewer.train import losses as L
from gags_viewer.train.distillation import distillation_losses
from gags_viewer.train.trainer import build_decoders
from tests.train_helpers import one_thread  # noqa: F401 (autouse: one torch thread in this module)


def random_region_map(height=13, width=17, num_ids=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(-1, num_ids, (height, width), generator=g) * 7  # sparse, non-contiguous ids
    ids[ids < 0] = -1
    ids[0, 0] = 1000  # a singleton region
    return ids


def test_region_balanced_mean_matches_loop_value_and_gradient():
    region = random_region_map()
    error = torch.rand(
        region.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True
    )
    fast = L.region_balanced_mean(error, L.group_regions(region))
    (grad_fast,) = torch.autograd.grad(fast, error)
    slow = L.loop_region_balanced_mean(error, region)
    (grad_slow,) = torch.autograd.grad(slow, error)
    assert torch.allclose(fast, slow, rtol=1e-12, atol=0)
    assert torch.allclose(grad_fast, grad_slow, rtol=1e-12, atol=1e-15)


def test_region_balanced_mean_is_a_direct_mean_of_means():
    region = torch.tensor([[0, 0, 5], [5, 5, -1]])
    error = torch.tensor([[1.0, 3.0, 4.0], [5.0, 6.0, 100.0]])
    # region 0: mean 2; region 5: mean 5 -> (2 + 5) / 2, the -1 pixel ignored
    assert L.region_balanced_mean(error, L.group_regions(region)).item() == pytest.approx(3.5)


def test_region_variance_matches_loop_value_and_gradient():
    region = random_region_map(seed=3)
    feats = torch.randn(
        *region.shape, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True
    )
    fast = L.region_variance_loss(feats, L.group_regions(region))
    (grad_fast,) = torch.autograd.grad(fast, feats)
    slow = L.loop_region_variance_loss(feats, region)
    (grad_slow,) = torch.autograd.grad(slow, feats)
    assert torch.allclose(fast, slow, rtol=1e-10)
    assert torch.allclose(grad_fast, grad_slow, rtol=1e-9, atol=1e-14)


def test_empty_region_map_gives_zero_attached_losses():
    region = torch.full((4, 5), -1)
    feats = torch.randn(4, 5, 3, requires_grad=True)
    regions = L.group_regions(region)
    for value in (L.region_balanced_mean(feats[..., 0], regions), L.region_variance_loss(feats, regions)):
        assert value.item() == 0.0
        value.backward()  # still part of the graph


def test_region_map_smooths_then_takes_finest_tie():
    seg = torch.stack([torch.full((5, 5), 10), torch.full((5, 5), 20), torch.full((5, 5), 30)])
    probs = torch.zeros(5, 5, 3)
    probs[..., 2] = 1.0
    probs[2, 2] = torch.tensor([1.0, 0.0, 0.0])  # a lone pixel: outvoted by the 5x5 neighbourhood
    assert (L.region_map(seg, probs, smooth=5) == 30).all()
    assert L.region_map(seg, probs, smooth=1)[2, 2] == 10
    equal = torch.full((5, 5, 3), 1 / 3)
    assert (L.region_map(seg, equal, smooth=5) == 10).all()  # ties go to the finest level


def test_mixed_target_and_entropy_by_hand():
    emb = torch.eye(4, 512)
    seg_valid = torch.tensor([[0, 1, 2], [3, 3, 0]])
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = L.mixed_target(emb, seg_valid, probs)
    assert torch.allclose(target[0, :4], torch.tensor([0.2, 0.3, 0.5, 0.0]))
    assert torch.allclose(target[1, :4], torch.tensor([0.1, 0.0, 0.0, 0.9]))
    p = torch.tensor([[[0.5, 0.25, 0.25]]])
    expected = -(0.5 * torch.log(torch.tensor(0.5 + 1e-6)) + 0.5 * torch.log(torch.tensor(0.25 + 1e-6))) / 3
    assert L.entropy_loss(p).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_view_losses_vectorised_equal_loop(variant):
    g = torch.Generator().manual_seed(5)
    H, W = 12, 14
    seg = torch.randint(-1, 6, (3, H, W), generator=g)
    seg[1] = torch.where(seg[1] >= 0, seg[1] + 6, seg[1])
    seg[2] = torch.where(seg[2] >= 0, seg[2] // 2 + 12, seg[2])
    emb = torch.nn.functional.normalize(torch.randn(16, 512, generator=g), dim=-1)
    clip_decoder, granularity_decoder = build_decoders(16, seed=0)
    feats = torch.randn(H, W, 16, generator=g, requires_grad=True)
    results = {}
    for impl in ("vectorised", "loop"):
        terms = distillation_losses(
            feats, seg, emb, clip_decoder, granularity_decoder, variant=variant, region_loss=impl
        )
        total = terms["distill"] + 0.002 * terms["entropy"] + 0.1 * terms["consistency"]
        grads = torch.autograd.grad(total, [feats, *clip_decoder.parameters(), *granularity_decoder.parameters()])
        results[impl] = (terms, grads)
    for key in ("distill", "entropy", "consistency"):
        assert torch.allclose(results["vectorised"][0][key], results["loop"][0][key], rtol=1e-5, atol=1e-8), key
    for a, b in zip(results["vectorised"][1], results["loop"][1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_official_distill_is_the_direct_formula():
    """Loop over regions of e(p) = mean_c |V (F̂ - Σ_l α_l E_l)|, written out naively per pixel."""
    g = torch.Generator().manual_seed(7)
    H, W = 6, 7
    seg = torch.randint(-1, 4, (3, H, W), generator=g)
    emb = torch.nn.functional.normalize(torch.randn(4, 512, generator=g), dim=-1)
    clip_decoder, granularity_decoder = build_decoders(16, seed=1)
    feats = torch.randn(H, W, 16, generator=g)
    with torch.no_grad():
        terms = distillation_losses(feats, seg, emb, clip_decoder, granularity_decoder, smoothing=1)
        probs = granularity_decoder(feats)
        decoded = clip_decoder(feats)
        sums, counts = {}, {}
        for y in range(H):
            for x in range(W):
                level = int(probs[y, x].argmax())
                rid = int(seg[level, y, x])
                if rid < 0:
                    continue
                if all(int(seg[level, y, x]) >= 0 for level in range(3)):
                    target = sum(probs[y, x, level] * emb[int(seg[level, y, x])] for level in range(3))
                    e = (decoded[y, x] - target).abs().mean()
                else:
                    e = torch.tensor(0.0)
                sums[rid] = sums.get(rid, 0.0) + float(e)
                counts[rid] = counts.get(rid, 0) + 1
        expected = sum(sums[r] / counts[r] for r in sums) / len(sums)
    assert terms["distill"].item() == pytest.approx(expected, rel=1e-5)


def test_single_scale_uses_constant_alpha():
    seg = torch.randint(0, 3, (3, 5, 6))
    emb = torch.nn.functional.normalize(torch.randn(3, 512), dim=-1)
    clip_decoder, granularity_decoder = build_decoders(16, seed=0)
    terms = distillation_losses(torch.randn(5, 6, 16), seg, emb, clip_decoder, granularity_decoder, single_scale="l")
    assert torch.equal(terms["region"], seg[2].long())
    assert (terms["probs"][..., 2] == 1).all()
