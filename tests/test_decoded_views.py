"""Pixel mode keeps the last view's decoded pixels: a query change there decodes and renders nothing
(gags_viewer/language/decoded_views.py, pixel_relevancy.decode_pixels / score_pixels)."""

from __future__ import annotations

import copy
import threading

import torch

from gags_viewer.field.edit import shown_only
from gags_viewer.language.decoders import GagsClipDecoder, random_gags_decoder_state
from gags_viewer.language.engine import QueryEngine
from gags_viewer.language.pixel_relevancy import (
    FoldedRelevancy,
    covered_pixels,
    decode_pixels,
    fused_pixel_relevancy,
    score_pixels,
)
from gags_viewer.language.relevancy import TEMPERATURE
from tests.test_language_engine import BACKEND, FakeTextEncoder, camera, random_field

NEGATIVES = ["object", "stuff"]


class Spy:
    """Counts decoded rows and feature renders of every engine."""

    def __init__(self, monkeypatch):
        self.decoded_rows = 0
        self.renders = 0
        lock = threading.Lock()  # pixels are decoded on several threads
        hidden_and_norm = FoldedRelevancy.hidden_and_norm
        render_features = QueryEngine.render_features

        def counting_decode(folded, features):
            with lock:
                self.decoded_rows += features.shape[0]
            return hidden_and_norm(folded, features)

        def counting_render(engine, *args, **kwargs):
            self.renders += 1
            return render_features(engine, *args, **kwargs)

        monkeypatch.setattr(FoldedRelevancy, "hidden_and_norm", counting_decode)
        monkeypatch.setattr(QueryEngine, "render_features", counting_render)


def _reference(field, cam, queries):
    """The same query on an engine that keeps nothing (every pixel decoded and scored chunk by chunk)."""
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND, chunk_size=97, decoded_view_bytes=0)
    return engine.query(cam, queries, negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255).relevancy


def test_a_query_change_on_the_same_view_decodes_and_renders_nothing(monkeypatch):
    field, cam = random_field(), camera(40, 30)
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND, chunk_size=97)
    expected = _reference(field, cam, "plant; tea cup")
    spy = Spy(monkeypatch)
    engine.query(cam, "mug", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255)
    assert spy.decoded_rows > 0 and spy.renders == 1
    decoded, renders = spy.decoded_rows, spy.renders

    again = engine.query(cam, "plant; tea cup", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255)
    assert spy.decoded_rows <= decoded + 1 and spy.renders == renders  # one row: the new phrases' zero feature
    torch.testing.assert_close(again.relevancy, expected, atol=1e-5, rtol=0)
    assert again.render.rgb is not None and again.render.rgb.shape == (30, 40, 3)

    moved = camera(40, 30)
    moved.world_to_camera[0, 3] += 0.1
    engine.query(moved, "plant", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255)
    assert spy.decoded_rows > decoded and spy.renders == renders + 1  # another view: decoded again


def test_a_view_too_large_to_keep_is_decoded_every_time_with_the_same_result(monkeypatch):
    field, cam = random_field(), camera(40, 30)
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND, chunk_size=97, decoded_view_bytes=1000)
    spy = Spy(monkeypatch)
    engine.query(cam, "mug", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255)
    first = spy.decoded_rows
    result = engine.query(cam, "plant", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255)
    assert spy.decoded_rows == 2 * first > 0 and spy.renders == 2
    kept = QueryEngine(field, FakeTextEncoder(), backend=BACKEND, chunk_size=97)
    expected = kept.query(cam, "plant", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255).relevancy
    torch.testing.assert_close(result.relevancy, expected, atol=1e-5, rtol=0)


def test_a_display_copy_on_another_field_never_reuses_the_kept_view():
    """Selection views render a copy of the field through a shallow copy of the engine, which shares the
    cache: what was decoded from one field is never scored for the other."""
    field, cam = random_field(), camera(40, 30)
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND, chunk_size=97)
    engine.query(cam, "mug", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255)
    half = torch.arange(field.num_gaussians) % 2 == 0
    other = shown_only(field, half)
    display = copy.copy(engine)
    display.field = other
    got = display.query(cam, "mug", negatives=NEGATIVES, mode="pixel", min_decode_alpha=1 / 255).relevancy
    torch.testing.assert_close(got, _reference(other, cam, "mug"), atol=1e-5, rtol=0)
    assert (got - _reference(field, cam, "mug")).abs().max() > 1e-3  # the fields do differ in this view


def test_decoded_pixels_score_like_the_fused_path():
    g = torch.Generator().manual_seed(3)
    decoder = GagsClipDecoder.from_state_dict(random_gags_decoder_state(seed=2))
    text = torch.nn.functional.normalize(torch.randn(5, 512, generator=g), dim=-1)
    folded = FoldedRelevancy.build(decoder, text, 2, TEMPERATURE)
    feature_map = torch.randn(7, 9, 16, generator=g)
    alpha = torch.rand(7, 9, generator=g)
    alpha[0] = 0.0
    feature_map[0, :4] = 0.0  # empty pixels: the zero feature's relevancy
    zero = folded.zero_feature(16)
    for min_alpha in (0.0, 0.3):
        index = covered_pixels(feature_map, alpha, min_alpha)
        decoded = decode_pixels(folded, feature_map, index, chunk_size=5)
        assert [h.shape[0] for h in decoded.hidden] == [n.shape[0] for n in decoded.norm]
        assert sum(h.shape[0] for h in decoded.hidden) == index.numel() and decoded.hidden[0].shape[1] == 256
        got = score_pixels(folded, decoded, zero)
        expected = fused_pixel_relevancy(folded, feature_map, index, zero, chunk_size=6)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
