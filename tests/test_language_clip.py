import threading
import time

import pytest
import torch

from gags_viewer.field.language_field import ClipSpec
from gags_viewer.language import clip_weights
from gags_viewer.language.clip_text import TextEncoder
from gags_viewer.language.clip_weights import ClipError, ClipWeightsMissing, resolve_clip_spec
from tests.tiny_clip import make_tiny_clip


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_tiny_clip_encodes_through_open_clip(tiny_spec):
    encoder = TextEncoder(tiny_spec, device="cpu")
    out = encoder.encode(["mug", "plant", "mug"])
    assert out.shape == (3, 512)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out[0], out[2])
    assert not torch.allclose(out[0], out[1])
    assert encoder.embed_dim == 512

    # the checkpoint really was loaded: a second encoder from the same files gives the same embeddings
    other = TextEncoder(tiny_spec, device="cpu")
    torch.testing.assert_close(other.encode(["plant"])[0], out[1])


def test_cache_avoids_reencoding_and_async_is_thread_safe(tiny_spec):
    encoder = TextEncoder(tiny_spec, device="cpu")
    encoder.encode(["object"])
    calls = []
    original = encoder._encode_batch

    def counting(phrases):
        calls.append(list(phrases))
        return original(phrases)

    encoder._encode_batch = counting
    encoder.encode(["object", " object "])
    assert calls == []
    assert encoder.is_cached(["object"]) and not encoder.is_cached(["teapot"])

    future = encoder.encode_async(["teapot", "object"])
    assert future.result(timeout=10).shape == (2, 512)
    assert calls == [["teapot"]]
    done = encoder.encode_async(["teapot"])
    assert done.done()

    results = []
    threads = [threading.Thread(target=lambda: results.append(encoder.encode(["lamp", "teapot"]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4
    assert calls.count(["lamp"]) == 1
    for r in results[1:]:
        torch.testing.assert_close(r, results[0])
    encoder.close()


def test_offline_missing_weights_fail_fast_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    encoder = TextEncoder(ClipSpec(model="ViT-B-16", pretrained="laion2b_s34b_b88k"), device="cpu")
    start = time.perf_counter()
    with pytest.raises(ClipWeightsMissing) as info:
        encoder.encode(["mug"])
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert "ViT-B-16" in message and "laion2b_s34b_b88k" in message  # which weights
    assert "laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message and str(tmp_path / "hf" / "hub") in message  # where
    assert clip_weights.CHECKPOINT_FLAG in message  # how to point to a local file
    # no retry: the second call fails at once with the same error
    start = time.perf_counter()
    with pytest.raises(ClipWeightsMissing):
        encoder.encode_async(["mug"]).result(timeout=5)
    assert time.perf_counter() - start < 1.0


def test_unreachable_hub_fails_fast_without_offline_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    with pytest.raises(ClipWeightsMissing, match="unreachable"):
        TextEncoder(ClipSpec(), device="cpu", cache_dir=str(tmp_path)).load()
    assert time.perf_counter() - start < 5.0


def test_cached_hub_weights_are_found_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "models--laion--CLIP-ViT-B-16-laion2B-s34B-b88K" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    refs = tmp_path / "models--laion--CLIP-ViT-B-16-laion2B-s34B-b88K" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    name, weights = TextEncoder(ClipSpec(), device="cpu", cache_dir=str(tmp_path)).checkpoint_path()
    assert name == "ViT-B-16"
    assert weights == str(snapshot / "open_clip_model.safetensors")


def test_bad_specs_are_one_line_errors(tmp_path, tiny_spec):
    with pytest.raises(ClipWeightsMissing, match="not found"):
        TextEncoder(ClipSpec(checkpoint_file=str(tmp_path / "nope.bin")), device="cpu").load()
    with pytest.raises(ClipError, match="not a pretrained tag"):
        TextEncoder(ClipSpec(model="ViT-B-16", pretrained="no_such_tag"), device="cpu").load()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    spec = ClipSpec(
        model=tiny_spec.model, pretrained=None, config_file=tiny_spec.config_file, checkpoint_file=str(broken)
    )
    with pytest.raises(ClipError) as info:
        TextEncoder(spec, device="cpu").load()
    assert "\n" not in str(info.value)


def test_resolve_clip_spec_paths_and_overrides(tmp_path):
    spec = ClipSpec(
        model="tiny", pretrained=None, config_file="clip/tiny.json", checkpoint_file="clip/tiny.safetensors"
    )
    resolved = resolve_clip_spec(spec, base_dir=tmp_path)
    assert resolved.config_file == str(tmp_path / "clip/tiny.json")
    assert resolved.checkpoint_file == str(tmp_path / "clip/tiny.safetensors")

    overridden = resolve_clip_spec(spec, base_dir=tmp_path, model="ViT-B-16", pretrained="laion2b_s34b_b88k")
    assert overridden == ClipSpec(model="ViT-B-16", pretrained="laion2b_s34b_b88k")

    local = resolve_clip_spec(ClipSpec(), checkpoint_file="/weights/open_clip_pytorch_model.bin")
    assert local.model == "ViT-B-16" and local.checkpoint_file == "/weights/open_clip_pytorch_model.bin"


def test_local_config_never_shadows_a_builtin(tmp_path, tiny_spec):
    import open_clip

    clash = tmp_path / "ViT-B-16.json"
    clash.write_text(open(tiny_spec.config_file).read())
    spec = ClipSpec(
        model="ViT-B-16", pretrained=None, config_file=str(clash), checkpoint_file=tiny_spec.checkpoint_file
    )
    out = TextEncoder(spec, device="cpu").encode(["mug"])
    assert out.shape == (1, 512)
    assert open_clip.get_model_config("ViT-B-16")["text_cfg"]["width"] == 512
