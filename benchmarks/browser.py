"""Responsiveness as a person feels it: the demo in headless Chromium, timed on the page's own pixels.

    python benchmarks/browser.py                 # 20 queries and 20 orbits, p50 / p95
    python benchmarks/browser.py --tries 5       # a quick look

The viewer serves the bundled demo field in this process (on the CPU unless --device cuda) and Debian's
Chromium opens it through Playwright (1200x800 window). Two measurements, each ``--tries`` times:

- **Enter to highlight** (after one untimed query that loads the text model): a new phrase (never
  encoded before; the objects cycle so that each query highlights something else) is typed into the
  query box; the clock starts when Enter is pressed and stops at the first screenshot of the canvas that
  differs from the one before Enter (more than 0.2 % of its pixels by more than 40 levels), or at 10 s.
- **Orbit settle**: the mouse drags across the canvas (an orbit) and is released; the clock starts at the
  release and stops at the last change of the canvas (it must then stay unchanged for ``--quiet`` s).

Screenshots are polled back to back (each takes a few tens of ms: that is the resolution of the
measurement). On a shared CPU the absolute numbers move with the load; compare trees in one run
(``--compare PATH`` runs the same measurements on the source tree at PATH first, in a subprocess).
"""

from __future__ import annotations

import argparse
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _changed(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a[TOP_MARGIN:].astype(np.int16) - b[TOP_MARGIN:].astype(np.int16)).sum(-1) > 40
    return diff.mean() > 0.002


class Canvas:
    def __init__(self, page):
        self.page = page
        self.box = page.locator("canvas").first.bounding_box()

    def shot(self) -> np.ndarray:
        from PIL import Image

        b = self.box
        png = self.page.screenshot(clip={"x": b["x"], "y": b["y"], "width": b["width"], "height": b["height"]})
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def settle(self, quiet: float, timeout: float = 20.0) -> float:
        """Poll until the canvas stays unchanged for ``quiet`` s; returns the time of its last change."""
        previous, last_change = self.shot(), time.perf_counter()
        deadline = last_change + timeout
        while time.perf_counter() - last_change < quiet and time.perf_counter() < deadline:
            current = self.shot()
            if _changed(previous, current):
                last_change = time.perf_counter()
            previous = current
        return last_change


def measure(tries: int, device: str, quiet: float) -> dict:
    import torch
    from playwright.sync_api import sync_playwright

    from gags_viewer.viewer.commands import build_engine, load_for_viewing, serve

    path = ROOT / "scenes" / "demo"
    dev = torch.device(device)
    field = load_for_viewing(path, None, dev)
    engine = build_engine(field, path, dev)
    server, viewer = serve(field, engine, port=_free_port(), block=False, query="lamp")
    url = f"http://127.0.0.1:{server.get_port()}"
    phrases = (t.format(o) for t, o in itertools.product(TEMPLATES, OBJECTS))
    enter, orbit = [], []
    try:
        with sync_playwright() as p:
            executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
            browser = p.chromium.launch(executable_path=executable, args=FLAGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(url)
            box = page.locator(labelled_input("Queries"))
            box.wait_for(timeout=120_000)
            canvas = Canvas(page)
            canvas.settle(quiet=2.0, timeout=120.0)
            cx, cy = canvas.box["x"] + canvas.box["width"] / 2, canvas.box["y"] + canvas.box["height"] / 2
            box.fill("brown table")  # not timed: loads the text model
            box.press("Enter")
            canvas.settle(quiet=2.0, timeout=120.0)
            for _ in range(tries):
                box.fill(next(phrases))
                before = canvas.shot()
                box.press("Enter")
                start = time.perf_counter()
                while not _changed(before, canvas.shot()) and time.perf_counter() - start < TIMEOUT_S:
                    pass
                enter.append(time.perf_counter() - start)  # TIMEOUT_S when the canvas never changed
                canvas.settle(quiet)
            for i in range(tries):
                page.mouse.move(cx, cy)
                page.mouse.down()
                for step in range(1, 11):
                    page.mouse.move(cx + (1 if i % 2 == 0 else -1) * 12 * step, cy + 3 * step)
                    time.sleep(0.02)
                page.mouse.up()
                start = time.perf_counter()
                orbit.append(canvas.settle(quiet) - start)
            browser.close()
    finally:
        server.stop()
    return {"enter": enter, "orbit": orbit}


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
    print(f"Enter to highlight: {_summary(result['enter'])}")
    print(f"orbit settle:       {_summary(result['orbit'])}", flush=True)


if __name__ == "__main__":
    main()
