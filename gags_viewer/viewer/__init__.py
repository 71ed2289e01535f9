"""The browser viewer (viser + nerfview): per-browser queries and display, exports, headless renders.

Modules: :mod:`.settings` (what a browser asks to see), :mod:`.frame` (the one place frames are
composed), :mod:`.session` (per-browser state and the render callback), :mod:`.app` (server and
nerfview integration), :mod:`.panels` (GUI), :mod:`.export` (PNG/MP4/GIF, atomic writes, safe names),
:mod:`.camera_path` (nerfview camera-path JSON), :mod:`.commands` (``view``, ``demo``, ``render``),
:mod:`.synthetic` (a small field with known answers) and :mod:`.screenshots` (regenerates
``docs/viewer-*.png``). Importing this package imports neither viser nor nerfview; :mod:`.app`,
:mod:`.panels` and :mod:`.session` do.
"""
