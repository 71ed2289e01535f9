"""Shared fixtures of the viewer and browser tests (no tests here): the synthetic query field.

The field (gags_viewer.viewer.synthetic) has a "mug" blob on the left and a "plant" blob on the right
of its default view, on a floor; its decoder maps each blob's feature to a CLIP direction made from the
tiny test CLIP model's own text embeddings, so "mug" is relevant (> 0.5) exactly on the mug.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Scene:
    """The synthetic field with its engine, CLIP spec and helpers to locate objects in an image."""

    def __init__(self, tmp_dir):
        from gags_viewer.language import QueryEngine, TextEncoder
        from gags_viewer.viewer.synthetic import make_query_field
        from tests.tiny_clip import make_tiny_clip

        self.dir = tmp_dir
        self.clip = make_tiny_clip(tmp_dir)
        self.encoder = TextEncoder(self.clip, device="cpu")
        self.field = make_query_field(self.encoder.encode, self.clip)
        self.engine = QueryEngine(self.field, self.encoder)

    def camera(self, width: int = 160, height: int = 120):
        from gags_viewer.viewer.camera_path import camera_from_fov, default_framing

        framing = default_framing(self.field)
        return camera_from_fov(framing.c2w(), math.radians(framing.fov_y_deg), width, height)

    def object_mask(self, phrase: str, camera) -> np.ndarray:
        """Pixels covered by the Gaussians of ``phrase`` (by their projected centres, dilated). [H, W] bool"""
        from gags_viewer.viewer.synthetic import DEFAULT_SCENE

        index = [b.phrase for b in DEFAULT_SCENE].index(phrase)
        selected = self.field.features[:, index] == 1
        return project_mask(self.field.means[selected], camera)


def project_mask(points: torch.Tensor, camera, dilate: int = 2) -> np.ndarray:
    """Image pixels hit by the projections of ``points`` [P, 3] (dilated by ``dilate`` pixels)."""
    w2c = camera.world_to_camera
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    uvw = cam @ camera.K.T
    uv = (uvw[:, :2] / uvw[:, 2:3]).round().long().numpy()
    mask = np.zeros((camera.height, camera.width), dtype=bool)
    ok = (
        (cam[:, 2].numpy() > 0)
        & (uv[:, 0] >= 0)
        & (uv[:, 0] < camera.width)
        & (uv[:, 1] >= 0)
        & (uv[:, 1] < camera.height)
    )
    mask[uv[ok, 1], uv[ok, 0]] = True
    out = mask.copy()
    for dy in range(-dilate, dilate + 1):
        for dx in range(-dilate, dilate + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


_SCENE: list = []


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Scene:
    """One Scene per test session, shared by every module that imports this fixture."""
    if not _SCENE:
        _SCENE.append(Scene(tmp_path_factory.mktemp("viewer_scene")))
    return _SCENE[0]
