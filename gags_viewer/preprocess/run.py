"""``gags-viewer preprocess``: photos + COLMAP + a trained 3DGS -> ``language_features/`` (gags-method.md §2).

Stages, each with its progress bar under one overall bar:

1. depth: expected depth of every registered view from the 3DGS, the minimum observed depth per
   Gaussian, the per-view sparse maps (:mod:`gags_viewer.preprocess.depth`), written to
   ``<scene>/depths/<stem>_depth.npy`` and ``<scene>/depths_sample/<stem>_depth_sample.npy`` at the
   processing size (image height capped at 1080). Skipped for ``--prompts grid`` and when present.
2. per image: prompts -> SAM -> four filtered levels -> CLIP per masked crop -> ``_f.npy`` / ``_s.npy``,
   in-process or as Ray tasks (``--ray``). Images whose two files exist are skipped (resume); each file
   is written atomically, ``_s.npy`` last.

:func:`preprocess_scene` is the one entry point; the demo build calls it with its ground-truth masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from tyro.conf import Positional

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import GAGS_CLIP_MODEL, GAGS_CLIP_PRETRAINED, ClipSpec
from gags_viewer.preprocess.clip_features import ClipImageEncoder, load_clip_model
from gags_viewer.preprocess.depth import (
    DEPTH_SAMPLES_DIR,
    DEPTHS_DIR,
    depth_sample_map,
    minimum_observed_depth,
    render_depth,
)
from gags_viewer.preprocess.mask_filters import MaskFilterConfig
from gags_viewer.preprocess.masks import MaskSource
from gags_viewer.preprocess.pipeline import (
    PreprocessReport,
    capped_size,
    extract_language_features,
    image_features,
    is_done,
    read_image,
    record,
)
from gags_viewer.preprocess.prompts import PROMPT_SEED, PromptKind, depth_prompts, grid_prompts, image_rng
from gags_viewer.preprocess.writer import FEATURES_DIR, IMAGES_DIR, save_language_features, save_npy

MAX_HEIGHT = 1080
MIN_SEEN_FRACTION = 0.01
"""Below this fraction of Gaussians seen by some view, the model does not belong to the scene."""


MAX_CROP_LAYERS = 3
"""SAM's crop layers multiply the prompts by 1 + 4 + 16 + ...: more than 3 is never useful."""


@dataclass
class PreprocessConfig:
    """Options of ``gags-viewer preprocess``."""

    scene: Positional[Path]
    """scene directory with images/ and sparse/0 (COLMAP)."""
    model: Path | None = None
    """the trained 3DGS: an Inria point_cloud.ply or an output directory (needed unless --prompts grid)."""
    sam_checkpoint: Path = Path("ckpts/sam_vit_h_4b8939.pth")
    """SAM weights (official: sam_vit_h_4b8939.pth)."""
    sam_model: Literal["auto", "vit_h", "vit_l", "vit_b"] = "auto"
    """SAM architecture; auto reads it from the checkpoint, a name also checks it."""
    prompts: PromptKind = "gags"
    """gags (official depth-ratio prompts), gags-paper (mean of squared ratios) or grid (32x32 on the image and its 2x2 crops, LangSplat)."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """where SAM, CLIP and the depth renders run (auto: CUDA when present)."""
    clip_model: str = GAGS_CLIP_MODEL
    """open_clip model name."""
    clip_pretrained: str | None = GAGS_CLIP_PRETRAINED
    """open_clip pretrained tag (or a weights file)."""
    clip_config: Path | None = None
    """a local open_clip model config JSON (with --clip-checkpoint)."""
    clip_checkpoint: Path | None = None
    """a local open_clip checkpoint."""
    max_height: int = MAX_HEIGHT
    """images taller than this are processed at this height (official 1080)."""
    seed: int = PROMPT_SEED
    """prompt sampling seed (per image, with its name)."""
    points_per_batch: int = 64
    """SAM prompts per decoder batch."""
    sam_crop_layers: int | None = None
    """SAM's crop_n_layers (1: also prompt 2x2 overlapping crops); default 1 for --prompts grid (as LangSplat), else 0 (GAGS)."""
    clip_batch: int = 64
    """CLIP crops per batch."""
    filters: MaskFilterConfig = field(default_factory=MaskFilterConfig)
    """SAM mask thresholds (official values)."""
    ray: str | None = None
    """a Ray cluster address ("auto", "ray://host:10001", "local") to fan the images out to."""
    progress: bool = True
    """show progress bars."""

    def check(self) -> None:
        """Raise GagsError (one line) for option values the stages cannot run with."""
        for flag, value, low in (
            ("--points-per-batch", self.points_per_batch, 1),
            ("--clip-batch", self.clip_batch, 1),
            ("--max-height", self.max_height, 16),
        ):
            if value < low:
                raise GagsError(f"{flag} must be at least {low}, got {value}")
        if self.sam_crop_layers is not None and not 0 <= self.sam_crop_layers <= MAX_CROP_LAYERS:
            raise GagsError(f"--sam-crop-layers must be 0-{MAX_CROP_LAYERS}, got {self.sam_crop_layers}")

    def torch_device(self) -> torch.device:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise GagsError("--device cuda: no CUDA GPU is available; use --device cpu")
        return torch.device(
            "cuda" if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()) else "cpu"
        )

    def clip_spec(self) -> ClipSpec:
        if self.clip_checkpoint is not None or self.clip_config is not None:
            return ClipSpec(
                model=self.clip_model,
                pretrained=None,
                config_file=str(self.clip_config) if self.clip_config else None,
                checkpoint_file=str(self.clip_checkpoint) if self.clip_checkpoint else None,
            )
        return ClipSpec(model=self.clip_model, pretrained=self.clip_pretrained)


def registered_images(scene: Path) -> list[str]:
    """Names of the images that COLMAP registered and ``images/`` holds, sorted; one-line errors otherwise."""
    from gags_viewer.dataset.colmap import read_scene

    scene = Path(scene)
    if not scene.is_dir():
        raise GagsError(f"{scene}: scene directory does not exist")
    if not (scene / IMAGES_DIR).is_dir():
        raise GagsError(f"{scene}: no images/ folder (expected <scene>/images/<name> and <scene>/sparse/0)")
    if not any((scene / "sparse" / "0" / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
        raise GagsError(f"{scene}: no COLMAP model in sparse/0 (expected sparse/0/cameras.bin or cameras.txt)")
    names = [image.name for image in read_scene(scene).images if (scene / IMAGES_DIR / image.name).is_file()]
    if not names:
        raise GagsError(f"{scene}: none of the images registered in sparse/0 is in images/")
    return names


def depth_paths(scene: Path, name: str) -> tuple[Path, Path]:
    """(rendered depth, depth-sample map) files of image ``name``."""
    stem = Path(name).stem
    return scene / DEPTHS_DIR / f"{stem}_depth.npy", scene / DEPTH_SAMPLES_DIR / f"{stem}_depth_sample.npy"


def processing_size(path: Path, max_height: int) -> tuple[int, int]:
    """(width, height) at which an image is processed (height capped as :func:`read_image` does)."""
    from PIL import Image

    with Image.open(path) as image:
        return capped_size(*image.size, max_height)


def prepare_depths(config: PreprocessConfig, names: list[str], device: torch.device, progress: bool) -> None:
    """Stage 1 (module doc): write the depth and depth-sample maps of every image unless all exist."""
    from gags_viewer.dataset.colmap import read_scene
    from gags_viewer.field.load import load_field

    scene = Path(config.scene)
    if all(path.is_file() for name in names for path in depth_paths(scene, name)):
        return
    if config.model is None:
        raise GagsError("--model is needed for --prompts gags / gags-paper (the trained 3DGS of this scene)")
    model = load_field(config.model)
    model.features = None
    model = model.to(device)
    colmap = read_scene(scene)
    cameras, depths = [], []
    for name in tqdm(names, desc="depth renders", unit="view", disable=not progress, leave=False):
        width, height = processing_size(scene / IMAGES_DIR / name, config.max_height)
        image = colmap.find(name)
        camera = colmap.render_camera(image, width, height, centered_principal_point=True)
        cameras.append(camera)
        depths.append(render_depth(model, camera))
    min_depth = minimum_observed_depth(model.means, cameras, depths)
    seen = torch.isfinite(min_depth).float().mean().item()
    if seen < MIN_SEEN_FRACTION:
        raise GagsError(
            f"{config.model} does not match the scene {scene}: only {seen:.1%} of its {model.num_gaussians:,} Gaussians "
            "are seen by any camera of sparse/0"
        )
    for name, camera, depth in tqdm(
        list(zip(names, cameras, depths)), desc="depth samples", unit="view", disable=not progress, leave=False
    ):
        depth_file, sample_file = depth_paths(scene, name)
        for path in (depth_file, sample_file):
            path.parent.mkdir(parents=True, exist_ok=True)
        save_npy(depth_file, depth.cpu().numpy().astype(np.float32))
        save_npy(sample_file, depth_sample_map(model.means, camera, depth, min_depth).cpu().numpy())


class ScenePrompts:
    """Prompt points of an image of ``scene`` (the ``prompts`` callable of the SAM source)."""

    def __init__(self, scene: Path, kind: PromptKind, seed: int):
        self.scene, self.kind, self.seed = Path(scene), kind, int(seed)

    def __call__(self, image: np.ndarray, name: str) -> np.ndarray:
        if self.kind == "grid":
            return grid_prompts()
        depth_file, sample_file = depth_paths(self.scene, name)
        depth, sample = np.load(depth_file), np.load(sample_file)
        if depth.shape != image.shape[:2]:
            raise GagsError(
                f"{depth_file}: {depth.shape[1]}x{depth.shape[0]} but the image is processed at "
                f"{image.shape[1]}x{image.shape[0]}; delete {DEPTHS_DIR}/ and {DEPTH_SAMPLES_DIR}/ to redo them"
            )
        return depth_prompts(depth, sample, image_rng(self.seed, name), self.kind)


def build_sam_source(config: PreprocessConfig, device: torch.device) -> MaskSource:
    """The granularity-aware SAM mask source of ``config``."""
    from gags_viewer.preprocess.sam import SamConfig, SamMaskSource
    from gags_viewer.preprocess.sam_checkpoint import load_sam

    model = load_sam(config.sam_checkpoint, config.sam_model, device)
    crop_layers = config.sam_crop_layers if config.sam_crop_layers is not None else int(config.prompts == "grid")
    return SamMaskSource(
        model,
        ScenePrompts(config.scene, config.prompts, config.seed),
        SamConfig(points_per_batch=config.points_per_batch, crop_layers=crop_layers, filters=config.filters),
    )


def build_encoder(config: PreprocessConfig, device: torch.device) -> ClipImageEncoder:
    """The CLIP image encoder of ``config`` (fp16 on CUDA, as the official code runs it)."""
    model = load_clip_model(config.clip_spec(), device=device, half=device.type == "cuda")
    return ClipImageEncoder(model, batch_size=config.clip_batch)


def preprocess_scene(
    config: PreprocessConfig,
    mask_source: MaskSource | None = None,
    encoder: ClipImageEncoder | None = None,
) -> PreprocessReport:
    """Write ``language_features/`` for every registered image of ``config.scene`` (module doc).

    Args:
        config: the command's options.
        mask_source: masks per image; default: SAM with ``config.prompts`` (which needs stage 1).
        encoder: CLIP image encoder; default: the one of ``config``.

    Returns:
        What was written in this run (images already done are skipped and not listed).
    """
    config.check()
    scene = Path(config.scene)
    names = registered_images(scene)
    device = config.torch_device()
    features_dir = scene / FEATURES_DIR
    pending = [name for name in names if not is_done(features_dir, name)]
    if config.ray is not None and mask_source is not None:
        raise GagsError("--ray runs the SAM mask source only")
    if not pending:
        return PreprocessReport()
    overall = tqdm(total=2, desc="preprocess", unit="stage", disable=not config.progress)
    if mask_source is None:
        from gags_viewer.preprocess.sam_checkpoint import check_checkpoint

        check_checkpoint(config.sam_checkpoint)
        if config.prompts != "grid":
            prepare_depths(config, names, device, config.progress)
        if config.ray is None:
            mask_source = build_sam_source(config, device)
    overall.update(1)
    if config.ray is not None:
        from gags_viewer.preprocess.distributed import run_on_ray

        report = PreprocessReport()
        for result in run_on_ray(config, pending):
            save_language_features(features_dir, Path(result.name).stem, result.features, result.seg)
            record(report, result)
    else:
        encoder = encoder or build_encoder(config, device)
        report = extract_language_features(
            scene, mask_source, encoder, names=pending, progress=config.progress, max_height=config.max_height
        )
    overall.update(1)
    overall.close()
    return report


def process_image(config: PreprocessConfig, name: str, mask_source: MaskSource, encoder: ClipImageEncoder):
    """The per-image unit of work (also a Ray task's body). -> :class:`~gags_viewer.preprocess.pipeline.ImageFeatures`"""
    return image_features(
        read_image(Path(config.scene) / IMAGES_DIR / name, config.max_height), name, mask_source, encoder
    )
