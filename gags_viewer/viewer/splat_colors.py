"""What the browser-side mode sends: the field's Gaussians as viser splats, in spatial chunks, and their
colours for a browser's settings (per Gaussian, as the server's display modes colour per pixel).

viser's Gaussian-splat node holds one 32-byte record per Gaussian (centre, covariance, RGBA) and a
colour change resends a node's whole record buffer. So the Gaussians are sorted along a Morton curve
and cut into chunks of neighbouring Gaussians, one node each: a query that highlights one object
changes the colours of the few chunks the object lies in, and only those are sent again (viser sorts
all splat nodes together, so the cut is invisible). Nothing here touches viser or a browser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gags_viewer.field.language_field import LanguageField
from gags_viewer.language.colormaps import apply_colormap
from gags_viewer.language.composite import binary_mask, heatmap_overlay, mask_image, multi_query_overlay
from gags_viewer.render.camera import quat_to_rotation
from gags_viewer.viewer.display import MASK_OPACITY
from gags_viewer.viewer.settings import DISPLAY_LABELS, QUERY_DISPLAY_MODES, ViewSettings

BROWSER_DISPLAYS = ("rgb", "relevancy", "heatmap", "overlay", "mask")
"""Display modes the browser-side mode colours per Gaussian (the others are rendered on the server)."""

MAX_CHUNKS = 256
"""At most this many splat nodes per field (the browser merges them every time one changes)."""
MIN_CHUNK = 256
"""Fewest Gaussians in a chunk."""
MORTON_BITS = 10
"""Grid cells per axis of the Morton order: 2**MORTON_BITS."""

BYTES_PER_GAUSSIAN = 32
"""Size of one Gaussian in viser's splat buffer (centre 3×f32, reserved u32, covariance 6×f16, RGBA 4×u8)."""


def browser_side_blocker(settings: ViewSettings) -> str | None:
    """Why ``settings`` need server-side rendering, or None when the browser can draw them."""
    if settings.display not in BROWSER_DISPLAYS:
        return f"the {DISPLAY_LABELS[settings.display]} display is rendered on the server"
    if settings.display in QUERY_DISPLAY_MODES and settings.queries and settings.query_mode != "gaussian":
        return "pixel query mode decodes rendered features per pixel (the browser scores Gaussians)"
    if settings.shows_selection:
        return "a shown 3D selection is rendered on the server"
    return None


def morton_order(means: Tensor, bits: int = MORTON_BITS) -> Tensor:
    """A permutation of the Gaussians along a Morton (Z-order) curve over their bounding box, so that
    consecutive Gaussians are neighbours in space. [N, 3] -> [N] int64"""
    points = means.detach().double().cpu()
    low = points.min(dim=0).values
    span = (points.max(dim=0).values - low).clamp_min(1e-12)
    cells = ((points - low) / span * (2**bits - 1)).round().long()  # [N, 3] in [0, 2**bits)
    code = torch.zeros(points.shape[0], dtype=torch.int64)
    for bit in range(bits):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + axis)
    return torch.argsort(code, stable=True)


def covariances(field: LanguageField) -> Tensor:
    """World-space covariance R·diag(s²)·Rᵀ of each Gaussian. [N, 3, 3]"""
    rotation = quat_to_rotation(field.quats.float())
    scales = field.scales().float()
    return (rotation * (scales**2)[:, None, :]) @ rotation.transpose(1, 2)


def chunk_size(num_gaussians: int) -> int:
    """Gaussians per chunk: at most :data:`MAX_CHUNKS` chunks, none under :data:`MIN_CHUNK` Gaussians."""
    return max(MIN_CHUNK, math.ceil(num_gaussians / MAX_CHUNKS))


@dataclass(frozen=True)
class SplatGeometry:
    """A field's Gaussians in Morton order, as viser's splat node takes them (numpy, float32).

    Attributes:
        order: position in the field of each sorted Gaussian. [N] int64
        centers: [N, 3]; covariances: [N, 3, 3]; opacities: [N, 1] in [0, 1].
        chunk: Gaussians per chunk (the last one may be shorter).
    """

    order: np.ndarray
    centers: np.ndarray
    covariances: np.ndarray
    opacities: np.ndarray
    chunk: int

    @staticmethod
    def of(field: LanguageField) -> SplatGeometry:
        order = morton_order(field.means)
        with torch.no_grad():
            centers = field.means.detach().float()[order.to(field.means.device)]
            cov = covariances(field)[order.to(field.means.device)]
            opacities = field.opacities().detach().float()[order.to(field.means.device)]
        return SplatGeometry(
            order=order.numpy(),
            centers=centers.cpu().numpy(),
            covariances=cov.cpu().numpy(),
            opacities=opacities.cpu().numpy()[:, None],
            chunk=chunk_size(field.num_gaussians),
        )

    @property
    def num_chunks(self) -> int:
        return math.ceil(len(self.order) / self.chunk)

    def span(self, index: int) -> slice:
        """The sorted Gaussians of chunk ``index``."""
        return slice(index * self.chunk, min((index + 1) * self.chunk, len(self.order)))


def gaussian_colors(base: Tensor, relevancy: Tensor | None, settings: ViewSettings) -> Tensor:
    """Each Gaussian's colour in ``settings.display``, by the same rule the server applies per pixel
    (:mod:`gags_viewer.language.composite`), applied to the Gaussian's own colour and relevancy.

    Args:
        base: the Gaussians' own colours (SH degree 0). [N, 3] in [0, 1]
        relevancy: each query's relevancy per Gaussian, or None (no queries). [K, N]
        settings: display mode, threshold, query colours (``settings.query_colors()``), colormap.
    Returns:
        [N, 3] in [0, 1]
    """
    mode = settings.display
    if mode not in QUERY_DISPLAY_MODES or relevancy is None or relevancy.shape[0] == 0:
        return base
    if mode not in BROWSER_DISPLAYS:
        raise ValueError(f"display mode '{mode}' has no per-Gaussian colouring")
    relevancy = relevancy.to(base)
    threshold = float(settings.threshold)
    colors = torch.tensor(settings.query_colors(), dtype=torch.float32, device=base.device) / 255.0
    # The Gaussians as an N×1 image: the composite functions take [K, H, W] relevancy and [H, W, 3] colours.
    column, image = relevancy[:, :, None], base[:, None, :]
    if mode == "overlay":
        return multi_query_overlay(image, column, threshold, colors)[:, 0, :]
    if mode == "mask":
        return mask_image(binary_mask(column, threshold), colors, rgb=image, opacity=MASK_OPACITY)[:, 0, :]
    best = relevancy.max(dim=0).values
    if mode == "heatmap":
        return heatmap_overlay(base, best, threshold, settings.colormap)
    return apply_colormap(best, settings.colormap)  # relevancy


def to_uint8(colors: Tensor) -> np.ndarray:
    """[N, 3] in [0, 1] -> rounded uint8 numpy."""
    return (colors.detach().float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def changed_chunks(previous: np.ndarray | None, current: np.ndarray, geometry: SplatGeometry) -> list[int]:
    """The chunks whose colours differ between two [N, 3] uint8 colourings in sorted order (all of them
    when there is no previous one)."""
    if previous is None or previous.shape != current.shape:
        return list(range(geometry.num_chunks))
    return [
        i
        for i in range(geometry.num_chunks)
        if not np.array_equal(previous[geometry.span(i)], current[geometry.span(i)])
    ]
