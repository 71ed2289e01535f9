"""gsplat rasterization on CUDA, from its lower-level primitives (imported only when a GPU is present).

One frame: ``fully_fused_projection`` once; colours from the SH coefficients only for the Gaussians that
projection kept (``spherical_harmonics`` with ``masks=radii > 0``, then +0.5 and clamped at 0, as
``gsplat.rasterization`` does); ``isect_tiles`` / ``isect_offset_encode`` once; then one
``rasterize_to_pixels`` call per channel group of :func:`channel_groups` (padded to a channel count
gsplat has a kernel for here, where that pays, in the one copy that gathers the group's channels).
Classic mode, eps2d 0.3, near plane 0.01: the semantics of the CPU backends.

The primitives are injectable (:class:`GsplatOps`): the tests run this whole pipeline on the CPU with
pure-torch twins of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gags_viewer.render.camera import Camera
from gags_viewer.render.channel_groups import channel_groups, padded_channels
from gags_viewer.render.projection import EPS_2D, FAR_PLANE, NEAR_PLANE

TILE = 16


@dataclass(frozen=True)
class GsplatOps:
    """The gsplat primitives a frame calls, with the signatures of ``gsplat.cuda._wrapper``'s functions.

    Attributes:
        fully_fused_projection: (means, covars, quats, scales, viewmats, Ks, width, height, *, eps2d,
            near_plane, far_plane, opacities) -> (radii [1, N, 2], means2d [1, N, 2], depths [1, N],
            conics [1, N, 3], compensations).
        spherical_harmonics: (degree, dirs [1, N, 3], coeffs [1, N, K, 3], *, masks [1, N]) -> [1, N, 3];
            rows outside ``masks`` are left undefined.
        isect_tiles: (means2d, radii, depths, tile_size, tile_width, tile_height) ->
            (tiles_per_gauss, isect_ids [M], flatten_ids [M]).
        isect_offset_encode: (isect_ids, n_images, tile_width, tile_height) -> offsets [1, th, tw].
        rasterize_to_pixels: (means2d, conics, colors [1, N, c], opacities [1, N], width, height,
            tile_size, isect_offsets, flatten_ids, *, backgrounds [1, c]) -> ([1, H, W, c], [1, H, W, 1]).
    """

    fully_fused_projection: Callable
    spherical_harmonics: Callable
    isect_tiles: Callable
    isect_offset_encode: Callable
    rasterize_to_pixels: Callable

    @staticmethod
    def cuda() -> GsplatOps:
        """gsplat's CUDA primitives."""
        import gsplat

        return GsplatOps(
            fully_fused_projection=gsplat.fully_fused_projection,
            spherical_harmonics=gsplat.spherical_harmonics,
            isect_tiles=gsplat.isect_tiles,
            isect_offset_encode=gsplat.isect_offset_encode,
            rasterize_to_pixels=gsplat.rasterize_to_pixels,
        )


def _columns(blocks: list[Tensor], start: int, stop: int, width: int) -> Tensor:
    """Channels [start, stop) of the blocks laid side by side ([1, N, c_i] each), zero-padded to ``width``
    channels; a whole block that needs no padding is returned as it is, without a copy. [1, N, width]"""
    pieces, offset = [], 0
    for block in blocks:
        size = block.shape[-1]
        low, high = max(start - offset, 0), min(stop - offset, size)
        if low < high:
            pieces.append(block if (low, high) == (0, size) else block[..., low:high])
        offset += size
    if width > stop - start:
        pieces.append(pieces[0].new_zeros(*pieces[0].shape[:-1], width - (stop - start)))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


class GsplatBackend:
    """The gsplat backend (see the module docstring); differentiable through gsplat's autograd functions.

    Args:
        ops: the primitives; gsplat's CUDA ones by default.
    """

    differentiable = True

    def __init__(self, ops: GsplatOps | None = None):
        self.ops = GsplatOps.cuda() if ops is None else ops

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
        """See :class:`gags_viewer.render.api.Backend`. Returns ([H, W, C], [H, W])."""
        ops = self.ops
        width, height = camera.width, camera.height
        viewmats = camera.world_to_camera.to(means)[None]  # [1, 4, 4]: copied once per camera
        radii, means2d, depths, conics, _ = ops.fully_fused_projection(
            means,
            None,
            unit_quats,
            scales,
            viewmats,
            camera.K.to(means)[None],
            width,
            height,
            eps2d=EPS_2D,
            near_plane=NEAR_PLANE,
            far_plane=FAR_PLANE,
            opacities=opacities,  # tighter radii (gsplat.rasterization passes them too)
        )
        blocks = []
        if sh is not None:
            degree = math.isqrt(sh.shape[1]) - 1
            rotation, translation = viewmats[0, :3, :3], viewmats[0, :3, 3]
            dirs = means + translation @ rotation  # means - camera centre, the centre being -Rᵀt
            visible = (radii > 0).all(dim=-1)  # [1, N]
            rgb = ops.spherical_harmonics(degree, dirs[None], sh[None], masks=visible)
            blocks.append(torch.clamp_min(rgb + 0.5, 0.0))
        if colors is not None:
            blocks.append(colors.to(means.dtype)[None])

        tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
        _, isect_ids, flatten_ids = ops.isect_tiles(means2d, radii, depths, TILE, tiles_x, tiles_y)
        offsets = ops.isect_offset_encode(isect_ids, 1, tiles_x, tiles_y)
        images, alpha = [], None
        for start, stop in channel_groups([block.shape[-1] for block in blocks]):
            width_padded = padded_channels(stop - start)  # padded here in one copy, not again inside gsplat
            image, group_alpha = ops.rasterize_to_pixels(
                means2d,
                conics,
                _columns(blocks, start, stop, width_padded),
                opacities[None],
                width,
                height,
                TILE,
                offsets,
                flatten_ids,
                backgrounds=F.pad(background[None, start:stop], (0, width_padded - (stop - start))),
            )
            images.append(image[0, ..., : stop - start])
            alpha = group_alpha[0, ..., 0] if alpha is None else alpha  # the same in every group
        assert alpha is not None, "channel_groups covers at least one channel"
        return (images[0] if len(images) == 1 else torch.cat(images, dim=-1)), alpha


BACKEND = GsplatBackend()
