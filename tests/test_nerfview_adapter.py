"""Every private nerfview / viser name the viewer uses (all in gags_viewer.viewer.nerfview_adapter) still
exists in the installed versions. A failure here names what an upgrade renamed: fix the adapter."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import re

import nerfview
import pytest
import viser

from gags_viewer.viewer import nerfview_adapter as nv


def _assigned_in_init(cls, name: str) -> bool:
    """Whether ``cls`` (or an ancestor) assigns ``self.<name>`` (in __init__ or a method it calls)."""
    return any(
        re.search(rf"self\.{name}(: [^=]+)? =", inspect.getsource(klass))
        for klass in cls.__mro__
        if klass.__module__.startswith("nerfview")
    )


def test_pinned_version():
    assert importlib.metadata.version("nerfview") == nv.PINNED_VERSION, (
        "nerfview was upgraded: check every name in gags_viewer/viewer/nerfview_adapter.py, then update PINNED_VERSION"
    )


@pytest.mark.parametrize("name", nv.VIEWER_HOOKS)
def test_viewer_hooks_exist(name):
    assert callable(getattr(nerfview.Viewer, name, None)), f"nerfview.Viewer.{name} is gone: the viewer overrides it"


@pytest.mark.parametrize("name", nv.VIEWER_ATTRIBUTES)
def test_viewer_attributes_exist(name):
    assert any(
        f"self.{name}" in inspect.getsource(getattr(nerfview.Viewer, method))
        for method in ("__init__",) + nv.VIEWER_HOOKS
    ), f"nerfview.Viewer no longer sets self.{name}"


@pytest.mark.parametrize("name", nv.RENDERER_ATTRIBUTES)
def test_renderer_attributes_exist(name):
    assert _assigned_in_init(nv.Renderer, name), f"nerfview's Renderer no longer sets self.{name}"
    assert inspect.getsource(nv.Renderer).count(f"self.{name}") >= 2, f"nerfview's Renderer no longer reads self.{name}"


@pytest.mark.parametrize("name", nv.RENDERER_METHODS)
def test_renderer_methods_exist(name):
    assert callable(getattr(nv.Renderer, name, None)), f"nerfview's Renderer.{name} is gone"


@pytest.mark.parametrize("name", nv.RENDERER_VIEWER_CALLS)
def test_renderer_viewer_calls_exist(name):
    assert f"self.viewer.{name}(" in inspect.getsource(nv.Renderer), (
        f"nerfview's Renderer no longer calls viewer.{name}"
    )
    assert callable(getattr(nerfview.Viewer, name, None)), f"nerfview.Viewer.{name} is gone"


def test_renderer_states_and_trace_context():
    source = inspect.getsource(nv.Renderer)
    for state in ("low_move", "low_static", "high"):
        assert f'"{state}"' in source, f"nerfview's Renderer no longer has the state '{state}'"
    assert callable(nv.set_trace_context)


@pytest.mark.parametrize("name", nv.CAMERA_PATH_ATTRIBUTES)
def test_camera_path_attributes_exist(name):
    assert _assigned_in_init(nv.CameraPath, name), f"nerfview's CameraPath no longer sets self.{name}"


def test_signatures_used_by_the_viewer():
    renderer = inspect.signature(nv.Renderer.__init__).parameters
    assert {"viewer", "client", "lock"} <= set(renderer)
    assert {"submit", "run"} <= set(dir(nv.Renderer)) and "running" in inspect.getsource(nv.Renderer.__init__)
    assert list(inspect.signature(nv.RenderTask.__init__).parameters)[1:3] == ["action", "camera_state"]
    panel = inspect.signature(nerfview.render_panel.populate_general_render_tab).parameters
    assert {"server", "output_dir", "folder", "render_tab_state", "extra_handles", "scale_ratio"} <= set(panel)
    assert issubclass(nv.InterruptRenderException, Exception)
    state = nv.RenderTabState(viewer_res=320)
    for name in ("viewer_res", "viewer_width", "viewer_height", "render_width", "render_height"):
        assert hasattr(state, name), f"RenderTabState.{name} is gone"
    assert "CameraPath(" in inspect.getsource(nerfview.render_panel.populate_general_render_tab), (
        "populate_general_render_tab no longer builds its CameraPath by the module-level name the adapter patches"
    )
    for name in ("compute_duration", "interpolate_pose_and_fov_rad", "update_spline", "default_fov", "loop"):
        assert name in inspect.getsource(nv.CameraPath), f"CameraPath.{name} is gone"


def test_viser_camera_state_timestamp():
    assert "self._state" in inspect.getsource(viser.CameraHandle.__init__)
    from viser._viser import _CameraHandleState

    assert "update_timestamp" in {f.name for f in dataclasses.fields(_CameraHandleState)}


def test_adapter_helpers_on_a_stand_in():
    class Stub:
        pass

    viewer = Stub()
    nv.init_render_tab(viewer, folder=None)
    assert nv.render_tab_handles(viewer) == {}
    assert nv.last_move_time(viewer) == 0.0
    nv.mark_camera_moved(viewer)
    assert nv.last_move_time(viewer) > 0.0
