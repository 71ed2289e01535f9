"""The viewer layer's shape: the panels and the app do not import each other (exports live in their own
module), and nerfview's / viser's private names appear only in the adapter module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

VIEWER = Path(__file__).resolve().parents[1] / "gags_viewer" / "viewer"
PRIVATE = re.compile(
    r"nerfview\._|\._renderers\b|\._target_fps\b|\._keyframes\b|\._rendering_tab_handles\b|"
    r"\._rendering_folder\b|\._last_move_time\b|camera\._state\b|_position_spline|_orientation_spline"
)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_panels_and_exports_do_not_import_the_app():
    for name in ("panels.py", "selection_panel.py", "export_actions.py"):
        imports = imported_modules(VIEWER / name)
        assert "gags_viewer.viewer.app" not in imports, f"{name} imports the app"
    assert "gags_viewer.viewer.panels" in imported_modules(VIEWER / "app.py")


ADAPTERS = ("nerfview_adapter.py", "renderer.py")
"""renderer.py subclasses nerfview's Renderer (its inherited private names are listed and checked in the
adapter) and imports nerfview only through the adapter."""


def test_private_nerfview_names_only_in_the_adapter():
    offenders = [
        f"{path.name}: {match.group(0)}"
        for path in sorted(VIEWER.glob("*.py"))
        if path.name not in ADAPTERS
        for match in [PRIVATE.search(path.read_text())]
        if match
    ]
    assert not offenders, offenders
    assert "nerfview._" not in (VIEWER / "renderer.py").read_text()


def nerfview_private_names() -> set[str]:
    """Underscored names nerfview's own modules define: methods (``def _x``) and attributes (``self._x = ...``)."""
    import nerfview

    names = set()
    for path in Path(nerfview.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.attr for target in targets for t in ast.walk(target) if isinstance(t, ast.Attribute))
    return {name for name in names if name.startswith("_") and not name.startswith("__") and name != "_"}


def used_names(path: Path) -> set[str]:
    """Names a module reads or writes as attributes, defines as functions, or spells in a string (getattr)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def test_every_private_nerfview_name_is_declared_in_the_adapter():
    """Each of nerfview's private names the viewer touches is in one of the adapter's lists (which
    tests/test_nerfview_adapter.py checks against the installed nerfview); only the adapter, the Renderer
    subclass (renderer.py) and the Viewer subclass's hooks (app.py) touch any."""
    from gags_viewer.viewer import nerfview_adapter as nv

    private = nerfview_private_names()
    assert {"_renderers", "_state", "_define_transitions", "_keyframes"} <= private, "the scan reads nerfview"
    renderer_names = set(nv.RENDERER_ATTRIBUTES + nv.RENDERER_METHODS)
    allowed = {
        "nerfview_adapter.py": set(
            nv.VIEWER_HOOKS
            + nv.VIEWER_ATTRIBUTES
            + nv.CAMERA_PATH_ATTRIBUTES
            + nv.RENDERER_ATTRIBUTES
            + nv.RENDERER_VIEWER_CALLS
        )
        | renderer_names,
        "renderer.py": renderer_names | set(nv.RENDERER_VIEWER_CALLS),
        "app.py": set(nv.VIEWER_HOOKS + nv.RENDERER_VIEWER_CALLS),
    }
    offenders = {
        path.name: sorted((used_names(path) & private) - allowed.get(path.name, set()))
        for path in sorted(VIEWER.glob("*.py"))
    }
    offenders = {name: names for name, names in offenders.items() if names}
    assert not offenders, f"nerfview private names outside the adapter's lists: {offenders}"
