"""Rendered depth and per-Gaussian minimum observed depth (gags-method.md §2.1, stages B and C).

For every training view the expected depth ``D_c`` is rendered from the pretrained 3DGS. A Gaussian
centre x_i is *visible* in view c when its rounded projection (u, v) lies inside the image and
``|D_c[v, u] - Z| <= 0.25 * D_c[v, u]`` (the official visibility tolerance; Z is the centre's camera
depth). Its observed depth there is ``D_c[v, u]`` (the rendered depth, not Z). The minimum observed
depth m_i is the smallest observed depth over all views (+inf when no view sees it).

The official code builds ``[N_gauss, N_views]`` arrays on the host. Here the minimum over views is a
running ``torch.minimum`` (a scatter-min whose targets are the Gaussians), chunked over Gaussians, so
memory is O(N) whatever the number of views: 1M Gaussians × 300 views needs a few tens of MB.

Per view, the sparse map ``M_c`` holds m_i at the pixel of every visible centre and 0 elsewhere; where
several centres land on one pixel the last one (highest Gaussian index) wins, as the official
``M[v, u] = m`` assignment does. It is written as ``depths_sample/<stem>_depth_sample.npy``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera

VISIBILITY_TOLERANCE = 0.25
"""Relative depth tolerance of the official visibility test."""
DEPTHS_DIR = "depths"
DEPTH_SAMPLES_DIR = "depths_sample"
CHUNK = 1 << 20
"""Gaussians projected at once."""


def render_depth(field: LanguageField, camera: Camera, backend: str = "auto") -> Tensor:
    """Expected depth of one view (0 where nothing was hit). -> [H, W] float32 on the field's device

    Torch's intra-op thread count is kept: the numba backend shares libgomp with torch, and its thread
    setting would otherwise change torch's (and with it the float sums of SAM and CLIP afterwards).
    """
    from gags_viewer.render.api import render

    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            return render(field, camera, rgb=False, backend=backend).depth.float()
    finally:
        torch.set_num_threads(threads)


def project_centres(means: Tensor, camera: Camera) -> tuple[Tensor, Tensor, Tensor]:
    """Rounded pixel of every centre, as the official code projects them (u = round(fx X/Z + cx)).

    Args:
        means: [N, 3] world positions.
        camera: the view; its K and size give the pixel grid.

    Returns:
        (u, v, z): column [N] int64, row [N] int64 (arbitrary where z <= 0 or off-screen), camera depth [N].
    """
    w2c = camera.world_to_camera.to(means)
    K = camera.K.to(means)
    cam = means @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    safe_z = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    u = torch.round(K[0, 0] * cam[:, 0] / safe_z + K[0, 2])
    v = torch.round(K[1, 1] * cam[:, 1] / safe_z + K[1, 2])
    limit = float(max(camera.width, camera.height) + 1)
    u = torch.nan_to_num(u, nan=-1.0).clamp(-1.0, limit).long()
    v = torch.nan_to_num(v, nan=-1.0).clamp(-1.0, limit).long()
    return u, v, z


def visible_centres(
    means: Tensor, camera: Camera, depth: Tensor, tolerance: float = VISIBILITY_TOLERANCE
) -> tuple[Tensor, Tensor, Tensor]:
    """The official visibility test of every centre in one view.

    Args:
        means: [N, 3]; camera: the view; depth: its rendered depth [H, W].

    Returns:
        (visible [N] bool, pixel [N] int64 flat index v * W + u (valid where visible),
        observed [N] float: the rendered depth at the pixel where visible, +inf elsewhere).
    """
    height, width = depth.shape
    u, v, z = project_centres(means, camera)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pixel = torch.where(inside, v * width + u, torch.zeros_like(u))
    rendered = depth.reshape(-1)[pixel]
    visible = inside & ((rendered - z).abs() <= tolerance * rendered)
    observed = torch.where(visible, rendered, torch.full_like(rendered, float("inf")))
    return visible, pixel, observed


def minimum_observed_depth(
    means: Tensor,
    cameras: Sequence[Camera],
    depths: Sequence[Tensor],
    tolerance: float = VISIBILITY_TOLERANCE,
    chunk: int = CHUNK,
) -> Tensor:
    """m_i = min over views of the observed depth of centre i (module doc). -> [N] float, +inf if never seen

    Args:
        means: [N, 3] Gaussian centres (on the device of ``depths``).
        cameras: the training views; depths: their rendered depths, each [H_c, W_c].
        tolerance: relative visibility tolerance (official 0.25).
        chunk: Gaussians per projection batch (bounds memory).
    """
    result = torch.full((means.shape[0],), float("inf"), dtype=torch.float32, device=means.device)
    for camera, depth in zip(cameras, depths):
        for start in range(0, means.shape[0], chunk):
            _, _, observed = visible_centres(means[start : start + chunk], camera, depth, tolerance)
            result[start : start + chunk] = torch.minimum(result[start : start + chunk], observed.float())
    return result


def depth_sample_map(
    means: Tensor,
    camera: Camera,
    depth: Tensor,
    min_depth: Tensor,
    tolerance: float = VISIBILITY_TOLERANCE,
    chunk: int = CHUNK,
) -> Tensor:
    """The sparse map M_c of one view: m_i at the pixel of each visible centre, 0 elsewhere. -> [H, W] float32

    Where several visible centres share a pixel, the highest Gaussian index wins (the official last write).
    """
    height, width = depth.shape
    winner = torch.full((height * width,), -1, dtype=torch.int64, device=means.device)
    for start in range(0, means.shape[0], chunk):
        visible, pixel, _ = visible_centres(means[start : start + chunk], camera, depth, tolerance)
        index = torch.arange(start, start + visible.shape[0], device=means.device)
        winner.scatter_reduce_(0, pixel[visible], index[visible], reduce="amax")
    out = torch.zeros(height * width, dtype=torch.float32, device=means.device)
    hit = winner >= 0
    out[hit] = min_depth[winner[hit]].float()
    return out.reshape(height, width)
