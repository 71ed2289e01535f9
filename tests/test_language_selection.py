"""The official per-Gaussian query (gags-method.md §4.7) against a direct, loop-by-loop implementation
written from the method text; and selections on the demo field against its own ground truth."""

import math

import numpy as np
import pytest
import torch

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import FieldMetadata, LanguageField
from gags_viewer.language.decoders import random_gags_decoder_state
from gags_viewer.language.engine import QueryEngine
from gags_viewer.language.selection import (
    GaussianSelector,
    OfficialRule,
    Term,
    combine,
    parse_selection,
    radius_vote,
)
from tests.test_language_decoders import conv_reference
from tests.test_language_engine import FakeTextEncoder

NEGATIVES = ["object", "things", "stuff", "texture"]


# -- the direct implementation of §4.7, one Gaussian at a time ------------------------------------------


def direct_relevancy(field, text, phrase, negatives):
    """Step 1-2a: decode the per-Gaussian 16-D features directly with CNN_decoder as a (16, N, 1) map (its
    1x1 convolutions written from §3.3, float64), then LERF relevancy per Gaussian (§4.1, exp form)."""
    state = {k: v.double() for k, v in field.decoder.items()}
    with torch.no_grad():
        decoded = conv_reference(state, field.features.double().T[:, :, None])[:, :, 0].T  # [N, 512]
    t_q = text.encode([phrase])[0].double()
    t_neg = text.encode(negatives).double()
    out = []
    for i in range(field.num_gaussians):
        phi = decoded[i]
        s_q = float(phi @ t_q)
        worst = 1.0
        for t_j in t_neg:
            s_j = float(phi @ t_j)
            worst = min(worst, math.exp(10 * s_q) / (math.exp(10 * s_q) + math.exp(10 * s_j)))
        out.append(worst)
    return np.array(out)


def direct_normalise(r):
    """Step 2b: o = clip(2·(r − min r) / (max(r − min r) + 1e-9) − 1, 0, 1)."""
    o = (r - r.min()) / ((r - r.min()).max() + 1e-9)
    return np.clip(2 * o - 1, 0, 1)


def direct_vote(mask, xyz, radius, fill_above, clear_below):
    """Step 4: count the masked points within radius (the point itself included); > fill sets, < clear clears."""
    out = mask.copy()
    for i in range(len(xyz)):
        count = 0
        for j in range(len(xyz)):
            if mask[j] and math.dist(xyz[i], xyz[j]) <= radius:
                count += 1
        if count > fill_above:
            out[i] = True
        elif count < clear_below:
            out[i] = False
    return out


def clustered_field(n=360, seed=0, side=0.12):
    """Gaussians in a small cube (neighbour counts within 0.05 span 0-40) with features in three clusters
    that are spatially coherent but noisy, so both the fill and the clear of the vote happen."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * side
    centres = torch.randn(3, 16, generator=g) * 2.0
    region = (means[:, 0] > side / 3).long() + (means[:, 0] > 2 * side / 3).long()
    features = centres[region] + torch.randn(n, 16, generator=g) * 1.5
    field = LanguageField(
        means=means,
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), math.log(0.01)),
        opacity_logits=torch.full((n,), 3.0),
        sh=torch.rand(n, 1, 3, generator=g),
        features=features,
        decoder=random_gags_decoder_state(seed=seed),
        metadata=FieldMetadata(),
    )
    return field.validate()


RULES = [OfficialRule(), OfficialRule(threshold=0.3, radius=0.07, fill_above=30, clear_below=6)]


@pytest.mark.parametrize("rule", RULES, ids=["official-constants", "other-constants"])
@pytest.mark.parametrize("phrase", ["mug", "plant"])
def test_official_rule_matches_the_direct_implementation(rule, phrase):
    field = clustered_field()
    text = FakeTextEncoder()
    selector = GaussianSelector(QueryEngine(field, text, backend="torch"))

    reference_r = direct_relevancy(field, text, phrase, NEGATIVES)
    r = selector.relevancy([phrase], NEGATIVES)[0].double().numpy()
    # float32 decode vs float64 arithmetic on unit vectors: relevancy (a sigmoid of 10·Δs) agrees to ~1e-5.
    assert np.abs(r - reference_r).max() < 1e-4

    o = direct_normalise(reference_r)
    raw = o > rule.threshold
    # No Gaussian sits closer to the threshold than the two implementations' normalised scores differ,
    # so float32 rounding cannot flip one (the bound holds for this input on any machine).
    difference = np.abs(direct_normalise(r) - o).max()
    assert np.abs(o - rule.threshold).min() > 2 * difference + 1e-6
    xyz = field.means.double().numpy().tolist()
    reference = direct_vote(raw, xyz, rule.radius, rule.fill_above, rule.clear_below)
    assert (reference != raw).any(), "the vote changes the mask here"
    if rule == OfficialRule() and phrase == "mug":
        assert (reference & ~raw).any() and (raw & ~reference).any(), "the vote both fills and clears here"

    mask = selector.term_masks([phrase], NEGATIVES, official=rule)[0].numpy()
    assert np.array_equal(mask, reference)
    # Step 4 alone on the same input mask.
    voted = radius_vote(torch.from_numpy(raw), field.means, rule.radius, rule.fill_above, rule.clear_below)
    assert np.array_equal(voted.numpy(), reference)


def test_vote_counts_the_gaussian_itself():
    # 12 points on a line 0.01 apart, radius just over 0.02 (±2 neighbours): the middle points see 5
    # selected points when all are selected.
    xyz = torch.tensor([[0.01 * i, 0.0, 0.0] for i in range(12)], dtype=torch.float64).float()
    everything = torch.ones(12, dtype=torch.bool)
    assert radius_vote(everything, xyz, 0.0201, fill_above=4, clear_below=0).all()
    lone = torch.zeros(12, dtype=torch.bool)
    lone[6] = True
    # only itself: count 1 -> cleared when clear_below = 2, kept when clear_below = 1
    assert not radius_vote(lone, xyz, 0.0201, fill_above=4, clear_below=2).any()
    assert radius_vote(lone, xyz, 0.0201, fill_above=4, clear_below=1).tolist() == lone.tolist()
    # 3 in a row fill their direct neighbours (one selected neighbour each) when fill_above = 0
    row = torch.zeros(12, dtype=torch.bool)
    row[5:8] = True
    filled = radius_vote(row, xyz, 0.0101, fill_above=0, clear_below=0)
    assert filled.nonzero().flatten().tolist() == [4, 5, 6, 7, 8]


def test_parse_and_combine():
    terms = parse_selection(" table ; -mug;;  red   cube; -mug ")
    assert terms == [Term("table"), Term("mug", True), Term("red cube")]
    masks = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    assert combine(terms, masks).tolist() == [True, False, True, True, False]


def test_selection_errors_and_rules():
    field = clustered_field(n=60)
    selector = GaussianSelector(QueryEngine(field, FakeTextEncoder(), backend="torch"))
    with pytest.raises(GagsError, match="at least one phrase to add"):
        selector.select("-mug", NEGATIVES)
    with pytest.raises(GagsError, match="unknown selection rule"):
        selector.select("mug", NEGATIVES, rule="fancy")
    with pytest.raises(GagsError, match="threshold"):
        selector.select("mug", NEGATIVES, official=OfficialRule(threshold=1.5))
    viewer = selector.select("mug", NEGATIVES, rule="viewer", threshold=0.5)
    raw = selector.engine.gaussian_relevancy(["mug"], NEGATIVES)[0]
    assert torch.equal(viewer.mask, raw > 0.5) and "viewer rule" in viewer.description
    official = selector.select("mug; -plant", NEGATIVES)
    assert "official" in official.description
    mug, plant = selector.term_masks(["mug", "plant"], NEGATIVES)
    assert torch.equal(official.mask, mug & ~plant)


# -- the demo field against its own ground truth ------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    from gags_viewer.demo import DEMO_FIELD
    from gags_viewer.demo.scene import CATALOG, NODE_INDEX, SceneConfig, make_scene
    from gags_viewer.viewer.commands import build_engine

    if not (DEMO_FIELD / "field.json").is_file():
        pytest.skip("demo field not built")
    from gags_viewer.field.load import load_field

    field = load_field(DEMO_FIELD)
    scene = make_scene(SceneConfig(seed=0))
    assert torch.allclose(scene.field.means, field.means, atol=1e-6), "the demo field keeps the scene's Gaussian order"
    engine = build_engine(field, DEMO_FIELD, torch.device("cpu"))
    return field, GaussianSelector(engine), scene.leaf, CATALOG, NODE_INDEX


def ground_truth(leaf, catalog, node_index, key):
    """Gaussians of region ``key`` (its own leaves, or the leaves of its parts)."""
    keys = {key} | {n.key for n in catalog if n.parent == key}
    return torch.isin(leaf, torch.tensor([node_index[k] for k in keys]))


@pytest.mark.parametrize(
    "phrase,key", [("red cube", "red_cube"), ("green ball", "green_ball"), ("lamp", "lamp"), ("cyan bowl", "cyan_bowl")]
)
def test_demo_selection_covers_the_labelled_object(demo, phrase, key):
    field, selector, leaf, catalog, node_index = demo
    truth = ground_truth(leaf, catalog, node_index, key)
    selection = selector.select(phrase)
    covered = (selection.mask & truth).sum() / truth.sum()
    precision = (selection.mask & truth).sum() / selection.mask.sum()
    assert covered >= 0.9, f"{phrase}: covers {float(covered):.2f} of the object's Gaussians"
    assert precision >= 0.8, f"{phrase}: {float(precision):.2f} of the selection is the object"


def test_demo_subtraction(demo):
    field, selector, leaf, catalog, node_index = demo
    lamp = selector.select("lamp").mask
    no_shade = selector.select("lamp; -lamp shade").mask
    shade = ground_truth(leaf, catalog, node_index, "lamp_shade")
    assert (no_shade & ~lamp).sum() == 0
    assert (no_shade & shade).sum() < 0.1 * (lamp & shade).sum()
