"""``gags-viewer eval``: the LERF-OVS protocol on one scene (gags-method.md §4.3–4.5).

For every label frame: find its camera, render at the label resolution, compute the relevancy of each
labelled category with the shared :class:`~gags_viewer.language.engine.QueryEngine`, then score it with
:mod:`gags_viewer.eval.protocol` (mask IoU and localization). mIoU and localization accuracy are means
over all (frame, query) pairs of the scene, as in the official ``evaluate_iou_loc.py``.

Cameras come from ``--scene-data`` (a COLMAP scene, ``sparse/0``) or else from the ``cameras.json``
that the Inria/GAGS trainer writes beside its output. Frames are matched to cameras by name (label
``info.name`` stem = camera image stem). Only when *no* frame name matches a camera does the runner fall
back to the official convention (``frame_XXXXX`` → the (XXXXX − 1)-th camera in name order), and it says
so. A partial match is an error, since mixing both rules would silently pair frames with wrong views.

Differences to the official evaluator, on purpose:

- each frame renders at its own label size (the official code uses the size of the last JSON read for
  all frames; LERF-OVS frames of one scene share one size, so numbers do not change);
- IoU of an empty prediction against an empty GT is 1 (official: NaN);
- principal point at the image centre by default (``principal_point="center"``), as the official
  renderer does; ``"colmap"`` uses COLMAP's cx, cy instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from gags_viewer.errors import GagsError
from gags_viewer.eval import protocol
from gags_viewer.eval.labels import LabelError, LabelFrame, load_labels
from gags_viewer.eval.report import (
    EvalReport,
    FrameTiming,
    QueryRow,
    composite,
    print_report,
    safe_name,
    write_png,
    write_report,
)
from gags_viewer.language.langsplat import levels_by_peak
from gags_viewer.language.pixel_relevancy import DecodePrecision
from gags_viewer.render.camera import Camera

FRAME_CONVENTION = "frame-number convention"

EVAL_RULES = {
    "pixel": "2D GAGS protocol (gags-method.md §4.3): features rendered, decoded per pixel, smoothed, normalised, "
    "mask > threshold; not the 3D per-Gaussian query (§4.7)",
    "gaussian": "gaussian mode: per-Gaussian relevancy (neighbour-averaged features) rendered, then the 2D §4.3 "
    "protocol; not the 3D per-Gaussian query (§4.7)",
}
"""Which relevancy rule each eval mode scores (reported with the results)."""
LEVEL_RULE = (
    "LangSplat levels (gags-method.md §4.6): every level scored; per (frame, query) the mask uses the level whose "
    "½(r + box30(r)) peaks highest, the localization the level whose box30(r) peaks highest"
)
"""Added to the rule for fields with several feature levels."""


class EvalError(GagsError):
    """The evaluation cannot run as asked (no cameras, frames that match no camera, ...)."""


@dataclass
class EvalConfig:
    """Run the LERF-OVS evaluation protocol (mIoU and localization accuracy) on one scene."""

    field: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="FIELD")]
    """The language field: a native field directory, a GAGS or LangSplat output directory or a .ply file."""
    labels: Path
    """Folder of LERF-OVS label files (frame_XXXXX.json, with the frame_XXXXX.jpg photos beside them)."""
    scene_data: Path | None = None
    """Preprocessed scene with a COLMAP reconstruction (sparse/0); default: cameras.json beside the field."""
    mode: Literal["pixel", "gaussian"] = "pixel"
    """pixel: render features and decode every pixel (the GAGS protocol); gaussian: the fast mode."""
    decode_precision: DecodePrecision = "auto"
    """Pixel mode: the decoder's precision. auto is float16 on CUDA (within 0.01 relevancy of float32),
    float32 elsewhere; float32 decodes as the official code does."""
    gaussian_neighbours: int = 8
    """Gaussian mode: decode each Gaussian's feature averaged with its nearest neighbours', this many
    including itself (1: its own feature; see gags_viewer.field.neighbours)."""
    out: Path | None = None
    """Write <scene>.json, <scene>.csv and per-frame comparison images here (nothing is written without it)."""
    images: bool = True
    """With --out, also write the per-(frame, query) comparison images."""
    threshold: float = protocol.MASK_THRESHOLD
    """Mask threshold on clip(2·normalised − 1, 0, 1); 0.4 as in the official eval.sh."""
    negatives: tuple[str, ...] | None = None
    """Negative phrases; default: the field's (object, things, stuff, texture for GAGS)."""
    clip_model: str | None = None
    """open_clip model name, overriding the field's."""
    clip_pretrained: str | None = None
    """open_clip pretrained tag or weights file, overriding the field's."""
    clip_config: Path | None = None
    """Local open_clip model config JSON."""
    clip_checkpoint: Path | None = None
    """Local open_clip checkpoint (.bin, .pt, .safetensors)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to render and decode: auto picks CUDA when present."""
    iteration: int | None = None
    """For a GAGS or LangSplat output directory: the iteration to evaluate (default: the latest)."""
    autoencoder: Path | None = None
    """For a LangSplat output: its autoencoder checkpoint (default: found where LangSplat writes it)."""
    principal_point: Literal["center", "colmap"] = "center"
    """COLMAP cameras: principal point at the image centre (official renderer) or COLMAP's cx, cy."""


@dataclass
class NamedCameras:
    """The scene's cameras by image stem, in name order (the official camera list order).

    Attributes:
        names: Image stems sorted by name.
        cameras: Stem -> camera at its native resolution.
        source: Where they came from, for the report.
    """

    names: list[str]
    cameras: dict[str, Camera]
    source: str


RelevancyFn = Callable[[Camera, list[str]], tuple[np.ndarray, np.ndarray | None]]
"""(camera, queries) -> (relevancy [K, H, W] float, or [L, K, H, W] per level for fields with L feature
levels, RGB render [H, W, 3] uint8 or None)."""


def run_eval(
    config: EvalConfig, *, relevancy_fn: RelevancyFn | None = None, cameras: NamedCameras | None = None, console=None
) -> EvalReport:
    """Evaluate one scene and print its table; with ``config.out``, write the report and images.

    Args:
        config: what to evaluate.
        relevancy_fn: replaces the query engine (tests); default: a QueryEngine on the loaded field.
        cameras: replaces the camera loading (tests); default: from ``scene_data`` or ``cameras.json``.
        console: a rich Console to print to (default: stdout).
    """
    from rich.console import Console

    console = console or Console()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        console.print(f"[yellow]note:[/yellow] {text}")

    all_frames = load_labels(config.labels)
    frames = [f for f in all_frames if f.queries]
    if not frames:
        raise LabelError(config.labels, "no label file has any object")
    if len(frames) < len(all_frames):
        empty = [f.path.name for f in all_frames if not f.queries]
        note(f"skipped {len(empty)} label file(s) without objects: {', '.join(empty[:5])}")
    scene = scene_name(Path(config.labels))

    if cameras is None:
        cameras = load_cameras(config, note)
    frame_cameras, mapping = match_frames(frames, cameras, note)

    settings = {
        "field": str(config.field),
        "labels": str(config.labels),
        "scene_data": None if config.scene_data is None else str(config.scene_data),
        "camera_source": cameras.source,
        "mode": config.mode,
        "rule": EVAL_RULES.get(config.mode, config.mode),
        "threshold": config.threshold,
        "box_size": protocol.BOX_SIZE,
    }
    if relevancy_fn is None:
        relevancy_fn, engine_settings = engine_relevancy_fn(config, note)
        settings.update(engine_settings)
    levels = settings.get("levels")
    level_names = tuple(map(str, levels)) if isinstance(levels, list) else ()
    if level_names:
        settings["rule"] = f"{settings['rule']}; {LEVEL_RULE}"

    rows: list[QueryRow] = []
    timings: list[FrameTiming] = []
    out = None if config.out is None else Path(config.out)
    for frame in frames:
        camera = cameras.cameras[frame_cameras[frame.name]].resized(frame.width, frame.height)
        start = time.perf_counter()
        relevancy, rgb = relevancy_fn(camera, frame.categories)
        relevancy = np.asarray(relevancy, dtype=np.float32)
        rendered = time.perf_counter()
        expected = ((len(level_names),) if level_names else ()) + (len(frame.queries), frame.height, frame.width)
        if relevancy.shape != expected:
            raise EvalError(f"relevancy has shape {list(relevancy.shape)}, expected {list(expected)} for {frame.path}")
        frame_rows, details = score_frame(frame, relevancy, config.threshold, level_names)
        scored = time.perf_counter()
        rows += frame_rows
        image_s = 0.0
        if out is not None and config.images:
            photo = frame.load_image()
            if photo is None:
                photo = rgb
            for query, _row, (score, prediction, peaks) in zip(frame.queries, frame_rows, details):
                image = composite(photo, score, prediction, query.mask, query.boxes, peaks)
                write_png(out / "frames" / safe_name(frame.name) / f"{safe_name(query.category)}.png", image)
            image_s = time.perf_counter() - scored
        timings.append(
            FrameTiming(
                frame.name,
                frame.width,
                frame.height,
                len(frame.queries),
                render=rendered - start,
                protocol=scored - rendered,
                images=image_s,
            )
        )
        frame_iou = np.mean([r.iou for r in frame_rows])
        camera_name = frame_cameras[frame.name]
        console.print(  # one line per frame: never wrapped by rich (the terminal may still fold it)
            f"{frame.name}"
            + (f" ← {camera_name}" if camera_name != frame.name else "")
            + f": mIoU {100 * frame_iou:.1f}, localized {sum(r.localized for r in frame_rows)}/{len(frame_rows)}, "
            f"{rendered - start:.2f} s + {scored - rendered:.2f} s",
            highlight=False,
            soft_wrap=True,
        )

    report = EvalReport(
        scene=scene,
        rows=rows,
        miou=float(np.mean([r.iou for r in rows])),
        localization_accuracy=sum(r.localized for r in rows) / len(rows),
        frame_cameras=dict(frame_cameras),
        mapping=mapping,
        timings=timings,
        notes=notes,
        settings=settings,
    )
    print_report(report, console)
    if out is not None:
        json_path, csv_path = write_report(report, out)
        console.print(
            f"wrote {json_path} and {csv_path}" + (f" and images under {out / 'frames'}" if config.images else ""),
            highlight=False,
        )
    return report


def scene_name(labels: Path) -> str:
    """The scene's name: the labels folder's (``label/figurines`` -> "figurines"), or its parent's when
    the folder has a generic name (``scenes/demo/labels`` -> "demo")."""
    folder = labels.resolve()
    if folder.name.lower() in ("labels", "label", "gt", "ground_truth", "annotations") and folder.parent.name:
        return folder.parent.name
    return folder.name


def score_frame(
    frame: LabelFrame,
    relevancy: np.ndarray,
    threshold: float = protocol.MASK_THRESHOLD,
    level_names: tuple[str, ...] = (),
):
    """Apply the protocol to every query of a frame.

    Args:
        frame: labels of the frame (K queries).
        relevancy: raw relevancy, one map per query in ``frame.queries`` order. [K, H, W]; with
            ``level_names``, one map per field level and query [L, K, H, W], each query scored at the
            levels LangSplat's rules keep (:mod:`gags_viewer.language.langsplat`).
        threshold: mask threshold on the clipped map.
        level_names: the field's level names (LangSplat), or () for a single level.
    Returns:
        (rows: K :class:`QueryRow`, details: K tuples (clipped score [H, W], predicted mask [H, W] bool,
        peaks [P, 2]) for the images)
    """
    relevancy = np.asarray(relevancy, dtype=np.float64)
    if not level_names:
        relevancy = relevancy[None]
    boxed = protocol.box_filter(relevancy)  # box30(r), shared by the smoothing and the localization
    smoothed = 0.5 * (relevancy + boxed)  # [L, K, H, W]
    queries = np.arange(relevancy.shape[1])
    mask_level = levels_by_peak(smoothed).numpy() if level_names else np.zeros_like(queries)
    loc_level = levels_by_peak(boxed).numpy() if level_names else np.zeros_like(queries)
    scores = protocol.normalize_clip(smoothed[mask_level, queries])  # [K, H, W]
    masks = protocol.majority_filter(scores > threshold)
    boxed = boxed[loc_level, queries]
    rows, details = [], []
    for k, query in enumerate(frame.queries):
        loc = protocol.localize_filtered(boxed[k], query.boxes)
        rows.append(
            QueryRow(
                frame=frame.name,
                query=query.category,
                iou=protocol.iou(masks[k], query.mask),
                localized=loc.hit,
                peaks=loc.peaks.tolist(),
                pred_pixels=int(masks[k].sum()),
                gt_pixels=int(query.mask.sum()),
                level=query.level,
                mask_level=level_names[mask_level[k]] if level_names else "",
                localization_level=level_names[loc_level[k]] if level_names else "",
            )
        )
        details.append((scores[k], masks[k], loc.peaks))
    return rows, details


# ------------------------------------------------------------------------------------------ cameras


def load_cameras(config: EvalConfig, note: Callable[[str], None] = lambda text: None) -> NamedCameras:
    """The scene's cameras: COLMAP ``scene_data`` when given, else the field's ``cameras.json``."""
    if config.scene_data is not None:
        return colmap_cameras(Path(config.scene_data), config.principal_point == "center", note)
    path = find_cameras_json(Path(config.field))
    if path is None:
        raise EvalError(
            f"{config.field}: no cameras.json beside the field; pass --scene-data with the preprocessed scene "
            "(COLMAP sparse/0) to give the cameras"
        )
    return cameras_json(path)


def colmap_cameras(scene_dir: Path, centered: bool, note: Callable[[str], None] = lambda text: None) -> NamedCameras:
    """Cameras of every registered image of a COLMAP scene, by image stem."""
    from gags_viewer.dataset.colmap import read_scene

    scene = read_scene(scene_dir)
    if not scene.images:
        raise EvalError(f"{scene.folder}: the reconstruction has no registered images")
    distorted = sorted({cam.model for cam in scene.cameras.values() if cam.distorted})
    if distorted:
        note(f"COLMAP model {', '.join(distorted)} treated as a pinhole: lens distortion is ignored")
    cameras: dict[str, Camera] = {}
    for image in scene.images:
        if image.stem in cameras:
            raise EvalError(f"{scene.folder}: two images share the name stem '{image.stem}'")
        cameras[image.stem] = scene.render_camera(image, centered_principal_point=centered)
    return NamedCameras(sorted(cameras), cameras, f"COLMAP {scene.folder}")


def find_cameras_json(field_path: Path) -> Path | None:
    """``cameras.json`` in the field directory or up to three folders above the field file
    (``output/<case>/point_cloud/iteration_N/point_cloud.ply`` -> ``output/<case>/cameras.json``); for a
    LangSplat output, the one in its first level folder."""
    from gags_viewer.field.langsplat import cameras_json_path, is_langsplat_dir

    if is_langsplat_dir(field_path):
        return cameras_json_path(field_path)
    start = field_path if field_path.is_dir() else field_path.parent
    for folder in [start, *list(start.parents)[:3]]:
        candidate = folder / "cameras.json"
        if candidate.is_file():
            return candidate
    return None


def cameras_json(path: Path) -> NamedCameras:
    """Cameras of an Inria ``cameras.json`` (list of {img_name, width, height, position, rotation, fx, fy})."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalError(f"{path}: cannot read cameras ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise EvalError(f"{path}: expected a non-empty list of cameras")
    cameras: dict[str, Camera] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise EvalError(f"{path}: [{index}] must be an object")
        for key in ("img_name", "width", "height", "position", "rotation", "fx", "fy"):
            if key not in entry:
                raise EvalError(f"{path}: [{index}] has no '{key}'")
        stem = (
            Path(str(entry["img_name"])).stem
            if Path(str(entry["img_name"])).suffix.lower() in (".jpg", ".jpeg", ".png")
            else str(entry["img_name"])
        )
        if stem in cameras:
            raise EvalError(f"{path}: [{index}] repeats img_name '{entry['img_name']}'")
        try:
            cameras[stem] = Camera.from_cameras_json(entry)
        except GagsError as exc:
            raise EvalError(f"{path}: [{index}]: {exc}") from None
    return NamedCameras(sorted(cameras), cameras, f"cameras.json {path}")


def match_frames(
    frames: list[LabelFrame], cameras: NamedCameras, note: Callable[[str], None] = lambda text: None
) -> tuple[dict[str, str], str]:
    """Pair each label frame with a camera name: by name, else (no match at all) by the official rule.

    Returns:
        ({frame name: camera name}, "name" or "frame-number convention")
    """
    by_name = {f.name: f.name for f in frames if f.name in cameras.cameras}
    if len(by_name) == len(frames):
        return by_name, "name"
    if by_name:
        missing = [f for f in frames if f.name not in cameras.cameras]
        raise EvalError(
            f"{missing[0].path}: no camera named '{missing[0].name}' ({len(by_name)} of {len(frames)} label frames "
            f"match camera names in {cameras.source}; all or none must)"
        )
    mapping = {}
    for frame in frames:
        number = frame.frame_number
        if number is None:
            raise EvalError(
                f"{frame.path}: no camera named '{frame.name}' and no frame number in the name "
                f"for the official frame_XXXXX convention"
            )
        if not 1 <= number <= len(cameras.names):
            raise EvalError(
                f"{frame.path}: frame number {number} is outside the {len(cameras.names)} cameras "
                f"of {cameras.source} (official convention: frame_XXXXX -> camera XXXXX-1 in name order)"
            )
        mapping[frame.name] = cameras.names[number - 1]
    example = frames[0]
    note(
        f"no label frame name matches a camera name; used the official convention frame_XXXXX -> "
        f"camera number XXXXX-1 in name order (e.g. {example.name} -> {mapping[example.name]})"
    )
    return mapping, FRAME_CONVENTION


# ------------------------------------------------------------------------------------------- engine


def engine_relevancy_fn(
    config: EvalConfig, note: Callable[[str], None] = lambda text: None
) -> tuple[RelevancyFn, dict]:
    """Load the field and build a QueryEngine on it; return the per-frame relevancy function and the
    settings it used (CLIP model, negatives, device) for the report."""
    import torch

    from gags_viewer.field.load import load_field
    from gags_viewer.language.clip_text import shared_text_encoder
    from gags_viewer.language.clip_weights import describe_spec, resolve_clip_spec
    from gags_viewer.language.engine import QueryEngine

    if config.device == "cuda" and not torch.cuda.is_available():
        raise EvalError("--device cuda asked for, but no CUDA GPU is available")
    device = torch.device(
        "cuda"
        if config.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if config.device == "auto"
        else config.device
    )
    field = load_field(config.field, iteration=config.iteration, autoencoder=config.autoencoder)
    if not field.has_language:
        raise EvalError(f"{config.field}: the field has no language features; it cannot be evaluated")
    field_dir = Path(config.field) if Path(config.field).is_dir() else Path(config.field).parent
    spec = resolve_clip_spec(
        field.metadata.clip,
        base_dir=field_dir,
        model=config.clip_model,
        pretrained=config.clip_pretrained,
        config_file=config.clip_config,
        checkpoint_file=config.clip_checkpoint,
    )
    engine = QueryEngine(
        field.to(device),
        shared_text_encoder(spec, device=device),
        neighbours=config.gaussian_neighbours,
        decode_precision=config.decode_precision,
    )
    engine.text_encoder.load()  # a field whose text model cannot be built is refused before any frame
    negatives = engine.resolve_negatives(config.negatives)

    def relevancy_fn(camera: Camera, queries: list[str]):
        result = engine.query(camera, queries, negatives, mode=config.mode, rgb=True)
        rgb = result.render.rgb
        rgb = None if rgb is None else (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        relevancy = result.relevancy if result.level_relevancy is None else result.level_relevancy
        return relevancy.float().cpu().numpy(), rgb

    settings = {
        "clip": describe_spec(spec),
        "negatives": list(negatives),
        "device": str(device),
        "gaussians": field.num_gaussians,
    }
    if config.mode == "gaussian":
        settings["gaussian_neighbours"] = config.gaussian_neighbours
    else:
        settings["decode_precision"] = str(engine.decode_dtype).removeprefix("torch.")
    if field.level_count > 1:
        settings["levels"] = list(field.metadata.levels)
    return relevancy_fn, settings
