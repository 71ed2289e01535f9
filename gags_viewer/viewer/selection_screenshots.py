"""Regenerate the selection and editing screenshots in ``docs/`` (a maintainer tool; Playwright + Chromium).

    python -m gags_viewer.viewer.selection_screenshots [FIELD] [OUT_DIR]

FIELD defaults to the bundled demo (``scenes/demo``). Headless Chromium opens the viewer, types queries,
opens the "Select & edit" panel and shows the selection tinted, alone and hidden (RGB display), tinted in the
depth display, then deletes it.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

from gags_viewer.viewer.screenshots import CHROMIUM, FLAGS, _small_png, labelled_input

SHOTS = [
    ("Tinted", "viewer-selection-tinted.png"),
    ("Alone", "viewer-selection-alone.png"),
    ("Hidden", "viewer-selection-hidden.png"),
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("field", nargs="?", default=None)
    parser.add_argument("out", nargs="?", default="docs")
    parser.add_argument("--queries", default="red cube; green ball")
    args = parser.parse_args(argv)

    import torch
    from playwright.sync_api import sync_playwright

    from gags_viewer.viewer.commands import build_engine, demo_path, load_for_viewing, serve

    path = Path(args.field) if args.field else demo_path()
    field = load_for_viewing(path, None, torch.device("cpu"))
    engine = build_engine(field, path, torch.device("cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, viewer = serve(
        field,
        engine,
        port=port,
        output_dir=Path(tempfile.mkdtemp()),
        block=False,
        query=args.queries,
        field_dir=path if path.is_dir() else path.parent,
    )

    def settle(session, seconds: float) -> None:
        count = len(session.frame_times)
        deadline = time.time() + 120
        while time.time() < deadline and (len(session.frame_times) == count or session.pending_phrases):
            time.sleep(0.2)
        time.sleep(seconds)

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(f"http://127.0.0.1:{port}")
            page.locator(labelled_input("Queries")).wait_for(timeout=60_000)
            time.sleep(2)
            for button in page.locator(".mantine-Notification-root button").all():
                try:
                    button.click(timeout=2000)
                except Exception:  # noqa: BLE001 - a toast that closed by itself
                    pass
            session = list(viewer.app.sessions.values())[0]
            settle(session, 3)
            page.get_by_text("Select & edit", exact=True).click()
            page.get_by_text("Sel. threshold", exact=True).wait_for(timeout=30_000)

            def choose(index: int, option: str) -> None:
                page.locator(".mantine-Select-input >> visible=true").nth(index).click()
                page.get_by_role("option", name=option, exact=True).click()

            def shot(name: str) -> None:
                for button in page.locator(".mantine-Notification-root button").all():
                    try:
                        button.click(timeout=2000)
                    except Exception:  # noqa: BLE001 - a toast that closed by itself
                        pass
                page.mouse.move(400, 760)  # no tooltip in the picture
                time.sleep(1.0)
                _small_png(page.screenshot(), out / name, 1000)
                print(f"wrote {out / name}")

            choose(3, "RGB")  # selects: Query mode, Show, Save as, Display, ...: the tint is the only marking
            for label, name in SHOTS:
                choose(1, label)
                settle(session, 5)
                shot(name)
            choose(1, "Tinted")  # the tint in a display mode that does not show the field's colours
            choose(3, "Depth")
            settle(session, 5)
            shot("viewer-selection-tinted-depth.png")
            choose(3, "RGB")
            choose(1, "Not marked")
            page.get_by_role("button", name="Delete selection").click()
            settle(session, 6)
            shot("viewer-edit-deleted.png")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
