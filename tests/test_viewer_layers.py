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
