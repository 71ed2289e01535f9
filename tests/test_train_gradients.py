"""Which parameters each loss term trains (gags-method.md §3.4-3.6), the granularity branch's
stop-gradient, and the paper variant's weighted L2 against its formula."""

import pytest
import torch

from gags_viewer.train import losses as L
from gags_viewer.train.distillation import distillation_losses
from gags_viewer.train.trainer import build_decoders
from tests.train_helpers import one_thread  # noqa: F401 (autouse: one torch thread in this module)


def _view(seed: int = 3, height: int = 9, width: int = 11):
    """A view where every pixel is supervised at all three levels, with several regions per level."""
    g = torch.Generator().manual_seed(seed)
    seg = torch.stack([torch.randint(0, 4, (height, width), generator=g) + 4 * level for level in range(3)])
    embeddings = torch.nn.functional.normalize(torch.randn(12, 512, generator=g), dim=-1)
    features = torch.randn(height, width, 16, generator=g, requires_grad=True)
    return features, seg, embeddings


def _gradient_norms(term: str, variant: str) -> dict[str, float]:
    features, seg, embeddings = _view()
    clip_decoder, granularity_decoder = build_decoders(16, seed=0)
    terms = distillation_losses(
        features, seg, embeddings, clip_decoder, granularity_decoder, variant=variant, smoothing=1
    )
    groups = {
        "features": [features],
        "clip decoder": list(clip_decoder.parameters()),
        "granularity decoder": list(granularity_decoder.parameters()),
    }
    flat = [p for params in groups.values() for p in params]
    grads = torch.autograd.grad(terms[term], flat, allow_unused=True)
    norms, start = {}, 0
    for name, params in groups.items():
        chunk = grads[start : start + len(params)]
        start += len(params)
        norms[name] = sum(float(g.norm()) if g is not None else 0.0 for g in chunk)
    return norms


# The distillation error trains the features and the CLIP decoder, and (through the mixed target
# Σ α_l E_l or the α-weighted L2) the granularity decoder; the entropy trains the granularity decoder
# only, because α is computed from *detached* features; the consistency term pulls features of one
# region together and trains neither decoder (the region map is an argmax, without gradient).
GRADIENT_FLOW = {
    "distill": {"features", "clip decoder", "granularity decoder"},
    "entropy": {"granularity decoder"},
    "consistency": {"features"},
}


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("term", sorted(GRADIENT_FLOW))
def test_each_loss_trains_exactly_its_parameters(term, variant):
    norms = _gradient_norms(term, variant)
    trained = {name for name, norm in norms.items() if norm > 0.0}
    assert trained == GRADIENT_FLOW[term], norms


def test_granularity_branch_sees_detached_features():
    """The features' gradient of the distillation error is the one with α held constant: α must not
    carry gradient back into the features (removing the stop-gradient changes this)."""
    features, seg, embeddings = _view(seed=5)
    clip_decoder, granularity_decoder = build_decoders(16, seed=2)
    terms = distillation_losses(features, seg, embeddings, clip_decoder, granularity_decoder, smoothing=1)
    (ours,) = torch.autograd.grad(terms["distill"], [features])

    # Same error with α frozen to its value: only the CLIP branch depends on the features.
    with torch.no_grad():
        alpha = granularity_decoder(features)
    region = L.region_map(seg, alpha, 1)
    valid = L.valid_mask(seg)
    target = L.mixed_target(embeddings, seg.permute(1, 2, 0)[valid], alpha[valid])
    error = torch.zeros(features.shape[:2]).masked_scatter(valid, L.l1_error(clip_decoder(features[valid]), target))
    frozen = L.region_balanced_mean(error, L.group_regions(region))
    (expected,) = torch.autograd.grad(frozen, [features])
    assert float(expected.norm()) > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-9)


def test_paper_weighted_l2_is_its_formula():
    """Σ_l α_l ‖F̂ − E_l‖² summed over channels, on numbers worked out by hand."""
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    prediction = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    seg_valid = torch.tensor([[0, 1, 2], [0, 0, 1]])
    alpha = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    # pixel 0: 0.2·(0.25+0.25) + 0.3·(0.25+0.25) + 0.5·(0.25+0.25) = 0.5
    # pixel 1: 0.6·0 + 0.3·0 + 0.1·(1 + 1) = 0.2
    error = L.weighted_l2_error(prediction, embeddings, seg_valid, alpha)
    torch.testing.assert_close(error, torch.tensor([0.5, 0.2]), rtol=0, atol=1e-6)


def test_paper_distill_is_the_direct_formula():
    """The paper variant's distillation term, written out per pixel and per region."""
    features, seg, embeddings = _view(seed=8, height=5, width=6)
    seg[0, 0, 0] = -1  # one unsupervised pixel: error 0, still counted in its region
    clip_decoder, granularity_decoder = build_decoders(16, seed=4)
    with torch.no_grad():
        terms = distillation_losses(
            features, seg, embeddings, clip_decoder, granularity_decoder, variant="paper", smoothing=1
        )
        alpha = granularity_decoder(features)
        decoded = clip_decoder(features)
        per_region: dict[int, list[float]] = {}
        for y in range(features.shape[0]):
            for x in range(features.shape[1]):
                rid = int(seg[int(alpha[y, x].argmax()), y, x])
                if rid < 0:
                    continue
                ids = [int(seg[level, y, x]) for level in range(3)]
                error = 0.0
                if min(ids) >= 0:
                    error = sum(
                        float(alpha[y, x, level]) * float((decoded[y, x] - embeddings[ids[level]]).square().sum())
                        for level in range(3)
                    )
                per_region.setdefault(rid, []).append(error)
        expected = sum(sum(v) / len(v) for v in per_region.values()) / len(per_region)
    assert terms["distill"].item() == pytest.approx(expected, rel=1e-5)
