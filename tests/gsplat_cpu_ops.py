"""CPU twins of gsplat's CUDA primitives, with the CUDA wrappers' signatures, for testing the gsplat backend.

Projection, tile intersection, offsets and SH are gsplat's own pure-torch implementations
(``gsplat.cuda._torch_impl``) behind thin adapters. Its pixel rasterizer needs CUDA, so
:func:`rasterize_to_pixels` here composites each tile's list from ``isect_offsets`` / ``flatten_ids``
itself, with the rules of gsplat's kernel, in float64. Every call is recorded in ``CpuOps.calls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _isect_offset_encode,
    _isect_tiles,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from gags_viewer.render.channel_groups import SUPPORTED_CHANNELS
from gags_viewer.render.gsplat_backend import GsplatOps

ALPHA_MIN, ALPHA_MAX, T_MIN = 1.0 / 255.0, 0.999, 1e-4


@dataclass
class CpuOps:
    """Builds :class:`GsplatOps` of CPU twins; ``calls`` lists (primitive name, detail) in call order:
    the rows evaluated for ``spherical_harmonics``, the channel count for ``rasterize_to_pixels``."""

    calls: list = field(default_factory=list)

    def ops(self) -> GsplatOps:
        return GsplatOps(self.project, self.spherical_harmonics, self.isect_tiles, self.offsets, self.rasterize)

    def project(
        self, means, covars, quats, scales, viewmats, Ks, width, height, *, eps2d, near_plane, far_plane, opacities
    ):
        """Ignores ``opacities`` (the torch twin has no tighter radii): culling is the same, lists longer."""
        assert covars is None and opacities.shape == means.shape[:1]
        self.calls.append(("fully_fused_projection", len(means)))
        covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
        return _fully_fused_projection(means, covars, viewmats, Ks, width, height, eps2d, near_plane, far_plane)

    def spherical_harmonics(self, degree, dirs, coeffs, *, masks):
        """Evaluates only the rows in ``masks``; the others are NaN (the CUDA kernel leaves them unset)."""
        self.calls.append(("spherical_harmonics", int(masks.sum())))
        out = torch.full_like(dirs, float("nan"))
        out[masks] = _spherical_harmonics(degree, dirs[masks], coeffs[masks])
        return out

    def isect_tiles(self, means2d, radii, depths, tile_size, tile_width, tile_height):
        self.calls.append(("isect_tiles", None))
        return _isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height)

    def offsets(self, isect_ids, n_images, tile_width, tile_height):
        self.calls.append(("isect_offset_encode", None))
        return _isect_offset_encode(isect_ids, n_images, tile_width, tile_height)

    def rasterize(
        self, means2d, conics, colors, opacities, width, height, tile_size, offsets, flatten_ids, *, backgrounds
    ):
        """gsplat's classic compositing per tile, front to back along the tile's list; refuses channel
        counts that gsplat would pad again. -> ([1, H, W, c], [1, H, W, 1]) in the input dtype."""
        channels = colors.shape[-1]
        assert channels in SUPPORTED_CHANNELS, f"gsplat would pad {channels} channels itself"
        assert backgrounds.shape == (1, channels)
        self.calls.append(("rasterize_to_pixels", channels))
        dtype = colors.dtype
        means2d, conics, colors, opacities = (t[0].double() for t in (means2d, conics, colors, opacities))
        image = torch.zeros(height, width, channels, dtype=torch.float64)
        transmittance = torch.ones(height, width, dtype=torch.float64)
        ends = torch.cat([offsets.reshape(-1)[1:], torch.tensor([len(flatten_ids)])]).tolist()
        for tile, (start, end) in enumerate(zip(offsets.reshape(-1).tolist(), ends)):
            ids = flatten_ids[start:end].long()  # one image: flatten ids are Gaussian ids
            y0, x0 = divmod(tile, offsets.shape[-1])
            ys = torch.arange(y0 * tile_size, min((y0 + 1) * tile_size, height))
            xs = torch.arange(x0 * tile_size, min((x0 + 1) * tile_size, width))
            if len(ids) == 0 or len(ys) == 0 or len(xs) == 0:
                continue
            py, px = (g.reshape(-1) for g in torch.meshgrid(ys, xs, indexing="ij"))
            dx = means2d[ids, 0] - (px[:, None] + 0.5)  # [P, L]
            dy = means2d[ids, 1] - (py[:, None] + 0.5)
            a, b, c = conics[ids].unbind(-1)
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = (opacities[ids] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
            alpha = torch.where((sigma < 0) | (alpha < ALPHA_MIN), torch.zeros_like(alpha), alpha)
            after = torch.cumprod(1 - alpha, dim=-1)  # T after each Gaussian
            kept = after > T_MIN  # the pixel stops before the Gaussian that brings T to <= 1e-4
            weights = torch.where(kept, alpha * after / (1 - alpha), torch.zeros_like(alpha))
            image[py, px] = weights @ colors[ids]
            transmittance[py, px] = torch.where(kept, after, torch.ones_like(after)).amin(dim=-1)
        image = image + transmittance[..., None] * backgrounds[0].double()
        return image[None].to(dtype), (1 - transmittance)[None, ..., None].to(dtype)
