"""Rebuild the bundled demo from its seed: ``python -m gags_viewer.demo.build [--quick] [--out DIR]``.

Stages (each with a progress bar):

1. scene: the synthetic tabletop (:mod:`gags_viewer.demo.scene`), its training and held-out views;
2. renders and ground-truth masks (part / object / group) of every view, with the real renderer;
3. the demo CLIP model (:mod:`gags_viewer.demo.clip_model`), trained on masked crops of extra views and
   the training views, saved to ``assets/demo_clip/`` (config + fp16 safetensors);
4. preprocessing through the real pipeline (:mod:`gags_viewer.preprocess`): ground-truth masks ->
   masked, zero-padded square crops -> CLIP embedding per mask -> ``language_features/<stem>_f.npy`` and
   ``_s.npy`` in the official layout, plus ``images/`` and COLMAP text ``sparse/0``;
5. distillation with the GAGS trainer (:mod:`gags_viewer.train`) on the Gaussians of the scene;
6. ``scenes/demo/``: the native field (metadata: the demo CLIP model by relative path, default negatives,
   up direction, default camera, example queries), ``cameras.json`` of every view, and LERF-OVS labels
   of the held-out views (``labels/frame_XXXXX.json`` + ``.jpg``);
7. evaluation of both query modes on the held-out labels -> ``scenes/demo/quality.json``.

Everything is deterministic from ``--seed`` up to floating-point threading order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gags_viewer.demo import clip_model as dclip
from gags_viewer.demo.scene import (
    BACKGROUND,
    CATALOG,
    LEVELS,
    UP,
    DemoScene,
    SceneConfig,
    _camera_pose,
    make_scene,
)
from gags_viewer.field.language_field import DEFAULT_NEGATIVES, FieldMetadata, LanguageField
from gags_viewer.render.camera import Camera

REPO_ROOT = dclip.REPO_ROOT
DEFAULT_OUT = REPO_ROOT / "scenes" / "demo"
LABELS_DIR = "labels"
QUALITY_FILE = "quality.json"
EXAMPLE_QUERIES = ("red cube", "lamp", "lamp shade", "tower", "mushroom cap", "green ball", "cyan bowl")
LABEL_MIN_PIXELS = 300
"""A held-out view labels a category only where it covers at least this many pixels (of 512x384)."""
CROP_MIN_PIXELS = 30
"""Masks smaller than this are dropped (like SAM's minimum region area)."""


@dataclass
class BuildConfig:
    """Rebuild the demo CLIP model and the demo field from the seed."""

    out: Path = DEFAULT_OUT
    """Where the demo field goes (a native field directory, replaced as a whole)."""
    assets: Path = dclip.ASSETS_DIR
    """Where the demo CLIP model goes (config + safetensors)."""
    seed: int = 0
    """Seed of everything: scene layout, Gaussians, cameras, CLIP and distillation initialisation."""
    quick: bool = False
    """A small, fast build for smoke tests (fewer views, steps and iterations; poor quality)."""
    work: Path | None = None
    """Working directory for the preprocessed scene and the training run (default: a temporary one)."""
    keep_work: bool = False
    """Keep the working directory afterwards."""
    reuse_clip: bool = False
    """Reuse the CLIP model already in --assets instead of training it again."""
    clip_steps: int = 400
    """Training steps of the demo CLIP model."""
    clip_views: int = 36
    """Extra random views rendered only to train the CLIP model."""
    iterations: int = 1000
    """Distillation iterations (one view each)."""
    resolution: int = 4
    """Training render resolution rule (-r): 4 renders the 512x384 images at 128x96."""
    feature_lr: float = 5e-3
    """Learning rate of the per-Gaussian features (official 1e-3 over 30k iterations)."""
    decoder_lr: float = 5e-4
    """Learning rate of the decoders (official 1e-4 over 30k iterations)."""
    mask_ambiguity: float = 0.5
    """SAM-like view-dependent granularity of the ground-truth masks: the chance that a region stands in
    for its coarser region at the next level in a view (0: exact levels; see GroundTruthMaskSource)."""
    evaluate: bool = True
    """Evaluate both query modes on the held-out labels and write quality.json."""
    threads: int | None = None
    """Torch CPU threads (default: torch's choice)."""

    def effective(self) -> BuildConfig:
        """The settings actually used (``quick`` shrinks the work)."""
        if not self.quick:
            return self
        return dataclasses.replace(
            self,
            clip_steps=min(self.clip_steps, 40),
            clip_views=min(self.clip_views, 4),
            iterations=min(self.iterations, 20),
        )

    def scene_config(self) -> SceneConfig:
        if self.quick:
            return SceneConfig(
                seed=self.seed, width=192, height=144, train_views=6, test_views=2, spacing=0.025, table_spacing=0.05
            )
        return SceneConfig(seed=self.seed, width=512, height=384)


def log(text: str) -> None:
    tqdm.write(text)


# ------------------------------------------------------------------------------------------- views


@dataclass
class View:
    """A rendered view with its ground truth. rgb: [H, W, 3] float32; ids: {level: [H, W] int64 node ids}."""

    name: str
    camera: Camera
    rgb: np.ndarray
    ids: dict


def render_views(scene: DemoScene, cameras: list[Camera], names: list[str], desc: str) -> list[View]:
    """RGB and ground-truth region ids of each camera."""
    views = []
    for name, camera in tqdm(list(zip(names, cameras)), desc=desc, unit="view"):
        views.append(View(name, camera, scene.render_rgb(camera), scene.id_maps(camera)))
    return views


def random_cameras(config: SceneConfig, count: int, seed: int, width: int, height: int) -> list[Camera]:
    """Extra views for the CLIP model: random azimuth, elevation 22-72 degrees, distance 1.4-2.8."""
    rng = np.random.default_rng(seed + 1000)
    cameras = []
    for _ in range(count):
        c2w = _camera_pose(
            rng.uniform(0, 360),
            rng.uniform(22, 72),
            rng.uniform(1.4, 2.8),
            (rng.uniform(-0.45, 0.45), rng.uniform(-0.35, 0.35), 0.08),
        )
        cameras.append(Camera.from_fov(c2w, config.fov_y_deg, width, height))
    return cameras


def region_masks(ids: dict) -> tuple[list[np.ndarray], list[int]]:
    """The distinct regions of a view over all levels and their masks (min size applied)."""
    masks, regions = [], []
    for level in LEVELS:
        for region in np.unique(ids[level]):
            if region in regions:
                continue
            mask = ids[level] == region
            if mask.sum() >= CROP_MIN_PIXELS:
                masks.append(mask)
                regions.append(int(region))
    return masks, regions


def clip_training_crops(views: list[View], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked square crops (the preprocessing's crops, resized to the model input) of every region of
    every view. -> (crops [M, 3, size, size] uint8, regions [M] int64)"""
    from gags_viewer.preprocess.clip_features import mask_crops

    all_crops, all_regions = [], []
    for view in tqdm(views, desc="masked crops", unit="view"):
        masks, regions = region_masks(view.ids)
        crops = mask_crops(view.rgb, masks)  # [M, 3, 224, 224]
        small = F.interpolate(crops, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        all_crops.append((small.clamp(0, 1) * 255).round().to(torch.uint8))
        all_regions += regions
    return torch.cat(all_crops), torch.tensor(all_regions, dtype=torch.long)


# ------------------------------------------------------------------------------------ the pipeline


def write_preprocessed_scene(
    work: Path, train_views: list[View], clip_folder: Path, ambiguity: float = 0.5, seed: int = 0
) -> Path:
    """images/, sparse/0 and language_features/ of the training views, through the entry point of
    ``gags-viewer preprocess`` (:func:`~gags_viewer.preprocess.run.preprocess_scene`).

    The mask source reports the ground-truth levels with SAM-like view-dependent granularity
    (``ambiguity``, see :class:`~gags_viewer.preprocess.masks.GroundTruthMaskSource`)."""
    from gags_viewer.preprocess import ClipImageEncoder, GroundTruthMaskSource, load_clip_model
    from gags_viewer.preprocess.run import PreprocessConfig, preprocess_scene
    from gags_viewer.preprocess.writer import FEATURES_DIR, save_image, write_colmap_text

    scene_dir = work / "scene"
    (scene_dir / "images").mkdir(parents=True, exist_ok=True)
    if (scene_dir / FEATURES_DIR).exists():  # a reused work directory: never resume from an older build
        shutil.rmtree(scene_dir / FEATURES_DIR)
    for view in train_views:
        save_image(scene_dir / "images" / view.name, view.rgb)
    write_colmap_text(scene_dir, [v.name for v in train_views], [v.camera for v in train_views])
    source = GroundTruthMaskSource(
        {v.name: v.ids for v in train_views},
        names={i: node.name for i, node in enumerate(CATALOG)},
        min_pixels=CROP_MIN_PIXELS,
        ambiguity=ambiguity,
        seed=seed,
    )
    encoder = ClipImageEncoder(load_clip_model(dclip.clip_spec(clip_folder)))
    report = preprocess_scene(PreprocessConfig(scene=scene_dir, device="cpu"), mask_source=source, encoder=encoder)
    log(
        f"preprocessed {len(report.images)} views: masks per level {report.masks_per_level}, "
        f"{report.encoded} distinct crops encoded"
    )
    return scene_dir


def distill(config: BuildConfig, scene: DemoScene, scene_dir: Path, work: Path) -> LanguageField:
    """Run the GAGS trainer on the preprocessed scene; return the trained field."""
    from gags_viewer.field.ply import write_ply
    from gags_viewer.train.config import TrainConfig
    from gags_viewer.train.run import run_training

    init = work / "init" / "point_cloud.ply"
    init.parent.mkdir(parents=True, exist_ok=True)
    write_ply(scene.field, init)
    switch = config.iterations // 2 + 1  # the official schedule switches halfway (15001 of 30000)
    train_config = TrainConfig(
        scene=scene_dir,
        init=init,
        out=work / "train",
        iterations=config.iterations,
        resolution=config.resolution,
        checkpoint_every=0,
        seed=config.seed,
        feature_lr=config.feature_lr,
        decoder_lr=config.decoder_lr,
        switch_iteration=switch,
        device="cpu",
    )
    trainer = run_training(train_config)
    return trainer.snapshot("cpu")


def demo_metadata(scene: DemoScene, out: Path, assets: Path, config: BuildConfig) -> FieldMetadata:
    return FieldMetadata(
        clip=dclip.clip_spec(assets, relative_to=out),
        negatives=DEFAULT_NEGATIVES,
        up=UP,
        default_camera=scene.default_camera,
        decoder_kind="gags",
        example_queries=EXAMPLE_QUERIES,
        source=(
            f"gags_viewer.demo.build (seed {config.seed}): synthetic tabletop, demo CLIP model, "
            f"{config.iterations} GAGS distillation iterations"
        ),
    )


def cameras_json_entries(names: list[str], cameras: list[Camera]) -> list[dict]:
    """Inria ``cameras.json`` entries (img_name, size, position, c2w rotation, fx, fy)."""
    entries = []
    for index, (name, camera) in enumerate(zip(names, cameras)):
        c2w = camera.camera_to_world.double()
        entries.append(
            {
                "id": index,
                "img_name": Path(name).stem,
                "width": camera.width,
                "height": camera.height,
                "position": c2w[:3, 3].tolist(),
                "rotation": c2w[:3, :3].tolist(),
                "fx": float(camera.K[0, 0]),
                "fy": float(camera.K[1, 1]),
            }
        )
    return entries


def label_masks(ids: dict, min_pixels: int = LABEL_MIN_PIXELS) -> dict[str, np.ndarray]:
    """Category -> GT mask of every region of a view at any level (background excluded)."""
    masks: dict[str, np.ndarray] = {}
    for level in LEVELS:
        for region in np.unique(ids[level]):
            if region == BACKGROUND:
                continue
            name = CATALOG[region].name
            mask = ids[level] == region
            if name not in masks and mask.sum() >= min_pixels:
                masks[name] = mask
    return masks


def check_output(out: Path) -> None:
    """Refuse to replace anything but a previous demo field (or an empty directory)."""
    from gags_viewer.errors import GagsError

    out = Path(out)
    if out.exists() and (not out.is_dir() or (not (out / "field.json").is_file() and any(out.iterdir()))):
        raise GagsError(
            f"{out}: exists and is not a demo field directory; refusing to replace it (choose another --out)"
        )


def write_demo_dir(out: Path, field: LanguageField, scene: DemoScene, test_views: list[View]) -> None:
    """Assemble the demo directory next to ``out`` and swap it in (the old one stays until the swap)."""
    from gags_viewer.demo.labels import write_label_file
    from gags_viewer.field.load import save_field
    from gags_viewer.fsutil import atomic_write_text, replace_directory
    from gags_viewer.preprocess.writer import save_image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.build-"))
    try:
        target = staging / "field"
        save_field(field, target)
        atomic_write_text(
            target / "cameras.json", json.dumps(cameras_json_entries(scene.names, scene.cameras), indent=1) + "\n"
        )
        labels = target / LABELS_DIR
        labels.mkdir()
        for view in test_views:
            stem = Path(view.name).stem
            save_image(labels / f"{stem}.jpg", view.rgb)
            masks = label_masks(view.ids)
            write_label_file(
                labels,
                stem,
                f"{stem}.jpg",
                view.camera.height,
                view.camera.width,
                masks,
                levels={category: category_level(category) for category in masks},
            )
        atomic_write_text(target / "README.md", DEMO_README)
        check_output(out)
        replace_directory(target, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


DEMO_README = """# The bundled demo field

Built by `python -m gags_viewer.demo.build` from seed 0 (see `gags_viewer/demo/`); open it with
`gags-viewer demo`. A synthetic tabletop: a brown table with a tower of blocks (red cube, blue
cylinder, yellow cone), a green ball, a purple ring, a lamp (white shade, black base), a mushroom
(orange cap, beige stem), a pink pyramid and a cyan bowl. Its language features live in the space of
the demo CLIP model in `assets/demo_clip/`, which knows only this scene's vocabulary.

- `point_cloud.ply`, `decoders.safetensors`, `field.json`: the native field.
- `cameras.json`: every view (training `frame_00001..00024`, held-out `frame_00025..00032`).
- `labels/`: LERF-OVS labels of the held-out views (never trained on).
- `quality.json`: mIoU and localization per query, both query modes, from the build.

Evaluate: `gags-viewer eval scenes/demo --labels scenes/demo/labels [--mode gaussian]`.
"""


# ----------------------------------------------------------------------------------------- quality


LEVEL_OF_KIND = {"object": "object", "part": "part", "group": "group"}


def category_level(category: str) -> str:
    """ "object", "part" or "group" for a label category of the demo."""
    for node in CATALOG:
        if node.name == category:
            return LEVEL_OF_KIND.get(node.kind, node.kind)
    return "other"


def summarise(report) -> dict:
    """Per level (object / part / group) and per query: mIoU and localization of an EvalReport."""
    levels: dict[str, list] = {}
    for row in report.rows:
        levels.setdefault(category_level(row.query), []).append(row)
    summary = {
        level: {
            "miou": float(np.mean([r.iou for r in rows])),
            "localization": float(np.mean([r.localized for r in rows])),
            "pairs": len(rows),
        }
        for level, rows in levels.items()
    }
    per_query = {
        c["query"]: {
            "level": category_level(c["query"]),
            "miou": c["mean_iou"],
            "localization": c["hits"] / c["frames"],
            "frames": c["frames"],
        }
        for c in report.per_category()
    }
    return {"levels": summary, "queries": per_query, "miou": report.miou, "localization": report.localization_accuracy}


def evaluate(out: Path) -> dict:
    """Run the LERF-OVS evaluation on the held-out labels in both query modes. -> {mode: summary}"""
    import io

    from rich.console import Console

    from gags_viewer.eval.runner import EvalConfig, run_eval

    results = {}
    for mode in ("pixel", "gaussian"):
        console = Console(file=io.StringIO(), width=140)
        started = time.perf_counter()
        report = run_eval(EvalConfig(field=out, labels=out / LABELS_DIR, mode=mode, device="cpu"), console=console)
        results[mode] = summarise(report)
        results[mode]["seconds"] = time.perf_counter() - started
    return results


def format_quality(results: dict) -> str:
    lines = []
    for mode, summary in results.items():
        lines.append(
            f"{mode} mode: "
            + ", ".join(
                f"{level} mIoU {100 * s['miou']:.1f} loc {100 * s['localization']:.1f} ({s['pairs']} pairs)"
                for level, s in sorted(summary["levels"].items())
            )
        )
        for query, q in summary["queries"].items():
            lines.append(
                f"  {q['level']:6s} {query:15s} mIoU {100 * q['miou']:5.1f}  loc {100 * q['localization']:5.1f}"
                f"  ({q['frames']} frames)"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- entry


def build(config: BuildConfig) -> dict:
    """Run every stage (see module doc), reproducibly: the same seed gives the same files, byte for byte
    (quality.json aside, which records timings). Returns timings and, when evaluated, the quality summary."""
    from gags_viewer.train.run import deterministic_algorithms

    with deterministic_algorithms():
        return _run_stages(config)


def _run_stages(config: BuildConfig) -> dict:
    config = config.effective()
    check_output(Path(config.out))
    if config.threads:
        torch.set_num_threads(config.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        log(f"[{name}] {now - since:.1f} s (total {now - started:.1f} s)")
        return now

    t = time.perf_counter()
    scene_config = config.scene_config()
    scene = make_scene(scene_config)
    log(
        f"scene: {scene.field.num_gaussians:,} Gaussians, {len(scene.train_cameras)} training and "
        f"{len(scene.test_cameras)} held-out views at {scene_config.width}x{scene_config.height}"
    )
    train_views = render_views(scene, scene.train_cameras, scene.train_names, "training views")
    test_views = render_views(scene, scene.test_cameras, scene.test_names, "held-out views")
    extra_cameras = random_cameras(
        scene_config, config.clip_views, config.seed, scene_config.width * 3 // 4, scene_config.height * 3 // 4
    )
    extra_views = render_views(
        scene, extra_cameras, [f"clip_{i:03d}" for i in range(len(extra_cameras))], "extra views for CLIP"
    )
    t = lap("renders and masks", t)

    assets = Path(config.assets)
    if config.reuse_clip and (assets / dclip.CHECKPOINT_FILE).is_file():
        log(f"reusing the demo CLIP model in {assets}")
    else:
        size = dclip.DEMO_CLIP_CONFIG["vision_cfg"]["image_size"]
        crops, regions = clip_training_crops(train_views + extra_views, size)
        log(f"CLIP training set: {len(crops)} crops of {len(set(regions.tolist()))} regions")
        model = dclip.train_demo_clip(
            crops, regions, dclip.ClipTrainConfig(steps=config.clip_steps, seed=config.seed), log=log
        )
        config_path, checkpoint = dclip.save_model(model, assets)
        log(f"wrote {config_path} and {checkpoint} ({checkpoint.stat().st_size / 1e6:.1f} MB)")
    t = lap("demo CLIP model", t)

    work = Path(config.work) if config.work else Path(tempfile.mkdtemp(prefix="gags_demo_build_"))
    if (work / "train").exists():
        shutil.rmtree(work / "train")
    try:
        scene_dir = write_preprocessed_scene(work, train_views, assets, config.mask_ambiguity, config.seed)
        t = lap("preprocessing", t)
        field = distill(config, scene, scene_dir, work)
        t = lap("distillation", t)
        field.metadata = demo_metadata(scene, Path(config.out), assets, config)
        write_demo_dir(Path(config.out), field, scene, test_views)
        size_mb = sum(p.stat().st_size for p in Path(config.out).rglob("*") if p.is_file()) / 1e6
        log(f"wrote {config.out} ({size_mb:.1f} MB)")
        t = lap("export", t)
    finally:
        if not config.keep_work and config.work is None:
            shutil.rmtree(work, ignore_errors=True)

    result: dict = {"timings": timings}
    if config.evaluate:
        from gags_viewer.fsutil import atomic_write_text

        quality = evaluate(Path(config.out))
        lap("evaluation", t)
        log(format_quality(quality))
        quality["build"] = {
            "seed": config.seed,
            "quick": config.quick,
            "clip_steps": config.clip_steps,
            "iterations": config.iterations,
            "timings_s": timings,
        }
        atomic_write_text(Path(config.out) / QUALITY_FILE, json.dumps(quality, indent=1) + "\n")
        result["quality"] = quality
    timings["total"] = time.perf_counter() - started
    log(f"demo built in {timings['total'] / 60:.1f} min")
    return result


def main(argv: list[str] | None = None) -> int:
    import tyro

    from gags_viewer.errors import GagsError

    config = tyro.cli(BuildConfig, args=argv, prog="python -m gags_viewer.demo.build")
    try:
        build(config)
    except GagsError as exc:
        print(f"demo build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
