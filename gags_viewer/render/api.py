"""One entry point for rendering a field: :func:`render` picks a backend and returns named outputs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal, Optional, Protocol, Sequence

import torch
from torch import Tensor

from gags_viewer.errors import RenderError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera
from gags_viewer.render.sh import sh_to_rgb

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
        colors: Tensor,
        camera: Camera,
        background: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Composite per-Gaussian channels front to back.

        Args:
            means: [N, 3]; unit_quats: [N, 4] (wxyz); scales: [N, 3]; opacities: [N] in [0, 1].
            colors: [N, C] channels to composite.
            camera: the pinhole camera (image size camera.height x camera.width).
            background: [C] value added with the remaining transmittance.

        Returns:
            image [H, W, C] and accumulated alpha [H, W].
        """
        ...


@dataclass
class RenderOutput:
    """Named render outputs for one camera.

    Attributes:
        rgb: Colour from the SH coefficients over the background, or None if not asked. [H, W, 3]
        features: Composited per-Gaussian channels (background 0), or None if not asked. [H, W, C]
        depth: Expected camera-space depth (accumulated z / alpha; 0 where nothing was hit). [H, W]
        alpha: Accumulated opacity. [H, W]
    """

    rgb: Optional[Tensor]
    features: Optional[Tensor]
    depth: Tensor
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
    features: Optional[Tensor] = None,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    backend: BackendName = "auto",
) -> RenderOutput:
    """Render ``field`` from ``camera``: RGB, extra per-Gaussian channels, depth and alpha in one pass.

    Args:
        field: the Gaussians (tensors on the device to render on).
        camera: pinhole camera; output images are camera.height x camera.width.
        rgb: whether to evaluate the SH colours and return ``rgb``.
        features: [N, C] per-Gaussian channels to composite (e.g. ``field.features`` or K relevancy
            scores per Gaussian), or None.
        background: RGB background colour in [0, 1].
        backend: "auto" picks gsplat on CUDA, torch on CPU when any input requires grad, else numba.
    """
    means, quats, scales, opacities = field.means, field.unit_quats(), field.scales(), field.opacities()
    parts = []
    if rgb:
        parts.append(sh_to_rgb(field.sh, means, camera.center))
    if features is not None:
        if features.ndim != 2 or features.shape[0] != field.num_gaussians:
            raise RenderError(f"features must be [N={field.num_gaussians}, C], got {list(features.shape)}")
        parts.append(features.to(means.dtype))
    camera_rotation = camera.world_to_camera[:3, :3].to(means)
    depth = (means @ camera_rotation[2] + camera.world_to_camera[2, 3].to(means))[:, None]
    parts.append(depth)
    colors = torch.cat(parts, dim=-1)

    num_features = 0 if features is None else features.shape[1]
    bg = torch.cat(
        [
            torch.as_tensor(background, dtype=means.dtype, device=means.device)[: 3 if rgb else 0],
            torch.zeros(num_features + 1, dtype=means.dtype, device=means.device),
        ]
    )
    if backend == "auto":
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (means, quats, scales, opacities, colors)
        )
        backend = choose_backend(means.device, needs_grad)
    image, alpha = get_backend(backend).rasterize(means, quats, scales, opacities, colors, camera, bg)

    accumulated_depth = image[..., -1]
    expected_depth = torch.where(alpha > 0, accumulated_depth / alpha.clamp(min=1e-10), torch.zeros_like(alpha))
    return RenderOutput(
        rgb=image[..., :3] if rgb else None,
        features=image[..., 3 if rgb else 0 : -1] if features is not None else None,
        depth=expected_depth,
        alpha=alpha,
    )
