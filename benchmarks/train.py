"""Training benchmark: it/s of GAGS distillation, vectorised region losses vs the official per-region loop.

    python benchmarks/train.py                  # CPU, synthetic scene with ~100-150 regions per view
    python benchmarks/train.py --quick          # smaller scene, fewer steps
    python benchmarks/train.py --device cuda    # gsplat on a GPU (also run automatically when present)

Builds a synthetic preprocessed scene (objects on a grid, each with 2 parts and paired into groups, so the
three levels s/m/l have many masks per view, as SAM gives on real images), then in one run and on the
same views:

1. full training iterations (render, decode, losses, backward, three Adam steps) with the vectorised
   region reductions (``region_loss="vectorised"``) and with a Python loop over region ids, the way the
   official ``Scale_balance_loss`` / ``scale_region_regulation_loss`` compute them (``"loop"``);
2. the region reductions alone (region-balanced L1 and region consistency, forward + backward), which
   is all the two implementations differ in, on the region map training uses and on the finest level.

On CPU the 16->512 decoder on every supervised pixel dominates an iteration, so the training ratio is
modest there; the region loops cost per region (a full-image mask, a masked reduction and their backward
each), which matters most on a GPU, where the decoder is cheap and each loop step is several kernel
launches plus a host sync for ``torch.unique``.

Both implementations compute the same numbers (tests/test_train_losses.py). Training: median wall it/s
and, on the CPU, median process CPU time per iteration (steadier than wall time when other processes
share the machine); region reductions, repeated on identical inputs: best of N (CPU time on the CPU).
Shared CPU machines drift by 2x and more, so read the ratios, which are measured in the same run. On a
busy 2-core machine use ``--threads 1``: spinning intra-op threads then slow small ops by an order of
magnitude.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from gags_viewer.render.api import render  # noqa: E402
from gags_viewer.train import losses as L  # noqa: E402
from gags_viewer.train.config import TrainConfig  # noqa: E402
from gags_viewer.train.distillation import distillation_losses  # noqa: E402
from gags_viewer.train.scene import read_preprocessed_scene  # noqa: E402
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene  # noqa: E402
from gags_viewer.train.trainer import Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device: torch.device) -> float:
    """Process CPU seconds on the CPU (robust to other processes on a shared machine), wall seconds on a GPU."""
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def time_steps(trainers: dict[str, Trainer], steps: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Per trainer: (median wall seconds, median clock seconds) per iteration. The trainers take turns,
    one step each, so that slow spells of a shared machine hit all of them alike."""
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.step()
    wall: dict[str, list] = {name: [] for name in trainers}
    cost: dict[str, list] = {name: [] for name in trainers}
    for _ in range(steps):
        for name, trainer in trainers.items():
            sync(trainer.device)
            start, start_clock = time.perf_counter(), clock(trainer.device)
            trainer.step()
            sync(trainer.device)
            wall[name].append(time.perf_counter() - start)
            cost[name].append(clock(trainer.device) - start_clock)
    return {name: (statistics.median(wall[name]), statistics.median(cost[name])) for name in trainers}


def region_terms(error, features, region, impl):
    """The two region reductions of one view, forward + backward, with either implementation."""
    if impl == "loop":
        distill = L.loop_region_balanced_mean(error, region)
        consistency = L.loop_region_variance_loss(features, region)
    else:
        regions = L.group_regions(region)
        distill = L.region_balanced_mean(error, regions)
        consistency = L.region_variance_loss(features, regions)
    (distill + 0.1 * consistency).backward()


def time_regions(trainer: Trainer, repeats: int) -> dict:
    """Best-of-N seconds per view (CPU time on the CPU) of the region reductions alone, per implementation
    and region map.

    Inputs are the views' rendered features at the trainer's current state and a per-pixel error map;
    region maps: the one training uses (argmax of the smoothed granularity) and the finest level (s).
    """
    inputs = []
    with torch.no_grad():
        for view in trainer.views:
            seg = view.seg.to(trainer.device).long()
            features = render(trainer.geometry, view.camera, rgb=False, features=trainer.features).features
            trained = distillation_losses(
                features,
                seg,
                view.embeddings.to(trainer.device),
                trainer.clip_decoder,
                trainer.granularity_decoder,
                smoothing=trainer.config.region_smoothing,
            )["region"]
            error = torch.rand(features.shape[:2], device=trainer.device)
            inputs.append((error, features, {"training": trained, "finest (s)": seg[0]}))
    pairs = [(name, impl) for name in ("training", "finest (s)") for impl in ("vectorised", "loop")]
    times: dict[tuple, list] = {pair: [] for pair in pairs}
    for repeat in range(repeats + 1):
        for name, impl in pairs:  # interleaved, so that slow spells of a shared machine hit all alike
            sync(trainer.device)
            start = clock(trainer.device)
            for error, features, maps in inputs:
                region_terms(
                    error.clone().requires_grad_(True), features.clone().requires_grad_(True), maps[name], impl
                )
            sync(trainer.device)
            if repeat:  # the first pass is a warm-up
                times[name, impl].append((clock(trainer.device) - start) / len(inputs))
    counts = {
        name: round(sum(len(torch.unique(maps[name])) - 1 for _, _, maps in inputs) / len(inputs))
        for name in ("training", "finest (s)")
    }
    return {(name, impl): (min(times[name, impl]), counts[name]) for name, impl in pairs}  # same inputs: best of N


def bench(device: torch.device, scene_dir: Path, args) -> None:
    base = TrainConfig(
        scene=scene_dir,
        init=scene_dir / "init" / "point_cloud.ply",
        out=scene_dir / "unused",
        iterations=10**9,
        device=device.type,
        progress=False,
        switch_iteration=1,
    )  # all terms on
    scene = read_preprocessed_scene(scene_dir, base.resolution)
    view = scene.views[0]
    print(
        f"\n[{device.type}] {args.objects} objects, {args.objects * args.gaussians} Gaussians, {len(scene.views)} views "
        f"rendered at {view.width}x{view.height}, torch threads {torch.get_num_threads()}"
    )
    unit = "CPU ms" if device.type == "cpu" else "ms"
    trainers = {impl: Trainer(replace(base, region_loss=impl), scene=scene) for impl in ("vectorised", "loop")}
    timed = time_steps(trainers, args.steps, warmup=args.warmup)
    seconds = {impl: timed[impl][0] for impl in trainers}
    costs = {impl: timed[impl][1] for impl in trainers}
    trainer = trainers["vectorised"]
    for impl in trainers:
        print(
            f"  training, {impl:10s} region losses: {1 / seconds[impl]:8.2f} it/s wall, "
            f"{costs[impl] * 1e3:8.1f} {unit}/it"
        )
    print(
        f"  -> training speed-up of the vectorised losses: x{seconds['loop'] / seconds['vectorised']:.2f} (wall), "
        f"x{costs['loop'] / costs['vectorised']:.2f} ({unit})"
    )
    results = time_regions(trainer, args.repeats)
    for name in ("training", "finest (s)"):
        (vec, count), (loop, _) = results[name, "vectorised"], results[name, "loop"]
        print(
            f"  region reductions alone, {name} region map ({count} regions/view): vectorised {vec * 1e3:7.2f} {unit}, "
            f"loop {loop * 1e3:7.2f} {unit} per view -> x{loop / vec:.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--objects", type=int, default=64, help="objects on the grid (each: 2 parts; pairs form groups)"
    )
    parser.add_argument("--gaussians", type=int, default=120, help="Gaussians per object")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(240, 180),
        metavar=("W", "H"),
        help="original image size (training renders at half, -r 2)",
    )
    parser.add_argument("--steps", type=int, default=8, help="timed training iterations per implementation")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the views for the region reductions")
    parser.add_argument(
        "--device", choices=["cpu", "cuda", "all"], default="all", help="all: CPU, and CUDA too when a GPU is present"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default; 1 is steadier on a busy shared machine)",
    )
    parser.add_argument("--quick", action="store_true", help="small scene, few steps (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.objects, args.gaussians, args.views, args.size, args.steps, args.repeats = 16, 60, 3, (160, 120), 3, 5

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}"
    )
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "scene"
        width, height = args.size
        synthetic = make_synthetic_scene(
            num_objects=args.objects,
            gaussians_per_object=args.gaussians,
            num_views=args.views,
            width=width,
            height=height,
        )
        write_synthetic_scene(synthetic, scene_dir)
        for device in devices:
            bench(device, scene_dir, args)


if __name__ == "__main__":
    main()
