import math
import zlib
from concurrent.futures import Future

import pytest
import torch

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import FieldMetadata, LanguageField
from gags_viewer.language.decoders import GagsClipDecoder, random_gags_decoder_state, random_granularity_decoder_state
from gags_viewer.language.engine import QueryEngine
from gags_viewer.language.relevancy import relevancy
from gags_viewer.render.camera import Camera, look_at
from tests.test_field_neighbours import brute_force_smoothing

BACKEND = "torch"  # the reference CPU backend: no JIT warm-up in unit tests


class FakeTextEncoder:
    """Deterministic unit embeddings per phrase; the TextEncoder interface the engine uses."""

    def __init__(self, dim=512):
        self.dim = dim
        self.encoded = []

    def _embed(self, phrase):
        g = torch.Generator().manual_seed(zlib.crc32(phrase.strip().encode()))
        v = torch.randn(self.dim, generator=g)
        return v / v.norm()

    def encode(self, phrases):
        self.encoded.extend(phrases)
        return torch.stack([self._embed(p) for p in phrases])

    def is_cached(self, phrases):
        return True

    def encode_async(self, phrases):
        future = Future()
        future.set_result(self.encode(phrases))
        return future


def camera(width=64, height=48):
    c2w = look_at([0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0])
    return Camera.from_fov(c2w, 60.0, width, height)


def grid_field(bias: bool, sigma_px=1.2, spacing_px=16, depth=5.0, seed=0, opacity_logit=8.0):
    """Isotropic Gaussians on a screen-space grid (one per spacing_px cell), all at the same depth."""
    cam = camera()
    f = float(cam.K[1, 1])
    g = torch.Generator().manual_seed(seed)
    centres = []
    for v in range(spacing_px // 2, cam.height, spacing_px):
        for u in range(spacing_px // 2, cam.width, spacing_px):
            centres.append(((u + 0.5 - cam.width / 2) / f * depth, (v + 0.5 - cam.height / 2) / f * depth, depth))
    means = torch.tensor(centres, dtype=torch.float32)
    n = means.shape[0]
    field = LanguageField(
        means=means,
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), math.log(sigma_px / f * depth)),
        opacity_logits=torch.full((n,), opacity_logit),
        sh=torch.rand(n, 1, 3, generator=g),
        features=torch.randn(n, 16, generator=g),
        decoder=random_gags_decoder_state(seed=seed, bias=bias),
        granularity_decoder=random_granularity_decoder_state(seed=seed),
        metadata=FieldMetadata(),
    )
    return field.validate(), cam


def _projected_pixels(means, cam) -> torch.Tensor:
    """Integer pixel (u, v) of each centre. [N, 2]"""
    cam_points = means @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
    uvw = cam_points @ cam.K.T
    return (uvw[:, :2] / uvw[:, 2:3]).floor().long()


def random_field(n=200, seed=1):
    """Overlapping Gaussians in front of the camera, with a decoder that has biases."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([-2.0, -1.5, 4.0])
    field = LanguageField(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * 0.2 + 0.05),
        opacity_logits=torch.randn(n, generator=g),
        sh=torch.rand(n, 1, 3, generator=g),
        features=torch.randn(n, 16, generator=g),
        decoder=random_gags_decoder_state(seed=seed),
        granularity_decoder=random_granularity_decoder_state(seed=seed),
    )
    return field.validate()


QUERIES = ["mug", "plant", "tea cup"]


@pytest.mark.parametrize("backend", ["auto", "torch"])  # auto: the product path (numba for a CPU field)
def test_modes_agree_on_non_overlapping_opaque_gaussians_with_bias_free_decoder(backend):
    # One Gaussian per pixel: the rendered feature is w·f_i with 0 < w ≤ 0.999. A bias-free ReLU decoder is
    # positively homogeneous, so decode(w·f_i) ∝ decode(f_i) and its L2-normalised output is the same: pixel
    # mode sees exactly the Gaussian's relevancy. Gaussian mode renders w·r_i and divides by α = w.
    field, cam = grid_field(bias=False)
    engine = QueryEngine(field, FakeTextEncoder(), backend=backend)
    pixel = engine.query(cam, QUERIES, mode="pixel")
    gauss = engine.query(cam, QUERIES, mode="gaussian")
    assert pixel.relevancy.shape == gauss.relevancy.shape == (3, cam.height, cam.width)
    assert gauss.gaussian_scores.shape == (3, field.num_gaussians)
    assert pixel.gaussian_scores is None

    alpha = pixel.render.alpha
    covered = alpha > 0
    assert covered.float().mean() > 0.2  # a real test: many pixels are covered
    assert (alpha.max() - 0.999).abs() < 1e-3
    torch.testing.assert_close(gauss.render.alpha, alpha)
    diff = (pixel.relevancy - gauss.relevancy)[:, covered].abs().max()
    assert diff < 1e-4, diff

    # and each Gaussian's centre pixel shows that Gaussian's own score
    spacing = 16
    for i in range(field.num_gaussians):
        u = spacing // 2 + spacing * (i % (cam.width // spacing))
        v = spacing // 2 + spacing * (i // (cam.width // spacing))
        torch.testing.assert_close(pixel.relevancy[:, v, u], gauss.gaussian_scores[:, i], atol=1e-4, rtol=0)

    # the binary masks at threshold 0.5 are identical where covered
    assert torch.equal((pixel.relevancy > 0.5)[:, covered], (gauss.relevancy > 0.5)[:, covered])


@pytest.mark.gpu
def test_modes_agree_on_cuda_with_gsplat():
    field, cam = grid_field(bias=False)
    engine = QueryEngine(field.to("cuda"), FakeTextEncoder(), backend="auto")
    pixel = engine.query(cam, QUERIES, mode="pixel")
    gauss = engine.query(cam, QUERIES, mode="gaussian")
    assert pixel.relevancy.device.type == "cuda"
    covered = pixel.render.alpha > 0
    assert covered.float().mean() > 0.2
    assert (pixel.relevancy - gauss.relevancy)[:, covered].abs().max() < 1e-3


def test_modes_differ_when_the_decoder_has_biases():
    field, cam = grid_field(bias=True)
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND)
    pixel = engine.query(cam, QUERIES, mode="pixel")
    gauss = engine.query(cam, QUERIES, mode="gaussian")
    faint = (pixel.render.alpha > 0) & (pixel.render.alpha < 0.3)
    assert (pixel.relevancy - gauss.relevancy)[:, faint].abs().max() > 1e-3


def test_pixel_mode_equals_direct_computation():
    field = random_field()
    cam = camera(40, 30)
    text = FakeTextEncoder()
    engine = QueryEngine(field, text, backend=BACKEND, chunk_size=101)
    result = engine.query(cam, "mug; plant", negatives=["object", "stuff"], mode="pixel")
    assert result.queries == ("mug", "plant") and result.negatives == ("object", "stuff")
    assert set(result.timings) >= {"render", "decode", "encode"}  # decode includes the fused relevancy

    from gags_viewer.render.api import render

    out = render(field, cam, features=field.features, backend=BACKEND)
    decoded = GagsClipDecoder.from_state_dict(field.decoder).decode(out.features)  # [H, W, 512]
    expected = relevancy(decoded, text.encode(["mug", "plant"]), text.encode(["object", "stuff"]))
    assert (out.alpha == 0).any()  # exercises the decode-once path for empty pixels too
    torch.testing.assert_close(result.relevancy, expected.permute(2, 0, 1), atol=1e-5, rtol=1e-5)


def test_gaussian_mode_scores_caches_and_raw_channels():
    field = random_field()
    cam = camera(40, 30)
    text = FakeTextEncoder()
    engine = QueryEngine(field, text, backend=BACKEND, neighbours=1)
    result = engine.query(cam, QUERIES, mode="gaussian")
    decoder = GagsClipDecoder.from_state_dict(field.decoder)
    text_q, text_n = text.encode(QUERIES), text.encode(list(field.metadata.negatives))
    expected = relevancy(decoder.decode(field.features), text_q, text_n).T
    torch.testing.assert_close(result.gaussian_scores, expected, atol=1e-5, rtol=1e-5)

    # by default each Gaussian's feature is averaged with its 8 nearest neighbours' before decoding
    smoothed = brute_force_smoothing(field.means, field.scales().amax(dim=1), field.features, 8)
    default = QueryEngine(field, text, backend=BACKEND).gaussian_relevancy(QUERIES)
    torch.testing.assert_close(default, relevancy(decoder.decode(smoothed), text_q, text_n).T, atol=1e-5, rtol=1e-5)
    assert (default - expected).abs().max() > 1e-2  # this field's Gaussians overlap: smoothing matters
    assert "decode_once" in result.timings

    # the second query reuses the decoded Gaussians and the per-phrase similarities
    decoded_once = engine.gaussian_clip_features()
    again = engine.query(cam, QUERIES, mode="gaussian")
    assert "decode_once" not in again.timings
    assert engine.gaussian_clip_features() is decoded_once
    assert set(engine._similarities) >= set(QUERIES)
    torch.testing.assert_close(again.relevancy, result.relevancy)
    assert engine.decode_gaussians_seconds is not None

    # raw channels are alpha-weighted; the normalised map times alpha gives them back
    raw = result.render.features.permute(2, 0, 1)
    torch.testing.assert_close(result.relevancy * result.render.alpha, raw, atol=1e-5, rtol=1e-4)
    assert float(result.relevancy.max()) <= 1.0 and float(result.relevancy.min()) >= 0.0


def test_editable_negatives_and_errors():
    field = random_field(n=50)
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND, neighbours=1)
    a = engine.gaussian_relevancy(["mug"])
    engine.negatives = ("object",)
    b = engine.gaussian_relevancy(["mug"])
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, engine.gaussian_relevancy(["mug"], negatives=["object"]))
    with pytest.raises(GagsError):
        engine.query(camera(8, 6), [], mode="pixel")
    with pytest.raises(GagsError):
        engine.query(camera(8, 6), ["mug"], negatives=[], mode="pixel")
    with pytest.raises(GagsError):
        engine.query(camera(8, 6), ["mug"], mode="voxel")
    rgb_only = LanguageField(field.means, field.quats, field.log_scales, field.opacity_logits, field.sh)
    with pytest.raises(GagsError):
        QueryEngine(rgb_only, FakeTextEncoder())


def test_granularity_both_modes():
    field, cam = grid_field(bias=True)
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND)
    for mode in ("pixel", "gaussian"):
        probs, out = engine.granularity(cam, mode=mode)
        assert probs.shape == (cam.height, cam.width, 3)
        covered = out.alpha > 0.5
        torch.testing.assert_close(probs[covered].sum(-1), torch.ones(int(covered.sum())), atol=1e-4, rtol=0)
        # At each Gaussian's centre pixel it alone covers (alpha 0.999, neighbours 16 px away at sigma
        # 1.2 px): the probabilities are its own feature's, decoded (alpha and background move them < 0.01).
        own = engine.granularity_decoder.decode(field.features)
        centres = engine.render_features(cam).alpha  # any render: we only need the projected centres
        uv = _projected_pixels(field.means, cam)
        assert centres[uv[:, 1], uv[:, 0]].min() > 0.99
        torch.testing.assert_close(probs[uv[:, 1], uv[:, 0]], own, atol=0.01, rtol=0)
        assert own.argmax(-1).unique().numel() >= 2  # the Gaussians differ, so the check sees which is which


def test_with_tiny_open_clip_end_to_end(tmp_path):
    from gags_viewer.language.clip_text import TextEncoder
    from tests.tiny_clip import make_tiny_clip

    spec = make_tiny_clip(tmp_path)
    field = random_field(n=80)
    field.metadata = FieldMetadata(clip=spec)
    engine = QueryEngine(field, TextEncoder(spec, device="cpu"), backend=BACKEND)
    assert not engine.ready(["mug"])
    engine.prepare(["mug"]).result(timeout=30)
    assert engine.ready(["mug"])
    result = engine.query(camera(24, 18), "mug", mode="pixel")
    assert result.relevancy.shape == (1, 18, 24)
    assert torch.isfinite(result.relevancy).all()


def test_neighbours_below_one_is_a_clear_error():
    with pytest.raises(GagsError, match="at least 1"):
        QueryEngine(random_field(n=20), FakeTextEncoder(), backend=BACKEND, neighbours=0)


def test_the_per_field_build_never_blocks_frames_that_do_not_need_it(monkeypatch):
    """While one thread runs the once-per-field neighbour search (slow on big fields), pixel-mode and
    granularity-free frames of other browsers go on; only gaussian mode waits for its result."""
    import threading

    import gags_viewer.language.engine as engine_module

    field, cam = grid_field(bias=True)
    engine = QueryEngine(field, FakeTextEncoder(), backend=BACKEND)
    started, release = threading.Event(), threading.Event()
    real = engine_module.neighbour_smoothed_features

    def slow_search(*args, **kwargs):
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "neighbour_smoothed_features", slow_search)
    builder = threading.Thread(target=engine.prepare_field)
    builder.start()
    try:
        assert started.wait(10)
        done = threading.Event()

        def pixel_frame():
            engine.query(cam, ["mug"], negatives=["object"], mode="pixel")
            engine.feature_pca()
            done.set()

        threading.Thread(target=pixel_frame, daemon=True).start()
        assert done.wait(20), "a pixel-mode frame waited for the neighbour search"
        waiting = threading.Event()
        threading.Thread(
            target=lambda: (engine.gaussian_relevancy(["mug"], ["object"]), waiting.set()), daemon=True
        ).start()
        assert not waiting.wait(0.5)  # gaussian mode needs the search's result: it waits for it
    finally:
        release.set()
        builder.join(30)
    assert waiting.wait(20)
