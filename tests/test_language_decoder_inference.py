"""CPU decoder inference: unit-major activations in reused buffers, units that are zero throughout a
chunk skipped (gags_viewer/language/decoder_inference.py)."""

from __future__ import annotations

import torch

from gags_viewer.language.decoder_inference import DENSE_ABOVE, Scratch, active_units
from gags_viewer.language.decoders import GagsClipDecoder, random_gags_decoder_state
from gags_viewer.language.pixel_relevancy import project

EPS = torch.finfo(torch.float32).eps


def _decoder_with_dead_units(dead: int) -> GagsClipDecoder:
    """A random GAGS decoder whose second layer never activates its first ``dead`` units (zero weights,
    negative bias), and whose third layer has NaN where it would read them: a product that reads them
    gives NaN."""
    decoder = GagsClipDecoder.from_state_dict(random_gags_decoder_state(seed=5)).requires_grad_(False)
    second, third = decoder.linears[1], decoder.linears[2]
    second.weight[:dead] = 0.0
    second.bias[:dead] = -1.0
    third.weight[:, :dead] = float("nan")
    return decoder


def _reference_hidden(decoder: GagsClipDecoder, x: torch.Tensor) -> torch.Tensor:
    """decoder.hidden without buffers, the NaN weights read as the 0 they are multiplied by. [P, 256]"""
    clean = GagsClipDecoder().requires_grad_(False)
    clean.load_state_dict(decoder.state_dict())
    clean.linears[2].weight.nan_to_num_(0.0)
    return clean.hidden(x)


def test_units_that_no_row_activates_are_not_read():
    """With a Scratch, the next layer does not read the units that are zero on every row of the chunk:
    the result is finite and equals the product with those terms dropped."""
    decoder = _decoder_with_dead_units(dead=128)
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = decoder.hidden(x, Scratch())
        reference = _reference_hidden(decoder, x)
        assert torch.isnan(decoder.hidden(x)).all()  # the plain product reads them
    assert torch.isfinite(got).all()
    # six more 256-wide layers after the changed sum: float32 sums of 256 terms, compounded
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)


def test_nan_features_are_not_mistaken_for_zero_units():
    """A feature channel that is 0 except for one NaN is still read: NaN stays NaN, in that row only."""
    decoder = GagsClipDecoder.from_state_dict(random_gags_decoder_state(seed=6)).requires_grad_(False)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    x[:, 3] = 0.0
    x[10, 3] = float("nan")
    with torch.no_grad():
        got = decoder.hidden(x, Scratch())
    assert torch.isnan(got[10]).all()
    assert torch.isfinite(torch.cat([got[:10], got[11:]])).all()


def test_active_units_gathers_the_nonzero_units_or_keeps_all():
    x_t = torch.zeros(10, 7)
    x_t[[1, 4, 8], 2] = torch.tensor([0.5, -2.0, 3.0])
    units, rows = active_units(x_t, Scratch())
    assert units is not None and units.tolist() == [1, 4, 8]
    torch.testing.assert_close(rows, x_t[[1, 4, 8]], rtol=0, atol=0)
    nearly_all = torch.ones(10, 7)
    nearly_all[0] = 0.0
    assert DENSE_ABOVE == 0.9  # 9 of 10 active is not above it: still gathered
    units, rows = active_units(nearly_all, Scratch())
    assert units is not None and units.tolist() == list(range(1, 10))
    everything = torch.ones(10, 7)
    units, rows = active_units(everything, Scratch())
    assert units is None and rows is everything


def test_scratch_slots_are_contiguous_and_reused():
    scratch, like = Scratch(), torch.empty(0)
    big = scratch.take(0, 256, 100, like)
    small = scratch.take(0, 16, 300, like)
    assert big.shape == (256, 100) and big.is_contiguous() and small.shape == (16, 300) and small.is_contiguous()
    assert small.data_ptr() == big.data_ptr()  # 4,800 elements fit in the 25,600 already held
    assert scratch.take(1, 16, 300, like).data_ptr() != big.data_ptr()


def test_inference_outputs_are_unit_major_and_project_reads_them_as_such():
    """Inference hands activations over as transposed views of [units, rows] tensors; ``project``
    gives the same product for them as for row-major ones."""
    decoder = GagsClipDecoder.from_state_dict(random_gags_decoder_state(seed=7)).requires_grad_(False)
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hidden = decoder.hidden(x, Scratch())
    assert hidden.shape == (300, 256) and hidden.t().is_contiguous() and not hidden.is_contiguous()
    projection = torch.randn(256, 7, generator=torch.Generator().manual_seed(3))
    expected = hidden.contiguous() @ projection
    bound = 2 * 256 * EPS * (hidden.abs() @ projection.abs())
    assert bool(((project(hidden, projection) - expected).abs() <= bound).all())
