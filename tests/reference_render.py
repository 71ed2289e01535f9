"""A brute-force per-pixel Gaussian compositor, the oracle the render backends are tested against.

Deliberately naive: Python loops over pixels and Gaussians, float64, written from the definition of
gsplat's classic rasterization (pixel centres at +0.5, alpha = min(0.999, o·exp(-σ)), skip alpha < 1/255
or σ < 0, stop before the Gaussian that would bring transmittance to ≤ 1e-4, depth order by camera z).
"""

import math

import torch

from gags_viewer.render.projection import project_gaussians


def reference_rasterize(means, unit_quats, scales, opacities, colors, camera, background):
    """-> (image [H, W, C] float64, alpha [H, W] float64)"""
    proj = project_gaussians(means.double(), unit_quats.double(), scales.double(), camera)
    order = torch.argsort(proj.depths)
    order = [int(i) for i in order if bool(proj.visible[i])]
    H, W, C = camera.height, camera.width, colors.shape[1]
    image = torch.zeros(H, W, C, dtype=torch.float64)
    alpha_img = torch.zeros(H, W, dtype=torch.float64)
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
                if alpha < 1.0 / 255.0:
                    continue
                next_T = T * (1 - alpha)
                if next_T <= 1e-4:
                    break
                pix += alpha * T * colors[i].double()
                T = next_T
            image[py, px] = pix + T * background.double()
            alpha_img[py, px] = 1 - T
    return image, alpha_img
