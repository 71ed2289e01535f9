"""Decoders from per-Gaussian / per-pixel language features to CLIP space (and to granularity).

The field keeps decoders as plain state dicts in the official key layout; this module builds
``nn.Module`` s from them. Official GAGS decoders are stacks of 1×1 convolutions (keys
``decoder.{k}.weight`` of shape (out, in, 1, 1)); a 1×1 convolution is a per-pixel linear map, so each
one becomes an ``nn.Linear`` and the decoders run on any ``[..., D]`` tensor: a feature image
``[H, W, D]`` or per-Gaussian features ``[N, D]``. Inputs are processed in chunks of rows so that a
1080p decode (2 M pixels × 512 outputs) never holds more than one chunk of activations.

Inference on a CPU (:meth:`_Decoder.hidden` with a :class:`Scratch`) keeps its activations unit-major in
reused per-thread buffers and skips the units that are zero throughout a chunk
(:mod:`~gags_viewer.language.decoder_inference`). Pixel mode decodes chunks of 2k rows on CPU, one chunk
per core at a time (:mod:`~gags_viewer.language.cpu_chunks`).

- :class:`GagsClipDecoder`: GAGS ``CNN_decoder``, D → 512, 9 layers of width 256 with two residual
  additions, L2-normalised output (gags-method.md §3.3).
- :class:`MLPDecoder`: a plain stack of linear layers with ReLU between them, followed by either an L2
  normalisation (LangSplat's autoencoder decoder, 3 → … → 512) or a softmax (GAGS ``CNN_scale_decoder``,
  the granularity decoder D → 3, §3.4).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gags_viewer.errors import FieldError
from gags_viewer.language.decoder_inference import Layers, Scratch

StateDict = dict[str, Tensor]

GAGS_CLIP_LAYERS = (0, 2, 4, 6, 8, 10, 12, 14, 16)
GAGS_GRANULARITY_LAYERS = (0, 2, 4, 6, 8, 10)
_KEY = re.compile(r"^(?:module\.)?decoder\.(\d+)\.(weight|bias)$")


def default_chunk_size(device: torch.device | str) -> int:
    """Rows decoded at once: small on CPU (cache-friendly), large on a GPU."""
    return 1 << 18 if torch.device(device).type == "cuda" else 1 << 11


def linear_layers(state: StateDict, name: str = "decoder") -> dict[int, tuple[Tensor, Tensor]]:
    """Parse ``decoder.{k}.{weight,bias}`` keys into {k: (weight [out, in], bias [out])}.

    Accepts 1×1-conv weights (out, in, 1, 1) as the official code saves them, and linear weights
    (out, in). A ``module.`` prefix (DataParallel) is ignored. Missing biases become zeros.
    """
    if not isinstance(state, dict) or not state:
        raise FieldError(f"{name}: state dict is empty")
    weights: dict[int, Tensor] = {}
    biases: dict[int, Tensor] = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if match is None:
            raise FieldError(f"{name}: unexpected key '{key}' (expected decoder.<k>.weight / .bias)")
        index, kind = int(match.group(1)), match.group(2)
        (weights if kind == "weight" else biases)[index] = value
    layers = {}
    for index in sorted(weights):
        weight = weights[index]
        if weight.ndim == 4 and tuple(weight.shape[2:]) == (1, 1):
            weight = weight[:, :, 0, 0]
        if weight.ndim != 2:
            raise FieldError(
                f"{name}: weight decoder.{index} has shape {list(weights[index].shape)}; expected (out, in, 1, 1) or (out, in)"
            )
        bias = biases.get(index)
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
        if tuple(bias.shape) != (weight.shape[0],):
            raise FieldError(f"{name}: bias decoder.{index} has shape {list(bias.shape)}; expected [{weight.shape[0]}]")
        layers[index] = (weight, bias)
    stray = sorted(set(biases) - set(weights))
    if stray:
        raise FieldError(f"{name}: bias without weight at decoder.{stray[0]}")
    return layers


def _chunked(fn: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int) -> Tensor:
    """Apply a row-wise ``fn`` to ``x`` [..., D] in chunks of rows. -> [..., E]"""
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] <= chunk_size:
        out = fn(flat)
    else:
        out = torch.cat([fn(flat[i : i + chunk_size]) for i in range(0, flat.shape[0], chunk_size)], dim=0)
    return out.reshape(*lead, out.shape[-1])


class _Decoder(nn.Module):
    in_dim: int
    out_dim: int

    layers: nn.ModuleList

    @property
    def linears(self) -> list[nn.Linear]:
        """The linear layers in order (``layers``, typed)."""
        return [cast(nn.Linear, layer) for layer in self.layers]

    @torch.no_grad()
    def decode(self, features: Tensor, chunk_size: int | None = None) -> Tensor:
        """Decode without gradients, in chunks of rows. [..., D] -> [..., out_dim] (float32)"""
        param = next(self.parameters())
        chunk = chunk_size or default_chunk_size(param.device)
        return _chunked(lambda rows: self(rows.to(param)), features, chunk)

    def _check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.in_dim:
            raise FieldError(f"decoder expects {self.in_dim}-D features, got {x.shape[-1]}-D")

    @property
    def head(self) -> nn.Linear | None:
        """The last linear layer when the output is its L2-normalised result (else None): relevancy can
        then be folded into it (:class:`~gags_viewer.language.pixel_relevancy.FoldedRelevancy`)."""
        return None

    def hidden(self, x: Tensor, scratch: Scratch | None = None) -> Tensor:
        """The input of :attr:`head`; with ``scratch`` (inference only: no autograd) the activations
        before it are written in place there. [..., D] -> [..., width] ([P, D] -> [P, width] with scratch)"""
        raise NotImplementedError(f"{type(self).__name__} has no foldable head")


class GagsClipDecoder(_Decoder):
    """GAGS CLIP-space decoder (``CNN_decoder``) as a per-row MLP.

    With Lk the linear layer from official key ``decoder.k``::

        h1 = relu(L0(x))
        h2 = relu(L4(relu(L2(h1))))
        h3 = relu(L6(h1 + h2))
        h4 = relu(L10(relu(L8(h3))))
        y  = L16(relu(L14(relu(L12(h3 + h4)))))
        out = y / ||y||

    Shapes: x [..., D] (D = 16) -> out [..., 512], unit L2 norm.
    """

    def __init__(self, in_dim: int = 16, width: int = 256, out_dim: int = 512):
        super().__init__()
        dims = [(in_dim, width)] + [(width, width)] * 7 + [(width, out_dim)]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in dims)
        self.in_dim, self.width, self.out_dim = in_dim, width, out_dim

    def forward(self, x: Tensor) -> Tensor:
        """[..., D] -> [..., 512], L2-normalised."""
        return F.normalize(self.linears[8](self.hidden(x)), dim=-1, eps=1e-12)

    @property
    def head(self) -> nn.Linear:
        return self.linears[8]

    def hidden(self, x: Tensor, scratch: Scratch | None = None) -> Tensor:
        """Everything but the last layer: relu(L14(relu(L12(h3 + h4)))). [..., D] -> [..., width]
        (with ``scratch``: [P, D] -> [P, width], three buffers)"""
        self._check_input(x)
        L, op = self.linears, Layers(scratch)
        h1 = op.linear_relu(L[0], x, 0)
        h1_plus_h2 = op.add(op.linear_relu(L[2], op.linear_relu(L[1], h1, 1), 2), h1)
        h3 = op.linear_relu(L[3], h1_plus_h2, 0)
        h3_plus_h4 = op.add(op.linear_relu(L[5], op.linear_relu(L[4], h3, 1), 2), h3)
        return op.linear_relu(L[7], op.linear_relu(L[6], h3_plus_h4, 1), None)

    @staticmethod
    def from_state_dict(state: StateDict) -> GagsClipDecoder:
        """Build from the official state dict (keys ``decoder.{0,2,...,16}.{weight,bias}``)."""
        layers = linear_layers(state, "CLIP decoder")
        if tuple(layers) != GAGS_CLIP_LAYERS:
            raise FieldError(
                f"CLIP decoder: expected layers decoder.{{0,2,...,16}} (GAGS CNN_decoder), got decoder.{{{','.join(map(str, layers))}}}"
            )
        in_dim = layers[0][0].shape[1]
        width = layers[0][0].shape[0]
        out_dim = layers[16][0].shape[0]
        module = GagsClipDecoder(in_dim, width, out_dim)
        for linear, index in zip(module.linears, GAGS_CLIP_LAYERS):
            weight, bias = layers[index]
            if tuple(weight.shape) != tuple(linear.weight.shape):
                raise FieldError(
                    f"CLIP decoder: decoder.{index} has shape {list(weight.shape)}, expected {list(linear.weight.shape)}"
                )
            linear.weight.data.copy_(weight.float())
            linear.bias.data.copy_(bias.float())
        return module.eval().requires_grad_(False)

    def state_dict_official(self) -> StateDict:
        """The official key layout: ``decoder.{k}.weight`` (out, in, 1, 1) and ``decoder.{k}.bias``."""
        out = {}
        for linear, index in zip(self.linears, GAGS_CLIP_LAYERS):
            out[f"decoder.{index}.weight"] = linear.weight.detach().clone()[:, :, None, None]
            out[f"decoder.{index}.bias"] = linear.bias.detach().clone()
        return out


class MLPDecoder(_Decoder):
    """Linear layers with ReLU between them, then an L2 normalisation or a softmax.

    ``output="softmax"``: GAGS granularity decoder (keys ``decoder.{0,2,...,10}``, 16→64→128→64→32→16→3),
    returning (α_s, α_m, α_l) per row. ``output="l2"``: LangSplat's autoencoder decoder (3 → … → 512).
    Shapes: [..., D] -> [..., out_dim].
    """

    def __init__(self, dims: list[int], output: Literal["l2", "softmax"]):
        super().__init__()
        if len(dims) < 2:
            raise FieldError("decoder needs at least one layer")
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.output = output
        self.in_dim, self.out_dim = dims[0], dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.linears[-1](self.hidden(x))
        if self.output == "softmax":
            return torch.softmax(x, dim=-1)
        return F.normalize(x, dim=-1, eps=1e-12)

    @property
    def head(self) -> nn.Linear | None:
        return self.linears[-1] if self.output == "l2" else None

    def hidden(self, x: Tensor, scratch: Scratch | None = None) -> Tensor:
        """Every layer but the last, each followed by ReLU (the input itself for one layer). [..., D] -> [..., width]
        (with ``scratch``: [P, D] -> [P, width], two buffers)"""
        self._check_input(x)
        body, op = self.linears[:-1], Layers(scratch)
        for i, layer in enumerate(body):
            x = op.linear_relu(layer, x, None if i == len(body) - 1 else i % 2)
        return x

    @staticmethod
    def from_state_dict(state: StateDict, output: Literal["l2", "softmax"], name: str = "decoder") -> MLPDecoder:
        layers = linear_layers(state, name)
        weights = [layers[k] for k in sorted(layers)]
        dims = [weights[0][0].shape[1]] + [w.shape[0] for w, _ in weights]
        for (w_prev, _), (w, _), k in zip(weights[:-1], weights[1:], sorted(layers)[1:]):
            if w.shape[1] != w_prev.shape[0]:
                raise FieldError(
                    f"{name}: decoder.{k} takes {w.shape[1]} inputs but the previous layer gives {w_prev.shape[0]}"
                )
        module = MLPDecoder(dims, output)
        for linear, (weight, bias) in zip(module.linears, weights):
            linear.weight.data.copy_(weight.float())
            linear.bias.data.copy_(bias.float())
        return module.eval().requires_grad_(False)


def clip_decoder_from_state_dict(state: StateDict, kind: str | None = None) -> _Decoder:
    """The D → CLIP decoder of a field.

    Args:
        state: the field's ``decoder`` state dict.
        kind: "gags" (GAGS residual decoder), "langsplat" (plain MLP, L2 output) or None to infer from
            the keys (layers decoder.{0,2,...,16} mean GAGS).
    """
    if kind is None:
        kind = "gags" if tuple(linear_layers(state, "CLIP decoder")) == GAGS_CLIP_LAYERS else "langsplat"
    if kind == "gags":
        return GagsClipDecoder.from_state_dict(state)
    if kind == "langsplat":
        return MLPDecoder.from_state_dict(state, "l2", "CLIP decoder")
    raise FieldError(f"unknown decoder kind '{kind}' (expected 'gags' or 'langsplat')")


def granularity_decoder_from_state_dict(state: StateDict) -> MLPDecoder:
    """GAGS granularity decoder (``CNN_scale_decoder``): [..., D] -> softmax over (s, m, l) [..., 3]."""
    module = MLPDecoder.from_state_dict(state, "softmax", "granularity decoder")
    if module.out_dim != 3:
        raise FieldError(f"granularity decoder must output 3 channels, got {module.out_dim}")
    return module


def random_gags_decoder_state(
    in_dim: int = 16, width: int = 256, out_dim: int = 512, seed: int = 0, bias: bool = True
) -> StateDict:
    """A random GAGS CLIP decoder in the official layout (tests, benchmarks, synthetic fields)."""
    generator = torch.Generator().manual_seed(seed)
    dims = [(in_dim, width)] + [(width, width)] * 7 + [(width, out_dim)]
    state = {}
    for (i, o), k in zip(dims, GAGS_CLIP_LAYERS):
        state[f"decoder.{k}.weight"] = torch.randn(o, i, 1, 1, generator=generator) * (2.0 / i) ** 0.5
        state[f"decoder.{k}.bias"] = (torch.randn(o, generator=generator) * 0.1) if bias else torch.zeros(o)
    return state


def random_granularity_decoder_state(in_dim: int = 16, seed: int = 0) -> StateDict:
    """A random GAGS granularity decoder (16→64→128→64→32→16→3) in the official layout."""
    generator = torch.Generator().manual_seed(seed)
    dims = [in_dim, 64, 128, 64, 32, 16, 3]
    state = {}
    for (i, o), k in zip(zip(dims[:-1], dims[1:]), GAGS_GRANULARITY_LAYERS):
        state[f"decoder.{k}.weight"] = torch.randn(o, i, 1, 1, generator=generator) * (2.0 / i) ** 0.5
        state[f"decoder.{k}.bias"] = torch.randn(o, generator=generator) * 0.1
    return state
