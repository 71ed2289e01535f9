"""The ``view``, ``demo`` and ``train-view`` subcommands (tyro signatures; registered in
:mod:`gags_viewer.cli`), and the set-up they share with ``render`` (:mod:`.render_command`) and ``select``:
loading a field for viewing, its query engine, the device. ``view`` and ``demo`` serve the browser
viewer; every frame goes through :func:`gags_viewer.viewer.frame.compose_frame`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from tyro.conf import OmitArgPrefixes, Positional, arg

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.train.config import TrainConfig

Device = Literal["auto", "cpu", "cuda"]
DisplayName = Literal["rgb", "relevancy", "heatmap", "overlay", "mask", "granularity", "pca", "depth", "alpha"]
VideoFormat = Literal["mp4", "gif", "none"]

FieldPath = Positional[Annotated[Path, arg(metavar="FIELD")]]
SecondFieldPath = Positional[Annotated[Path | None, arg(metavar="FIELD_B")]]
CompareLayout = Literal["side", "split", "a", "b"]


@dataclass(frozen=True)
class ClipOverrides:
    """Command-line overrides of the field's CLIP text model (``--clip-*``, shared by ``view`` and ``render``)."""

    clip_checkpoint: Path | None = None
    """a local open_clip checkpoint for the text model (instead of the field's)."""
    clip_model: str | None = None
    """open_clip model name override."""
    clip_pretrained: str | None = None
    """open_clip pretrained tag (or file) override."""
    clip_config: Path | None = None
    """a local open_clip model config JSON."""


ClipOptions = Annotated[ClipOverrides, arg(name="")]
"""A command's ``--clip-*`` options: the fields of :class:`ClipOverrides`, without a prefix."""

SCENES_DIR = Path(__file__).resolve().parents[2] / "scenes"


# --------------------------------------------------------------------------------------------------
# Shared set-up


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GagsError("--device cuda: no CUDA GPU is available here; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise GagsError(f"unknown device '{device}'; choose auto, cpu or cuda")
    return torch.device(device)


def load_for_viewing(
    path: Path, iteration: int | None, device: torch.device, autoencoder: Path | None = None
) -> LanguageField:
    from gags_viewer.field.load import load_field

    return load_field(path, iteration=iteration, autoencoder=autoencoder).to(device)


def build_engine(
    field: LanguageField,
    field_path: Path | None,
    device: torch.device,
    clip: ClipOverrides = ClipOverrides(),
):
    """The query engine of a field (None for an RGB-only field), with its CLIP spec resolved against the
    field's directory and the command-line overrides applied. The text model loads lazily."""
    if not field.has_language:
        if any(v is not None for v in astuple(clip)):
            print(
                "gags-viewer: note: this field has no language features; the --clip-* options are ignored",
                file=sys.stderr,
            )
        return None
    from gags_viewer.language import QueryEngine, TextEncoder, resolve_clip_spec

    base_dir = None
    if field_path is not None:
        base_dir = field_path if field_path.is_dir() else field_path.parent
    spec = resolve_clip_spec(
        field.metadata.clip,
        base_dir=base_dir,
        model=clip.clip_model,
        pretrained=clip.clip_pretrained,
        config_file=clip.clip_config,
        checkpoint_file=clip.clip_checkpoint,
    )
    return QueryEngine(field, TextEncoder(spec, device=device))


def check_text_model(engine, rgb_only: bool = False) -> str | None:
    """Build the engine's CLIP text model now, so that a field that cannot be queried is refused at load.

    Returns None when the model loads (or there is no engine). When it cannot be built, raises one
    :class:`GagsError` line, or with ``rgb_only`` returns the reason (the caller shows the field
    without queries and says why).
    """
    if engine is None:
        return None
    try:
        engine.text_encoder.load()
        return None
    except GagsError as exc:
        if rgb_only:
            return str(exc)
        raise GagsError(
            f"{exc} -- the field cannot be queried without its CLIP text model "
            "(fix the path or pass --clip-checkpoint; --rgb-only opens it without queries)"
        ) from None


def default_viewer_res(device: torch.device) -> int:
    """Longest side streamed while the camera rests: on CUDA up to 1920 (the browser's canvas size caps
    it, see :func:`~gags_viewer.viewer.app.browser_res`); 640 on CPU, where nerfview lowers the moving
    resolution further to hold the frame rate."""
    return 1920 if device.type == "cuda" else 640


# --------------------------------------------------------------------------------------------------
# view / demo


def serve(
    field: LanguageField,
    engine=None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    share: bool = False,
    output_dir: Path = Path("exports"),
    query: str = "",
    viewer_res: int = 640,
    block: bool = True,
    field_dir: Path | None = None,
    sam_checkpoint: Path | None = None,
    queries_off: str | None = None,
    label: str | None = None,
    comparison=None,
    compare_layout: str = "side",
    browser_side: bool = False,
):
    """Start the viewer on ``field``; with ``block`` serve until Ctrl-C, else return (server, viewer).

    ``field_dir``: where the field was loaded from (a saved edit keeps finding its CLIP model).
    ``queries_off``: why a field with language features cannot be queried (its text model failed to
    load); the viewer then shows RGB and says why in its Query panel. ``label``: what the start line
    calls the field (default: its path-less provenance). ``comparison``: a second field shown beside
    this one (:class:`~gags_viewer.viewer.compare.Comparison`), first in ``compare_layout``.
    ``browser_side``: browsers start in browser-side rendering (the Gaussians are sent once and splatted
    by the browser; see :mod:`.browser_side`).
    """
    from gags_viewer.viewer.app import ViewerApp, start_viewer
    from gags_viewer.viewer.exposure import exposure_warnings
    from gags_viewer.viewer.settings import ViewSettings

    queryable = field.has_language and engine is not None
    settings = ViewSettings(
        queries_text=query if queryable else "",
        negatives_text="; ".join(field.metadata.negatives),
        display="overlay" if queryable else "rgb",
        viewer_res=viewer_res,
        compare_layout=compare_layout,
        rendering="browser" if browser_side else "server",
    ).checked()
    app = ViewerApp(
        field,
        engine,
        output_dir=output_dir,
        default_settings=settings,
        field_dir=field_dir,
        sam_checkpoint=sam_checkpoint,
        queries_off=queries_off,
        comparison=comparison,
    )
    server, viewer = start_viewer(app, host=host, port=port)
    url_host = "localhost" if host in ("0.0.0.0", "::") else host
    url = f"http://{url_host}:{server.get_port()}"
    if server.get_port() != port:
        print(
            f"gags-viewer: WARNING: port {port} is taken; serving on port {server.get_port()} instead: {url}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"gags-viewer: serving {label or field.metadata.source or 'the field'} ({field.num_gaussians:,} Gaussians) "
        f"at {url}  (Ctrl-C to stop)",
        flush=True,
    )
    print(f"gags-viewer: exports are written to {Path(output_dir).resolve()}", flush=True)
    if comparison is not None:
        second = comparison.second.source.field
        print(
            f"gags-viewer: comparing A = {comparison.labels[0]} with B = {comparison.labels[1]} "
            f"({second.num_gaussians:,} Gaussians) under one camera",
            flush=True,
        )
    if engine is None and not field.has_language:
        print("gags-viewer: this field has no language features: RGB, depth and alpha views only", flush=True)
    for line in exposure_warnings(host, server.get_port(), share):
        print(f"gags-viewer: {line}", flush=True)
    if queries_off:
        print(f"gags-viewer: queries are off: {queries_off}", flush=True)
    if share:
        url = server.request_share_url(verbose=False)
        print(
            f"gags-viewer: share URL: {url}" if url else "gags-viewer: could not get a share URL (no network?)",
            flush=True,
        )
    if not block:
        return server, viewer
    try:
        wait_for_interrupt()
    finally:
        server.stop()
    return None


def wait_for_interrupt() -> None:
    """Block the main thread until Ctrl-C (the servers run in their own threads)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def view(
    field: FieldPath,
    compare: SecondFieldPath = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    share: bool = False,
    device: Device = "auto",
    output_dir: Path = Path("exports"),
    query: str = "",
    viewer_res: int | None = None,
    iteration: int | None = None,
    clip: ClipOptions = ClipOverrides(),
    sam_checkpoint: Path | None = None,
    rgb_only: bool = False,
    layout: CompareLayout = "side",
    browser_side: bool = False,
    autoencoder: Path | None = None,
) -> None:
    """Open a field in the browser viewer: typed queries, display modes, PNG and video export. With a
    second field (``view A B``), compare them: both under one camera with the same queries, side by side
    or split-screen, each with its own legend; exports show both.

    Args:
        field: a field directory (native or official GAGS output), an Inria .ply or a .splat file
            (.ply/.splat without language features: RGB, depth and alpha only).
        compare: a second field of the same scene (B) to show beside the first (A): e.g. GAGS against
            another method, or two training runs. Selection and edits act on A; B is read at its latest
            iteration.
        host: address to bind; 127.0.0.1 keeps the viewer on this machine (0.0.0.0 opens it to the network).
        port: port to serve on (the next free one if taken).
        share: also ask viser for a public share URL and print it.
        device: where to render and decode: auto (CUDA if present), cpu or cuda.
        output_dir: where PNG, video and camera-path exports are written.
        query: initial queries, separated by ';' (e.g. "mug; plant").
        viewer_res: longest side of the streamed image at rest (default 640 on CPU, 1920 on CUDA, capped by the browser's canvas).
        iteration: for an official GAGS output directory, the iteration to read (default: latest).
        clip: the ``--clip-*`` overrides of the field's text model (:class:`ClipOverrides`).
        sam_checkpoint: a segment-anything checkpoint (ViT-H/L/B): "Click to query" then segments the clicked
            object with SAM and queries its CLIP image embedding (without it: the clicked pixel's feature).
        rgb_only: open the field even when its CLIP text model cannot be loaded (queries off; the
            viewer says why). Without it such a field is refused at once.
        layout: with two fields, how they share the view at first: side (by side), split (screen),
            a or b (one alone); the Compare panel changes it.
        browser_side: start every browser in browser-side rendering: the Gaussians are sent once and the
            browser draws them (orbiting needs no server render; queries recolour them). The Rendering
            panel switches back to server rendering (pixel mode, view-dependent colour).
        autoencoder: for a LangSplat output, its autoencoder checkpoint (default: found where LangSplat
            writes it).
    """
    dev = resolve_device(device)
    if sam_checkpoint is not None and not sam_checkpoint.is_file():
        raise GagsError(f"--sam-checkpoint {sam_checkpoint}: no such file")
    loaded = load_for_viewing(field, iteration, dev, autoencoder)
    engine = build_engine(loaded, field, dev, clip)
    queries_off = check_text_model(engine, rgb_only)
    comparison = None
    if compare is not None:
        comparison = open_comparison(
            field, loaded, None if queries_off else engine, compare, dev, clip, rgb_only, queries_off
        )
    serve(
        loaded,
        None if queries_off else engine,
        host=host,
        port=port,
        share=share,
        output_dir=output_dir,
        query=query,
        viewer_res=viewer_res or default_viewer_res(dev),
        field_dir=field if field.is_dir() else field.parent,
        sam_checkpoint=sam_checkpoint,
        queries_off=queries_off,
        label=str(field),
        browser_side=browser_side,
        comparison=comparison,
        compare_layout=layout,
    )


def open_comparison(
    first_path: Path,
    first: LanguageField,
    first_engine,
    second_path: Path,
    device: torch.device,
    clip: ClipOverrides = ClipOverrides(),
    rgb_only: bool = False,
    first_queries_off: str | None = None,
):
    """Field B of ``view A B`` / ``render A B`` beside A, loaded and queried as A is (the ``--clip-*``
    overrides apply to both; B shares A's text model when both use the same one). Says in one line when
    the two do not look like the same scene. Returns a :class:`~gags_viewer.viewer.compare.Comparison`."""
    from gags_viewer.viewer.compare import Comparison, alignment_note, comparison_labels

    second = load_for_viewing(second_path, None, device)
    engine = build_engine(second, second_path, device, clip)
    if engine is not None and first_engine is not None and engine.text_encoder.spec == first_engine.text_encoder.spec:
        from gags_viewer.language import QueryEngine

        engine = QueryEngine(second, first_engine.text_encoder)
    queries_off = check_text_model(engine, rgb_only)
    note = alignment_note(first, second)
    if note:
        print(f"gags-viewer: note: {note}", file=sys.stderr, flush=True)
    if not first.has_language and second.has_language:
        print(
            "gags-viewer: note: A (the first field) has no language features, so the query box is off; "
            "put the field with language features first",
            file=sys.stderr,
            flush=True,
        )
    return Comparison(
        second,
        None if queries_off else engine,
        comparison_labels(first_path, second_path),
        first_queries_off=first_queries_off,
        second_queries_off=queries_off,
    )


def train_view(
    config: OmitArgPrefixes[TrainConfig],
    host: str = "127.0.0.1",
    port: int = 8080,
    share: bool = False,
    output_dir: Path = Path("exports"),
    query: str = "",
    viewer_res: int | None = None,
    preview_every: float = 2.0,
    clip: ClipOptions = ClipOverrides(),
) -> None:
    """Train a GAGS language field in the background while viewing it: a live preview (queries work
    while training), a Training panel with pause / resume, it/s, ETA and a loss chart.

    Args:
        config: the training settings, as for ``gags-viewer train`` (SCENE --init PLY --out DIR ...).
        host: address to bind.
        port: port to serve on (the next free one if taken).
        share: also ask viser for a public share URL.
        output_dir: where the viewer's PNG, video and camera-path exports are written.
        query: initial queries, separated by ';'.
        viewer_res: longest side of the streamed image at rest (default 640 on CPU, 1920 on CUDA, capped by the browser's canvas).
        preview_every: seconds between preview updates (the browsers re-render with the current field).
        clip: the ``--clip-*`` overrides of the text model used for queries.
    """
    from gags_viewer.train.run import start_trainer
    from gags_viewer.viewer.training import TrainingDriver, TrainPanel, camera_moving

    trainer = start_trainer(config)
    dev = trainer.device
    field = trainer.snapshot(dev)
    engine = build_engine(field, None, dev, clip)
    server, viewer = serve(
        field,
        engine,
        host=host,
        port=port,
        share=share,
        output_dir=output_dir,
        query=query,
        viewer_res=viewer_res or default_viewer_res(dev),
        block=False,
    )
    driver = TrainingDriver(trainer, viewer.app, preview_every=preview_every, busy=camera_moving(viewer))
    TrainPanel(server, driver)
    driver.start()
    print(
        f"gags-viewer: training {trainer.geometry.num_gaussians:,} Gaussians on {len(trainer.views)} views on {dev}, "
        f"iterations {trainer.iteration + 1}..{trainer.config.iterations}; checkpoints in {trainer.config.out}",
        flush=True,
    )
    try:
        wait_for_interrupt()
    finally:
        if driver.stop(save=True):
            print(f"gags-viewer: stopped at iteration {trainer.iteration}; checkpoint written, continue with --resume")
        server.stop()


def demo_path() -> Path:
    """The bundled demo: ``scenes/demo/`` when it exists, else the RGB-only ``scenes/teapot.splat``."""
    for candidate in (SCENES_DIR / "demo", SCENES_DIR / "teapot.splat"):
        if candidate.exists():
            return candidate
    raise GagsError(f"no bundled demo scene found in {SCENES_DIR} (this install does not ship scenes/)")


def demo(
    host: str = "127.0.0.1",
    port: int = 8080,
    share: bool = False,
    device: Device = "auto",
    output_dir: Path = Path("exports"),
    browser_side: bool = False,
) -> None:
    """Open the bundled demo field in the browser viewer (offline, no GPU needed).

    Args:
        host: address to bind.
        port: port to serve on.
        share: also ask viser for a public share URL.
        device: auto, cpu or cuda.
        output_dir: where exports are written.
        browser_side: start in browser-side rendering (the browser draws the Gaussians; see ``view``).
    """
    path = demo_path()
    dev = resolve_device(device)
    loaded = load_for_viewing(path, None, dev)
    engine = build_engine(loaded, path, dev)
    check_text_model(engine)
    query = "; ".join(loaded.metadata.example_queries[:2]) if loaded.has_language else ""
    serve(
        loaded,
        engine,
        host=host,
        port=port,
        share=share,
        output_dir=output_dir,
        query=query,
        viewer_res=default_viewer_res(dev),
        field_dir=path if path.is_dir() else path.parent,
        label=f"the bundled demo ({path})",
        browser_side=browser_side,
    )
