"""The ``render`` subcommand: the viewer's frames written without a browser (PNG sequence + MP4/GIF), from
a camera path saved in the viewer (``<output-dir>/camera_paths/<name>.json``) or, without one, an orbit
framing the scene. Every frame goes through :func:`gags_viewer.viewer.frame.compose_frame`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.viewer.commands import (
    ClipOptions,
    ClipOverrides,
    CompareLayout,
    Device,
    DisplayName,
    FieldPath,
    SecondFieldPath,
    VideoFormat,
    build_engine,
    load_for_viewing,
    open_comparison,
    resolve_device,
)


def render_frames(
    field: LanguageField,
    engine,
    cameras,
    settings,
    *,
    legend: bool = True,
    progress=None,
    comparison=None,
):
    """Yield the frames ([H, W, 3] uint8) of ``cameras`` with ``settings`` (the viewer's compositing);
    with a :class:`~gags_viewer.viewer.compare.Comparison`, frames showing ``field`` and its second field."""
    from gags_viewer.viewer.frame import FrameSource, compose_frame, with_legend

    first = FrameSource(field, engine) if comparison is not None else None
    for i, camera in enumerate(cameras):
        if comparison is None:
            frame = compose_frame(field, camera, settings, engine, wait_for_text=True)
        else:
            frame = comparison.compose(first, camera, settings, wait_for_text=True, legends=legend)
        yield with_legend(frame) if legend else frame.image
        if progress is not None:
            progress(i + 1)


def render(
    field: FieldPath,
    out: Path,
    compare: SecondFieldPath = None,
    layout: CompareLayout = "side",
    split: float = 0.5,
    camera_path: Path | None = None,
    query: str = "",
    negatives: str | None = None,
    mode: DisplayName | None = None,
    query_mode: Literal["gaussian", "pixel"] = "gaussian",
    threshold: float = 0.5,
    colormap: str = "turbo",
    colors: str | None = None,
    background: str = "0,0,0",
    width: int | None = None,
    height: int | None = None,
    frames: int = 60,
    fps: float = 30.0,
    fov: float = 50.0,
    elevation: float = 25.0,
    video: VideoFormat = "mp4",
    legend: bool = True,
    scale_ratio: float = 10.0,
    device: Device = "auto",
    iteration: int | None = None,
    clip: ClipOptions = ClipOverrides(),  # noqa: B008 - a frozen dataclass
    autoencoder: Path | None = None,
) -> None:
    """Render frames without a browser: a PNG sequence and a video, as the viewer composes them.

    Args:
        field: a field directory, .ply or .splat file (the latter two may be RGB only: no queries).
        out: output directory: frames/frame_00000.png..., <name>.mp4 (or .gif) and camera_path.json.
        compare: a second field of the same scene (B): every frame shows both fields under the same
            camera with the same queries, each with its own legend (``render A B --out DIR``).
        layout: with two fields: side (by side: each half the middle of the view), split (screen: A left of
            the split, B right), a or b (one alone).
        split: the split screen's dividing column, as a fraction of the width.
        camera_path: a camera-path JSON saved by the viewer (nerfview/nerfstudio format). Without it, a
            full orbit around the scene's bounds.
        query: queries separated by ';' (e.g. "mug; plant"); each gets its own colour.
        negatives: negative phrases separated by ';' (default: the field's).
        mode: display mode (default: overlay with queries, rgb without).
        query_mode: gaussian (relevancy per Gaussian, fast) or pixel (decoded per pixel, as GAGS evaluates).
        threshold: relevancy threshold of the overlay, heatmap and mask modes.
        colormap: turbo, viridis, magma, inferno, cividis or gray.
        colors: query colours in query order, separated by ';' (#rrggbb or r,g,b).
        background: background colour (#rrggbb or r,g,b).
        width: image width (default: the camera path's, else 640; one of width/height keeps the aspect).
        height: image height (default: the camera path's, else 480).
        frames: number of orbit frames (without --camera-path).
        fps: frame rate of the orbit video (a camera path has its own).
        fov: vertical field of view of the orbit, degrees.
        elevation: orbit elevation above the scene's horizontal plane, degrees.
        video: mp4, gif or none (PNG frames only).
        legend: draw the legend onto the frames (as the viewer's exports do).
        scale_ratio: camera-path positions are multiplied by this (nerfview saves them divided by 10;
            use 1 for paths in world units).
        device: auto, cpu or cuda.
        iteration: for an official GAGS or LangSplat output directory, the iteration to read.
        clip: the ``--clip-*`` overrides of the field's text model (:class:`ClipOverrides`).
        autoencoder: for a LangSplat output, its autoencoder checkpoint (default: found where LangSplat
            writes it).
    """
    from gags_viewer.viewer import camera_path as cp
    from gags_viewer.viewer import export as ex
    from gags_viewer.viewer.settings import LANGUAGE_DISPLAY_MODES, settings_for_render

    settings = settings_for_render(query, mode, negatives, threshold, query_mode, colormap, background, colors)
    settings = settings.copy(compare_layout=layout, compare_split=split)
    dev = resolve_device(device)
    loaded = load_for_viewing(field, iteration, dev, autoencoder)
    engine = build_engine(loaded, field, dev, clip)
    comparison = None if compare is None else open_comparison(field, loaded, engine, compare, dev, clip)
    fields = [(field, loaded)] + ([] if comparison is None else [(compare, comparison.second.source.field)])
    if (settings.queries or settings.display in LANGUAGE_DISPLAY_MODES) and not any(f.has_language for _, f in fields):
        what = f'--query "{query}"' if settings.queries else f"--mode {settings.display}"
        raise GagsError(
            f"{field} has no language features (RGB only), so {what} cannot be rendered; use --mode rgb, depth or alpha"
        )
    if settings.display == "granularity" and all(f.granularity_decoder is None for _, f in fields):
        raise GagsError(f"{field} has no granularity decoder, so --mode granularity cannot be rendered")
    engines = [engine] + ([] if comparison is None else [comparison.second.source.engine])
    for each in engines:
        if each is not None and settings.queries:
            each.text_embeddings(settings.queries + settings.negatives)  # fail early on missing weights

    if camera_path is not None:
        path = cp.read_camera_path(camera_path, width, height, scale_ratio)
        name = ex.sanitize_filename(camera_path.stem, default="path")
    else:
        if frames < 1:
            raise GagsError(f"--frames must be at least 1, got {frames}")
        w = width or (int(round(height * 4 / 3)) if height else 640)
        h = height or int(round(w * 3 / 4))
        path = cp.orbit_path(loaded, frames, w, h, fps, fov, elevation)
        name = "orbit"

    out_dir = ex.ensure_directory(out)
    frames_dir = ex.ensure_directory(out_dir / "frames")
    for old in frames_dir.glob("frame_*.png"):
        old.unlink()
    if camera_path is None:
        poses = [
            (c.camera_to_world.double().numpy(), 2 * math.atan(c.height / 2 / float(c.K[1, 1]))) for c in path.cameras
        ]
        data = cp.camera_path_json(
            poses,
            path.width,
            path.height,
            path.fps,
            keyframes=poses[:: max(1, len(poses) // 8)],
            default_fov_deg=fov,
            scale_ratio=scale_ratio,
        )
        from gags_viewer.fsutil import atomic_write_text

        atomic_write_text(out_dir / "camera_path.json", json.dumps(data))

    total = len(path.cameras)
    start = time.perf_counter()

    def progress(done: int) -> None:
        elapsed = time.perf_counter() - start
        print(
            f"\rgags-viewer: frame {done}/{total} ({elapsed / done:.2f} s/frame)", end="", file=sys.stderr, flush=True
        )

    written: list = []

    def frames_and_pngs():
        for i, image in enumerate(
            render_frames(
                loaded, engine, path.cameras, settings, legend=legend, progress=progress, comparison=comparison
            )
        ):
            written.append(ex.write_png(frames_dir / f"frame_{i:05d}.png", image))
            yield image

    if video == "none":
        for _ in frames_and_pngs():
            pass
        target = None
    else:
        target = ex.write_video(out_dir / f"{name}.{video}", frames_and_pngs(), path.fps)
    print(file=sys.stderr)
    print(
        f"gags-viewer: wrote {len(written)} frames ({path.width}x{path.height}) to {frames_dir}"
        + (f" and {target}" if target else "")
    )
