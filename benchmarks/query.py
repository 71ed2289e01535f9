"""Query benchmark: per-frame time of the two query modes, split into render / decode / relevancy.

    python benchmarks/query.py                      # 100k and 1M Gaussians, 640x480 and 1920x1080
    python benchmarks/query.py --sizes 100k --resolutions 640x480   # a quick look
    python benchmarks/query.py --field scenes/demo  # mode agreement on a real (or the demo) field

For each synthetic field and resolution it prints one pixel-mode frame and one gaussian-mode frame
(after the once-per-field decode of every Gaussian, which is printed separately), the speed ratio
(pixel time / gaussian time: how many times faster gaussian mode is) and the agreement of the two modes:
IoU of the masks relevancy > 0.5 over pixels with alpha > 0.5, averaged over the queries. It also times
encoding one new phrase with open_clip ViT-B-16 (random weights: the same compute as the real model).

Synthetic fields reuse ``benchmarks/render.py``'s scene (an object cloud plus a background shell), with
16-D features that are constant per region (96 Voronoi regions, plus noise) and a random GAGS decoder
(with biases); queries and negatives are decoded region features (queries: the regions most in view; negatives: regions out of view).
Agreement numbers on them only say how much blending changes the decoded result: "feature purity" < 1
means pixels mix the features of several Gaussians (the background shell is a fog of semi-transparent
Gaussians; the denser it is, the more the modes differ). The meaningful agreement is on a trained field
(``--field``; default: the bundled demo field when it exists). On CPU, compare times within one run
(these machines are shared; absolute times drift by up to 2x).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.render import parse_count, scene_camera, synthetic_scene  # noqa: E402
from gags_viewer.field.language_field import FieldMetadata, LanguageField  # noqa: E402
from gags_viewer.language.decoders import random_gags_decoder_state  # noqa: E402
from gags_viewer.language.engine import QueryEngine  # noqa: E402
from gags_viewer.render.camera import Camera  # noqa: E402

QUERIES = ["mug", "plant"]


class TableTextEncoder:
    """Fixed unit embeddings per phrase (the TextEncoder interface the engine uses).

    For synthetic fields the "phrases" are decoded features of chosen Gaussians: a query is then
    relevant where the field's features are close to its Gaussian's, which gives masks of a realistic
    size instead of all-or-nothing maps from unrelated random vectors.
    """

    def __init__(self, table: dict):
        self.table = {k: v / v.norm() for k, v in table.items()}

    def encode(self, phrases):
        return torch.stack([self.table[p.strip()] for p in phrases])

    def is_cached(self, phrases):
        return True

    def encode_async(self, phrases):
        future: Future = Future()
        future.set_result(self.encode(phrases))
        return future


def synthetic_text(
    field: LanguageField, region_features, queries, negatives, camera: Camera, seed: int = 0
) -> TableTextEncoder:
    """Embeddings for a synthetic field: phrases are the decoded base features of its regions.

    A small render of the benchmark view tells which regions are seen: the queries are the K regions
    seen most, the negatives random regions not seen (so that masks are not empty).
    """
    from gags_viewer.language.decoders import GagsClipDecoder
    from gags_viewer.render.api import render

    decoder = GagsClipDecoder.from_state_dict(field.decoder)
    gen = torch.Generator().manual_seed(seed + 7)
    small = render(field, camera.resized(80, 60), rgb=False, features=field.features)
    seen = small.alpha > 0.5
    pixel_features = small.features[seen] / small.alpha[seen][:, None]  # [P, D]
    nearest = torch.cdist(pixel_features, region_features).argmin(dim=1)
    counts = torch.bincount(nearest, minlength=len(region_features))
    ranked = torch.argsort(counts, descending=True)
    query_regions = ranked[: len(queries)]
    unseen = ranked[len(queries) :][counts[ranked[len(queries) :]] == 0]
    pool = unseen if len(unseen) >= len(negatives) else ranked[-len(negatives) :]
    negative_regions = pool[torch.randperm(len(pool), generator=gen)[: len(negatives)]]
    vectors = decoder.decode(region_features[torch.cat([query_regions, negative_regions])])
    return TableTextEncoder(dict(zip(list(queries) + list(negatives), vectors)))


def synthetic_field(num_gaussians: int, seed: int = 0) -> tuple[LanguageField, torch.Tensor]:
    """A synthetic field and its regions' base features [R, 16]."""
    scene = synthetic_scene(num_gaussians, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    # Trained fields have nearly constant features per object part: 96 regions (nearest of 96 random
    # Gaussians' centres), each with its own random feature, plus a little per-Gaussian noise.
    centres = scene.means[torch.randperm(num_gaussians, generator=gen)[:96]]
    labels = torch.cat([torch.cdist(chunk, centres).argmin(dim=1) for chunk in scene.means.split(200_000)])
    region_features = torch.randn(96, 16, generator=gen) * 2.0
    features = region_features[labels] + 0.1 * torch.randn(num_gaussians, 16, generator=gen)
    sh = torch.zeros(num_gaussians, 16, 3)
    sh[:, 0] = torch.rand(num_gaussians, 3, generator=gen) * 2 - 1
    sh[:, 1:] = torch.randn(num_gaussians, 15, 3, generator=gen) * 0.05
    field = LanguageField(
        means=scene.means,
        quats=scene.quats,
        log_scales=torch.log(scene.scales),
        opacity_logits=torch.logit(scene.opacities.clamp(1e-4, 1 - 1e-4)),
        sh=sh,
        features=features,
        decoder=random_gags_decoder_state(seed=seed),
        metadata=FieldMetadata(decoder_kind="gags", source="benchmarks/query.py synthetic"),
    )
    return field, region_features


def mask_iou(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> tuple[float, float, float]:
    """Mean over queries of IoU(a > 0.5, b > 0.5) on valid pixels (queries whose masks are both empty are
    left out; NaN if all are), and the mean mask sizes as fractions of the valid pixels.

    a, b: [K, H, W]; valid: [H, W].
    """
    ious, size_a, size_b = [], [], []
    count = max(int(valid.sum()), 1)
    for ra, rb in zip(a, b):
        ma, mb = (ra > 0.5) & valid, (rb > 0.5) & valid
        union = int((ma | mb).sum())
        size_a.append(int(ma.sum()) / count)
        size_b.append(int(mb.sum()) / count)
        if union:
            ious.append(int((ma & mb).sum()) / union)
    iou = sum(ious) / len(ious) if ious else float("nan")
    return iou, sum(size_a) / len(size_a), sum(size_b) / len(size_b)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:9.0f}"


def bench_field(engine: QueryEngine, camera: Camera, label: str, queries) -> dict:
    pixel = engine.query(camera, queries, mode="pixel")
    engine.query(camera, queries, mode="gaussian")  # decodes every Gaussian once per field
    gauss = engine.query(camera, queries, mode="gaussian")  # per-frame cost once the field is decoded
    valid = pixel.render.alpha > 0.5
    iou, size_p, size_g = mask_iou(pixel.relevancy, gauss.relevancy, valid)
    # feature purity: |F| / alpha over covered pixels relative to the mean |f| of the Gaussians; 1 when each
    # pixel sees one feature (the modes then agree), lower where different features blend along rays
    norms = pixel.render.features.norm(dim=-1)[valid] / pixel.render.alpha[valid]
    purity = float(norms.mean() / engine.field.features.norm(dim=-1).mean()) if valid.any() else float("nan")
    tp = {k: pixel.timings.get(k, 0.0) for k in ("render", "decode", "relevancy")}
    tg = {k: gauss.timings.get(k, 0.0) for k in ("render", "decode", "relevancy")}
    total_p, total_g = sum(tp.values()), sum(tg.values())
    row = {
        "label": label,
        "pixel": tp,
        "gaussian": tg,
        "total_p": total_p,
        "total_g": total_g,
        "decode_once": engine.decode_gaussians_seconds or 0.0,
        "ratio": total_p / max(total_g, 1e-9),
        "iou": iou,
        "covered": float(valid.float().mean()),
        "purity": purity,
    }
    print(
        f"{label:<22} pixel   {_ms(tp['render'])} {_ms(tp['decode'])} {_ms(tp['relevancy'])} {_ms(total_p)}\n"
        f"{'':<22} gaussian{_ms(tg['render'])} {_ms(tg['decode'])} {_ms(tg['relevancy'])} {_ms(total_g)}"
        f"   x{row['ratio']:.1f} faster  IoU@0.5 {iou:.3f} (masks {size_p * 100:.0f}% / {size_g * 100:.0f}% of the"
        f" {row['covered'] * 100:.0f}% px with alpha>0.5; feature purity {purity:.2f}; decoding all Gaussians once"
        f" took {row['decode_once']:.1f} s)",
        flush=True,
    )
    return row


def bench_encode(device: str) -> None:
    from gags_viewer.field.language_field import ClipSpec
    from gags_viewer.language.clip_text import TextEncoder

    encoder = TextEncoder(ClipSpec(model="ViT-B-16", pretrained=None), device=device, allow_random_weights=True)
    start = time.perf_counter()
    encoder.load()
    load_s = time.perf_counter() - start
    times = []
    for phrase in ["a red mug", "green plant", "wooden table", "tea cup", "stuffed bear"]:
        start = time.perf_counter()
        encoder.encode([phrase])
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    cached = time.perf_counter()
    encoder.encode(["a red mug"])
    cached = time.perf_counter() - cached
    print(
        f"text encoder ViT-B-16 ({encoder.device}, {'fp16' if encoder.device.type == 'cuda' else 'fp32'}): "
        f"load {load_s:.1f} s (random init, no checkpoint read); new phrase median {times[len(times) // 2] * 1000:.0f} ms "
        f"(min {times[0] * 1000:.0f}, max {times[-1] * 1000:.0f}); cached phrase {cached * 1e6:.0f} us",
        flush=True,
    )


def default_demo_field() -> Path | None:
    for candidate in (ROOT / "scenes" / "demo",):
        if candidate.exists():
            return candidate
    return None


def bench_real_field(path: Path, resolutions, backend: str) -> None:
    from gags_viewer.field.load import load_field
    from gags_viewer.language.clip_text import TextEncoder
    from gags_viewer.language.clip_weights import resolve_clip_spec

    field = load_field(path)
    base = path if path.is_dir() else path.parent
    encoder = TextEncoder(resolve_clip_spec(field.metadata.clip, base_dir=base))
    queries = list(field.metadata.example_queries) or QUERIES
    camera = _field_camera(field)
    engine = QueryEngine(field, encoder, backend=backend)
    print(f"\nfield {path} ({field.num_gaussians:,} Gaussians), queries: {', '.join(queries)}")
    for width, height in resolutions:
        bench_field(engine, camera.resized(width, height), f"{width}x{height}", queries)


def _field_camera(field: LanguageField) -> Camera:
    default = field.metadata.default_camera
    if default and "c2w" in default:
        return Camera.from_fov(default["c2w"], float(default.get("fov_y_deg", 50.0)), 640, 480)
    from gags_viewer.render.camera import look_at

    low, high = field.bounds()
    centre = (low + high) / 2
    extent = float((high - low).norm())
    up = torch.tensor(field.metadata.up)
    eye = centre - up * 0.3 * extent + torch.tensor([0.0, 0.0, -1.0]) * extent
    return Camera.from_fov(look_at(eye, centre, up), 50.0, 640, 480)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", nargs="*", default=["100k", "1m"], help="synthetic field sizes (e.g. 100k 1m; none: skip)"
    )
    parser.add_argument("--resolutions", nargs="+", default=["640x480", "1920x1080"])
    parser.add_argument("--queries", type=int, default=2, help="number of queries K per frame")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--field", type=Path, default=None, help="a field for the agreement measure (default: scenes/demo)"
    )
    parser.add_argument("--no-encode", action="store_true", help="skip the text-encoder timing")
    args = parser.parse_args(argv)

    resolutions = [tuple(int(v) for v in r.lower().split("x")) for r in args.resolutions]
    queries = [f"query {i}" for i in range(args.queries)] if args.queries != 2 else QUERIES
    device = torch.device(args.device)
    print(
        f"query benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}, backend {args.backend}, K={len(queries)} queries, "
        f"negatives object/things/stuff/texture"
    )
    print(f"{'field / resolution':<22} mode    {'render':>9} {'decode':>9} {'relev.':>9} {'total':>9}   (ms per frame)")
    rows = []
    for size in args.sizes:
        n = parse_count(size)
        field, region_features = synthetic_field(n)
        text = synthetic_text(field, region_features, queries, field.metadata.negatives, scene_camera(640, 480))
        field = field.to(device)
        engine = QueryEngine(field, text, backend=args.backend, profile=True)
        # warm-up (numba JIT / cache load, allocator) on a small frame
        engine.query(scene_camera(64, 48), queries, mode="pixel")
        for width, height in resolutions:
            label = f"{size} {width}x{height}"
            rows.append(bench_field(engine, scene_camera(width, height), label, queries))
        del engine, field

    if not args.no_encode:
        bench_encode(args.device)
    path = args.field or default_demo_field()
    if path is not None:
        bench_real_field(path, resolutions, args.backend)
    else:
        print("\n(no demo field yet at scenes/demo: mode agreement on a trained field not measured; pass --field)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
