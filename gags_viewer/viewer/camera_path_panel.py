"""nerfview's "Camera path" panel, one per browser.

nerfview builds the panel once per server (``populate_general_render_tab(server, ...)``): its keyframes,
their frustums and the spline live in the scene every browser shares, so a fresh page can open looking
through another browser's keyframe frustum, and "Render video" renders whoever added keyframes last.
Here the panel is built on one browser's own GUI and scene (:class:`ClientAsServer` gives nerfview the
parts of a server it uses, for that browser only), so each browser has its own path and sees only it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gags_viewer.viewer import nerfview_adapter as nv
from gags_viewer.viewer.camera_path import SCALE_RATIO


class ClientAsServer:
    """The part of ``viser.ViserServer`` nerfview's render panel uses (gui, scene, atomic, get_clients),
    restricted to one browser."""

    def __init__(self, client):
        self.client = client
        self.gui = client.gui
        self.scene = client.scene

    def atomic(self):
        return self.client.atomic()

    def get_clients(self) -> dict:
        return {self.client.client_id: self.client}


@dataclass
class CameraPathPanel:
    """One "Camera path" panel: nerfview's ``CameraPath`` (keyframes, splines) and the panel's handles
    (``framerate_number``, ``render_res_vec2``, ``trajectory_name_text``, ...)."""

    path: object
    handles: dict
    render_tab_state: nv.RenderTabState

    def render_size(self) -> tuple[int, int]:
        """The panel's "Render Res" (width, height): the size of video and PNG exports."""
        return int(self.render_tab_state.render_width), int(self.render_tab_state.render_height)


def add_camera_path_panel(target, output_dir: Path, render_size: tuple[int, int], order: int = 100) -> CameraPathPanel:
    """Build the camera-path panel on ``target`` (a :class:`ClientAsServer`, or a ``ViserServer`` in
    tests) with "Render Res" ``render_size``; nerfview's own "Dump Video" (browser screenshots) is
    hidden, since the viewer renders videos server-side."""
    state = nv.RenderTabState()
    folder = target.gui.add_folder("Camera path", order=order, expand_by_default=False)
    handles, path = nv.populate_panel(
        server=target,
        folder=folder,
        output_dir=Path(output_dir),
        render_tab_state=state,
        extra_handles={},
        scale_ratio=SCALE_RATIO,
    )
    handles["dump_video_button"].visible = False
    width, height = (int(v) for v in render_size)
    handles["render_res_vec2"].value = (width, height)
    state.render_width, state.render_height = width, height
    return CameraPathPanel(path, handles, state)
