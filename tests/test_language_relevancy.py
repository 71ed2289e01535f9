import math

import pytest
import torch

from gags_viewer.errors import GagsError
from gags_viewer.language.relevancy import (
    alpha_normalize,
    normalize_scores,
    parse_queries,
    relevancy,
    relevancy_from_similarities,
)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def direct_relevancy(phi, t_query, t_negatives):
    """LERF relevancy written out from its definition, one vector at a time, in float64."""
    s_q = float(phi @ t_query)
    values = []
    for t_neg in t_negatives:
        s_j = float(phi @ t_neg)
        values.append(math.exp(10 * s_q) / (math.exp(10 * s_q) + math.exp(10 * s_j)))
    return min(values)


def test_relevancy_equals_direct_computation():
    g = torch.Generator().manual_seed(0)
    phi = unit(torch.randn(6, 5, 512, generator=g, dtype=torch.float64))
    queries = unit(torch.randn(3, 512, generator=g, dtype=torch.float64))
    negatives = unit(torch.randn(4, 512, generator=g, dtype=torch.float64))
    # make some similarities large so that a naive exp would be poorly conditioned
    phi[0, 0] = unit(queries[0] * 5 + negatives[1])
    got = relevancy(phi.float(), queries.float(), negatives.float())
    assert got.shape == (6, 5, 3)
    for i in range(6):
        for j in range(5):
            for k in range(3):
                expected = direct_relevancy(phi[i, j], queries[k], negatives)
                assert abs(float(got[i, j, k]) - expected) < 1e-5


def test_relevancy_is_stable_for_extreme_similarities():
    q = torch.tensor([[100.0], [-100.0]])
    n = torch.tensor([[-100.0, 0.0], [100.0, 0.0]])
    out = relevancy_from_similarities(q, n)
    assert torch.isfinite(out).all()
    assert float(out[0, 0]) == pytest.approx(1.0)
    assert float(out[1, 0]) == pytest.approx(0.0)


def test_relevancy_needs_a_negative():
    with pytest.raises(GagsError):
        relevancy_from_similarities(torch.zeros(3, 1), torch.zeros(3, 0))


def test_parse_queries():
    assert parse_queries(" mug;  plant ;; tea cup ") == ["mug", "plant", "tea cup"]
    assert parse_queries(" ; ") == []


def test_alpha_normalize():
    alpha = torch.tensor([[0.5, 0.0], [1.0, 0.25]])
    accumulated = torch.stack([alpha * 0.8, alpha * 0.2], dim=-1)  # [H, W, 2]
    out = alpha_normalize(accumulated, alpha)
    assert out.shape == (2, 2, 2)
    torch.testing.assert_close(out[0], torch.tensor([[0.8, 0.0], [0.8, 0.8]]))
    torch.testing.assert_close(out[1], torch.tensor([[0.2, 0.0], [0.2, 0.2]]))


def test_normalize_scores_per_query():
    r = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.2, 0.4]])
    out = normalize_scores(r, dim=1)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
