"""One entry point for rendering a field: :func:`render` picks a backend and returns named outputs."""

from __future__ import annotations

import importlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import torch
from torch import Tensor

from gags_viewer.errors import RenderError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera

BackendName = Literal["auto", "gsplat", "torch", "numba"]

_BACKEND_MODULES = {
    "gsplat": "gags_viewer.render.gsplat_backend",
    "torch": "gags_viewer.render.torch_backend",
    "numba": "gags_viewer.render.numba_backend",
}


class Backend(Protocol):
    """What a rasterization backend provides. Every backend shares gsplat's classic pinhole semantics."""

    def rasterize(
        self,
        means: Tensor,
        unit_quats: Tensor,
        scales: Tensor,
        opacities: Tensor,
        colors: Tensor | None,
        camera: Camera,
        background: Tensor,
        sh: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Composite per-Gaussian channels front to back: the colour from ``sh`` first (if given), then
        ``colors`` (if given).

        The colour of a Gaussian seen from the camera centre is clamp_min(SH(dir) + 0.5, 0)
        (:func:`gags_viewer.render.sh.sh_to_rgb`); a backend may evaluate it only for the Gaussians it
        does not cull (gsplat does).

        Args:
            means: [N, 3]; unit_quats: [N, 4] (wxyz); scales: [N, 3]; opacities: [N] in [0, 1].
            colors: [N, C] channels to composite, or None.
            camera: the pinhole camera (image size camera.height x camera.width).
            background: [3 + C] (or [3], or [C]) value added with the remaining transmittance.
            sh: [N, K, 3] SH coefficients, K = (degree + 1)², or None.

        Returns:
            image [H, W, 3 + C] and accumulated alpha [H, W].
        """
        ...


@dataclass
class RenderOutput:
    """Named render outputs for one camera.

    Attributes:
        rgb: Colour from the SH coefficients over the background, or None if not asked. [H, W, 3]
        features: Composited per-Gaussian channels (background 0), or None if not asked. [H, W, C]
        depth: Expected camera-space depth (accumulated z / alpha; 0 where nothing was hit), or None if
            not asked. [H, W]
        alpha: Accumulated opacity. [H, W]
    """

    rgb: Tensor | None
    features: Tensor | None
    depth: Tensor | None
    alpha: Tensor


def available_backends() -> list[str]:
    """Backends that can run on this machine, fastest first."""
    names = ["gsplat"] if torch.cuda.is_available() else []
    return names + ["numba", "torch"]


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name ("gsplat", "torch" or "numba")."""
    if name not in _BACKEND_MODULES:
        raise RenderError(f"unknown render backend '{name}'; choose one of {', '.join(_BACKEND_MODULES)}")
    if name == "gsplat" and not torch.cuda.is_available():
        raise RenderError("the gsplat backend needs a CUDA GPU; use --device cpu (torch or numba backend)")
    return importlib.import_module(_BACKEND_MODULES[name]).BACKEND


def choose_backend(device: torch.device, needs_grad: bool) -> str:
    """gsplat on CUDA; on CPU the differentiable torch backend when gradients are needed, else numba."""
    if device.type == "cuda":
        return "gsplat"
    return "torch" if needs_grad else "numba"


def render(
    field: LanguageField,
    camera: Camera,
    *,
    rgb: bool = True,
    features: Tensor | None = None,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    backend: BackendName | Backend = "auto",
    depth: bool = True,
) -> RenderOutput:
    """Render ``field`` from ``camera``: RGB, extra per-Gaussian channels, depth and alpha in one pass.

    Args:
        field: the Gaussians (tensors on the device to render on).
        camera: pinhole camera; output images are camera.height x camera.width.
        rgb: whether to evaluate the SH colours and return ``rgb``.
        features: [N, C] per-Gaussian channels to composite (e.g. ``field.features`` or K relevancy
            scores per Gaussian), or None.
        background: RGB background colour in [0, 1].
        backend: "auto" picks gsplat on CUDA, torch on CPU when any input requires grad, else numba; or a
            backend object.
        depth: whether to composite a depth channel and return ``depth``.
    """
    means = field.means
    quats, scales, opacities = activations(field)
    parts = []
    if features is not None:
        if features.ndim != 2 or features.shape[0] != field.num_gaussians:
            raise RenderError(f"features must be [N={field.num_gaussians}, C], got {list(features.shape)}")
        parts.append(features.to(means.dtype))
    if depth:
        camera_rotation = camera.world_to_camera[:3, :3].to(means)
        parts.append((means @ camera_rotation[2] + camera.world_to_camera[2, 3].to(means))[:, None])
    if not (rgb or parts):
        raise RenderError("nothing to render: ask for rgb, features or depth")
    colors = None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    sh = field.sh if rgb else None

    num_features = 0 if features is None else features.shape[1]
    bg = _background(
        tuple(float(v) for v in background)[: 3 if rgb else 0], num_features + int(depth), means.dtype, means.device
    )
    if backend == "auto":
        inputs = (means, quats, scales, opacities, *(t for t in (colors, sh) if t is not None))
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        backend = cast(BackendName, choose_backend(means.device, needs_grad))
    rasterizer = get_backend(backend) if isinstance(backend, str) else backend
    image, alpha = rasterizer.rasterize(means, quats, scales, opacities, colors, camera, bg, sh=sh)

    expected_depth = None
    if depth:
        accumulated_depth = image[..., -1]
        expected_depth = torch.where(alpha > 0, accumulated_depth / alpha.clamp(min=1e-10), torch.zeros_like(alpha))
    first = 3 if rgb else 0
    return RenderOutput(
        rgb=image[..., :3] if rgb else None,
        features=image[..., first : first + num_features] if features is not None else None,
        depth=expected_depth,
        alpha=alpha,
    )


_CACHE_LOCK = threading.Lock()
_ACTIVATIONS: OrderedDict[int, tuple] = OrderedDict()  # id(opacity_logits) -> (weakrefs, versions, values)
_BACKGROUNDS: OrderedDict[tuple, Tensor] = OrderedDict()


def activations(field: LanguageField) -> tuple[Tensor, Tensor, Tensor]:
    """(unit quaternions [N, 4], scales [N, 3], opacities [N]) of ``field``.

    Cached while the raw tensors are the same objects, unchanged in place (same ``_version``), and need
    no gradient: a viewer frame does not recompute them; a training step, which changes them in place
    and needs their gradients, always does.
    """
    raw = (field.quats, field.log_scales, field.opacity_logits)
    if torch.is_grad_enabled() and any(t.requires_grad for t in raw):
        return field.unit_quats(), field.scales(), field.opacities()
    versions = tuple(t._version for t in raw)
    with _CACHE_LOCK:
        entry = _ACTIVATIONS.get(id(field.opacity_logits))
    if entry is not None:
        refs, cached_versions, values = entry
        if cached_versions == versions and all(r() is t for r, t in zip(refs, raw)):
            return values
    values = (field.unit_quats(), field.scales(), field.opacities())
    with _CACHE_LOCK:
        _ACTIVATIONS[id(field.opacity_logits)] = (tuple(weakref.ref(t) for t in raw), versions, values)
        while len(_ACTIVATIONS) > 4:
            _ACTIVATIONS.popitem(last=False)
    return values


def _background(rgb: tuple, zeros: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The background of every channel (RGB, then zeros), made once per (colour, channels, device). [C]"""
    key = (rgb, zeros, dtype, device)
    with _CACHE_LOCK:
        if key in _BACKGROUNDS:
            return _BACKGROUNDS[key]
    value = torch.cat([torch.tensor(rgb, dtype=dtype), torch.zeros(zeros, dtype=dtype)]).to(device)
    with _CACHE_LOCK:
        _BACKGROUNDS[key] = value
        while len(_BACKGROUNDS) > 16:
            _BACKGROUNDS.popitem(last=False)
    return value
