"""Preprocessing benchmark: mask-NMS speed-up, seconds per image, prompts per image on the demo scene.

    python benchmarks/preprocess.py                    # CPU: tiny random-weight SAM, demo CLIP model
    python benchmarks/preprocess.py --quick            # fewer masks for the NMS loop
    python benchmarks/preprocess.py --device cuda --sam vit_h --width 1440 --height 1080   # on a GPU

1. Mask NMS: the vectorised official rules (:func:`gags_viewer.preprocess.mask_filters.mask_nms`) against
   a direct loop of the same rules over mask pairs (torch ops per pair, as the official ``mask_nms``
   does), on the same random masks, in one run; the kept sets are checked equal.
2. Prompts per image on the bundled demo scene (``scenes/demo``: its 32 cameras, its Gaussians): the
   official GAGS depth-ratio prompts (and the paper's reading) against the regular 32×32 grid.
3. Seconds per image of the whole per-image work (prompts -> SAM -> four filtered levels -> CLIP crops ->
   ``_f``/``_s`` arrays) with a random-weight SAM: the tiny test SAM on CPU, or a stock ViT-H-sized one
   (``--sam vit_h``, same compute as the real model) on a GPU, with the demo CLIP model.

On the shared CPU machines absolute times drift by up to 2×; the ratio in step 1 is measured in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gags_viewer.preprocess.mask_filters import CONTAINMENT, COVERAGE, MaskFilterConfig, mask_nms  # noqa: E402


def loop_mask_nms(masks: torch.Tensor, scores: torch.Tensor, config: MaskFilterConfig) -> torch.Tensor:
    """The same rules as :func:`mask_nms`, as a direct double loop over sorted mask pairs."""
    order = torch.sort(scores, descending=True, stable=True).indices
    ordered = masks[order]
    count = len(order)
    areas = ordered.flatten(1).sum(1).float()
    overlapped = torch.zeros(count, dtype=torch.bool)
    inner = torch.zeros(count, dtype=torch.bool)
    for i in range(count):
        for j in range(i + 1, count):
            inter = torch.logical_and(ordered[i], ordered[j]).sum().float()
            union = torch.logical_or(ordered[i], ordered[j]).sum().float()
            if inter / union > config.nms_iou_thresh:
                overlapped[j] = True
            a_in_b, b_in_a = inter / areas[i], inter / areas[j]
            if a_in_b >= CONTAINMENT and b_in_a < COVERAGE and 1 - a_in_b * b_in_a > 1 - config.nms_inner_thresh:
                inner[i] = True
            if b_in_a >= CONTAINMENT and a_in_b < COVERAGE and 1 - a_in_b * b_in_a > 1 - config.nms_inner_thresh:
                inner[j] = True
    keep = ~overlapped & ~inner & (scores[order] > config.nms_score_thresh)
    return torch.sort(order[keep]).values


def random_masks(count: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes and ellipses, some nested and some near-duplicates, with scores in [0.6, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    masks = []
    for k in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.03, 0.4) * height, rng.uniform(0.03, 0.4) * width
        if k % 2:
            masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
        else:
            masks.append((abs(yy - cy) <= ry) & (abs(xx - cx) <= rx))
    return torch.from_numpy(np.stack(masks)), torch.from_numpy(rng.uniform(0.6, 1.0, count)).float()


def bench_nms(count: int, height: int, width: int, device: str) -> None:
    masks, scores = random_masks(count, height, width)
    config = MaskFilterConfig()
    start = time.perf_counter()
    looped = loop_mask_nms(masks, scores, config)
    loop_s = time.perf_counter() - start
    masks_d, scores_d = masks.to(device), scores.to(device)
    mask_nms(masks_d, scores_d, config)  # warm-up
    repeats = 5
    start = time.perf_counter()
    for _ in range(repeats):
        kept = mask_nms(masks_d, scores_d, config)
    if device == "cuda":
        torch.cuda.synchronize()
    vec_s = (time.perf_counter() - start) / repeats
    assert kept.cpu().tolist() == looped.tolist(), "vectorised and loop NMS disagree"
    print(
        f"mask NMS, {count} masks at {width}x{height}: loop {loop_s:.2f} s, vectorised ({device}) {vec_s * 1e3:.1f} ms, "
        f"ratio {loop_s / vec_s:.0f}x; kept {len(kept)} (identical)"
    )


def demo_depths(device: torch.device):
    """The demo field, its cameras and rendered depths / min-depth maps of every camera."""
    import json

    from gags_viewer.field.load import load_field
    from gags_viewer.preprocess.depth import depth_sample_map, minimum_observed_depth, render_depth
    from gags_viewer.render.camera import Camera

    demo = os.path.join(ROOT, "scenes", "demo")
    field = load_field(demo).to(device)
    with open(os.path.join(demo, "cameras.json")) as handle:
        cameras = [Camera.from_cameras_json(entry) for entry in json.load(handle)]
    depths = [render_depth(field, camera) for camera in cameras]
    min_depth = minimum_observed_depth(field.means, cameras, depths)
    samples = [depth_sample_map(field.means, c, d, min_depth) for c, d in zip(cameras, depths)]
    return field, cameras, depths, samples


def bench_prompts(depths, samples) -> None:
    from segment_anything.utils.amg import generate_crop_boxes

    from gags_viewer.preprocess.prompts import depth_prompts, grid_prompts, image_rng
    from gags_viewer.preprocess.sam import SamConfig

    grid = len(grid_prompts())
    crops = len(generate_crop_boxes(tuple(depths[0].shape), 1, SamConfig().crop_overlap_ratio)[0])
    print(f"regular grid: {grid} prompts on the image, {grid * crops} with LangSplat's crop layer ({crops} crops)")
    for kind in ("gags", "gags-paper"):
        counts = [
            len(depth_prompts(d.cpu().numpy(), s.cpu().numpy(), image_rng(42, str(i)), kind))
            for i, (d, s) in enumerate(zip(depths, samples))
        ]
        print(
            f"prompts per image on the demo scene ({len(counts)} views, {kind}): mean {np.mean(counts):.0f}, "
            f"min {min(counts)}, max {max(counts)}; regular grid {grid} ({np.mean(counts) / grid:.2f}x)"
        )


def bench_image(args, field, cameras, depths, samples, device: torch.device) -> None:
    from gags_viewer.demo.clip_model import clip_spec
    from gags_viewer.preprocess.clip_features import ClipImageEncoder, load_clip_model
    from gags_viewer.preprocess.pipeline import image_features
    from gags_viewer.preprocess.prompts import depth_prompts, image_rng
    from gags_viewer.preprocess.sam import SamConfig, SamMaskSource
    from gags_viewer.render.api import render

    if args.sam == "tiny":
        from tests.tiny_sam import make_tiny_sam

        sam = make_tiny_sam().to(device)
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[args.sam]().to(device).eval()
    camera = cameras[0].resized(args.width, args.height) if args.width else cameras[0]
    with torch.no_grad():
        image = (render(field, camera, rgb=True, background=(1.0, 1.0, 1.0)).rgb.clamp(0, 1) * 255).byte().cpu().numpy()
    depth = (
        torch.nn.functional.interpolate(depths[0][None, None], size=image.shape[:2], mode="nearest")[0, 0].cpu().numpy()
    )
    sample = (
        torch.nn.functional.interpolate(samples[0][None, None], size=image.shape[:2], mode="nearest")[0, 0]
        .cpu()
        .numpy()
    )
    points = depth_prompts(depth, sample, image_rng(42, "bench"))
    source = SamMaskSource(sam, lambda im, name: points, SamConfig(points_per_batch=args.batch))
    encoder = ClipImageEncoder(load_clip_model(clip_spec(), device=device, half=device.type == "cuda"))
    image_features(image, "warm-up", source, encoder)
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = image_features(image, "bench", source, encoder)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(
        f"per image ({args.sam} SAM, random weights, {device.type}, {image.shape[1]}x{image.shape[0]}, "
        f"{len(points)} prompts): median {np.median(times):.2f} s over {len(times)}; masks per level {result.masks_per_level}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sam", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument(
        "--width", type=int, default=0, help="render the benchmark image at this size (default: camera size)"
    )
    parser.add_argument("--height", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="SAM prompts per batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    bench_nms(60 if args.quick else 120, 192, 256, args.device)
    field, cameras, depths, samples = demo_depths(device)
    bench_prompts(depths, samples)
    bench_image(args, field, cameras, depths, samples, device)


if __name__ == "__main__":
    main()
