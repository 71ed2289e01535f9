"""Load on the viewer: N headless Chromium tabs orbit and change queries on one server for a while.

    python benchmarks/load.py [--field scenes/demo] [--clients 8] [--seconds 60] [--rounds 2]

The server runs in its own process (`gags-viewer view`), so its memory is its own. Every tab records
when each streamed frame arrives (viser receives its websocket in a Web Worker: an init script wraps
``Worker`` and timestamps every ``BackgroundImageMessage``). Each tab repeats: an action (an orbit drag
on the canvas, or a new query typed with Enter), then waits for the frames to settle. Reported per
round: actions and frames per client, p50/p95 latency from an action to the first new frame, changes
with no frame within ``--lost-after`` seconds (late: the tab moves on; their real latency still counts)
and changes no frame ever answered (lost: must be 0), render failures in the server
log and errors in the pages (must be 0), and the server's resident memory at start, after each round
and after every tab has left (a flat line over rounds means per-browser state is released).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gags_viewer.viewer.screenshots import CHROMIUM, FLAGS, labelled_input  # noqa: E402 - the headless Chromium the tests use

QUERIES = [
    "red cube",
    "lamp",
    "green ball; mushroom",
    "purple ring",
    "table; lamp shade",
    "cyan bowl",
    "pink pyramid; yellow cone",
    "blue cylinder",
    "tower",
    "mushroom cap; lamp base",
]
FRAME_HOOK = """
(() => {
  window.__frames = [];
  const Native = window.Worker;
  window.Worker = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        const data = event.data;
        if (data && data.type === "message_batch") {
          for (const m of data.messages) {
            if (m.type === "BackgroundImageMessage") window.__frames.push(performance.now());
          }
        }
      });
    }
  };
})();
"""
TEXT_INPUT = labelled_input("Queries")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Tab:
    """One browser tab on the viewer, with its action log."""

    def __init__(self, page, index: int):
        self.page = page
        self.index = index
        self.latencies: list[float] = []
        self.lost = 0
        self.actions = 0
        self.errors: list[str] = []
        self.lost_actions: list[str] = []
        self.late: list[tuple[float, str]] = []  # (page time of the action, kind): no frame within lost_after
        self.disconnected = False
        self.query = ""
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    async def frames(self) -> list[float]:
        return await self.page.evaluate("window.__frames")

    async def act(self, rng: random.Random, lost_after: float) -> None:
        before = await self.page.evaluate("performance.now()")
        if rng.random() < 0.3:
            action = "query"
            self.query = rng.choice([q for q in QUERIES if q != self.query])  # a change, not the same text
            box = self.page.locator(TEXT_INPUT)
            await box.fill(self.query)
            before = await self.page.evaluate("performance.now()")
            await box.press("Enter")
        else:
            action = "orbit"
            canvas = await self.page.locator("canvas").first.bounding_box()
            x, y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            await self.page.mouse.move(x, y)
            await self.page.mouse.down()
            await self.page.mouse.move(x + rng.uniform(-120, 120), y + rng.uniform(-40, 40), steps=4)
            await self.page.mouse.up()
        self.actions += 1
        deadline = time.monotonic() + lost_after
        while time.monotonic() < deadline:
            new = [t for t in await self.frames() if t > before]
            if new:
                self.latencies.append((new[0] - before) / 1000.0)
                await self.settle()
                return
            await asyncio.sleep(0.02)
        self.late.append((before, action))

    async def resolve_late(self) -> None:
        """After the round: a late change answered by any later frame counts its real latency; one never
        answered is lost."""
        frames = await self.frames()
        for before, action in self.late:
            after = [t for t in frames if t > before]
            if after:
                self.latencies.append((after[0] - before) / 1000.0)
            else:
                self.lost += 1
                self.lost_actions.append(action)

    async def settle(self, quiet: float = 0.4, longest: float = 4.0) -> None:
        """Wait until no frame arrived for ``quiet`` seconds (the render loop reached full quality)."""
        end = time.monotonic() + longest
        while time.monotonic() < end:
            frames = await self.frames()
            now = await self.page.evaluate("performance.now()")
            if not frames or now - frames[-1] > quiet * 1000:
                return
            await asyncio.sleep(0.05)


async def run_round(browser, url: str, clients: int, seconds: float, lost_after: float, seed: int) -> list[Tab]:
    contexts = [await browser.new_context(viewport={"width": 1000, "height": 700}) for _ in range(clients)]
    tabs = []
    for i, context in enumerate(contexts):
        await context.add_init_script(FRAME_HOOK)
        page = await context.new_page()
        await page.goto(url)
        await page.locator(TEXT_INPUT).wait_for(timeout=120_000)
        tabs.append(Tab(page, i))
    await asyncio.gather(*(tab.settle(longest=20) for tab in tabs))

    async def drive(tab: Tab) -> None:
        rng = random.Random(seed * 1000 + tab.index)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                await tab.act(rng, lost_after)
            except Exception as error:  # noqa: BLE001 - a tab that lost its connection: count it, go on
                tab.errors.append(f"action failed ({type(error).__name__}): {str(error).splitlines()[0][:160]}")
                tab.disconnected = True
                return

    await asyncio.gather(*(drive(tab) for tab in tabs))
    await asyncio.sleep(lost_after)  # late frames still on their way
    for tab in tabs:
        await tab.resolve_late()
    for tab in tabs:
        tab.served = len(await tab.frames())
    for context in contexts:
        await context.close()
    return tabs


async def main_async(args) -> int:
    from playwright.async_api import async_playwright

    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="gags_load_")) / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    command = [
        sys.executable,
        "-c",
        "from gags_viewer.cli import run; run()",
        "view",
        str(args.field),
        "--port",
        str(port),
        "--output-dir",
        str(log_path.parent / "exports"),
    ]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.time() + 180
        while "serving" not in log_path.read_text():
            if server.poll() is not None or time.time() > deadline:
                print(log_path.read_text())
                return 1
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}"
        memory = [("start", resident_mb(server.pid))]
        print(f"server pid {server.pid} on {url}; {args.clients} tabs x {args.seconds:.0f} s x {args.rounds} rounds")
        print(
            "| round | actions / tab | frames / tab | p50 latency | p95 latency | late (> lost-after) | lost changes "
            "| page errors | tabs disconnected |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for round_index in range(args.rounds):
                tabs = await run_round(browser, url, args.clients, args.seconds, args.lost_after, round_index)
                latencies = [v for tab in tabs for v in tab.latencies]
                print(
                    f"| {round_index + 1} | {sum(t.actions for t in tabs) / len(tabs):.1f} "
                    f"| {sum(t.served for t in tabs) / len(tabs):.1f} "
                    f"| {1000 * percentile(latencies, 0.5):.0f} ms | {1000 * percentile(latencies, 0.95):.0f} ms "
                    f"| {sum(len(t.late) for t in tabs)} | {sum(t.lost for t in tabs)} | {sum(len(t.errors) for t in tabs)} "
                    f"| {sum(t.disconnected for t in tabs)} |",
                    flush=True,
                )
                for tab in tabs:
                    if tab.lost_actions:
                        print(f"  tab {tab.index}: no frame ever after: {', '.join(tab.lost_actions)}")
                    for error in tab.errors[:3]:
                        print(f"  tab {tab.index}: {error}")
                time.sleep(args.cooldown)
                memory.append((f"after round {round_index + 1}", resident_mb(server.pid)))
            await browser.close()
        time.sleep(args.cooldown)
        memory.append(("all tabs gone", resident_mb(server.pid)))
        failures = len(re.findall(r"render failed", log_path.read_text()))
        print(f"render failures in the server log: {failures}")
        print("server memory: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in memory))
        print(f"server log: {log_path}")
        return 0
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", type=Path, default=REPO / "scenes" / "demo")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--lost-after",
        type=float,
        default=5.0,
        help="a change with no frame after this is late (the tab acts again); lost if no frame comes by the round's end",
    )
    parser.add_argument("--cooldown", type=float, default=5.0, help="seconds before reading memory after a round")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
