"""What the Export and Selection panels' buttons do: PNG, video, matches PLY, the edited field.

Each action renders or writes server-side at full resolution under the app's output directory
(atomically, with sanitised names; helpers in :mod:`gags_viewer.viewer.export`) and sends the file to the
browser that asked. The panels call these functions with the viewer (anything with the attributes of
:class:`ExportHost`), so neither the panels nor this module import :mod:`gags_viewer.viewer.app`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gags_viewer.field.edit import keep_only
from gags_viewer.fsutil import atomic_write_text
from gags_viewer.render.camera import Camera
from gags_viewer.viewer import export as ex
from gags_viewer.viewer.camera_path import camera_path_from_nerfview, parse_camera_path
from gags_viewer.viewer.frame import with_legend
from gags_viewer.viewer.session import ClientSession


class ExportHost(Protocol):
    """The viewer as the export actions see it (``GagsViewer``)."""

    app: object  # ViewerApp: field, engine, compose(), selections, editor, output_dir
    output_dir: Path

    def render_size(self, session: ClientSession) -> tuple[int, int]: ...

    def get_camera_state(self, client): ...


def _send(session: ClientSession, path: Path) -> None:
    if session.client is not None:
        session.client.send_file_download(path.name, path.read_bytes(), save_immediately=True)


def export_png(viewer: ExportHost, session: ClientSession, name_hint: str = "") -> Path:
    """The browser's current view, at the panel's render height and the browser's aspect ratio, in its
    display mode with a legend; written under ``<output_dir>/images`` and sent to it."""
    _, height = viewer.render_size(session)
    camera_state = viewer.get_camera_state(session.client)
    width = max(1, int(round(height * float(camera_state.aspect))))
    camera = Camera.from_nerfview(camera_state, width, height)
    settings = session.settings
    image = with_legend(viewer.app.compose(camera, settings, wait_for_text=True))
    directory = ex.ensure_directory(viewer.output_dir / "images")
    hint = name_hint or ("_".join(settings.queries) if settings.shows_queries else settings.display)
    path = ex.write_png(ex.unique_path(directory, ex.export_stem("view", hint), ".png"), image)
    _send(session, path)
    return path


def export_selection(viewer: ExportHost, session: ClientSession, name_hint: str = "") -> tuple[Path, int, str]:
    """The Gaussians this browser's selection selects (the official GAGS per-Gaussian query, see
    :mod:`gags_viewer.language.selection`) as a native field directory under ``<output_dir>/selections``
    (their language features, the field's decoders and a CLIP reference to the text model the query used,
    resolvable from anywhere, so ``gags-viewer view`` queries it again), sent to the browser zipped.
    Returns (directory, number of Gaussians, the rule's description)."""
    import dataclasses

    from gags_viewer.field.native import write_native
    from gags_viewer.language.clip_weights import portable_clip_spec

    settings = session.settings
    app = viewer.app
    engine = app.engine
    if engine is None:
        raise ex.ExportError("this field has no language features: there is nothing to select")
    if not settings.selection_source.strip():
        raise ex.ExportError("type a query first: the export keeps the Gaussians it selects")
    selection = app.selections.select(engine, settings)
    if selection.count == 0:
        raise ex.ExportError(
            f"'{settings.selection_source}' selects no Gaussian ({selection.description}); "
            "lower the selection threshold"
        )
    directory = ex.ensure_directory(viewer.output_dir / "selections")
    hint = name_hint or "_".join(t.phrase for t in selection.terms if not t.subtract)
    path = ex.unique_path(directory, ex.export_stem("selection", hint), "")
    selected = keep_only(engine.field, selection.mask, f"'{settings.selection_source}' by the {selection.description}")
    metadata = dataclasses.replace(selected.metadata, clip=portable_clip_spec(engine.text_encoder.spec))
    write_native(dataclasses.replace(selected, metadata=metadata), path)
    if session.client is not None:
        session.client.send_file_download(f"{path.name}.zip", ex.zip_directory(path), save_immediately=True)
    return path, selection.count, selection.description


def save_edited_field(
    viewer: ExportHost, session: ClientSession, save_format: str = "native", name_hint: str = ""
) -> Path:
    """The shown (edited) field under ``<output_dir>/fields``: a native field directory (features,
    decoders, CLIP reference; it opens in ``gags-viewer view``) or a plain Inria PLY. The PLY is sent to
    the browser; a directory is only written on the server."""
    directory = ex.ensure_directory(viewer.output_dir / "fields")
    stem = ex.export_stem("field", name_hint or "edited")
    suffix = ".ply" if save_format == "ply" else ""
    path = viewer.app.editor.save(ex.unique_path(directory, stem, suffix), save_format)  # type: ignore[attr-defined]
    if save_format == "ply":
        _send(session, path)
    return path


def export_video(
    viewer: ExportHost,
    session: ClientSession,
    video_format: str = "mp4",
    name_hint: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render this browser's camera-path panel's path server-side with its settings.

    The path is first saved as nerfview JSON under ``<output_dir>/camera_paths`` (the same file
    ``gags-viewer render --camera-path`` reads), then rendered from that JSON, so the headless command
    reproduces these frames.
    """
    panel = session.camera_path
    if panel is None:
        raise ex.ExportError("the camera-path panel is not available")
    width, height = panel.render_size()
    fps = float(panel.handles["framerate_number"].value)
    data = camera_path_from_nerfview(panel.path, width, height, fps)
    if data is None:
        raise ex.ExportError("add at least two keyframes in the 'Camera path' panel first")
    trajectory = panel.handles["trajectory_name_text"].value
    stem = ex.sanitize_filename(name_hint or trajectory, default="path")
    path_dir = ex.ensure_directory(viewer.output_dir / "camera_paths")
    json_path = path_dir / f"{stem}.json"
    atomic_write_text(json_path, json.dumps(data, indent=1))
    cameras = parse_camera_path(data, source=str(json_path))
    settings = session.settings
    total = len(cameras.cameras)

    def frames():
        for i, camera in enumerate(cameras.cameras):
            yield with_legend(viewer.app.compose(camera, settings, wait_for_text=True))
            if progress is not None:
                progress(i + 1, total)

    directory = ex.ensure_directory(viewer.output_dir / "videos")
    path = ex.unique_path(directory, ex.export_stem(stem), f".{video_format}")
    ex.write_video(path, frames(), cameras.fps)
    _send(session, path)
    return path
