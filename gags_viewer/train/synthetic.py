"""A small synthetic preprocessed scene, for tests and benchmarks (no SAM, no CLIP, no download).

Objects are blobs of Gaussians on a grid in the z = 0 plane; cameras circle them looking at the
centre. Each object has two parts (its halves along x) and objects are paired into groups, which gives
the three GAGS granularity levels: s = part, m = object, l = group. Every region of every level gets a
fixed random unit 512-D "CLIP" embedding, the same in every view, so the distillation problem is
consistent across views.

:func:`write_synthetic_scene` writes the official preprocessed layout::

    <root>/sparse/0/{cameras,images,points3D}.txt      COLMAP text, one PINHOLE camera
    <root>/images/<name>.png
    <root>/language_features/<stem>_f.npy               (M, 512) float32, rows: default, s, m, l
    <root>/language_features/<stem>_s.npy               (4, H, W) float32 global row index or -1
    <root>/init/point_cloud.ply                         the "pretrained" Inria 3DGS

The segmentation comes from rendering the Gaussians' part ids with the torch backend, so the labels
agree with what the trainer renders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera, intrinsics, look_at

CLIP_DIM = 512


@dataclass
class SyntheticScene:
    """What :func:`make_synthetic_scene` builds.

    Attributes:
        field: Geometry (SH degree 0), no language features. N Gaussians.
        cameras: One camera per view at full (original image) resolution.
        names: Image file names, one per camera.
        part_of: Part (s-level region) of each Gaussian. [N] int64
        embeddings: Unit CLIP embedding per level and region: {"s": [2K, 512], "m": [K, 512], "l": [G, 512]}.
        seg: Per view, region index per level (s, m, l), -1 for background. [3, H, W] int64 each
    """

    field: LanguageField
    cameras: list[Camera]
    names: list[str]
    part_of: Tensor
    embeddings: dict[str, Tensor]
    seg: list[Tensor]

    @property
    def num_objects(self) -> int:
        return int(self.embeddings["m"].shape[0])

    def object_of_part(self, part: Tensor) -> Tensor:
        return part // 2

    def group_of_part(self, part: Tensor) -> Tensor:
        return part // 4


def make_synthetic_scene(
    num_objects: int = 3,
    gaussians_per_object: int = 100,
    num_views: int = 4,
    width: int = 80,
    height: int = 60,
    seed: int = 0,
    names: list[str] | None = None,
) -> SyntheticScene:
    """Build a synthetic scene in memory (see module doc).

    Args:
        num_objects: K objects on a square-ish grid with spacing 1.
        gaussians_per_object: Gaussians per object.
        num_views: cameras on a circle around the objects.
        width, height: original image size.
        seed: for positions, colours and embeddings.
        names: image file names (default ``frame_<i+1>.png``, which exercises prefix-name pairing).
    """
    generator = torch.Generator().manual_seed(seed)
    cols = math.ceil(math.sqrt(num_objects))
    rows = math.ceil(num_objects / cols)
    centres = torch.tensor(
        [[(k % cols) - (cols - 1) / 2, (k // cols) - (rows - 1) / 2, 0.0] for k in range(num_objects)]
    )
    offsets = torch.randn(num_objects, gaussians_per_object, 3, generator=generator) * torch.tensor([0.16, 0.16, 0.12])
    means = (centres[:, None, :] + offsets).reshape(-1, 3)
    object_of = torch.arange(num_objects).repeat_interleave(gaussians_per_object)
    part_of = object_of * 2 + (offsets[..., 0].reshape(-1) > 0).long()
    n = means.shape[0]
    colours = torch.rand(num_objects, 3, generator=generator)[object_of]
    field = LanguageField(
        means=means,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=generator), dim=-1),
        log_scales=torch.full((n, 3), math.log(0.07)) + 0.2 * torch.randn(n, 3, generator=generator),
        opacity_logits=torch.full((n,), 3.0),
        sh=((colours - 0.5) / 0.28209479177387814)[:, None, :],
    )

    extent = max(cols, rows)
    radius = 1.1 * extent + 0.5
    cameras = []
    focal = 0.5 * width / math.tan(math.radians(55) / 2)
    K = intrinsics(focal, focal, width, height)
    for view in range(num_views):
        angle = 2 * math.pi * view / num_views + 0.3
        eye = [radius * math.cos(angle), radius * math.sin(angle), 0.45 * radius]
        cameras.append(Camera.from_camera_to_world(look_at(eye, [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]), K, width, height))
    names = names or [f"frame_{i + 1}.png" for i in range(num_views)]

    embeddings = {
        level: torch.nn.functional.normalize(torch.randn(count, CLIP_DIM, generator=generator), dim=-1)
        for level, count in (("s", 2 * num_objects), ("m", num_objects), ("l", (num_objects + 1) // 2))
    }
    seg = [_segment(field, part_of, 2 * num_objects, camera) for camera in cameras]
    return SyntheticScene(field=field, cameras=cameras, names=names, part_of=part_of, embeddings=embeddings, seg=seg)


def _segment(field: LanguageField, part_of: Tensor, num_parts: int, camera: Camera) -> Tensor:
    """Render one-hot part ids; a pixel belongs to its dominant part where alpha > 0.5. -> [3, H, W]"""
    from gags_viewer.render.api import render

    one_hot = torch.nn.functional.one_hot(part_of, num_parts).float()
    with torch.no_grad():
        out = render(field, camera, rgb=False, features=one_hot, backend="torch")
    part = out.features.argmax(dim=-1)
    part = torch.where(out.alpha > 0.5, part, torch.full_like(part, -1))
    obj = torch.where(part >= 0, part // 2, part)
    group = torch.where(part >= 0, part // 4, part)
    return torch.stack([part, obj, group])


def view_features(scene: SyntheticScene, view: int) -> tuple[np.ndarray, np.ndarray]:
    """The official ``_f`` (M, 512) and ``_s`` (4, H, W) arrays of one view.

    Rows of ``_f``: the default level (a copy of m), then s, m, l, each listing only the regions visible
    in this view, in increasing region order; ``_s`` holds global row indices, -1 for none.
    """
    seg = scene.seg[view]
    levels = [("m", seg[1]), ("s", seg[0]), ("m", seg[1]), ("l", seg[2])]
    rows, maps, offset = [], [], 0
    for level, ids in levels:
        present = torch.unique(ids[ids >= 0])
        lookup = torch.full((int(scene.embeddings[level].shape[0]) + 1,), -1, dtype=torch.long)
        lookup[present] = torch.arange(len(present)) + offset
        maps.append(torch.where(ids >= 0, lookup[ids.clamp(min=0)], torch.full_like(ids, -1)))
        rows.append(scene.embeddings[level][present])
        offset += len(present)
    features = torch.cat(rows).numpy().astype(np.float32)
    return features, torch.stack(maps).numpy().astype(np.float32)


def write_synthetic_scene(scene: SyntheticScene, root: Path, init_name: str = "init/point_cloud.ply") -> Path:
    """Write ``scene`` in the official preprocessed layout under ``root`` (see module doc). -> root"""
    from PIL import Image

    from gags_viewer.dataset.colmap import (
        ColmapCamera,
        ColmapImage,
        ColmapPoints,
        write_cameras,
        write_images,
        write_points3d,
    )
    from gags_viewer.field.ply import write_ply
    from gags_viewer.render.api import render

    root = Path(root)
    sparse = root / "sparse" / "0"
    images_dir, features_dir = root / "images", root / "language_features"
    for folder in (sparse, images_dir, features_dir):
        folder.mkdir(parents=True, exist_ok=True)
    first = scene.cameras[0]
    fx, fy, cx, cy = (float(v) for v in (first.K[0, 0], first.K[1, 1], first.K[0, 2], first.K[1, 2]))
    write_cameras(
        sparse / "cameras.txt", [ColmapCamera(1, "PINHOLE", first.width, first.height, np.array([fx, fy, cx, cy]))]
    )
    images = []
    for index, (camera, name) in enumerate(zip(scene.cameras, scene.names)):
        w2c = camera.world_to_camera.double().numpy()
        images.append(ColmapImage(index + 1, name, rotation_to_quat(w2c[:3, :3]), w2c[:3, 3].copy(), 1))
        with torch.no_grad():
            rgb = render(scene.field, camera, rgb=True, backend="torch").rgb
        Image.fromarray((rgb.clamp(0, 1) * 255).round().byte().numpy()).save(images_dir / name)
        features, seg = view_features(scene, index)
        stem = Path(name).stem
        np.save(features_dir / f"{stem}_f.npy", features)
        np.save(features_dir / f"{stem}_s.npy", seg)
    write_images(sparse / "images.txt", images)
    points = scene.field.means.double().numpy()
    write_points3d(
        sparse / "points3D.txt",
        ColmapPoints(
            ids=np.arange(1, len(points) + 1),
            xyz=points,
            rgb=np.full((len(points), 3), 128, np.uint8),
            error=np.zeros(len(points)),
        ),
    )
    init = root / init_name
    init.parent.mkdir(parents=True, exist_ok=True)
    write_ply(scene.field, init)
    return root


def rotation_to_quat(rotation: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternion of a rotation matrix [3, 3] (Shepperd's method). -> [4] float64"""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q, dtype=np.float64)
    return q / np.linalg.norm(q)
