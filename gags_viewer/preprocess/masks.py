"""Mask sources: where the per-image masks of the three GAGS granularity levels come from.

GAGS segments every training image at three granularities (gags-method.md §2.4): ``s`` (subpart),
``m`` (part) and ``l`` (whole), plus a pooled ``default`` set. A :class:`MaskSource` turns one image
into such a :class:`LevelMasks`. Two implementations:

- :class:`GroundTruthMaskSource` (here): masks known in advance, e.g. rendered from a synthetic scene's
  part / object / group ids (the bundled demo).
- :class:`~gags_viewer.preprocess.sam.SamMaskSource`: granularity-aware prompting + SAM's three
  multimask outputs + mask NMS.

Everything downstream (CLIP crops, ``_f.npy`` / ``_s.npy``) only sees :class:`LevelMasks`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from gags_viewer.errors import GagsError

LEVELS = ("s", "m", "l")
"""The supervised granularity levels, finest first (channels 1..3 of ``_s.npy``)."""
ALL_LEVELS = ("default",) + LEVELS
"""Channel order of ``_s.npy`` and row order of ``_f.npy``."""


class MaskError(GagsError):
    """A mask source produced something unusable (wrong size, empty level, unknown image)."""


@dataclass
class LevelMasks:
    """The masks of one image at every level.

    Masks are boolean arrays of the image size. Within a level, list order is painting order: where two
    masks of a level overlap, the later one wins in ``_s.npy`` (as in the official code, §2.6).

    Attributes:
        s, m, l: Masks per level, each [H, W] bool.
        default: The pooled ``default`` level, or None to derive it (see :meth:`default_masks`).
        names: Optional human names per level, parallel to the mask lists (for debugging and labels).
    """

    s: list[np.ndarray] = field(default_factory=list)
    m: list[np.ndarray] = field(default_factory=list)
    l: list[np.ndarray] = field(default_factory=list)  # noqa: E741 - the official level name
    default: list[np.ndarray] | None = None
    names: dict[str, list[str]] = field(default_factory=dict)

    def level(self, name: str) -> list[np.ndarray]:
        """The masks of level ``name`` ("default", "s", "m" or "l")."""
        if name == "default":
            return self.default_masks()
        if name not in LEVELS:
            raise MaskError(f"unknown mask level {name!r}; expected one of {', '.join(ALL_LEVELS)}")
        return getattr(self, name)

    def default_masks(self) -> list[np.ndarray]:
        """The ``default`` level: given, or every distinct mask of l, m, s in that order (finer painted last)."""
        if self.default is not None:
            return self.default
        seen: set[bytes] = set()
        pooled = []
        for level in ("l", "m", "s"):
            for mask in getattr(self, level):
                key = np.packbits(mask).tobytes()
                if key not in seen:
                    seen.add(key)
                    pooled.append(mask)
        return pooled

    def shape(self) -> tuple[int, int]:
        """(H, W) shared by all masks; raises :class:`MaskError` when they disagree or there are none."""
        shapes = {tuple(m.shape) for level in ALL_LEVELS for m in self.level(level)}
        if len(shapes) != 1:
            raise MaskError(f"masks must share one 2-D shape, got {sorted(shapes) or 'no masks'}")
        shape = shapes.pop()
        if len(shape) != 2:
            raise MaskError(f"masks must be 2-D [H, W], got shape {list(shape)}")
        return shape  # type: ignore[return-value]


@runtime_checkable
class MaskSource(Protocol):
    """Anything that segments an image into the three granularity levels."""

    def __call__(self, image: np.ndarray, name: str) -> LevelMasks:
        """Segment one image.

        Args:
            image: RGB image. [H, W, 3] uint8 or float in [0, 1]
            name: the image's file name (sources with precomputed masks look it up by name; SAM ignores it).

        Returns:
            The image's masks, each [H, W] bool.
        """
        ...


def id_map_masks(
    ids: np.ndarray, min_pixels: int = 1, order: Sequence[int] | None = None
) -> tuple[list[np.ndarray], list[int]]:
    """Split an integer id map into one boolean mask per id (ids < 0 are "no mask").

    Args:
        ids: region id per pixel, -1 for none. [H, W] int
        min_pixels: ids covering fewer pixels are dropped (like SAM's minimum region area).
        order: painting order of the ids; default increasing id.

    Returns:
        (masks, ids): masks [H, W] bool and the id of each.
    """
    present, counts = np.unique(ids[ids >= 0], return_counts=True)
    keep = {int(i) for i, c in zip(present, counts) if c >= min_pixels}
    sequence = [int(i) for i in (order if order is not None else sorted(keep)) if int(i) in keep]
    return [ids == i for i in sequence], sequence


def ambiguous_levels(
    maps: Mapping[str, np.ndarray], probability: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Imitate SAM's view-dependent granularity on nested ground-truth id maps.

    SAM's three outputs for a prompt are not tied to fixed semantic levels: in one view the "whole"
    output of a prompt on a cube is the cube, in another the stack the cube stands in. Here, in each
    image, every region of a level independently keeps its coarser region at the next level with
    probability ``1 - probability``, or reports itself there instead. Levels stay nested (s ⊆ m ⊆ l).

    Args:
        maps: {"s", "m", "l"}: region ids per pixel, nested, -1 = none. [H, W] int each
        probability: chance that a region is reported in place of its coarser region.
        rng: the image's random generator.

    Returns:
        New {"s", "m", "l"} maps; s is unchanged.
    """
    out = {"s": np.asarray(maps["s"])}
    for fine, coarse in (("s", "m"), ("m", "l")):
        fine_ids, coarse_ids = out[fine], np.asarray(maps[coarse]).copy()
        for region in np.unique(fine_ids[fine_ids >= 0]):
            if rng.random() < probability:
                coarse_ids[fine_ids == region] = region
        out[coarse] = coarse_ids
    return out


class GroundTruthMaskSource:
    """Masks from known per-pixel region ids, looked up by image name (the synthetic demo scene).

    Args:
        id_maps: per image name, region ids per level: ``{"s": [H, W], "m": [H, W], "l": [H, W]}``
            int arrays with -1 for pixels outside every region.
        names: optional region names by id (for :attr:`LevelMasks.names`).
        min_pixels: regions smaller than this many pixels in an image are dropped.
        ambiguity: probability that a region is reported in place of its coarser region at the next
            level, drawn per image and region (:func:`ambiguous_levels`). 0 gives the exact levels.
            Perfect, view-consistent masks at every level give the granularity-aware distillation no
            reason to prefer a level, and it then drifts to the coarsest (its regions have the fewest
            boundaries); SAM's masks are view-dependent at the coarse levels, which is what lets GAGS
            pick the consistent level. This imitates that.
        seed: seeds the ambiguity, together with the image name (deterministic per image).
    """

    def __init__(
        self,
        id_maps: Mapping[str, Mapping[str, np.ndarray]],
        names: Mapping[int, str] | None = None,
        min_pixels: int = 1,
        ambiguity: float = 0.0,
        seed: int = 0,
    ):
        self.id_maps = id_maps
        self.region_names = dict(names or {})
        self.min_pixels = int(min_pixels)
        self.ambiguity = float(ambiguity)
        self.seed = int(seed)

    def level_maps(self, name: str) -> dict[str, np.ndarray]:
        """The id maps of an image as this source reports them (ambiguity applied). {level: [H, W]}"""
        if name not in self.id_maps:
            raise MaskError(f"no ground-truth masks for image '{name}'")
        maps = self.id_maps[name]
        if self.ambiguity <= 0:
            return {level: np.asarray(maps[level]) for level in LEVELS}
        digest = int.from_bytes(hashlib.sha256(f"{self.seed}:{name}".encode()).digest()[:8], "little")
        return ambiguous_levels(maps, self.ambiguity, np.random.default_rng(digest))

    def __call__(self, image: np.ndarray, name: str) -> LevelMasks:
        maps = self.level_maps(name)
        result = LevelMasks()
        for level in LEVELS:
            ids = np.asarray(maps[level])
            if tuple(ids.shape) != tuple(image.shape[:2]):
                raise MaskError(
                    f"ground-truth {level} map of '{name}' is {ids.shape[1]}x{ids.shape[0]}, image is "
                    f"{image.shape[1]}x{image.shape[0]}"
                )
            masks, region_ids = id_map_masks(ids, self.min_pixels)
            setattr(result, level, masks)
            result.names[level] = [self.region_names.get(i, str(i)) for i in region_ids]
        return result
