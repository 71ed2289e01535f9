"""Frame benchmark: what the viewer does per frame, end to end, per display mode, field and resolution.

    python benchmarks/frame.py                                   # CPU: demo + 100k at 640x480
    python benchmarks/frame.py --fields demo,100k,1M --resolutions 640x480,1280x720,1920x1080  # GPU
    python benchmarks/frame.py --modes pixel --ks 3 --repeats 5  # one row

Each row times :func:`~gags_viewer.viewer.frame.compose_frame` (render + query + composite + copy to the
host, overlay display) plus the JPEG encode the viewer sends (PIL, quality 70 as nerfview uses at rest),
and prints the median over ``--repeats`` frames after one warm-up frame (which builds the per-field
caches: every Gaussian decoded, its neighbours averaged; the text encoded), the frame rate of the
median, and the median seconds per phase from ``Frame.timings`` (render / decode / relevancy /
composite). Every frame is a new view (the camera moves by a hair between frames, as while orbiting),
except in ``requery`` rows. Rows:

- ``rgb``: the colour render (display "rgb").
- ``gaussian K=k`` / ``pixel K=k``: k queries in that query mode (display "overlay").
- ``requery K=k``: pixel mode on an unchanged view whose k queries change every frame (the phrases
  rotate), as when a user types queries with the camera at rest.

Fields: ``demo`` (the bundled ``scenes/demo``, 9,170 Gaussians, its own small CLIP model) and synthetic
fields (``100k``, ``1M``: ``benchmarks/query.py``'s scene, 16-D features, random GAGS decoder, "phrases"
that are decoded region features). On CUDA, phases are timed with synchronisation (the engine's
``profile`` mode). In pixel mode "decode" includes the relevancy (they are fused).

On a shared CPU compare ratios, not absolute times: ``--compare PATH`` runs this benchmark's rows on
the source tree at PATH (e.g. ``git worktree add /tmp/main main``; it needs this file's copy under its
``benchmarks/``) and on this tree in two worker processes, alternating row by row, and prints the speed-up.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/render.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.ab import Worker, alternate, serve  # noqa: E402
from benchmarks.query import synthetic_field, synthetic_text  # noqa: E402
from benchmarks.render import parse_count, scene_camera  # noqa: E402
from gags_viewer.language.engine import QueryEngine  # noqa: E402
from gags_viewer.render.camera import Camera  # noqa: E402
from gags_viewer.viewer.frame import compose_frame  # noqa: E402
from gags_viewer.viewer.settings import ViewSettings  # noqa: E402

DEMO_QUERIES = ("red cube", "lamp", "green ball")
SYNTHETIC_QUERIES = ("q0", "q1", "q2")
SYNTHETIC_NEGATIVES = ("n0", "n1", "n2", "n3")
PHASES = ("render", "decode", "relevancy", "composite")


def jpeg_seconds(image: np.ndarray, quality: int = 70) -> float:
    """Seconds to JPEG-encode an [H, W, 3] uint8 image with PIL (what a streamed frame costs)."""
    from PIL import Image

    start = time.perf_counter()
    Image.fromarray(image).save(io.BytesIO(), format="JPEG", quality=quality)
    return time.perf_counter() - start


def demo_setup(device: torch.device):
    """The bundled demo field, its engine (demo CLIP model) and its default camera."""
    from gags_viewer.viewer.camera_path import camera_from_fov, default_framing
    from gags_viewer.viewer.commands import build_engine, load_for_viewing

    path = ROOT / "scenes" / "demo"
    field = load_for_viewing(path, None, device)
    engine = build_engine(field, path, device)
    framing = default_framing(field)

    def camera(width: int, height: int) -> Camera:
        return camera_from_fov(framing.c2w(), np.radians(framing.fov_y_deg), width, height)

    return field, engine, camera, DEMO_QUERIES, tuple(field.metadata.negatives)


def synthetic_setup(num_gaussians: int, device: torch.device):
    """A synthetic field of ``num_gaussians`` (benchmarks/query.py) with phrase embeddings for its view."""
    field, regions = synthetic_field(num_gaussians)
    base = scene_camera(640, 480)
    text = synthetic_text(field, regions, SYNTHETIC_QUERIES, SYNTHETIC_NEGATIVES, base)
    field = field.to(device)
    engine = QueryEngine(field, text)

    def camera(width: int, height: int) -> Camera:
        return base.resized(width, height)

    return field, engine, camera, SYNTHETIC_QUERIES, SYNTHETIC_NEGATIVES


def nudged(camera: Camera, step: int) -> Camera:
    """``camera`` moved sideways by ``step`` × 1e-4 (a new view for every cache, the same picture)."""
    world_to_camera = camera.world_to_camera.clone()
    world_to_camera[0, 3] += 1e-4 * step
    return Camera(world_to_camera, camera.K, camera.width, camera.height)


def time_row(field, engine, camera: Camera, settings: list[ViewSettings], repeats: int, move: bool = True) -> dict:
    """Median seconds of compose_frame + JPEG over ``repeats`` frames (after one warm-up frame); frame i
    shows ``settings[i % len(settings)]``, from a camera nudged by i when ``move``."""
    frame = compose_frame(field, camera, settings[0], engine)
    totals, jpegs, phases = [], [], {p: [] for p in PHASES}
    for i in range(1, repeats + 1):
        view = nudged(camera, i) if move else camera
        if field.means.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        frame = compose_frame(field, view, settings[i % len(settings)], engine)
        compose_s = time.perf_counter() - start
        jpeg_s = jpeg_seconds(frame.image)
        totals.append(compose_s)
        jpegs.append(jpeg_s)
        for p in PHASES:
            phases[p].append(frame.timings.get(p, 0.0))
    return {
        "compose": statistics.median(totals),
        "jpeg": statistics.median(jpegs),
        "end_to_end": statistics.median(t + j for t, j in zip(totals, jpegs)),
        "all": [t + j for t, j in zip(totals, jpegs)],
        **{p: statistics.median(v) for p, v in phases.items()},
    }


def row_settings(mode: str, k: int, queries, negatives) -> list[ViewSettings]:
    """The settings a row's frames cycle through (one unless the queries change: ``requery``)."""
    if mode == "rgb":
        return [ViewSettings(display="rgb").checked()]
    rotations = [queries[i:] + queries[:i] for i in range(len(queries))] if mode == "requery" else [queries]
    return [
        ViewSettings(
            queries_text="; ".join(phrases[:k]),
            negatives_text="; ".join(negatives),
            display="overlay",
            query_mode="gaussian" if mode == "gaussian" else "pixel",
        ).checked()
        for phrases in rotations
    ]


def parse_resolution(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _setup(name: str, device: torch.device):
    setup = demo_setup(device) if name == "demo" else synthetic_setup(parse_count(name), device)
    setup[1].profile = device.type == "cuda"
    return setup


def _row(setups: dict, device, name: str, resolution: str, mode: str, k: int, repeats: int) -> dict:
    if name not in setups:
        setups[name] = _setup(name, device)
    field, engine, camera_of, queries, negatives = setups[name]
    settings = row_settings(mode, k, queries, negatives)
    return time_row(field, engine, camera_of(*parse_resolution(resolution)), settings, repeats, mode != "requery")


def _rows(args):
    for name in args.fields.split(","):
        for resolution in args.resolutions.split(","):
            for mode in args.modes.split(","):
                for k in [0] if mode == "rgb" else [int(k) for k in args.ks.split(",")]:
                    yield name.strip(), resolution, mode, k


def _label(mode: str, k: int) -> str:
    return "rgb" if mode == "rgb" else f"{mode} K={k}"


def worker(device: torch.device) -> None:
    """--worker: answer row requests (JSON lines on stdin) with their timings (benchmarks/ab.py)."""
    setups: dict = {}
    serve(
        lambda request: _row(
            setups, device, request["field"], request["resolution"], request["mode"], request["k"], request["repeats"]
        )
    )


def compare(args, other: Path) -> None:
    """A/B: the tree at ``other`` ("before") against this one ("after"), rows alternating between two
    worker processes, ``--rounds`` times (order swapped each round), so both see the same machine load."""
    script = Path("benchmarks") / "frame.py"
    workers = {
        "before": Worker(other / script, other, ("--device", args.device)),
        "after": Worker(ROOT / script, ROOT, ("--device", args.device)),
    }
    print(f"# A/B: before = {other}, after = {ROOT}; {args.rounds} rounds x {args.repeats} frames, alternating")
    print(f"{'field':>8} {'resolution':>10} {'row':>12} {'before':>10} {'after':>10} {'speed-up':>9}")
    try:
        for name, resolution, mode, k in _rows(args):
            times = alternate(
                workers, args.rounds, field=name, resolution=resolution, mode=mode, k=k, repeats=args.repeats
            )
            before, after = (statistics.median(times[side]["all"]) for side in ("before", "after"))
            print(
                f"{name:>8} {resolution:>10} {_label(mode, k):>12} {1000 * before:8.1f}ms {1000 * after:8.1f}ms "
                f"{before / after:8.2f}x",
                flush=True,
            )
    finally:
        for w in workers.values():
            w.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--fields", default="demo,100k,1M" if cuda else "demo,100k", help="demo and/or Gaussian counts")
    parser.add_argument("--resolutions", default="640x480,1280x720,1920x1080" if cuda else "640x480")
    parser.add_argument("--modes", default="rgb,gaussian,pixel,requery")
    parser.add_argument("--ks", default="1,3", help="query counts for the query modes")
    parser.add_argument("--repeats", type=int, default=15 if cuda else 5)
    parser.add_argument(
        "--compare", type=Path, help="A/B against the source tree at this path (e.g. a checkout of main)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --compare: alternations per row")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.worker:
        return worker(device)
    if args.compare is not None:
        return compare(args, args.compare.resolve())

    print(
        f"# frame benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(f"# median of {args.repeats} frames; end-to-end = compose_frame + JPEG; phases in ms")
    print(
        f"{'field':>8} {'resolution':>10} {'row':>12} {'end-to-end':>11} {'FPS':>6} {'JPEG':>7} "
        + " ".join(f"{p:>9}" for p in PHASES)
    )
    setups: dict = {}
    for name, resolution, mode, k in _rows(args):
        result = _row(setups, device, name, resolution, mode, k, args.repeats)
        phases = " ".join(f"{1000 * result[p]:9.1f}" for p in PHASES)
        print(
            f"{name:>8} {resolution:>10} {_label(mode, k):>12} {1000 * result['end_to_end']:9.1f}ms "
            f"{1.0 / result['end_to_end']:6.1f} {1000 * result['jpeg']:6.1f} {phases}",
            flush=True,
        )


if __name__ == "__main__":
    main()
