"""Responsiveness as a person feels it: the demo in headless Chromium, timed on the page's own pixels.

    python benchmarks/browser.py                 # 20 queries and 20 orbits, p50 / p95
    python benchmarks/browser.py --tries 5       # a quick look

The viewer serves the bundled demo field in this process (on the CPU unless --device cuda) and Debian's
Chromium opens it through Playwright (1200x800 window). Two measurements, each ``--tries`` times:

- **Query to highlight** (after one untimed query that loads the text model): a new phrase (never
  encoded before; the objects cycle so that each query highlights something else) is put into the query
  box and Enter pressed; the clock starts as the phrase goes in (viser sends a text box's value on every
  edit, so the server has the query before Enter: what a person waits for is the time from their last
  keystroke) and stops when the browser first paints a canvas that differs from the one before (more
  than 0.2 % of its pixels by more than 40 levels), or at 10 s.
- **Orbit settle**: the mouse drags across the canvas (an orbit) and is released; the clock starts at the
  release and stops at the last change the browser paints (nothing changes for ``--quiet`` s after it).

Painted frames come from Chrome's screencast (DevTools ``Page.startScreencast``), each stamped with the
time the compositor drew it: screenshots took 130-420 ms each here and hid where the time goes. Each
line also splits the time at the moment the server sent the frame that was then painted: *server*
(request to frame sent) and *browser* (frame sent to painted: websocket, JPEG decode, WebGL).
On a shared CPU the absolute numbers move with the load; compare trees in one run (``--compare PATH``
runs the same measurements on the source tree at PATH first, in a subprocess).
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gags_viewer.viewer.screenshots import CHROMIUM, FLAGS, labelled_input  # noqa: E402 - the headless Chromium the tests use

VIEWPORT = {"width": 1200, "height": 800}
OBJECTS = ("red cube", "green ball", "lamp", "cyan bowl", "mushroom cap")
TEMPLATES = ("{}", "a {}", "the {}", "a photo of a {}", "this is a {}", "there is a {}")
"""New phrases in the demo model's caption forms; consecutive ones name different objects (the canvas changes)."""
TIMEOUT_S = 10.0
TOP_MARGIN = 170  # notifications show in the canvas' top-left corner
CAST_SCALE = 0.5
"""Screencast frames are half the window's size (cheaper to encode and compare)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _changed(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).sum(-1) > 40
    return diff.mean() > 0.002


class Screencast:
    """The frames Chrome paints, with the time each was drawn, cropped to the canvas below the margin."""

    def __init__(self, page):
        self.page = page
        box = page.locator("canvas").first.bounding_box()
        self.crop = tuple(
            int(round(v * CAST_SCALE))
            for v in (box["y"] + TOP_MARGIN, box["y"] + box["height"], box["x"], box["x"] + box["width"])
        )
        self.frames: list[tuple[float, str]] = []
        """(paint time, ``time.time()`` clock; base64 JPEG) in arrival order."""
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Page.screencastFrame", self._on_frame)
        size = {"maxWidth": int(VIEWPORT["width"] * CAST_SCALE), "maxHeight": int(VIEWPORT["height"] * CAST_SCALE)}
        self.cdp.send("Page.startScreencast", {"format": "jpeg", "quality": 90, "everyNthFrame": 1, **size})
        while not self.frames:
            self.wait(0.05)

    def _on_frame(self, event) -> None:
        self.frames.append((float(event["metadata"]["timestamp"]), event["data"]))
        self.cdp.send("Page.screencastFrameAck", {"sessionId": event["sessionId"]})

    def image(self, index: int) -> np.ndarray:
        from PIL import Image

        y0, y1, x0, x1 = self.crop
        data = base64.b64decode(self.frames[index][1])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[y0:y1, x0:x1]

    def wait(self, seconds: float) -> None:
        self.page.wait_for_timeout(seconds * 1000)  # lets Playwright deliver the frames meanwhile

    def latest_before(self, t: float) -> int:
        return max((i for i, (ts, _) in enumerate(self.frames) if ts < t), default=len(self.frames) - 1)

    def first_change(self, reference: np.ndarray, start: float, timeout: float) -> float | None:
        """Paint time of the first frame after ``start`` that differs from ``reference``."""
        checked = 0
        while True:
            frames = self.frames
            for i in range(checked, len(frames)):
                if frames[i][0] > start and _changed(reference, self.image(i)):
                    return frames[i][0]
            checked = len(frames)
            if time.time() - start > timeout:
                return None
            self.wait(0.02)

    def last_change(self, start: float, quiet: float, timeout: float = 20.0) -> float:
        """Paint time of the last change after ``start``, once nothing changed for ``quiet`` s."""
        previous = self.image(self.latest_before(start))
        last, checked = start, self.latest_before(start) + 1
        while time.time() - max(last, start) < quiet and time.time() - start < timeout:
            self.wait(0.05)
            frames = self.frames
            for i in range(checked, len(frames)):
                current = self.image(i)
                if _changed(previous, current):
                    last = frames[i][0]
                previous = current
            checked = len(frames)
        return last

    def stop(self) -> None:
        self.cdp.send("Page.stopScreencast")
        self.cdp.detach()


def _sent_before(renderer, painted: float) -> float | None:
    """When the server sent the latest frame it sent before ``painted`` (``time.time()``); None for trees
    whose renderer does not record it."""
    return max((t for t, _ in list(getattr(renderer, "sent_times", ())) if t <= painted), default=None)


def measure(tries: int, device: str, quiet: float) -> dict:
    import torch
    from playwright.sync_api import sync_playwright

    from gags_viewer.viewer import nerfview_adapter as nv
    from gags_viewer.viewer.commands import build_engine, load_for_viewing, serve

    path = ROOT / "scenes" / "demo"
    dev = torch.device(device)
    field = load_for_viewing(path, None, dev)
    engine = build_engine(field, path, dev)
    server, viewer = serve(field, engine, port=_free_port(), block=False, query="lamp")
    url = f"http://127.0.0.1:{server.get_port()}"
    phrases = (t.format(o) for t, o in itertools.product(TEMPLATES, OBJECTS))
    result: dict[str, list] = {"enter": [], "enter_server": [], "orbit": [], "orbit_server": []}
    try:
        with sync_playwright() as p:
            executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
            browser = p.chromium.launch(executable_path=executable, args=FLAGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(url)
            box = page.locator(labelled_input("Queries"))
            box.wait_for(timeout=120_000)
            cast = Screencast(page)
            renderer = next(iter(nv.renderers(viewer).values()))
            cast.last_change(time.time(), quiet=2.0, timeout=120.0)
            canvas = page.locator("canvas").first.bounding_box()
            cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            box.fill("brown table")  # not timed: loads the text model
            box.press("Enter")
            cast.last_change(time.time(), quiet=2.0, timeout=120.0)
            for _ in range(tries):
                start = time.time()
                before = cast.image(cast.latest_before(start))
                box.fill(next(phrases))
                box.press("Enter")
                painted = cast.first_change(before, start, TIMEOUT_S)
                sent = _sent_before(renderer, painted) if painted is not None else None
                result["enter"].append(TIMEOUT_S if painted is None else painted - start)
                result["enter_server"].append(None if sent is None else sent - start)
                cast.last_change(time.time(), quiet)
            for i in range(tries):
                page.mouse.move(cx, cy)
                page.mouse.down()
                for step in range(1, 11):
                    page.mouse.move(cx + (1 if i % 2 == 0 else -1) * 12 * step, cy + 3 * step)
                    time.sleep(0.02)
                page.mouse.up()
                start = time.time()
                painted = cast.last_change(start, quiet)
                sent = _sent_before(renderer, painted)
                result["orbit"].append(painted - start)
                result["orbit_server"].append(None if sent is None or sent < start else sent - start)
            cast.stop()
            browser.close()
    finally:
        server.stop()
    return result


def _summary(values: list[float]) -> str:
    ms = sorted(1000 * v for v in values)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"p50 {statistics.median(ms):6.0f} ms  p95 {p95:6.0f} ms  (n={len(ms)})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", type=float, default=1.0, help="seconds without change that mean settled")
    parser.add_argument("--compare", type=Path, help="first measure the source tree at this path")
    args = parser.parse_args(argv)
    if args.compare is not None:
        root = args.compare.resolve()
        env = {**os.environ, "PYTHONPATH": str(root)}
        command = [
            sys.executable,
            str(root / "benchmarks" / "browser.py"),
            "--tries",
            str(args.tries),
            "--device",
            args.device,
            "--quiet",
            str(args.quiet),
        ]
        print(f"# before: {root}", flush=True)
        subprocess.run(command, cwd=root, env=env, check=True)
        print(f"# after: {ROOT}", flush=True)
    result = measure(args.tries, args.device, args.quiet)
    for name, key in (("query to highlight", "enter"), ("orbit settle", "orbit")):
        total, server = result[key], result[f"{key}_server"]
        split = [(s, t - s) for s, t in zip(server, total) if s is not None]
        print(f"{name:18s}  {_summary(total)}", flush=True)
        if split:
            print(f"  of which server   {_summary([s for s, _ in split])}")
            print(f"  of which browser  {_summary([b for _, b in split])}", flush=True)


if __name__ == "__main__":
    main()
