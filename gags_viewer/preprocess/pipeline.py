"""Preprocessing of a scene's images: masks per level -> CLIP embedding per mask -> ``_f.npy`` / ``_s.npy``.

The mask source is pluggable (:class:`~gags_viewer.preprocess.masks.MaskSource`): ground-truth masks for
the synthetic demo today, granularity-aware SAM later. The CLIP side is any open_clip image tower
(:class:`~gags_viewer.preprocess.clip_features.ClipImageEncoder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from gags_viewer.errors import GagsError
from gags_viewer.preprocess.clip_features import ClipImageEncoder
from gags_viewer.preprocess.masks import ALL_LEVELS, LEVELS, MaskError, MaskSource
from gags_viewer.preprocess.writer import FEATURES_DIR, IMAGES_DIR, write_language_features

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class PreprocessReport:
    """What :func:`extract_language_features` wrote.

    Attributes:
        images: Image names processed, in order.
        masks_per_level: Total masks per level over all images.
        encoded: Distinct crops sent through CLIP.
    """

    images: list[str] = field(default_factory=list)
    masks_per_level: dict[str, int] = field(default_factory=lambda: {level: 0 for level in ALL_LEVELS})
    encoded: int = 0


def list_images(images_dir: Path) -> list[str]:
    """Image file names of a folder, sorted."""
    if not images_dir.is_dir():
        raise GagsError(f"{images_dir}: images folder does not exist")
    return sorted(p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """RGB image as [H, W, 3] uint8."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def extract_language_features(
    scene_dir: str | Path,
    mask_source: MaskSource,
    encoder: ClipImageEncoder,
    names: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> PreprocessReport:
    """Write ``language_features/<stem>_f.npy`` and ``_s.npy`` for images of ``scene_dir/images``.

    Args:
        scene_dir: the scene directory (``images/`` inside; ``language_features/`` is written).
        mask_source: segments each image into levels s, m, l (+ default).
        encoder: embeds each mask's crop.
        names: image names to process (default: every image of ``images/``).
        progress: show a progress bar.

    Raises:
        MaskError when a level of an image has no mask (the official code crashes there, §2.6).
    """
    scene_dir = Path(scene_dir)
    images_dir, features_dir = scene_dir / IMAGES_DIR, scene_dir / FEATURES_DIR
    names = list(names) if names is not None else list_images(images_dir)
    report = PreprocessReport()
    for name in tqdm(names, desc="CLIP features per mask", unit="image", disable=not progress):
        image = read_image(images_dir / name)
        masks = mask_source(image, name)
        for level in LEVELS:
            if not masks.level(level):
                raise MaskError(f"{name}: the mask source found no {level}-level mask")
        cache: dict = {}
        embeddings = {level: encoder.encode_masks(image, masks.level(level), cache) for level in ALL_LEVELS}
        write_language_features(features_dir, Path(name).stem, masks, embeddings)
        report.images.append(name)
        report.encoded += len(cache)
        for level in ALL_LEVELS:
            report.masks_per_level[level] += len(masks.level(level))
    return report
