"""3D selection: which Gaussians a query selects (the official GAGS per-Gaussian query, gags-method.md §4.7).

The official rule, per query phrase:

1. decode every Gaussian's own feature to CLIP space (no rendering, no neighbour averaging);
2. LERF relevancy r per Gaussian, then o = clip(2·minmax(r) − 1, 0, 1) over all Gaussians;
3. selected where o > ``threshold`` (0.4);
4. a radius-neighbour vote on the Gaussian centres: count the selected Gaussians within ``radius``
   (0.05, the Gaussian itself included) of every Gaussian; a count above ``fill_above`` (20) selects it,
   a count below ``clear_below`` (10) clears it, anything in between keeps step 3's answer. Every count
   is taken on step 3's mask (one pass, not iterated).

The "viewer" rule is the display rule: raw relevancy (not normalised) of the engine's gaussian mode above
a threshold, no vote. It exists for comparison (``gags-viewer select --rule viewer``); selection, the
matches export and editing use the official rule.

On a field with several feature levels (LangSplat) each phrase keeps, per Gaussian, its relevancy at the
level where that relevancy peaks highest over all Gaussians (:func:`~gags_viewer.language.langsplat.gaussian_levels`).

Several phrases combine: ``"table; -mug"`` selects what "table" selects minus what "mug" selects (union
of the plain phrases, minus the union of the ``-`` phrases).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.language.langsplat import gaussian_levels, pick_levels, split_levels
from gags_viewer.language.relevancy import check_phrases, normalize_scores, relevancy_from_similarities

RuleName = Literal["official", "viewer"]
RULES: tuple[str, ...] = ("official", "viewer")


@dataclass(frozen=True)
class OfficialRule:
    """Constants of the official per-Gaussian query (gags-method.md §4.7; ``compute_relvancy.py``).

    Attributes:
        threshold: on the normalised relevancy o = clip(2·minmax(r) − 1, 0, 1).
        radius: neighbourhood radius of the vote, in world units of the field.
        fill_above: a Gaussian with more selected neighbours than this is selected.
        clear_below: a Gaussian with fewer selected neighbours than this is cleared.
    """

    threshold: float = 0.4
    radius: float = 0.05
    fill_above: int = 20
    clear_below: int = 10

    def checked(self) -> OfficialRule:
        if not 0.0 <= self.threshold <= 1.0:
            raise GagsError(f"selection threshold must be in [0, 1], got {self.threshold}")
        if not self.radius >= 0.0:
            raise GagsError(f"selection radius must be 0 or more, got {self.radius}")
        if self.clear_below > self.fill_above + 1:
            raise GagsError(f"clear-below ({self.clear_below}) must not exceed fill-above + 1 ({self.fill_above + 1})")
        return self

    def describe(self) -> str:
        return (
            f"official GAGS 3D query (§4.7): normalised relevancy > {self.threshold:g}, radius {self.radius:g} "
            f"vote (fill > {self.fill_above}, clear < {self.clear_below})"
        )


def describe_rule(rule: RuleName, official: OfficialRule = OfficialRule(), threshold: float = 0.5) -> str:
    """One line naming a selection rule and its constants (for exports, reports and the CLI)."""
    if rule == "official":
        return official.describe()
    return f"viewer rule: raw gaussian-mode relevancy > {threshold:g}, no vote"


def radius_vote(mask: Tensor, means: Tensor, radius: float, fill_above: int, clear_below: int) -> Tensor:
    """Step 4 of the official rule: fill and clear ``mask`` by a count of selected neighbours.

    Args:
        mask: selected Gaussians before the vote. [N] bool
        means: Gaussian centres. [N, 3]
        radius: neighbourhood radius (a centre at distance ≤ radius counts, the Gaussian itself included).
        fill_above: count > fill_above selects.
        clear_below: count < clear_below clears.

    Returns:
        The voted mask, on the device of ``mask``. [N] bool
    """
    from scipy.spatial import cKDTree

    selected = mask.detach().cpu().numpy().astype(bool)
    counts = np.zeros(selected.shape[0], dtype=np.int64)
    if selected.any():
        points = means.detach().cpu().double().numpy()
        tree = cKDTree(points[selected])
        counts = np.asarray(tree.query_ball_point(points, r=radius, return_length=True, workers=-1), dtype=np.int64)
    out = np.where(counts > fill_above, True, np.where(counts < clear_below, False, selected))
    return torch.from_numpy(out).to(mask.device)


def official_masks(scores: Tensor, means: Tensor, rule: OfficialRule = OfficialRule()) -> Tensor:
    """Steps 2-4 of the official rule for each query.

    Args:
        scores: raw LERF relevancy per query and Gaussian (each Gaussian's own decoded feature). [K, N]
        means: Gaussian centres. [N, 3]
        rule: the constants.

    Returns:
        Selected Gaussians per query. [K, N] bool
    """
    normalised = normalize_scores(scores.float(), dim=1)
    raw = normalised > rule.threshold
    return torch.stack([radius_vote(row, means, rule.radius, rule.fill_above, rule.clear_below) for row in raw])


@dataclass(frozen=True)
class Term:
    """One phrase of a selection: added (union) or subtracted (``-`` prefix)."""

    phrase: str
    subtract: bool = False


def parse_selection(text: str) -> list[Term]:
    """Terms of a selection box: ``"table; -mug"`` -> [Term("table"), Term("mug", subtract=True)].

    Phrases are separated by ``;``, blanks dropped, inner whitespace collapsed, repeats dropped.
    """
    terms: list[Term] = []
    for part in text.split(";"):
        part = part.strip()
        subtract = part.startswith("-")
        phrase = " ".join(part[1:].split() if subtract else part.split())
        if phrase and Term(phrase, subtract) not in terms:
            terms.append(Term(phrase, subtract))
    return terms


def combine(terms: Sequence[Term], masks: Tensor) -> Tensor:
    """Union of the added terms' masks minus the union of the subtracted ones. masks: [T, N] -> [N] bool"""
    add = [m for t, m in zip(terms, masks) if not t.subtract]
    sub = [m for t, m in zip(terms, masks) if t.subtract]
    out = torch.stack(add).any(dim=0) if add else torch.zeros(masks.shape[1], dtype=torch.bool, device=masks.device)
    if sub:
        out = out & ~torch.stack(sub).any(dim=0)
    return out


@dataclass
class Selection:
    """The Gaussians a selection text selects.

    Attributes:
        mask: selected Gaussians. [N] bool
        terms: the parsed phrases.
        term_masks: what each term selects on its own. [T, N] bool
        rule: "official" or "viewer".
        description: one line naming the rule and its constants.
    """

    mask: Tensor
    terms: list[Term]
    term_masks: Tensor
    rule: str
    description: str

    @property
    def count(self) -> int:
        return int(self.mask.sum())


class GaussianSelector:
    """Selections on one field, with each Gaussian's own decoded CLIP feature and per-phrase masks cached.

    Args:
        engine: a :class:`~gags_viewer.language.engine.QueryEngine` (its decoder, text encoder, device and
            chunk size are used; its gaussian-mode features are not: the official rule decodes each
            Gaussian's own feature).
        mask_cache: how many (phrase, negatives, rule) masks stay cached.
    """

    def __init__(self, engine, mask_cache: int = 64):
        self.engine = engine
        self.field = engine.field
        self._lock = threading.RLock()
        self._clip: Tensor | None = None
        self._relevancy: OrderedDict[tuple, Tensor] = OrderedDict()
        self._masks: OrderedDict[tuple, Tensor] = OrderedDict()
        self._capacity = mask_cache

    def clip_features(self) -> Tensor:
        """Every Gaussian's own feature decoded to CLIP space (once per field). [N, E]; with L feature
        levels, level-major (row l·N + i: Gaussian i at level l). [L·N, E]"""
        with self._lock:
            if self._clip is None:
                levels = split_levels(self.field.features.to(self.engine.device), self.field.level_count)
                features = levels.reshape(-1, self.field.level_dim)
                self._clip = self.engine.clip_decoder.decode(features, self.engine.chunk_size)
            return self._clip

    def relevancy(self, phrases: Sequence[str], negatives: Sequence[str] | None = None) -> Tensor:
        """Raw LERF relevancy of each Gaussian's own decoded feature for each phrase. [K, N]"""
        negatives = self.engine.resolve_negatives(negatives)
        check_phrases(phrases, negatives)
        fresh: dict[tuple, Tensor] = {}
        with self._lock:
            missing = list(dict.fromkeys(p for p in phrases if (p, negatives) not in self._relevancy))
            if missing:
                clip = self.clip_features()
                text = self.engine.text_embeddings(list(missing) + list(negatives)).to(clip.dtype)
                sims = (clip @ text.T).float()  # [N, K' + M]
                k = len(missing)
                rel = relevancy_from_similarities(sims[:, :k], sims[:, k:], self.engine.temperature).T
                if self.field.level_count > 1:  # [K', L·N] -> each phrase at its level [K', N]
                    per_level = rel.reshape(k, self.field.level_count, -1).transpose(0, 1)
                    rel = pick_levels(per_level, gaussian_levels(per_level))
                for phrase, row in zip(missing, rel):
                    fresh[(phrase, negatives)] = row.contiguous()
                    self._remember(self._relevancy, (phrase, negatives), fresh[(phrase, negatives)])
            return torch.stack(
                [fresh[(p, negatives)] if (p, negatives) in fresh else self._relevancy[(p, negatives)] for p in phrases]
            )

    def term_masks(
        self,
        phrases: Sequence[str],
        negatives: Sequence[str] | None = None,
        *,
        rule: RuleName = "official",
        official: OfficialRule = OfficialRule(),
        threshold: float = 0.5,
    ) -> Tensor:
        """What each phrase selects on its own under ``rule``. [K, N] bool"""
        if rule not in RULES:
            raise GagsError(f"unknown selection rule '{rule}'; choose official or viewer")
        negatives = self.engine.resolve_negatives(negatives)
        official = official.checked()
        if rule == "viewer" and not 0.0 <= threshold <= 1.0:
            raise GagsError(f"threshold must be in [0, 1], got {threshold}")
        params = official if rule == "official" else float(threshold)
        out = []
        for phrase in phrases:
            key = (phrase, negatives, rule, params)
            with self._lock:
                cached = self._masks.get(key)
            if cached is None:
                if rule == "official":
                    cached = official_masks(self.relevancy([phrase], negatives), self.field.means, official)[0]
                else:
                    cached = self.engine.gaussian_relevancy([phrase], negatives)[0] > threshold
                with self._lock:
                    self._remember(self._masks, key, cached)
            out.append(cached)
        return torch.stack(out)

    def select(
        self,
        text: str | Sequence[Term],
        negatives: Sequence[str] | None = None,
        *,
        rule: RuleName = "official",
        official: OfficialRule = OfficialRule(),
        threshold: float = 0.5,
    ) -> Selection:
        """The Gaussians ``text`` selects ("table; -mug": union of the plain phrases minus the ``-`` ones).

        Raises:
            GagsError: no phrase to add, no negative phrase, or an unknown rule.
        """
        terms = parse_selection(text) if isinstance(text, str) else list(text)
        if not any(not t.subtract for t in terms):
            raise GagsError("the selection needs at least one phrase to add (a '-phrase' only subtracts)")
        masks = self.term_masks([t.phrase for t in terms], negatives, rule=rule, official=official, threshold=threshold)
        return Selection(combine(terms, masks), terms, masks, rule, describe_rule(rule, official, threshold))

    def _remember(self, cache: OrderedDict, key, value) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._capacity:
            cache.popitem(last=False)
