"""The demo CLIP model's fixed vocabulary: shipped next to its config, and queries far from it flagged."""

from __future__ import annotations

import os

import pytest

from gags_viewer.demo import clip_model as dclip
from gags_viewer.language.vocabulary import Vocabulary, far_phrase_note, vocabulary_for, vocabulary_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
needs_assets = pytest.mark.skipif(
    not (dclip.ASSETS_DIR / dclip.CHECKPOINT_FILE).is_file(), reason="demo CLIP not built"
)


def test_committed_vocabulary_file_is_what_the_build_writes():
    path = dclip.ASSETS_DIR / dclip.VOCABULARY_FILE
    expected = vocabulary_json([p.text for p in dclip.vocabulary()], "the demo CLIP model")
    assert path.read_text(encoding="utf-8") == expected


def test_a_general_clip_has_no_vocabulary(tmp_path):
    from gags_viewer.field.language_field import ClipSpec

    assert vocabulary_for(ClipSpec()) is None
    (tmp_path / "m.json").write_text("{}")
    assert vocabulary_for(ClipSpec(model="m", config_file=str(tmp_path / "m.json"))) is None


@needs_assets
def test_out_of_vocabulary_queries_are_flagged_with_the_demo_model():
    from gags_viewer.language.clip_text import TextEncoder

    vocabulary = vocabulary_for(dclip.clip_spec())
    assert vocabulary is not None and "red cube" in vocabulary.phrases
    encode = TextEncoder(dclip.clip_spec(), device="cpu").encode
    far = vocabulary.far_phrases(["xqzv", "the red cube", "lamp", "teapot", "LAMP shade"], encode)
    assert far == ["xqzv", "teapot"]
    note = far_phrase_note(vocabulary, ["xqzv", "lamp"], encode)
    assert note.startswith("'xqzv' is far from every phrase the demo CLIP model was trained on")
    assert far_phrase_note(vocabulary, ["lamp"], encode) == ""


def test_far_phrases_by_cosine_similarity():
    import torch

    table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "near a": [0.95, 0.312], "between": [0.707, 0.707]}

    def encode(phrases):
        return torch.nn.functional.normalize(torch.tensor([table[p] for p in phrases]), dim=-1)

    vocabulary = Vocabulary(model="m", phrases=("a", "b"))
    assert vocabulary.far_phrases(["near a", "between", "b"], encode) == ["between"]
