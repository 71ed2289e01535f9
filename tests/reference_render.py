"""A brute-force per-pixel Gaussian compositor, the oracle the render backends are tested against.

Deliberately naive: Python loops over pixels and Gaussians, float64, written from the definition of
gsplat's classic rasterization (pixel centres at +0.5, alpha = min(0.999, o·exp(-σ)), skip alpha < 1/255
or σ < 0, stop before the Gaussian that would bring transmittance to ≤ 1e-4, depth order by camera z).
"""

import math

import torch

from gags_viewer.render.projection import project_gaussians

ALPHA_CUT = 1.0 / 255.0
STOP_TRANSMITTANCE = 1e-4
CUT_MARGIN = 0.02
"""Relative distance to a cut (alpha 1/255, transmittance 1e-4) within which a float32 path may decide
the other way: a 2 % change of one Gaussian's alpha is far beyond float32 rounding, even for the
ill-conditioned conics of the test scenes (tests/float_bounds.py)."""


def reference_rasterize(means, unit_quats, scales, opacities, colors, camera, background):
    """-> (image [H, W, C] float64, alpha [H, W] float64)"""
    image, alpha, _ = reference_rasterize_with_cuts(means, unit_quats, scales, opacities, colors, camera, background)
    return image, alpha


def compare_to_reference(image, alpha, reference, atol: float = 1e-4, max_near_cut: float = 0.03) -> None:
    """Assert a float32 render equals the float64 ``reference`` (the triple of
    :func:`reference_rasterize_with_cuts`) as :func:`compare_renders` does."""
    ref_image, ref_alpha, near_cut = reference
    compare_renders(image, alpha, ref_image, ref_alpha, near_cut, atol, max_near_cut)


def compare_renders(image, alpha, other_image, other_alpha, near_cut, atol: float, max_near_cut: float = 0.03) -> None:
    """Assert two renders ([H, W, C] and [H, W]) of one scene agree up to ``atol`` wherever the scene is
    not at a cut (``near_cut`` [H, W]); at a cut, one float path may include or drop a Gaussian whose
    alpha is ~1/255 (or the one that ends the pixel) that the other does not: only a few such pixels,
    each off by at most that Gaussian's share."""
    image_error = (image.double() - other_image.double()).abs().amax(dim=-1).numpy()
    alpha_error = (alpha.double() - other_alpha.double()).abs().numpy()
    near = near_cut.numpy()
    assert image_error[~near].max(initial=0) <= atol and alpha_error[~near].max(initial=0) <= atol
    assert near.mean() <= max_near_cut, "the test scene sits on cuts too often"
    flip = 2 * (1 + CUT_MARGIN) * ALPHA_CUT  # up to two Gaussians of alpha ~1/255 (or T ~1e-4) more or less
    assert alpha_error[near].max(initial=0) <= flip + atol
    assert image_error[near].max(initial=0) <= flip * float(other_image.abs().max() + 1) + atol


def reference_rasterize_with_cuts(means, unit_quats, scales, opacities, colors, camera, background):
    """-> (image [H, W, C] float64, alpha [H, W] float64, near_cut [H, W] bool): pixels where some
    Gaussian's alpha is within CUT_MARGIN (relative) of the 1/255 cut, or where the transmittance after a
    Gaussian is within CUT_MARGIN of the 1e-4 stop."""
    proj = project_gaussians(means.double(), unit_quats.double(), scales.double(), camera)
    order = torch.argsort(proj.depths)
    order = [int(i) for i in order if bool(proj.visible[i])]
    H, W, C = camera.height, camera.width, colors.shape[1]
    image = torch.zeros(H, W, C, dtype=torch.float64)
    alpha_img = torch.zeros(H, W, dtype=torch.float64)
    near_cut = torch.zeros(H, W, dtype=torch.bool)
    for py in range(H):
        for px in range(W):
            T = 1.0
            pix = torch.zeros(C, dtype=torch.float64)
            for i in order:
                dx = float(proj.means2d[i, 0]) - (px + 0.5)
                dy = float(proj.means2d[i, 1]) - (py + 0.5)
                a, b, c = (float(v) for v in proj.conics[i])
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                if sigma < 0:
                    continue
                alpha = min(0.999, float(opacities[i]) * math.exp(-sigma))
                if abs(alpha - ALPHA_CUT) <= CUT_MARGIN * ALPHA_CUT:
                    near_cut[py, px] = True
                if alpha < ALPHA_CUT:
                    continue
                next_T = T * (1 - alpha)
                if abs(next_T - STOP_TRANSMITTANCE) <= CUT_MARGIN * STOP_TRANSMITTANCE:
                    near_cut[py, px] = True
                if next_T <= STOP_TRANSMITTANCE:
                    break
                pix += alpha * T * colors[i].double()
                T = next_T
            image[py, px] = pix + T * background.double()
            alpha_img[py, px] = 1 - T
    return image, alpha_img, near_cut


def near_cut_pixels(means, unit_quats, scales, opacities, camera, pixel_chunk: int = 2048):
    """The ``near_cut`` mask of :func:`reference_rasterize_with_cuts`, vectorised (float64, chunks of
    pixels) for scenes too big for the per-pixel loops. [H, W] bool"""
    proj = project_gaussians(means.double(), unit_quats.double(), scales.double(), camera)
    order = torch.argsort(proj.depths)
    order = order[proj.visible[order]]
    centres, conics, opacity = proj.means2d[order], proj.conics[order], opacities.double()[order]
    ys, xs = torch.meshgrid(torch.arange(camera.height) + 0.5, torch.arange(camera.width) + 0.5, indexing="ij")
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).double()
    near = torch.zeros(len(pixels), dtype=torch.bool)
    for start in range(0, len(pixels), pixel_chunk):
        chunk = pixels[start : start + pixel_chunk]
        d = centres[:, None, :] - chunk[None]  # [N, P, 2]
        sigma = (
            0.5 * (conics[:, None, 0] * d[..., 0] ** 2 + conics[:, None, 2] * d[..., 1] ** 2)
            + conics[:, None, 1] * d[..., 0] * d[..., 1]
        )
        alpha = (opacity[:, None] * torch.exp(-sigma)).clamp(max=0.999)
        alpha = torch.where(sigma < 0, torch.zeros_like(alpha), alpha)
        used = torch.where(alpha >= ALPHA_CUT, alpha, torch.zeros_like(alpha))
        after = torch.cumprod(1 - used, dim=0)  # transmittance after each Gaussian, ignoring the stop
        before = torch.cat([torch.ones_like(after[:1]), after[:-1]])
        reached = before > STOP_TRANSMITTANCE  # still compositing when this Gaussian comes
        at_alpha_cut = (reached & ((alpha - ALPHA_CUT).abs() <= CUT_MARGIN * ALPHA_CUT)).any(dim=0)
        at_stop = (reached & (used > 0) & ((after - STOP_TRANSMITTANCE).abs() <= CUT_MARGIN * STOP_TRANSMITTANCE)).any(
            dim=0
        )
        near[start : start + pixel_chunk] = at_alpha_cut | at_stop
    return near.reshape(camera.height, camera.width)
