"""Render benchmark: ms per frame and peak memory of every available backend on synthetic scenes.

    python benchmarks/render.py            # 10k/100k/300k Gaussians, 640x480 and 1280x720, 3 and 16 channels
    python benchmarks/render.py --quick    # 10k/100k at 640x480 only, fewer repeats
    python benchmarks/render.py --compare-tree /tmp/main --sizes 100k --resolutions 640x480 --channels 16

``--compare-tree PATH`` times this tree's renderer against the one of the checkout at PATH (e.g.
``git worktree add --detach /tmp/main main``) in one run: two worker processes run this file's scenes
and timing with their own ``gags_viewer`` (benchmarks/ab.py), alternating, and it prints both medians
and their ratio. PATH needs no copy of this script.

Times are medians over a few renders after one warm-up render (which also triggers numba's JIT or
loads its cache). On CPU, compare backends by their ratio within one run: these machines are shared and
absolute timings drift by up to 2x between runs. Each frame composites C channels straight through the
backend's ``rasterize`` (no SH evaluation, no depth channel).

OpenMP threads (torch's runtime, which numba's "omp" layer binds to as well) wait passively between
parallel regions here unless OMP_WAIT_POLICY is set: GNU OpenMP's default busy-wait (~10 ms per region
on these AMD cores) starves the other threads on a loaded 2-core machine, which made both backends, and
the torch one by far the most, several times slower. Run with OMP_WAIT_POLICY=ACTIVE to compare.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before importing torch

import numba  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# an A/B worker imports gags_viewer from the tree named in its environment (benchmarks/ab.py): first
for _path in (ROOT, os.environ.get("GAGS_BENCH_PACKAGE_TREE")):
    if _path:
        if _path in sys.path:
            sys.path.remove(_path)
        sys.path.insert(0, _path)

from benchmarks.ab import Worker, alternate, serve  # noqa: E402
from gags_viewer.render.api import available_backends, get_backend  # noqa: E402
from gags_viewer.render.camera import Camera, look_at  # noqa: E402

SCENE_DESCRIPTION = (
    "synthetic object-centric scene: 65% of the Gaussians lie on the surfaces of 8 blobs (radius "
    "0.25-0.7) inside a 3x3x3 box at the origin, 35% in a background shell at distance 3-9 all around "
    "(some behind the camera); flat anisotropic Gaussians (scales log-normal, median 0.012 on the "
    "object, 0.04 in the background, one axis x0.2); opacities: 60% in [0.6, 1], 40% in [0.02, 0.6]; "
    "camera 4 units from the origin, vertical FOV 50 deg"
)


@dataclass
class Scene:
    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    name: str

    def to(self, device) -> Scene:
        return Scene(*(t.to(device) for t in (self.means, self.quats, self.scales, self.opacities)), self.name)

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]


def synthetic_scene(num_gaussians: int, seed: int = 0) -> Scene:
    """An object cloud plus a background shell, with trained-scene-like sizes and opacities."""
    gen = torch.Generator().manual_seed(seed)
    n_obj = int(round(0.65 * num_gaussians))
    n_bg = num_gaussians - n_obj

    blob_centres = (torch.rand(8, 3, generator=gen) - 0.5) * 2.0
    blob_radii = 0.25 + 0.45 * torch.rand(8, generator=gen)
    which = torch.randint(0, 8, (n_obj,), generator=gen)
    normals = torch.nn.functional.normalize(torch.randn(n_obj, 3, generator=gen), dim=-1)
    jitter = 1 + 0.02 * torch.randn(n_obj, 1, generator=gen)
    surface = blob_centres[which] + normals * blob_radii[which, None] * jitter

    bg_dirs = torch.nn.functional.normalize(torch.randn(n_bg, 3, generator=gen), dim=-1)
    bg_points = bg_dirs * (3.0 + 6.0 * torch.rand(n_bg, 1, generator=gen))
    means = torch.cat([surface, bg_points])

    median = torch.cat([torch.full((n_obj, 1), 0.012), torch.full((n_bg, 1), 0.04)])
    base = median * torch.exp(0.6 * torch.randn(num_gaussians, 1, generator=gen))
    scales = base * torch.exp(0.3 * torch.randn(num_gaussians, 3, generator=gen))
    scales[:, 2] *= 0.2
    quats = torch.nn.functional.normalize(torch.randn(num_gaussians, 4, generator=gen), dim=-1)

    opaque = torch.rand(num_gaussians, generator=gen) < 0.6
    opacities = torch.where(
        opaque,
        0.6 + 0.4 * torch.rand(num_gaussians, generator=gen),
        0.02 + 0.58 * torch.rand(num_gaussians, generator=gen),
    )
    perm = torch.randperm(num_gaussians, generator=gen)
    return Scene(means[perm], quats[perm], scales[perm], opacities[perm], f"synthetic {_count(num_gaussians)}")


def scene_camera(width: int, height: int) -> Camera:
    c2w = look_at([0.6, -1.2, -3.75], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0])
    return Camera.from_fov(c2w, 50.0, width, height)


def _count(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def parse_count(text: str) -> int:
    """'300k' -> 300000, '1m' -> 1000000, '5000' -> 5000."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:])
    return int(float(text[:-1]) * scale) if scale else int(text)


# ---------------------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory growth of one block: CUDA allocator peak on GPU; peak resident set size on CPU.

    On Linux the kernel's RSS high-water mark is reset first (/proc/self/clear_refs), so the number is
    the peak RSS during the block minus the RSS before it. Elsewhere it falls back to ru_maxrss growth,
    which only shows memory above the process's earlier peak.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None
        self.method = ""

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            self.method = "cuda"
        elif _reset_rss_peak():
            self._start = _proc_status_kb("VmRSS")
            self.method = "rss"
        else:
            self._start = _maxrss_kb()
            self.method = "maxrss"
        return self

    def __exit__(self, *exc):
        if self.method == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._start) / 2**20
        elif self.method == "rss":
            self.peak_mb = max(0, _proc_status_kb("VmHWM") - self._start) / 1024
        else:
            self.peak_mb = max(0, _maxrss_kb() - self._start) / 1024
        return False


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kb("VmHWM") >= 0
    except OSError:
        return False


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def _trim_heap() -> None:
    """Return free heap pages to the OS (glibc), so that RSS growth reflects a frame's own allocations."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _maxrss_kb() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


# ------------------------------------------------------------------------------------------- benchmark


@dataclass
class Result:
    ms: float | None = None
    cpu_ms: float | None = None
    peak_mb: float | None = None
    note: str = ""
    stages: dict | None = None
    all_seconds: list[float] | None = None
    all_cpu_seconds: list[float] | None = None

    def cell(self) -> str:
        if self.ms is None:
            return f"{self.note:>{CELL_WIDTH}}"
        return f"{self.ms:9.1f} {self.cpu_ms:9.1f} {self.peak_mb:6.0f}"


CELL_WIDTH = 26


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_one(
    backend_name,
    scene: Scene,
    camera: Camera,
    channels: int,
    repeats: int,
    time_cap: float,
    device: torch.device,
    stages: bool,
) -> Result:
    backend = get_backend(backend_name)
    gen = torch.Generator().manual_seed(1)
    colors = torch.rand(scene.num_gaussians, channels, generator=gen).to(device)
    background = torch.zeros(channels, device=device)
    args = (scene.means, scene.quats, scene.scales, scene.opacities, colors, camera, background)

    def frame():
        with torch.no_grad():
            out = backend.rasterize(*args)
        _sync(device)
        return out

    start = time.perf_counter()
    frame()  # warm-up (JIT, caches)
    warm = time.perf_counter() - start
    if warm > time_cap:
        return Result(note=f"skipped (>{time_cap:g}s)")
    runs = max(1, min(repeats, int(3 * time_cap / max(warm, 1e-6))))
    times, cpu_times = [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        frame()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    # memory: one more frame, after handing freed heap memory back to the OS
    gc.collect()
    _trim_heap()
    with PeakMemory(torch.device("cpu") if backend_name == "numba" else device) as mem:  # numba works in RAM
        frame()
    result = Result(
        ms=1e3 * statistics.median(times),
        cpu_ms=1e3 * statistics.median(cpu_times),
        peak_mb=mem.peak_mb,
        all_seconds=times,
        all_cpu_seconds=cpu_times,
    )
    if stages and backend_name == "numba":
        timings: dict = {}
        for _ in range(runs):
            backend.rasterize(*args, timings=timings)
        result.stages = {k: (v / runs if k != "intersections" else v // runs) for k, v in timings.items()}
    return result


def machine_line(device: torch.device) -> str:
    return (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numba {numba.__version__} ({numba.get_num_threads()} threads), "
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + (f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
        + f", OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )


def worker(device: torch.device) -> None:
    """--worker: time one backend per request (JSON lines on stdin; benchmarks/ab.py) with the
    ``gags_viewer`` this process imported."""
    scenes: dict[int, Scene] = {}

    def answer(request: dict) -> dict:
        size = request["size"]
        if size not in scenes:
            scenes[size] = synthetic_scene(size).to(device)
        camera = scene_camera(request["width"], request["height"])
        args = (request["backend"], scenes[size], camera, request["channels"], request["repeats"], 600.0, device)
        result = bench_one(*args, stages=False)
        return {"all": result.all_seconds, "cpu": result.all_cpu_seconds}

    serve(answer)


def compare(args, other: Path, names, sizes, resolutions, channel_counts, device: torch.device) -> int:
    """A/B: every backend of the tree at ``other`` (before) against this tree's (after), the two in worker
    processes answering in turns (benchmarks/ab.py); prints the medians over all rounds and their ratio."""
    script = Path(__file__).resolve()
    here = Path(ROOT)
    worker_args = ("--device", str(device)) + (("--threads", str(args.threads)) if args.threads else ())
    print(f"scene: {SCENE_DESCRIPTION}")
    print(machine_line(device))
    print(f"A/B: before = {other}, after = {here}; {args.rounds} rounds x {args.repeats} frames, alternating")
    print(
        f"{'backend':>8} {'scene':>8} {'resolution':>10} {'C':>3} | {'before ms':>9} {'after ms':>9} {'after/before':>12}"
    )
    for name in names:
        workers = {"before": Worker(script, other, worker_args), "after": Worker(script, here, worker_args)}
        try:
            for n in sizes:
                for width, height in resolutions:
                    for channels in channel_counts:
                        request = dict(backend=name, size=n, width=width, height=height, channels=channels)
                        times = alternate(workers, args.rounds, repeats=args.repeats, **request)
                        before, after = (1e3 * statistics.median(times[side]["all"]) for side in ("before", "after"))
                        cpu_before, cpu_after = (
                            1e3 * statistics.median(times[side]["cpu"]) for side in ("before", "after")
                        )
                        print(
                            f"{name:>8} {_count(n):>8} {f'{width}x{height}':>10} {channels:>3} | "
                            f"{before:9.1f} {after:9.1f} {after / before:12.3f} | "
                            f"{cpu_before:10.1f} {cpu_after:9.1f} {cpu_after / cpu_before:12.3f}",
                            flush=True,
                        )
        finally:
            for w in workers.values():
                w.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k at 640x480 only, 3 repeats")
    parser.add_argument("--sizes", default="10k,100k,300k", help="Gaussian counts, comma separated")
    parser.add_argument("--resolutions", default="640x480,1280x720", help="WxH list, comma separated")
    parser.add_argument("--channels", default="3,16", help="channel counts, comma separated")
    parser.add_argument("--backends", default=None, help="subset of the available backends (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed renders per combination (median)")
    parser.add_argument(
        "--time-cap",
        type=float,
        default=10.0,
        help="skip a combination whose warm-up frame takes longer (seconds); larger ones "
        "predicted to exceed it are not tried",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: all)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--stages", action="store_true", help="also print the numba backend's stage times")
    parser.add_argument(
        "--compare-tree",
        type=Path,
        default=None,
        help="A/B: time the backends of the checkout at this path (before) against this tree's (after)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --compare-tree: alternations per row")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.quick:
        args.sizes, args.resolutions, args.repeats = "10k,100k", "640x480", min(args.repeats, 3)
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.worker:
        return worker(device)
    names = available_backends()
    if args.backends:
        wanted = [b.strip() for b in args.backends.split(",")]
        names = [b for b in wanted if b in names]
    if device.type == "cpu":
        names = [b for b in names if b != "gsplat"]
    else:
        names = [b for b in names if b == "gsplat"] + [b for b in names if b != "gsplat"]
    sizes = [parse_count(s) for s in args.sizes.split(",")]
    resolutions = [tuple(int(v) for v in r.lower().split("x")) for r in args.resolutions.split(",")]
    channel_counts = [int(c) for c in args.channels.split(",")]

    if args.compare_tree is not None:
        return compare(args, args.compare_tree.resolve(), names, sizes, resolutions, channel_counts, device)

    print(f"scene: {SCENE_DESCRIPTION}")
    print(machine_line(device))
    print(
        f"ms: wall-clock median of up to {args.repeats} frames after a warm-up; cpu ms: process CPU time per frame "
        "(all threads); MB: peak memory growth during one frame "
        + (
            "(CUDA allocator; numba: resident set size)"
            if device.type == "cuda"
            else "(resident set size, output included)"
        )
    )
    print()

    ratio = "numba" in names and "torch" in names
    top = f"{'':>14} {'':>10} {'':>3} |" + "".join(f" {n:^{CELL_WIDTH}} |" for n in names)
    header = f"{'scene':>14} {'resolution':>10} {'C':>3} |" + "".join(
        f" {'ms':>9} {'cpu ms':>9} {'MB':>6} |" for _ in names
    )
    if ratio:
        top += f" {'numba/torch':^17}"
        header += f" {'ms':>8} {'cpu ms':>8}"

    # First call per backend: numba compiles (or loads its on-disk cache), gsplat builds its kernels.
    tiny = synthetic_scene(500, seed=3).to(device)
    first_calls = []
    for name in names:
        start = time.perf_counter()
        for channels in channel_counts:
            bench_one(name, tiny, scene_camera(64, 48), channels, 1, 600.0, device, False)
        first_calls.append(f"{name} {time.perf_counter() - start:.2f}s")
    print(f"first calls (JIT compile or cache load, tiny scene): {', '.join(first_calls)}")
    print()
    print(top)
    print(header)
    print("-" * len(header))

    # the slowest completed frame per backend, to predict when a bigger combination will pass the cap
    completed: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    stage_rows = []
    for n in sizes:
        scene = synthetic_scene(n).to(device)
        for width, height in resolutions:
            camera = scene_camera(width, height)
            for channels in channel_counts:
                work = n * width * height * (1 + channels / 16)
                row = f"{_count(n):>14} {f'{width}x{height}':>10} {channels:>3} |"
                results = {}
                for name in names:
                    predicted = max((ms / 1e3 * work / w for w, ms in completed[name]), default=0.0)
                    if predicted > 2 * args.time_cap:
                        res = Result(note=f"skipped (>{args.time_cap:g}s)")
                    else:
                        res = bench_one(name, scene, camera, channels, args.repeats, args.time_cap, device, args.stages)
                    if res.ms is None and res.note.startswith("skipped"):
                        completed[name].append((work, 1e3 * 2 * args.time_cap + 1))
                    elif res.ms is not None:
                        completed[name].append((work, res.ms))
                    results[name] = res
                    if res.stages:
                        stage_rows.append((f"{_count(n)} {width}x{height} C={channels}", res.stages))
                row += "".join(f" {results[name].cell()} |" for name in names)
                if ratio and results["numba"].ms and results["torch"].ms:
                    row += f" {results['numba'].ms / results['torch'].ms:8.3f}"
                    row += f" {results['numba'].cpu_ms / results['torch'].cpu_ms:8.3f}"
                print(row, flush=True)
    if stage_rows:
        print()
        print("numba stages (ms per frame):")
        keys = ["project", "sort", "pack", "bin", "schedule", "composite"]
        print(f"{'':>28}" + "".join(f"{k:>10}" for k in keys) + f"{'pairs':>10}")
        for label, st in stage_rows:
            print(
                f"{label:>28}"
                + "".join(f"{1e3 * st.get(k, 0.0):10.1f}" for k in keys)
                + f"{st.get('intersections', 0):10d}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
