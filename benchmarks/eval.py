"""Eval benchmark: seconds per LERF-OVS frame at label resolution, split into render/decode and protocol.

    python benchmarks/eval.py                 # 100k Gaussians, 989x731 (LERF-OVS size), 5 queries, CPU
    python benchmarks/eval.py --quick         # 30k Gaussians, fewer repeats
    python benchmarks/eval.py --gaussians 300000 --device cuda

Per frame, the eval runner does: one query-engine call (render the 16-D features, decode every pixel to
CLIP space, relevancy of K queries; or in gaussian mode render K relevancy channels), then the protocol
for each query (½(r + box30(r)), min–max, clip(2x − 1), threshold, 7×7 majority filter, IoU, box30
argmax localization). This script times both on a synthetic field whose Gaussians cover the whole view
(as in a real scene, so every pixel is decoded), with a random GAGS decoder (16→512, 9 layers of 256)
and a tiny random text model (text encoding is cached after the first frame and is not what we time).

It also times the official pure-Python 7×7 majority loop on a crop and extrapolates it to the full
frame, for comparison with the vectorised filter. Medians over a few frames after one warm-up frame.
On the shared CPU machines absolute times drift by up to 2×; compare the stages within one run.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from gags_viewer.eval import protocol  # noqa: E402
from gags_viewer.eval.labels import LabelFrame, QueryLabel  # noqa: E402
from gags_viewer.eval.runner import score_frame  # noqa: E402
from gags_viewer.field.language_field import FieldMetadata, LanguageField  # noqa: E402
from gags_viewer.language.clip_text import shared_text_encoder  # noqa: E402
from gags_viewer.language.decoders import random_gags_decoder_state  # noqa: E402
from gags_viewer.language.engine import QueryEngine  # noqa: E402
from gags_viewer.render.camera import Camera, look_at  # noqa: E402


def synthetic_field(num_gaussians: int, clip_spec, seed: int = 0) -> LanguageField:
    """A back wall filling the view plus 6 spherical objects in front of it; features smooth per object."""
    gen = torch.Generator().manual_seed(seed)
    n_wall = num_gaussians // 2
    n_obj = num_gaussians - n_wall
    wall = torch.cat(
        [(torch.rand(n_wall, 2, generator=gen) - 0.5) * torch.tensor([9.0, 7.0]), torch.full((n_wall, 1), 2.0)], dim=1
    )
    centers = (torch.rand(6, 3, generator=gen) - 0.5) * torch.tensor([4.0, 3.0, 1.0])
    which = torch.randint(0, 6, (n_obj,), generator=gen)
    direction = torch.nn.functional.normalize(torch.randn(n_obj, 3, generator=gen), dim=1)
    objects = centers[which] + 0.6 * direction
    means = torch.cat([wall, objects])
    object_codes = torch.randn(7, 16, generator=gen)
    labels = torch.cat([torch.full((n_wall,), 6), which])
    features = object_codes[labels] + 0.1 * torch.randn(num_gaussians, 16, generator=gen)
    scale = torch.where(torch.arange(num_gaussians) < n_wall, 0.03, 0.02)[:, None]
    log_scales = torch.log(scale * torch.exp(0.3 * torch.randn(num_gaussians, 3, generator=gen)))
    return LanguageField(
        means=means,
        quats=torch.nn.functional.normalize(torch.randn(num_gaussians, 4, generator=gen), dim=1),
        log_scales=log_scales,
        opacity_logits=torch.randn(num_gaussians, generator=gen) + 2.0,
        sh=torch.rand(num_gaussians, 1, 3, generator=gen),
        features=features,
        decoder=random_gags_decoder_state(seed=seed),
        metadata=FieldMetadata(clip=clip_spec, decoder_kind="gags", source="benchmark"),
    )


def synthetic_labels(width: int, height: int, queries: list[str], seed: int = 0) -> LabelFrame:
    rng = np.random.default_rng(seed)
    labels = []
    for query in queries:
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        x1, y1 = x0 + rng.integers(40, width // 2), y0 + rng.integers(40, height // 2)
        mask = np.zeros((height, width), bool)
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        labels.append(QueryLabel(query, mask, np.array([[x0, y0, x1, y1]], np.float64)))
    return LabelFrame(path=None, name="frame_00001", width=width, height=height, queries=labels)


def official_majority_loop(mask: np.ndarray) -> np.ndarray:
    """The documented official filter: per pixel, argmax of a bincount over the (quirky) window."""
    h, w = mask.shape
    out = mask.copy()
    for i in range(h):
        for j in range(w):
            window = mask[max(0, i - 3) : min(i + 4, h - 1), max(0, j - 3) : min(j + 4, w - 1)]
            out[i, j] = np.argmax(np.bincount(window.reshape(-1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=989)
    parser.add_argument("--height", type=int, default=731)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--frames", type=int, default=3, help="timed frames after one warm-up frame")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.gaussians, args.frames = 30_000, 2

    from tests.tiny_clip import make_tiny_clip

    device = torch.device(args.device)
    queries = [f"object {i}" for i in range(args.queries)]
    with tempfile.TemporaryDirectory() as tmp:
        spec = make_tiny_clip(tmp)
        field = synthetic_field(args.gaussians, spec).to(device)
        engine = QueryEngine(field, shared_text_encoder(spec, device=device))
        c2w = look_at([0.0, 0.0, -4.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0])
        fy = 0.5 * args.height / math.tan(math.radians(25))
        camera = Camera.from_camera_to_world(
            c2w, torch.tensor([[fy, 0, args.width / 2], [0, fy, args.height / 2], [0, 0, 1.0]]), args.width, args.height
        )
        frame = synthetic_labels(args.width, args.height, queries)

        print(
            f"# eval benchmark: {args.gaussians:,} Gaussians, {args.width}x{args.height}, {args.queries} queries, "
            f"device {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        )
        results = {}
        for mode in ("pixel", "gaussian"):
            stages: dict[str, list[float]] = {}
            for index in range(args.frames + 1):
                start = time.perf_counter()
                result = engine.query(camera, queries, mode=mode)
                relevancy = result.relevancy.float().cpu().numpy()
                engine_s = time.perf_counter() - start
                start = time.perf_counter()
                score_frame(frame, relevancy)
                protocol_s = time.perf_counter() - start
                if index == 0:
                    coverage = float((result.render.alpha > 0.5).float().mean())
                    continue  # warm-up: JIT, text encoding, per-Gaussian decode in gaussian mode
                for key in ("render", "decode", "relevancy"):
                    stages.setdefault(key, []).append(result.timings.get(key, 0.0))
                stages.setdefault("engine total", []).append(engine_s)
                stages.setdefault("protocol", []).append(protocol_s)
            results[mode] = {k: statistics.median(v) for k, v in stages.items()}
            r = results[mode]
            print(
                f"{mode:8s}  render {r['render']:.2f} s  decode {r['decode']:.2f} s  relevancy {r['relevancy']:.2f} s  "
                f"| engine {r['engine total']:.2f} s  protocol {r['protocol']:.2f} s  "
                f"=> {r['engine total'] + r['protocol']:.2f} s per frame"
            )
        print(f"view coverage (alpha > 0.5): {100 * coverage:.0f} % of pixels")
        if engine.decode_gaussians_seconds is not None:
            print(
                f"gaussian mode decodes every Gaussian once per field: {engine.decode_gaussians_seconds:.2f} s (not per frame)"
            )

        # protocol stages for one map, and the official loop on a crop for comparison
        r = relevancy[0]
        timings = {}
        for name, fn in (
            ("box30 + smoothing", lambda: protocol.smooth_relevancy(r)),
            ("normalise + threshold", lambda: protocol.normalize_clip(r) > 0.4),
            ("7x7 majority filter", lambda: protocol.majority_filter(r > np.median(r))),
            ("localization (box30 argmax)", lambda: protocol.localize(r, frame.queries[0].boxes)),
        ):
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - start)
            timings[name] = statistics.median(runs)
        print("protocol per query map: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in timings.items()))
        crop = (relevancy[0] > np.median(relevancy[0]))[:120, :160].astype(np.uint8)
        start = time.perf_counter()
        official_majority_loop(crop)
        loop_s = (time.perf_counter() - start) * (args.width * args.height) / crop.size
        print(
            f"official pure-Python majority loop, extrapolated from a 160x120 crop: {loop_s:.1f} s per query map "
            f"(vectorised: {1000 * timings['7x7 majority filter']:.0f} ms, {loop_s / timings['7x7 majority filter']:.0f}x)"
        )


if __name__ == "__main__":
    main()
