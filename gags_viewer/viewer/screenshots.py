"""Regenerate the viewer screenshots in ``docs/`` (a maintainer tool; needs Playwright and Chromium).

    python -m gags_viewer.viewer.screenshots FIELD [OUT_DIR] [--queries "mug; plant"]

FIELD is any field the viewer opens, or ``synthetic`` for the test scene (from a repository checkout:
it uses ``tests/tiny_clip.py``). The viewer runs in this process; Debian's Chromium (``/usr/bin/chromium``)
opens it headless, types the queries, switches display modes and exports a PNG. Images are downscaled
and palette-quantised to stay small.
"""

from __future__ import annotations

import argparse
import io
import socket
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def labelled_input(label: str) -> str:
    """A Playwright selector for the GUI's text input labelled ``label`` (e.g. "Queries").

    Positional selectors ("the first visible text input") are not safe: viser keeps its own server-URL
    input in a collapsing panel that can still count as visible (and is inert) while it animates.
    """
    return f"xpath=//label[normalize-space(.)='{label}']/ancestor::div[.//input][1]//input"


MODES = [
    ("Solid masks over RGB", "viewer-mask.png"),
    ("Heat-map over RGB", "viewer-heatmap.png"),
    ("Granularity map", "viewer-granularity.png"),
    ("Feature PCA", "viewer-pca.png"),
]


def _small_png(data: bytes, path: Path, width: int) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((width, int(image.height * width / image.width)), Image.LANCZOS)
    image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    image.save(path, optimize=True)


def _load(field_arg: str):
    import torch

    if field_arg == "synthetic":
        from gags_viewer.language import QueryEngine, TextEncoder
        from gags_viewer.viewer.synthetic import make_query_field
        from tests.tiny_clip import make_tiny_clip

        clip = make_tiny_clip(tempfile.mkdtemp())
        encoder = TextEncoder(clip, device="cpu")
        field = make_query_field(encoder.encode, clip)
        return field, QueryEngine(field, encoder)
    from gags_viewer.viewer.commands import build_engine, load_for_viewing

    path = Path(field_arg)
    field = load_for_viewing(path, None, torch.device("cpu"))
    return field, build_engine(field, path, torch.device("cpu"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("field")
    parser.add_argument("out", nargs="?", default="docs")
    parser.add_argument("--queries", default=None, help="default: the field's first two example queries")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from gags_viewer.viewer.commands import serve

    field, engine = _load(args.field)
    queries = args.queries or "; ".join(field.metadata.example_queries[:2]) or "mug; plant"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, viewer = serve(field, engine, port=port, output_dir=Path(tempfile.mkdtemp()), block=False)
    viewer.default_render_size = (960, 720)

    def settle(session, seconds: float) -> None:
        count = len(session.frame_times)
        deadline = time.time() + 120
        while time.time() < deadline and (len(session.frame_times) == count or session.pending_phrases):
            time.sleep(0.2)
        time.sleep(seconds)

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_context(viewport={"width": 1280, "height": 760}, accept_downloads=True).new_page()
            page.goto(f"http://127.0.0.1:{port}")
            first_input = page.locator(labelled_input("Queries"))
            first_input.wait_for(timeout=60_000)
            time.sleep(2)
            for button in page.locator(".mantine-Notification-root button").all():
                try:
                    button.click(timeout=2000)
                except Exception:  # noqa: BLE001 - a toast that closed by itself
                    pass
            session = list(viewer.app.sessions.values())[0]
            settle(session, 2)

            def shot(name: str) -> None:
                page.mouse.move(400, 700)  # no tooltip in the picture
                time.sleep(1.0)
                _small_png(page.screenshot(), out / name, 1000)
                print(f"wrote {out / name}")

            if field.has_language:
                first_input.fill(queries)
                first_input.press("Enter")
                settle(session, 6)
            shot("viewer-overlay.png" if field.has_language else "viewer-rgb.png")
            for label, name in MODES if field.has_language else []:
                page.locator(".mantine-Select-input >> visible=true").nth(1).click()
                page.get_by_role("option", name=label, exact=True).click()
                page.mouse.move(400, 700)
                settle(session, 6)
                shot(name)
            if field.has_language:
                page.locator(".mantine-Select-input >> visible=true").nth(1).click()
                page.get_by_role("option", name="Query colours over RGB", exact=True).click()
                settle(session, 4)
            with page.expect_download(timeout=120_000) as info:
                page.get_by_role("button", name="Export PNG").click()
            _small_png(Path(info.value.path()).read_bytes(), out / "viewer-export.png", 640)
            print(f"wrote {out / 'viewer-export.png'}")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
