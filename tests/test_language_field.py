"""LanguageField validation: every problem is named in one line."""

import dataclasses

import pytest
import torch

from gags_viewer.errors import FieldError
from gags_viewer.field.language_field import FieldMetadata, LanguageField


def _field(n=5, d=16, degree=1):
    return LanguageField(
        means=torch.zeros(n, 3),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.zeros(n, 3),
        opacity_logits=torch.zeros(n),
        sh=torch.zeros(n, (degree + 1) ** 2, 3),
        features=torch.zeros(n, d),
        decoder={"decoder.0.weight": torch.zeros(256, d, 1, 1), "decoder.0.bias": torch.zeros(256)},
    )


def test_a_good_field_validates_and_reports_its_sizes():
    field = _field().validate()
    assert (field.num_gaussians, field.sh_degree, field.feature_dim, field.has_language) == (5, 1, 16, True)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(quats=torch.zeros(5, 3)), r"quats must have shape \[5, 4\]"),
        (dict(log_scales=torch.zeros(4, 3)), r"log_scales must have shape \[5, 3\]"),
        (dict(sh=torch.zeros(5, 5, 3)), "5 coefficients per channel"),
        (dict(features=torch.zeros(4, 16)), r"features must have shape \[N=5, D\]"),
        (
            dict(opacity_logits=torch.tensor([0.0, float("nan"), 0, 0, 0])),
            r"opacities \(opacity_logits\) contain NaN or Inf \(1 Gaussian affected\)",
        ),
        (
            dict(
                means=torch.tensor(
                    [[0.0, float("nan"), float("inf")], [1, 1, 1], [float("inf"), 0, 0], [0, 0, 0], [0, 0, 0]]
                )
            ),
            r"positions \(means\) contain NaN or Inf \(2 Gaussians affected\)",
        ),
        (dict(means=torch.zeros(0, 3)), "no Gaussians"),
        (dict(features=torch.zeros(5, 8)), "feature dimension 8 does not match the decoder input dimension 16"),
        (dict(features=None), "has a decoder but no language features"),
        (dict(means=torch.zeros(5, 3, dtype=torch.int64)), "means must be floating point"),
    ],
)
def test_problems_are_named(change, message):
    with pytest.raises(FieldError, match=message) as excinfo:
        dataclasses.replace(_field(), **change).validate()
    assert "\n" not in str(excinfo.value)


def test_decoder_weights_with_inf_are_refused():
    field = _field()
    field.decoder["decoder.0.bias"][3] = float("inf")
    with pytest.raises(FieldError, match="decoder weight 'decoder.0.bias' contains NaN or Inf"):
        field.validate()


def test_metadata_round_trips_and_rejects_unknown_keys():
    meta = FieldMetadata(negatives=("object", "stuff"), example_queries=("lamp",))
    assert FieldMetadata.from_json(meta.to_json()) == meta
    with pytest.raises(FieldError, match="unknown metadata keys: colour"):
        FieldMetadata.from_json({"colour": 1})
    with pytest.raises(FieldError, match="'negatives' must be a list"):
        FieldMetadata.from_json({"negatives": "object"})
