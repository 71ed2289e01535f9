"""Browser-side rendering: bytes sent to the browser on load and per query change, and the browser's frame
rate while the camera orbits, in headless Chromium (Debian's; WebGL in software there).

    python benchmarks/browser_side.py                       # demo and a 1M synthetic field
    python benchmarks/browser_side.py --fields demo --seconds 5

The viewer runs in this process with ``--browser-side`` on; bytes are counted where they leave, at the
websocket (every ``send`` of viser's server connection). Per field:

- load: bytes from opening the page until the splats have been sent and nothing more arrives (the
  GUI's own messages included);
- per query change: bytes after typing each query in turn (Enter) until nothing more arrives, the
  Gaussians whose chunks were resent, and when the last byte left (text encoding, scoring, colouring);
- frame rate: ``requestAnimationFrame`` callbacks per second in the page while the server turns the
  browser's camera around the scene (30 camera updates a second), and at rest for reference. The page
  draws once per callback while the camera moves, so under load the rate is the drawing rate. With
  software WebGL on a shared CPU this is a floor, not what a GPU browser gets.

Fields: ``demo`` (``scenes/demo``, 9,170 Gaussians) and synthetic fields (``100k``, ``1M``: the scene
of ``benchmarks/query.py`` with decoded-region "phrases", as ``benchmarks/frame.py`` uses).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gags_viewer.viewer.screenshots import CHROMIUM, FLAGS, labelled_input  # noqa: E402

RAF_HOOK = """
(() => {
  window.__raf = 0;
  const tick = () => { window.__raf += 1; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
})();
"""


class SocketBytes:
    """Bytes sent by every websocket connection of viser's server (wraps the connection's ``send``)."""

    def __init__(self):
        from websockets.asyncio.server import ServerConnection

        self.total = 0
        self.last_send = 0.0
        """``time.perf_counter()`` of the latest send."""
        self._lock = threading.Lock()
        original = ServerConnection.send
        counter = self

        async def send(connection, message, *args, **kwargs):
            size = len(message) if isinstance(message, (bytes, bytearray, memoryview, str)) else 0
            with counter._lock:
                counter.total += size
                counter.last_send = time.perf_counter()
            return await original(connection, message, *args, **kwargs)

        ServerConnection.send = send

    def settled(self, quiet: float = 1.5, timeout: float = 600.0) -> int:
        """The byte count once nothing was sent for ``quiet`` seconds."""
        deadline = time.time() + timeout
        last, since = self.total, time.time()
        while time.time() < deadline:
            time.sleep(0.1)
            if self.total != last:
                last, since = self.total, time.time()
            elif time.time() - since >= quiet:
                return last
        return self.total


def demo_field():
    from gags_viewer.viewer.commands import build_engine, check_text_model, load_for_viewing

    path = REPO / "scenes" / "demo"
    field = load_for_viewing(path, None, torch.device("cpu"))
    engine = build_engine(field, path, torch.device("cpu"))
    check_text_model(engine)
    return field, engine, ["red cube", "lamp", "green ball; purple ring", "table"]


def synthetic(count: int):
    from benchmarks.frame import SYNTHETIC_NEGATIVES, SYNTHETIC_QUERIES, synthetic_setup
    from gags_viewer.field.language_field import ClipSpec

    field, engine, _, _, _ = synthetic_setup(count, torch.device("cpu"))
    text = engine.text_encoder  # the viewer also reads a spec (no vocabulary) and asks what is encoded
    text.spec = ClipSpec(model="synthetic", pretrained=None)
    text.cached = lambda phrase: text.table.get(phrase.strip())
    field.metadata = dataclasses.replace(field.metadata, negatives=tuple(SYNTHETIC_NEGATIVES))
    q = list(SYNTHETIC_QUERIES)
    return field, engine, [q[0], q[1], f"{q[0]}; {q[2]}", q[2]]


def parse_count(name: str) -> int:
    scale = {"k": 1_000, "M": 1_000_000}
    return int(float(name[:-1]) * scale[name[-1]]) if name[-1] in scale else int(name)


def orbit(client, framing, seconds: float, rate: float = 30.0) -> None:
    """Turn the browser's camera once around the scene's up axis in ``seconds``."""
    up = framing.up / np.linalg.norm(framing.up)
    offset = framing.eye - framing.target
    along = np.dot(offset, up) * up
    across = offset - along
    steps = int(seconds * rate)
    for i in range(steps):
        angle = 2 * math.pi * i / steps
        eye = framing.target + along + across * math.cos(angle) + np.cross(up, across) * math.sin(angle)
        with client.atomic():
            client.camera.position = tuple(float(v) for v in eye)
            client.camera.look_at = tuple(float(v) for v in framing.target)
        time.sleep(1.0 / rate)


def frame_rate(page, seconds: float, during=None) -> float:
    start, t0 = page.evaluate("window.__raf"), time.perf_counter()
    if during is None:
        time.sleep(seconds)
    else:
        during()
    return (page.evaluate("window.__raf") - start) / (time.perf_counter() - t0)


def measure(name: str, browser, counter: SocketBytes, seconds: float) -> dict:
    from gags_viewer.viewer.camera_path import default_framing
    from gags_viewer.viewer.commands import serve

    field, engine, queries = demo_field() if name == "demo" else synthetic(parse_count(name))
    server, viewer = serve(field, engine, port=0, block=False, browser_side=True, output_dir=Path("/tmp"))
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        context.add_init_script(RAF_HOOK)
        page = context.new_page()
        before = counter.total
        page.goto(f"http://127.0.0.1:{server.get_port()}")
        page.locator(labelled_input("Queries")).wait_for(timeout=120_000)
        deadline = time.time() + 600
        while not viewer.app.sessions and time.time() < deadline:
            time.sleep(0.1)
        session = next(iter(viewer.app.sessions.values()))
        splats = session.browser_side
        while splats.recolours < 1 and time.time() < deadline:
            time.sleep(0.1)
        load = counter.settled() - before
        rows = []
        for text in queries:
            sent, mark = splats.gaussians_sent, counter.total
            box = page.locator(labelled_input("Queries"))
            t0 = time.perf_counter()  # the viewer may apply the text as it is typed, before the Enter
            box.fill(text, force=True, timeout=300_000)  # no waiting for a steady frame: a big field draws slowly
            box.press("Enter", timeout=300_000)
            sent_bytes = counter.settled() - mark
            rows.append((text, sent_bytes, splats.gaussians_sent - sent, counter.last_send - t0))
        time.sleep(2.0)
        framing = default_framing(viewer.app.field)
        idle = frame_rate(page, 3.0)
        moving = frame_rate(page, seconds, lambda: orbit(session.client, framing, seconds))
        frames = session.renderer.frames_sent
        return {
            "name": name,
            "gaussians": field.num_gaussians,
            "chunks": splats._geometry.num_chunks,
            "load": load,
            "queries": rows,
            "idle_fps": idle,
            "orbit_fps": moving,
            "server_frames": frames,
        }
    finally:
        context.close()
        server.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", default="demo,1M", help="comma-separated: demo, 100k, 1M, ...")
    parser.add_argument("--seconds", type=float, default=8.0, help="orbit duration for the frame rate")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    counter = SocketBytes()
    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for name in args.fields.split(","):
                results.append(measure(name.strip(), browser, counter, args.seconds))
        finally:
            browser.close()
    print("\nbrowser-side rendering, headless Chromium (software WebGL), bytes at the websocket")
    for r in results:
        print(
            f"\n{r['name']}: {r['gaussians']:,} Gaussians in {r['chunks']} chunks; "
            f"splat buffer {r['gaussians'] * 32 / 1e6:.2f} MB"
        )
        print(f"  load: {r['load'] / 1e6:.2f} MB")
        for text, sent, gaussians, applied in r["queries"]:
            print(
                f"  query '{text}': {sent / 1e3:,.1f} kB ({gaussians:,} Gaussians resent, "
                f"{gaussians / r['gaussians']:.0%}); last byte {applied:.2f} s after typing"
            )
        print(
            f"  frame rate: {r['orbit_fps']:.1f} fps orbiting, {r['idle_fps']:.1f} at rest; "
            f"server frames rendered for this browser: {r['server_frames']}"
        )


if __name__ == "__main__":
    main()
