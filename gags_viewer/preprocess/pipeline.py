"""Preprocessing of a scene's images: masks per level -> CLIP embedding per mask -> ``_f.npy`` / ``_s.npy``.

The mask source is pluggable (:class:`~gags_viewer.preprocess.masks.MaskSource`): ground-truth masks for
the synthetic demo, granularity-aware SAM (:mod:`gags_viewer.preprocess.sam`) for photos. The CLIP side is any open_clip image tower
(:class:`~gags_viewer.preprocess.clip_features.ClipImageEncoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gags_viewer.errors import GagsError
from gags_viewer.preprocess.clip_features import ClipImageEncoder
from gags_viewer.preprocess.masks import ALL_LEVELS, LEVELS, MaskError, MaskSource
from gags_viewer.preprocess.writer import FEATURES_DIR, IMAGES_DIR, language_feature_arrays, save_language_features

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


def capped_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    """(width, height) of an image after the official height cap (§2.7).

    Taller than ``max_height``: the official ``scale = H / max_height`` and size ``(int(W / scale), int(H / scale))``
    (which is ``max_height - 1`` for a few heights, e.g. 2185 at a 1080 cap); otherwise unchanged.
    """
    if max_height is None or height <= max_height:
        return width, height
    scale = height / max_height
    return int(width / scale), int(height / scale)


def read_image(path: Path, max_height: int | None = None) -> np.ndarray:
    """RGB image as [H, W, 3] uint8; taller than ``max_height`` -> resized to :func:`capped_size` (§2.7).

    The resize is bilinear without antialiasing (as ``cv2.resize`` does).
    """
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    height, width = array.shape[:2]
    if max_height is None or height <= max_height:
        return array
    size = capped_size(width, height, max_height)[::-1]
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass
class ImageFeatures:
    """The language features of one image, ready to write.

    Attributes:
        name: image file name.
        features: the ``_f`` array. [M, E] float32
        seg: the ``_s`` array. [4, H, W] float32
        masks_per_level: masks per level.
        encoded: distinct crops sent through CLIP.
    """

    name: str
    features: np.ndarray
    seg: np.ndarray
    masks_per_level: dict[str, int]
    encoded: int


def image_features(image: np.ndarray, name: str, mask_source: MaskSource, encoder: ClipImageEncoder) -> ImageFeatures:
    """Masks -> CLIP embedding per mask -> ``_f`` / ``_s`` arrays of one image (the unit of work).

    Args:
        image: RGB. [H, W, 3] uint8
        name: the image's file name.

    Raises:
        MaskError when a level has no mask (the official code crashes there, §2.6).
    """
    masks = mask_source(image, name)
    for level in LEVELS:
        if not masks.level(level):
            raise MaskError(f"{name}: the mask source found no {level}-level mask")
    cache: dict = {}
    embeddings = {level: encoder.encode_masks(image, masks.level(level), cache) for level in ALL_LEVELS}
    features, seg = language_feature_arrays(Path(name).stem, masks, embeddings)
    return ImageFeatures(name, features, seg, {level: len(masks.level(level)) for level in ALL_LEVELS}, len(cache))


def is_done(features_dir: Path, name: str) -> bool:
    """Whether both files of image ``name`` exist (``_s.npy`` is written last, atomically)."""
    stem = Path(name).stem
    return (features_dir / f"{stem}_f.npy").is_file() and (features_dir / f"{stem}_s.npy").is_file()


def record(report: PreprocessReport, result: ImageFeatures) -> None:
    """Add one image's counts to ``report``."""
    report.images.append(result.name)
    report.encoded += result.encoded
    for level in ALL_LEVELS:
        report.masks_per_level[level] += result.masks_per_level[level]


def extract_language_features(
    scene_dir: str | Path,
    mask_source: MaskSource,
    encoder: ClipImageEncoder,
    names: Sequence[str] | None = None,
    progress: bool = True,
    max_height: int | None = None,
    skip_done: bool = False,
) -> PreprocessReport:
    """Write ``language_features/<stem>_f.npy`` and ``_s.npy`` for images of ``scene_dir/images``.

    Args:
        scene_dir: the scene directory (``images/`` inside; ``language_features/`` is written).
        mask_source: segments each image into levels s, m, l (+ default).
        encoder: embeds each mask's crop.
        names: image names to process (default: every image of ``images/``).
        progress: show a progress bar.
        max_height: images taller than this are resized to it first (official: 1080); None keeps them.
        skip_done: skip images whose two files exist (resume); they are not in the report.

    Raises:
        MaskError when a level of an image has no mask (the official code crashes there, §2.6).
    """
    scene_dir = Path(scene_dir)
    images_dir, features_dir = scene_dir / IMAGES_DIR, scene_dir / FEATURES_DIR
    names = list(names) if names is not None else list_images(images_dir)
    if skip_done:
        names = [name for name in names if not is_done(features_dir, name)]
    report = PreprocessReport()
    for name in tqdm(names, desc="SAM masks + CLIP features", unit="image", disable=not progress):
        result = image_features(read_image(images_dir / name, max_height), name, mask_source, encoder)
        save_language_features(features_dir, Path(name).stem, result.features, result.seg)
        record(report, result)
    return report
