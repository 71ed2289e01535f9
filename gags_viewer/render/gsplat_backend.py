"""gsplat rasterization on CUDA (imported only when a GPU is present)."""

from __future__ import annotations

from torch import Tensor

from gags_viewer.render.camera import Camera


class GsplatBackend:
    """Wraps ``gsplat.rasterization`` in classic pinhole mode with precomputed colours."""

    differentiable = True

    def rasterize(
        self, means, unit_quats, scales, opacities, colors, camera: Camera, background
    ) -> tuple[Tensor, Tensor]:
        """See :class:`gags_viewer.render.api.Backend`. Returns ([H, W, C], [H, W])."""
        from gsplat import rasterization

        device = means.device
        images, alphas, _ = rasterization(
            means=means,
            quats=unit_quats,
            scales=scales,
            opacities=opacities,
            colors=colors,
            viewmats=camera.world_to_camera.to(device)[None],
            Ks=camera.K.to(device)[None],
            width=camera.width,
            height=camera.height,
            backgrounds=background[None],
            sh_degree=None,
            packed=False,
            near_plane=0.01,
            eps2d=0.3,
            rasterize_mode="classic",
        )
        return images[0], alphas[0, ..., 0]


BACKEND = GsplatBackend()
