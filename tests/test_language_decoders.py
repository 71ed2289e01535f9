import pytest
import torch
import torch.nn.functional as F

from gags_viewer.errors import FieldError
from gags_viewer.language.decoders import (
    GagsClipDecoder,
    MLPDecoder,
    clip_decoder_from_state_dict,
    granularity_decoder_from_state_dict,
    random_gags_decoder_state,
    random_granularity_decoder_state,
)


def conv_reference(state, x_chw):
    """GAGS CNN_decoder written directly with 1x1 convolutions on a (C, H, W) map, as the official code runs it."""

    def conv(k, h):
        return F.conv2d(h[None], state[f"decoder.{k}.weight"], state[f"decoder.{k}.bias"])[0]

    h1 = F.relu(conv(0, x_chw))
    h2 = F.relu(conv(4, F.relu(conv(2, h1))))
    h3 = F.relu(conv(6, h1 + h2))
    h4 = F.relu(conv(10, F.relu(conv(8, h3))))
    y = conv(16, F.relu(conv(14, F.relu(conv(12, h3 + h4)))))
    return y / y.norm(dim=0, keepdim=True)


def test_official_key_layout_loads_and_matches_conv_definition():
    state = random_gags_decoder_state(seed=3)
    assert sorted(state) == sorted(f"decoder.{k}.{p}" for k in range(0, 17, 2) for p in ("weight", "bias"))
    assert state["decoder.0.weight"].shape == (256, 16, 1, 1)
    decoder = GagsClipDecoder.from_state_dict(state)
    assert sum(p.numel() for p in decoder.parameters()) == 596_480

    x = torch.randn(16, 5, 7)
    expected = conv_reference(state, x)  # [512, 5, 7]
    got = decoder.decode(x.permute(1, 2, 0))  # [5, 7, 512]
    torch.testing.assert_close(got, expected.permute(1, 2, 0), atol=1e-5, rtol=1e-5)

    # round trip to the official layout
    again = decoder.state_dict_official()
    for key, value in state.items():
        torch.testing.assert_close(again[key], value)


def test_official_checkpoint_wrapper_and_module_prefix():
    state = random_gags_decoder_state(seed=1)
    prefixed = {f"module.{k}": v for k, v in state.items()}
    a = clip_decoder_from_state_dict(state)
    b = clip_decoder_from_state_dict(prefixed)
    x = torch.randn(10, 16)
    torch.testing.assert_close(a.decode(x), b.decode(x))
    assert isinstance(a, GagsClipDecoder)


def test_decoder_output_has_unit_norm_for_pixels_and_gaussians():
    decoder = GagsClipDecoder.from_state_dict(random_gags_decoder_state(seed=0))
    pixels = torch.randn(12, 9, 16) * 3
    gaussians = torch.randn(1000, 16)
    for out in (decoder.decode(pixels), decoder.decode(gaussians, chunk_size=64)):
        assert out.shape[-1] == 512
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(out.shape[:-1]), atol=1e-5, rtol=0)


def test_chunked_decode_equals_one_pass():
    decoder = GagsClipDecoder.from_state_dict(random_gags_decoder_state(seed=2))
    x = torch.randn(1000, 16)
    torch.testing.assert_close(decoder.decode(x, chunk_size=97), decoder.decode(x, chunk_size=10_000))


def test_granularity_decoder_softmax():
    state = random_granularity_decoder_state(seed=0)
    assert sorted({k.split(".")[1] for k in state}, key=int) == ["0", "2", "4", "6", "8", "10"]
    decoder = granularity_decoder_from_state_dict(state)
    out = decoder.decode(torch.randn(4, 6, 16))
    assert out.shape == (4, 6, 3)
    torch.testing.assert_close(out.sum(-1), torch.ones(4, 6))
    assert (out >= 0).all()
    # the values: Linear, ReLU between layers, softmax at the end, computed from the state dict by hand
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1)).double()  # the inputs, in float64
    layers = sorted({int(k.split(".")[1]) for k in state})
    for position, index in enumerate(layers):
        weight = state[f"decoder.{index}.weight"].double().flatten(1)  # stored as 1x1 convolutions
        x = x @ weight.T + state[f"decoder.{index}.bias"].double()
        if position < len(layers) - 1:
            x = x.clamp(min=0)
    expected = torch.softmax(x, dim=-1).float()
    inputs = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(decoder.decode(inputs), expected, atol=1e-5, rtol=0)


def test_langsplat_style_linear_decoder():
    dims = [3, 16, 32, 512]
    state = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        state[f"decoder.{2 * i}.weight"] = torch.randn(b, a)  # nn.Linear layout
        state[f"decoder.{2 * i}.bias"] = torch.randn(b)
    decoder = clip_decoder_from_state_dict(state)
    assert isinstance(decoder, MLPDecoder)
    x = torch.randn(20, 3)
    h = x
    for i in range(3):
        h = h @ state[f"decoder.{2 * i}.weight"].T + state[f"decoder.{2 * i}.bias"]
        if i < 2:
            h = torch.relu(h)
    torch.testing.assert_close(decoder.decode(x), h / h.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-5)


def test_malformed_state_dicts_raise_field_errors():
    state = random_gags_decoder_state()
    bad = dict(state)
    bad["decoder.2.weight"] = torch.randn(256, 128, 1, 1)
    with pytest.raises(FieldError, match="decoder.2"):
        GagsClipDecoder.from_state_dict(bad)
    with pytest.raises(FieldError, match="unexpected key"):
        clip_decoder_from_state_dict({"encoder.0.weight": torch.randn(3, 3)})
    with pytest.raises(FieldError):
        GagsClipDecoder.from_state_dict({k: v for k, v in state.items() if not k.startswith("decoder.16")})
    decoder = GagsClipDecoder.from_state_dict(state)
    with pytest.raises(FieldError, match="16-D"):
        decoder.decode(torch.randn(3, 8))


def test_in_place_inference_matches_the_official_definition_and_keeps_no_alias():
    """Inference with a :class:`Scratch` (activations written in place, buffers reused from chunk to
    chunk) decodes as the 1x1-convolution definition does; each chunk's result is its own tensor."""
    import threading

    from gags_viewer.language.decoder_inference import Scratch, thread_scratch

    state = random_gags_decoder_state(seed=4)
    decoder = GagsClipDecoder.from_state_dict(state)
    x = torch.randn(300, 16)
    expected = conv_reference(state, x.T[:, :, None])[:, :, 0].T  # [300, 512]
    scratch = Scratch()
    with torch.no_grad():
        chunks = [decoder.hidden(x[i : i + n], scratch) for i, n in ((0, 200), (200, 64), (264, 36))]
        first = chunks[0].clone()
        again = decoder.hidden(x[:200], scratch)  # reuses the buffers the first chunk was computed in
    torch.testing.assert_close(chunks[0], first, rtol=0, atol=0)  # not overwritten by later chunks
    torch.testing.assert_close(again, first, atol=1e-5, rtol=1e-5)
    got = F.normalize(decoder.head(torch.cat(chunks)), dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    other: list = []
    thread = threading.Thread(target=lambda: other.append(thread_scratch()))
    thread.start()
    thread.join()
    assert thread_scratch() is thread_scratch() and other[0] is not thread_scratch()


@pytest.mark.parametrize("dims", [[16, 64, 32, 512], [16, 8, 512], [3, 512]])
def test_in_place_inference_of_plain_mlps(dims):
    from gags_viewer.language.decoder_inference import Scratch

    decoder = MLPDecoder(dims, "l2").requires_grad_(False)
    x = torch.randn(50, dims[0])
    reference = x
    for layer in decoder.linears[:-1]:
        reference = torch.relu(reference @ layer.weight.T + layer.bias)
    with torch.no_grad():
        got = decoder.hidden(x, Scratch())
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)
