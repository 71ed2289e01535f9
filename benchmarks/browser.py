"""Responsiveness as a person feels it: the demo in headless Chromium, timed on the page's own pixels.

    python benchmarks/browser.py                 # 20 tries of each measurement, p50 / p95
    python benchmarks/browser.py --tries 5       # a quick look
    python benchmarks/browser.py --compare PATH  # the source tree at PATH first, then this one

The viewer serves the bundled demo field in this process (on the CPU unless --device cuda) and Debian's
Chromium opens it through Playwright (1200x800 window). Three measurements, each ``--tries`` times
(pixel mode ``--pixel-tries``):

- **Query to highlight** (gaussian mode; after one untimed query that loads the text model): a new
  phrase is put into the query box and Enter pressed (the objects cycle, so each query highlights
  something else; after the first five the phrases were never encoded before). The clock starts as the
  phrase goes in (viser sends a text box's value on every edit, so the server has the query before
  Enter: what a person waits for is the time from their last keystroke; the page's own clock stamps
  that edit, and the mouse release below, so Playwright's round trips are not counted). *first
  change*: the first painted frame that differs from the one before; *highlight*: the first painted
  frame that shows what the canvas settles on (a frame without the highlight, shown while a phrase
  is encoded, is a change but not the highlight).
- **Orbit settle** (gaussian mode): the mouse drags across the canvas and is released; the clock starts
  at the release and stops at the first frame that shows what the canvas settles on.
- **Pixel orbit settle** (pixel mode, the GAGS protocol: every covered pixel decoded): the same orbit;
  the clock stops when the pixel-mode frame is painted. Then **pixel query**: new phrases in pixel
  mode with the camera at rest.

Painted frames come from Chrome's screencast (DevTools ``Page.startScreencast``), each stamped with the
time the compositor drew it. Nothing is decoded or compared while a try runs (that would take CPU from
the server and the browser on a small machine): each try waits ``--window`` seconds (pixel mode
``--pixel-window``), then its frames are read. A try counts as settled when its frames did not change in
the last ``--quiet`` seconds of the window; else it is reported as the whole window. Each line also
splits the time at the moment the server sent the frame that was then painted: *server* (request to
frame sent) and *browser* (frame sent to painted: websocket, JPEG decode, WebGL). On a shared CPU the
absolute numbers move with the load; compare trees in one run (``--compare``).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# As the gags-viewer command runs (gags_viewer/__init__.py sets it before torch loads OpenMP): this
# script imports torch first, and OpenMP's default busy-waiting threads would take a core from the
# render thread (a pixel-mode frame measured 25 % slower here than from the command).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(os.environ.get("GAGS_BENCH_TREE") or Path(__file__).resolve().parent.parent)
"""The source tree measured (``--compare`` sets it for the other tree)."""
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _this_checkouts_browser_helpers():
    """The headless-Chromium helpers the tests use (``gags_viewer/viewer/screenshots.py``, standard
    library only at import), from this checkout also when an older tree is measured."""
    path = Path(__file__).resolve().parent.parent / "gags_viewer" / "viewer" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("_benchmark_browser_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _this_checkouts_browser_helpers()
CHROMIUM, FLAGS, labelled_input = _helpers.CHROMIUM, _helpers.FLAGS, _helpers.labelled_input

VIEWPORT = {"width": 1200, "height": 800}
OBJECTS = ("red cube", "green ball", "lamp", "cyan bowl", "mushroom cap")
TEMPLATES = ("{}", "a {}", "the {}", "a photo of a {}", "this is a {}", "there is a {}")
"""New phrases in the demo model's caption forms; consecutive ones name different objects (the canvas changes)."""
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

    def after(self, start: float, end: float) -> list[int]:
        return [i for i, (ts, _) in enumerate(self.frames) if start < ts <= end]

    def stop(self) -> None:
        self.cdp.send("Page.stopScreencast")
        self.cdp.detach()


@dataclass
class Try:
    """One timed action, read from the frames painted in its window (seconds from its start)."""

    first_change: float
    settled: float
    server: float | None
    """When the server sent the frame painted at ``settled`` (None: no frame was sent in the window)."""


def read_try(cast: Screencast, sends: list[float], start: float, window: float, quiet: float) -> Try:
    """The first change and the settle time of the frames painted in (start, start + window].

    Settled: the first frame painted after the last frame the server sent in the window that shows what
    the canvas ends on (by the pixels alone when none was sent). The pixels alone cannot tell pixel
    mode's frame from the gaussian-mode one shown while the camera moved when the two look alike.
    """
    end = start + window
    reference = cast.image(cast.latest_before(start))
    indices = cast.after(start, end)
    images = [cast.image(i) for i in indices]
    times = [cast.frames[i][0] - start for i in indices]
    first = next((t for t, im in zip(times, images) if _changed(reference, im)), window)
    if not images or any(_changed(images[-1], im) for t, im in zip(times, images) if t >= window - quiet):
        return Try(first, window, None)  # still changing at the end of the window: not settled
    sent = max((t - start for t in list(sends) if start < t <= end), default=None)
    since = -1.0 if sent is None else sent
    settled = next((t for t, im in zip(times, images) if t >= since and not _changed(images[-1], im)), window)
    if sent is None and not _changed(reference, images[-1]):
        settled = 0.0
    return Try(first, settled, sent)


@dataclass
class Results:
    tries: dict[str, list[Try]] = field(default_factory=dict)

    def add(self, name: str, one: Try) -> None:
        self.tries.setdefault(name, []).append(one)


def _record_sends(client) -> list[float]:
    """Record when the server sends this browser a frame (``time.time()``), in any tree."""
    sends: list[float] = []
    send = client.scene.set_background_image

    def recorded(*args, **kwargs):
        send(*args, **kwargs)
        sends.append(time.time())

    client.scene.set_background_image = recorded
    return sends


EVENT_CLOCK = """
window.__lastEvent = {};
for (const type of ["input", "pointerup"]) {
  document.addEventListener(type, () => { window.__lastEvent[type] = performance.timeOrigin + performance.now(); }, true);
}
"""
"""Installed in the page: when it last saw an edit of a text box and a mouse release (ms since the epoch)."""


def _event_time(page, kind: str, fallback: float) -> float:
    """When the page saw its latest ``kind`` event (``time.time()`` clock; ``fallback`` if none): the
    moment a person's action happened, without Playwright's own round trips to the browser."""
    value = page.evaluate(f"window.__lastEvent && window.__lastEvent['{kind}']")
    return fallback if not value else float(value) / 1000.0


def _orbit(page, cx: float, cy: float, i: int) -> float:
    """Drag across the canvas and release; returns the release time, as the page saw it."""
    page.mouse.move(cx, cy)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(cx + (1 if i % 2 == 0 else -1) * 12 * step, cy + 3 * step)
        time.sleep(0.02)
    page.mouse.up()
    return _event_time(page, "pointerup", time.time())


def measure(tries: int, device: str, window: float, pixel_window: float, quiet: float, pixel_tries: int) -> Results:
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
    phrases = itertools.cycle([t.format(o) for t, o in itertools.product(TEMPLATES, OBJECTS)])
    results = Results()
    try:
        with sync_playwright() as p:
            executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
            browser = p.chromium.launch(executable_path=executable, args=FLAGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.add_init_script(EVENT_CLOCK)
            page.goto(url)
            box = page.locator(labelled_input("Queries"))
            box.wait_for(timeout=120_000)
            cast = Screencast(page)
            renderer = next(iter(nv.renderers(viewer).values()))
            sends = _record_sends(renderer.client)
            cast.wait(3.0)
            canvas = page.locator("canvas").first.bounding_box()
            cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            box.fill("brown table")  # not timed: loads the text model
            box.press("Enter")
            cast.wait(3.0)

            def query(name: str, seconds: float) -> None:
                before = time.time()
                box.fill(next(phrases))
                start = _event_time(page, "input", before)
                box.press("Enter")
                cast.wait(seconds)
                results.add(name, read_try(cast, sends, start, seconds, quiet))

            for _ in range(tries):
                query("query", window)
            for i in range(tries):
                start = _orbit(page, cx, cy, i)
                cast.wait(window)
                results.add("orbit", read_try(cast, sends, start, window, quiet))
            if pixel_tries:
                page.get_by_role("combobox", name="Query mode").click()
                page.get_by_role("option", name="pixel", exact=True).click()
                cast.wait(pixel_window)
                for _ in range(pixel_tries):
                    start = _orbit(page, cx, cy, 0)  # always onwards: a view never seen (none is decoded yet)
                    cast.wait(pixel_window)
                    results.add("pixel orbit", read_try(cast, sends, start, pixel_window, quiet))
                for _ in range(pixel_tries):
                    query("pixel query", pixel_window)
            cast.stop()
            browser.close()
    finally:
        server.stop()
    return results


def _summary(values: list[float]) -> str:
    ms = sorted(1000 * v for v in values)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"p50 {statistics.median(ms):6.0f} ms  p95 {p95:6.0f} ms  (n={len(ms)})"


def report(results: Results) -> None:
    labels = {"query": ("query: first change", "query to highlight"), "orbit": (None, "orbit settle")}
    for name, runs in results.tries.items():
        first_label, settled_label = labels.get(name, (None, f"{name} settle"))
        if first_label:
            print(f"{first_label:22s}  {_summary([r.first_change for r in runs])}")
        print(f"{settled_label:22s}  {_summary([r.settled for r in runs])}", flush=True)
        split = [(r.server, r.settled - r.server) for r in runs if r.server is not None]
        if split:
            print(f"  of which server       {_summary([s for s, _ in split])}")
            print(f"  of which browser      {_summary([b for _, b in split])}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--pixel-tries", type=int, default=5, help="pixel-mode orbits (0: none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--window", type=float, default=1.5, help="seconds each query or orbit is watched")
    parser.add_argument("--pixel-window", type=float, default=5.0, help="seconds each pixel-mode orbit is watched")
    parser.add_argument("--quiet", type=float, default=0.5, help="seconds without change at a window's end")
    parser.add_argument("--compare", type=Path, help="first measure the source tree at this path")
    args = parser.parse_args(argv)
    if args.compare is not None:
        root = args.compare.resolve()
        env = {**os.environ, "PYTHONPATH": str(root), "GAGS_BENCH_TREE": str(root)}
        options = ["--tries", args.tries, "--pixel-tries", args.pixel_tries, "--device", args.device]
        options += ["--window", args.window, "--pixel-window", args.pixel_window, "--quiet", args.quiet]
        print(f"# before: {root}", flush=True)
        script = Path(__file__).resolve()
        subprocess.run([sys.executable, str(script), *map(str, options)], cwd=root, env=env, check=True)
        print(f"# after: {ROOT}", flush=True)
    report(measure(args.tries, args.device, args.window, args.pixel_window, args.quiet, args.pixel_tries))


if __name__ == "__main__":
    main()
