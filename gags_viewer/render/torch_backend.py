"""Differentiable rasterization in pure PyTorch (CPU), with gsplat's classic pinhole semantics.

The readable reference backend, and the one that trains on machines without CUDA. No Python loop runs
over pixels or Gaussians; loops run over batches of tiles and chunks along depth.

1. :func:`project_gaussians` gives screen-space means, conics, depths and radii (shared with numba).
2. :func:`bin_tiles` puts each visible Gaussian into the 16x16 tiles its ceil(3.33 sigma) box touches,
   minus those where its alpha stays < 1/255 at every pixel centre (exact: they would be skipped
   there anyway), sorted by (tile, depth).
3. Per intersection, log2(alpha) = (log(opacity) - sigma) / ln 2 is a quadratic in the tile-local pixel
   position (u, v): one matmul of [256, 6] pixel features by [6, K] coefficients evaluates K Gaussians
   at all pixels of a tile.
4. Batches of tiles with similar list lengths are composited front to back in chunks along depth with
   ``cumprod(1 - alpha)``. A pixel stops *before* the Gaussian that would bring its transmittance to
   <= 1e-4 (gsplat's rule); transmittance only falls, so Gaussian i counts iff T_{i+1} > 1e-4, and its
   weight is alpha_i T_i = T_{i+1} alpha_i / (1 - alpha_i). Finished tiles leave the batch.
5. Backward: by default a hand-derived sweep (:func:`_sweep`) recomputes each chunk and its gradients:
   memory stays bounded (each batch keeps only its inputs and output) and it is several times faster
   than autograd through the chunks, which stays available (``analytic_backward=False``).

CPU speed notes: masks use ``F.threshold`` (a boolean ``where`` is ~30x slower here), the exponential
is ``exp2`` (~4x faster than ``exp``), and exponents are clamped from below so that no subnormal
numbers appear (``exp2`` of them is ~15x slower).

Differences to gsplat: it also skips a Gaussian where sigma < 0. Projected conics are positive definite
(the projection culls det <= 0), so that happens only by rounding; the expanded quadratic here can round
sigma to -1e-8 at a Gaussian's exact centre, so the test is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gags_viewer.render.camera import Camera
from gags_viewer.render.projection import Projected, project_gaussians
from gags_viewer.render.sh import rgb_then_channels

TILE = 16
ALPHA_MIN, ALPHA_MAX = 1.0 / 255.0, 0.999
LOG2_FLOOR = math.log2(ALPHA_MIN) - 1.0  # exponents are clamped here: no subnormals, still < ALPHA_MIN
T_MIN = 1e-4
MAX_BATCH_ENTRIES = 1 << 20  # bounds the gathered lists of one batch of tiles (memory)


@torch.no_grad()
def bin_tiles(proj: Projected, opacities: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, int, int]:
    """Intersections of visible Gaussians with the 16x16 tiles where they can reach alpha >= 1/255.

    Args:
        proj: projected Gaussians (N of them); only those with radii > 0 take part.
        opacities: [N] in [0, 1].
        width, height: image size in pixels.

    Returns:
        gaussian_ids [M] (int64, into the N Gaussians) and tile_ids [M] (int64, row-major tile index),
        sorted by tile, then by camera depth; and the tile grid size (tiles_x, tiles_y).
    """
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    device, dtype = proj.means2d.device, proj.means2d.dtype
    # reach: the largest sigma at which alpha = opacity * exp(-sigma) is still >= 1/255 (+ a safety margin)
    reach = torch.log(opacities.detach().to(dtype) * 255.0) + 1e-3
    ids = (proj.visible & (reach >= 0)).nonzero().squeeze(1)
    ids = ids[torch.argsort(proj.depths[ids], stable=True)]  # front to back
    centre, radius = proj.means2d[ids].detach(), proj.radii[ids].to(dtype)
    low = torch.floor((centre - radius) / TILE).long()
    high = torch.ceil((centre + radius) / TILE).long()
    limit = torch.tensor([tiles_x, tiles_y], device=device)
    low, high = low.clamp(min=0).minimum(limit), high.clamp(min=0).minimum(limit)
    box = high - low  # [Nv, 2] tiles per axis
    counts = box[:, 0] * box[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(ids), device=device), counts)  # [M'] depth rank
    low_x, low_y, box_w = torch.cat([low, box[:, :1]], -1)[owner].unbind(-1)
    within = torch.arange(len(owner), device=device) - (torch.cumsum(counts, 0) - counts)[owner]
    tile_x, tile_y = low_x + within % box_w, low_y + torch.div(within, box_w, rounding_mode="floor")

    # Smallest sigma over the tile's pixel centres: 0 if the centre is inside, else the smallest of the
    # four edges' 1D minima. Keep the tile if that is within the Gaussian's reach.
    mu_x, mu_y, a, b, c, reach = torch.cat([centre, proj.conics[ids].detach(), reach[ids, None]], -1)[owner].unbind(-1)
    lo_x, lo_y = tile_x.to(dtype) * TILE + 0.5 - mu_x, tile_y.to(dtype) * TILE + 0.5 - mu_y  # offsets of the
    hi_x, hi_y = lo_x + (TILE - 1), lo_y + (TILE - 1)  # extreme pixel centres from the Gaussian's centre
    edge_minima = []
    for fixed, low_free, high_free, (p, q, r) in (
        (lo_x, lo_y, hi_y, (a, b, c)),
        (hi_x, lo_y, hi_y, (a, b, c)),  # edges at fixed x, free y
        (lo_y, lo_x, hi_x, (c, b, a)),
        (hi_y, lo_x, hi_x, (c, b, a)),  # edges at fixed y, free x
    ):  # sigma = 0.5 (p fixed² + r free²) + q fixed free, minimised over free in [low_free, high_free]
        free = torch.clamp(-q * fixed / r, low_free, high_free)
        sigma = 0.5 * (p * fixed * fixed + r * free * free) + q * fixed * free
        edge_minima.append(sigma)
    min_sigma = torch.stack(edge_minima).amin(dim=0)
    inside = (lo_x <= 0) & (hi_x >= 0) & (lo_y <= 0) & (hi_y >= 0)
    keep = torch.nonzero(inside | (min_sigma <= reach)).squeeze(1)  # reach >= 0 for all of them

    tile_ids, order = torch.sort((tile_y * tiles_x + tile_x)[keep], stable=True)  # stable keeps depth order
    return ids[owner[keep[order]]], tile_ids, tiles_x, tiles_y


def _pixel_features(dtype: torch.dtype, device: torch.device) -> Tensor:
    """[u², v², uv, u, v, 1] for the 256 pixel centres of a tile, relative to its centre. [256, 6]"""
    offsets = torch.arange(TILE, dtype=dtype, device=device) + 0.5 - TILE / 2
    v, u = (t.reshape(-1) for t in torch.meshgrid(offsets, offsets, indexing="ij"))  # row-major pixels
    return torch.stack([u * u, v * v, u * v, u, v, torch.ones_like(u)], dim=-1)


def _sweep(
    features: Tensor,
    coeffs: Tensor,
    colors: Tensor,
    counts: Tensor,
    transmittance: Tensor,
    chunk: int,
    grad_out: Tensor | None = None,
    out: Tensor | None = None,
    needs: tuple[bool, bool] = (True, True),
):
    """Front-to-back compositing of a batch of tiles, in chunks of ``chunk`` Gaussians along depth.

    Args:
        features: pixel features (see :func:`_pixel_features`). [P, 6]
        coeffs: per tile and list entry, log2(alpha) = features @ coeffs. [T, 6, L]
        colors: channels with a trailing column of ones (which accumulates alpha). [T, L, C+1]
        counts: list length of each tile (entries beyond are padding). [T]
        transmittance: initial transmittance, 0 for pixels outside the image. [T, P]
        grad_out, out: for the backward sweep, dLoss/d(output) and the output. [T, P, C+1]
        needs: for the backward sweep, whether to compute the gradients of coeffs and of colors.

    Returns:
        forward: sum_i w_i colors_i, w_i = alpha_i T_i (the last channel is the accumulated alpha). [T, P, C+1]
        backward: dLoss/dcoeffs [T, 6, L] and dLoss/dcolors [T, L, C+1] (or None). With g_i = grad_out . colors_i:
        dL/dalpha_i = kept_i T_i g_i - sum_{j>i} w_j g_j / (1 - alpha_i); dalpha/dlog2(alpha) = alpha ln 2
        (0 where alpha is clamped to 0.999, as in gsplat's backward).
    """
    num_tiles, num_pixels, length, dtype = coeffs.shape[0], features.shape[0], coeffs.shape[2], coeffs.dtype
    # alpha < 1/255 is skipped: F.threshold keeps x > below_min, i.e. x >= 1/255 in this dtype
    below_min = torch.nextafter(torch.tensor(ALPHA_MIN, dtype=dtype), torch.tensor(0.0, dtype=dtype)).item()
    backward, d_coeffs, d_colors = grad_out is not None, None, None
    if backward:
        assert grad_out is not None and out is not None
        d_coeffs, d_colors = (torch.zeros_like(t) if need else None for t, need in zip((coeffs, colors), needs))
        rest = -(grad_out * out).sum(-1)  # [T, P] -sum_{j > i} w_j g_j, i the last Gaussian done so far
    else:
        out = colors.new_zeros(num_tiles, num_pixels, colors.shape[-1])
    rows, acc = torch.arange(num_tiles, device=coeffs.device), None  # live tiles; (forward) their sums so far
    for start in range(0, length, chunk):  # coeffs, colors: the live tiles' lists from position `start` on
        stop = min(start + chunk, length)
        chunk_colors = colors[:, : stop - start]
        exponent = (features @ coeffs[:, :, : stop - start]).clamp(min=LOG2_FLOOR)  # [T', P, k]
        free_alpha = F.threshold(exponent.exp2(), below_min, 0.0)  # opacity * exp(-sigma), 0 below 1/255
        alpha = free_alpha.clamp(max=ALPHA_MAX)
        one_minus = 1.0 - alpha
        t_after = torch.cumprod(one_minus, dim=-1) * transmittance[:, :, None]  # T_{i+1}
        kept_t_after = F.threshold(t_after, T_MIN, 0.0)  # exclusive stop: Gaussian i counts iff T_{i+1} > 1e-4
        weights = kept_t_after * (alpha / one_minus)  # alpha_i T_i where kept, else 0
        if not backward:
            acc = weights @ chunk_colors if acc is None else torch.baddbmm(acc, weights, chunk_colors)
        elif d_coeffs is not None:
            assert grad_out is not None
            g = grad_out @ chunk_colors.transpose(1, 2)  # [T', P, k]
            rest_i = torch.cumsum(weights * g, dim=-1) + rest[:, :, None]
            rest = rest_i[:, :, -1]
            unclamped = -F.threshold(-free_alpha, -ALPHA_MAX, 0.0)  # no gradient through the clamp
            d_exponent = (kept_t_after * g + rest_i) / one_minus * unclamped  # dL/dalpha * dalpha/dexp / ln 2
            d_coeffs[rows, :, start:stop] = (features.T @ d_exponent) * math.log(2.0)
        if d_colors is not None:
            assert grad_out is not None
            d_colors[rows, start:stop] = weights.transpose(1, 2) @ grad_out
        transmittance, coeffs, colors = t_after[:, :, -1], coeffs[:, :, stop - start :], colors[:, stop - start :]
        alive = (transmittance.amax(dim=1) > T_MIN) & (counts > stop)
        if not bool(alive.all()):  # finished tiles leave the batch
            keep = alive.nonzero().squeeze(1)
            if backward:
                assert grad_out is not None
                grad_out, rest = grad_out[keep], rest[keep]
            else:
                assert out is not None and acc is not None
                out.index_copy_(0, rows[~alive], acc[~alive])
                acc = acc[keep]
            rows, counts, transmittance = rows[keep], counts[keep], transmittance[keep]
            coeffs, colors = coeffs[keep], colors[keep]
            if len(rows) == 0:
                break
    if backward:
        return d_coeffs, d_colors
    assert out is not None
    if len(rows):
        assert acc is not None
        out.index_copy_(0, rows, acc)
    return out


@dataclass
class _Plan:
    """Which list entries each batch of tiles composites (index tensors only, nothing differentiable)."""

    features: Tensor  # [P, 6] pixel features
    batches: list  # per batch: tile ids [T], index [T, L] into the flat lists (M = padding), counts [T], T_0 [T, P]
    num_tiles: int
    chunk: int


def _composite_tiles(
    coeffs: Tensor,
    channels: Tensor,
    plan: _Plan,
    grad_out: Tensor | None = None,
    out: Tensor | None = None,
    needs: tuple[bool, bool] = (True, True),
):
    """Run :func:`_sweep` over all batches of tiles.

    Args:
        coeffs: [M + 1, 6] and channels: [M + 1, C + 1], per intersection (row M pads the lists).
        grad_out, out: for the backward sweep, dLoss/d(output) and the output. [num_tiles, P, C+1]

    Returns:
        forward: the per-tile sums [num_tiles, P, C+1] (0 for tiles without Gaussians);
        backward: gradients of coeffs and channels (or None where not needed).
    """
    if grad_out is None:
        out = channels.new_zeros(plan.num_tiles, plan.features.shape[0], channels.shape[-1])
        for tiles, index, counts, transmittance in plan.batches:
            lists = coeffs[index].transpose(1, 2), channels[index]
            out[tiles] = _sweep(plan.features, *lists, counts, transmittance, plan.chunk)
        return out
    assert out is not None, "the backward sweep needs the forward output"
    d_coeffs, d_channels = (torch.zeros_like(t) if need else None for t, need in zip((coeffs, channels), needs))
    for tiles, index, counts, transmittance in plan.batches:
        lists = coeffs[index].transpose(1, 2), channels[index]
        grads = _sweep(plan.features, *lists, counts, transmittance, plan.chunk, grad_out[tiles], out[tiles], needs)
        if d_coeffs is not None:
            d_coeffs.index_add_(0, index.reshape(-1), grads[0].transpose(1, 2).reshape(-1, 6))
        if d_channels is not None:
            d_channels.index_add_(0, index.reshape(-1), grads[1].reshape(-1, channels.shape[-1]))
    return d_coeffs, d_channels


class _Composite(torch.autograd.Function):
    """:func:`_composite_tiles` with its analytic backward; saves only the flat inputs and the output."""

    @staticmethod
    def forward(ctx, coeffs, channels, plan):
        out = _composite_tiles(coeffs, channels, plan)
        ctx.save_for_backward(coeffs, channels, out)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, grad_out):
        coeffs, channels, out = ctx.saved_tensors
        grads = _composite_tiles(coeffs, channels, ctx.plan, grad_out.contiguous(), out, ctx.needs_input_grad[:2])
        return *grads, None


class TorchBackend:
    """Vectorised, differentiable CPU rasterizer (see the module docstring).

    Args:
        tiles_per_batch: tiles composited together (bounds memory and keeps tensors cache-sized).
        depth_chunk: Gaussians per tile evaluated per step along depth (early stop granularity).
        analytic_backward: use the hand-derived backward sweep (fast; memory: inputs and outputs only)
            instead of autograd through every chunk (the readable reference; stores all intermediates).
    """

    differentiable = True

    def __init__(self, tiles_per_batch: int = 32, depth_chunk: int = 32, analytic_backward: bool = True):
        self.tiles_per_batch = tiles_per_batch
        self.depth_chunk = depth_chunk
        self.analytic_backward = analytic_backward

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
        """See :class:`gags_viewer.render.api.Backend`. Returns ([H, W, C], [H, W]), differentiable w.r.t.
        all Gaussian inputs (SH colours are evaluated for all N Gaussians, in torch)."""
        colors = rgb_then_channels(sh, colors, means, camera.center)
        height, width = camera.height, camera.width
        dtype, device = means.dtype, means.device
        proj = project_gaussians(means, unit_quats, scales, camera)
        gauss, tile, tiles_x, tiles_y = bin_tiles(proj, opacities, width, height)

        # log2(alpha) at tile-local pixel (u, v) of a Gaussian at (mx, my) from the tile centre:
        # (log(o) - sigma) / ln 2, sigma = 0.5 a (mx-u)² + 0.5 c (my-v)² + b (mx-u)(my-v), expanded in (u, v).
        tile_centre = torch.stack([tile % tiles_x, tile // tiles_x], dim=-1).to(dtype) * TILE + TILE / 2
        mx, my = (proj.means2d[gauss] - tile_centre).unbind(-1)
        a, b, c = proj.conics[gauss].unbind(-1)
        log_opacity = torch.log(opacities[gauss].to(dtype).clamp(min=torch.finfo(dtype).tiny))
        sigma_centre = 0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my
        coeffs = torch.stack([-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx, log_opacity - sigma_centre], -1)
        # one extra row at index M pads the per-tile lists: alpha 0, colour 0
        pad = torch.tensor([[0.0] * 5 + [2 * LOG2_FLOOR]], dtype=dtype, device=device)
        coeffs = torch.cat([coeffs / math.log(2.0), pad])
        channels = torch.cat([colors.to(dtype), torch.ones_like(colors[:, :1], dtype=dtype)], dim=-1)
        channels = torch.cat([channels[gauss], channels.new_zeros(1, channels.shape[1])])

        # Batches of tiles with similar list lengths: at most tiles_per_batch tiles, MAX_BATCH_ENTRIES entries.
        counts = torch.bincount(tile, minlength=tiles_x * tiles_y)
        starts = torch.cumsum(counts, 0) - counts
        busy = torch.nonzero(counts).squeeze(1)
        busy = busy[torch.argsort(counts[busy], descending=True)]
        pixel = torch.arange(TILE * TILE, device=device)  # row-major within a tile
        inside = (
            ((busy // tiles_x * TILE)[:, None] + pixel // TILE < height)  # T_0: 0 outside the image
            & ((busy % tiles_x * TILE)[:, None] + pixel % TILE < width)
        ).to(dtype)
        plan, first = _Plan(_pixel_features(dtype, device), [], tiles_x * tiles_y, self.depth_chunk), 0
        while first < len(busy):
            size = max(1, min(self.tiles_per_batch, MAX_BATCH_ENTRIES // int(counts[busy[first]])))
            batch, batch_inside, first = busy[first : first + size], inside[first : first + size], first + size
            position = torch.arange(int(counts[batch[0]]), device=device)
            index = torch.where(position < counts[batch, None], starts[batch, None] + position, len(gauss))
            plan.batches.append((batch, index, counts[batch], batch_inside))

        grad = torch.is_grad_enabled() and (coeffs.requires_grad or channels.requires_grad)
        if grad and self.analytic_backward:
            tiles = _Composite.apply(coeffs, channels, plan)  # [num_tiles, P, C+1]
        else:
            tiles = _composite_tiles(coeffs, channels, plan)
        num_channels = channels.shape[-1]
        grid = tiles.reshape(tiles_y, tiles_x, TILE, TILE, num_channels).permute(0, 2, 1, 3, 4)
        grid = grid.reshape(tiles_y * TILE, tiles_x * TILE, num_channels)[:height, :width]
        alpha = grid[..., -1]
        image = grid[..., :-1] + (1.0 - alpha)[..., None] * background.to(dtype)
        return image, alpha


BACKEND = TorchBackend()
