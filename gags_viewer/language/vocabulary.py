"""A CLIP model trained on a fixed vocabulary (the bundled demo model), and phrases far from it.

Such a model ships ``<config stem>.vocabulary.json`` next to its open_clip config::

    {"model": "the demo CLIP model", "phrases": ["tower", "red cube", ...]}

A general CLIP has no such file. With one, a query whose text embedding is far from every trained phrase
(cosine similarity below :data:`FAR_SIMILARITY`) can be flagged: its highlight means little.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from gags_viewer.field.language_field import ClipSpec

FAR_SIMILARITY = 0.9
"""Below this cosine similarity to every trained phrase, a query is "far" from the vocabulary (on the
demo model, rewordings of trained phrases score >= 0.97, unrelated words <= 0.77)."""
VOCABULARY_SUFFIX = ".vocabulary.json"


def vocabulary_json(phrases: Sequence[str], model: str) -> str:
    """The text of a vocabulary file for ``phrases`` of ``model`` (a human name)."""
    return json.dumps({"model": model, "phrases": list(phrases)}, indent=1) + "\n"


@dataclass
class Vocabulary:
    """The phrases a CLIP model was trained on, with their embeddings computed on first use.

    Attributes:
        model: a human name of the model ("the demo CLIP model").
        phrases: the trained phrases.
    """

    model: str
    phrases: tuple[str, ...]
    _embeddings: Tensor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def examples(self, count: int = 6) -> list[str]:
        return list(self.phrases[:count])

    def far_phrases(
        self, phrases: Sequence[str], encode: Callable[[list[str]], Tensor], threshold: float = FAR_SIMILARITY
    ) -> list[str]:
        """The ``phrases`` whose embedding is far from every trained phrase.

        Args:
            encode: phrases -> L2-normalised text embeddings [K, E] of this model.
        """
        if not phrases:
            return []
        with self._lock:
            if self._embeddings is None:
                self._embeddings = encode(list(self.phrases)).float().cpu()
        queries = encode(list(phrases)).float().cpu()
        best = (queries @ self._embeddings.T).max(dim=1).values  # [K]
        return [p for p, s in zip(phrases, best.tolist()) if s < threshold]


def vocabulary_for(spec: ClipSpec) -> Vocabulary | None:
    """The vocabulary file next to the (resolved) spec's model config, or None (a general CLIP)."""
    if not spec.config_file:
        return None
    config = Path(spec.config_file)
    path = config.with_name(config.stem + VOCABULARY_SUFFIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        phrases = tuple(str(p) for p in data["phrases"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Vocabulary(model=str(data.get("model") or spec.model), phrases=phrases) if phrases else None


def far_phrase_note(vocabulary: Vocabulary, phrases: Sequence[str], encode: Callable[[list[str]], Tensor]) -> str:
    """One line naming the phrases far from the vocabulary ("" when none is)."""
    far = vocabulary.far_phrases(phrases, encode)
    if not far:
        return ""
    names = ", ".join(f"'{p}'" for p in far)
    verb = "is" if len(far) == 1 else "are"
    return (
        f"{names} {verb} far from every phrase {vocabulary.model} was trained on: "
        "the highlight means little (try a phrase like those above)"
    )
