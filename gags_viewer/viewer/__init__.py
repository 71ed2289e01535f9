"""The browser viewer (viser + nerfview): per-browser queries and display, exports, headless renders.

Modules: :mod:`.settings` (what a browser asks to see), :mod:`.frame` (the one place frames are
composed), :mod:`.session` (per-browser state and the render callback), :mod:`.app` (server and
nerfview integration), :mod:`.nerfview_adapter` (every private nerfview/viser name), :mod:`.panels` and
:mod:`.selection_panel` (GUI), :mod:`.export_actions` (what the export and save buttons do),
:mod:`.export` (PNG/MP4/GIF, atomic writes, safe names), :mod:`.selection_view` (a 3D selection shown in
every display mode), :mod:`.editing` (delete / keep only, undo, redo, save), :mod:`.click_query`
(click-to-query, feature or SAM), :mod:`.camera_path` (nerfview camera-path JSON), :mod:`.commands`
(``view``, ``demo``, ``render``), :mod:`.select_command` (``select``), :mod:`.synthetic` (a small field
with known answers) and :mod:`.screenshots` / :mod:`.selection_screenshots` (regenerate ``docs/viewer-*.png``).
Importing this package imports neither viser nor nerfview; :mod:`.app`, :mod:`.panels`, :mod:`.session`
and :mod:`.nerfview_adapter` do.
"""
