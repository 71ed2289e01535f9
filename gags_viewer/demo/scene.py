"""The bundled demo's synthetic tabletop scene, built from Gaussians, deterministic from a seed.

A brown table carries nine objects of distinct shapes and colours. Two objects have named parts (the
lamp: shade and base; the mushroom: cap and stem) and three objects form a group (a tower: red cube,
blue cylinder, yellow cone stacked), so the three GAGS granularities exist:

==========  =======================================================  ==============================
level       regions                                                  GAGS level in ``_s.npy``
==========  =======================================================  ==============================
part        lamp shade, lamp base, mushroom cap, mushroom stem;       s (finest)
            partless objects are their own part
object      the ten objects (table included)                          m
group       the tower; other objects are their own group              l (coarsest)
==========  =======================================================  ==============================

Empty space (no Gaussian, rendered alpha < 0.5) is its own region, "background", at every level: the
preprocessing gives it a mask like SAM would give one, so that the distilled decoder learns what the
zero feature means.

Geometry: every object is a set of flat Gaussians (discs) on the surfaces of primitives (box, surfaces of
revolution: cylinder, cone, sphere, torus, frustum, bowl; pyramid faces), spaced on jittered rings /
grids, oriented along the surface normal. Colours are Lambert-shaded albedos baked into SH degree 0.
World axes: z up, the table top at z = 0.

Views: cameras on a hemisphere around the table looking at it, training views and held-out views. The
ground-truth masks of a view come from rendering per-Gaussian one-hot part ids with the project's own
:func:`gags_viewer.render.render`, so the masks agree with what the trainer and the viewer render.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gags_viewer.field.language_field import FieldMetadata, LanguageField
from gags_viewer.render.camera import Camera, look_at

SH_C0 = 0.28209479177387814
UP = (0.0, 0.0, 1.0)
BACKGROUND_RGB = (0.62, 0.68, 0.78)
"""Colour of empty space in the demo's images (a pale blue-grey wall)."""
LIGHT = np.array([0.45, -0.35, 1.0]) / np.linalg.norm([0.45, -0.35, 1.0])
MASK_ALPHA = 0.5
"""A pixel belongs to a region when the rendered alpha exceeds this; else it is background."""
LEVELS = ("s", "m", "l")


# ----------------------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class Node:
    """A named region of the scene at one granularity.

    Attributes:
        key: identifier, e.g. "lamp_shade".
        kind: "part", "object", "group" or "background".
        names: phrases that name it; the first is the canonical name (label category).
        colour: its colour word, if it has one colour.
        shape: its shape word, if any ("cube", "sphere", ...).
        parent: key of the enclosing region (part -> object -> group), or None.
    """

    key: str
    kind: str
    names: tuple[str, ...]
    colour: str | None = None
    shape: str | None = None
    parent: str | None = None

    @property
    def name(self) -> str:
        return self.names[0]


CATALOG: tuple[Node, ...] = (
    Node("tower", "group", ("tower", "stack of blocks", "block tower", "stack", "toy tower")),
    Node("red_cube", "object", ("red cube", "cube", "red block", "red box", "box"), "red", "cube", "tower"),
    Node("blue_cylinder", "object", ("blue cylinder", "cylinder", "blue can"), "blue", "cylinder", "tower"),
    Node("yellow_cone", "object", ("yellow cone", "cone", "yellow spike"), "yellow", "cone", "tower"),
    Node("green_ball", "object", ("green ball", "ball", "green sphere", "sphere"), "green", "sphere"),
    Node("purple_ring", "object", ("purple ring", "ring", "purple donut", "donut", "torus"), "purple", "ring"),
    Node("lamp", "object", ("lamp", "desk lamp", "table lamp", "light")),
    Node("lamp_shade", "part", ("lamp shade", "lampshade", "shade", "white lamp shade"), "white", None, "lamp"),
    Node("lamp_base", "part", ("lamp base", "lamp stand", "lamp foot", "black lamp base"), "black", None, "lamp"),
    Node("mushroom", "object", ("mushroom", "toadstool", "fungus")),
    Node("mushroom_cap", "part", ("mushroom cap", "cap", "orange cap", "mushroom top"), "orange", None, "mushroom"),
    Node("mushroom_stem", "part", ("mushroom stem", "stem", "stalk", "beige stem"), "beige", None, "mushroom"),
    Node("pink_pyramid", "object", ("pink pyramid", "pyramid", "pink triangle"), "pink", "pyramid"),
    Node("cyan_bowl", "object", ("cyan bowl", "bowl", "cyan dish", "dish"), "cyan", "bowl"),
    Node("table", "object", ("table", "wooden table", "tabletop", "brown table", "desk"), "brown", None),
    Node("background", "background", ("background", "wall", "empty space", "sky")),
)
"""Every region of the demo scene, with the vocabulary that names it (see assets/demo_clip/README.md)."""

NODE_INDEX = {node.key: index for index, node in enumerate(CATALOG)}
BACKGROUND = NODE_INDEX["background"]

ALBEDO = {
    "red_cube": (0.86, 0.10, 0.10),
    "blue_cylinder": (0.12, 0.26, 0.92),
    "yellow_cone": (0.96, 0.84, 0.10),
    "green_ball": (0.12, 0.72, 0.20),
    "purple_ring": (0.55, 0.16, 0.78),
    "lamp_shade": (0.96, 0.95, 0.92),
    "lamp_base": (0.16, 0.16, 0.18),
    "mushroom_cap": (1.00, 0.50, 0.06),
    "mushroom_stem": (0.92, 0.82, 0.62),
    "pink_pyramid": (1.00, 0.46, 0.72),
    "cyan_bowl": (0.08, 0.80, 0.84),
    "table": (0.55, 0.34, 0.17),
}


def ancestors(key: str) -> list[str]:
    """``key`` and its enclosing regions, finest first."""
    out = [key]
    while CATALOG[NODE_INDEX[out[-1]]].parent is not None:
        out.append(CATALOG[NODE_INDEX[out[-1]]].parent)
    return out


def level_region(leaf: str, level: str) -> str:
    """The region a leaf (part, or partless object) belongs to at level s, m or l."""
    chain = ancestors(leaf)
    kinds = [CATALOG[NODE_INDEX[k]].kind for k in chain]
    if level == "s":
        return chain[0]
    if level == "m":
        return next((k for k, kind in zip(chain, kinds) if kind in ("object", "background")), chain[0])
    return next((k for k, kind in zip(chain, kinds) if kind == "group"), level_region(leaf, "m"))


def level_tables() -> dict[str, np.ndarray]:
    """Per level, the node id of the level's region for every node id used as a leaf. {level: [len(CATALOG)] int}"""
    tables = {}
    for level in LEVELS:
        tables[level] = np.array([NODE_INDEX[level_region(node.key, level)] for node in CATALOG], dtype=np.int64)
    return tables


# --------------------------------------------------------------------------------------- geometry


@dataclass
class Surface:
    """Oriented sample points of a surface. points, normals: [P, 3]; spacing: [P] local sample spacing."""

    points: np.ndarray
    normals: np.ndarray
    spacing: np.ndarray

    @staticmethod
    def concat(parts: list[Surface]) -> Surface:
        return Surface(
            np.concatenate([p.points for p in parts]),
            np.concatenate([p.normals for p in parts]),
            np.concatenate([p.spacing for p in parts]),
        )

    def transformed(self, angle: float, offset) -> Surface:
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return Surface(self.points @ rot.T + np.asarray(offset), self.normals @ rot.T, self.spacing)


def revolve(
    profile: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    spacing: float,
    rng: np.random.Generator,
    z_offset: float = 0.0,
    flip: bool = False,
) -> Surface:
    """Sample a surface of revolution about the z axis.

    Args:
        profile: t in [0, 1] -> (r, z), traversed counter-clockwise around the solid in the (r, z) half
            plane (so that the outward normal is the tangent turned clockwise).
        spacing: target distance between neighbouring samples.
        rng: jitters each ring's phase.
        flip: reverse the normals (inner side of a shell).
    """
    dense_t = np.linspace(0.0, 1.0, 2001)
    r, z = profile(dense_t)
    seg = np.hypot(np.diff(r), np.diff(z))
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    rows = max(2, int(math.ceil(arc[-1] / spacing)))
    s_rows = (np.arange(rows) + 0.5) / rows * arc[-1]
    t_rows = np.interp(s_rows, arc, dense_t)
    eps = 1e-4
    r0, z0 = profile(np.clip(t_rows - eps, 0, 1))
    r1, z1 = profile(np.clip(t_rows + eps, 0, 1))
    rr, zz = profile(t_rows)
    tangent = np.stack([r1 - r0, z1 - z0], axis=1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-12
    normal_rz = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    points, normals = [], []
    for radius, height, (nr, nz) in zip(rr, zz, normal_rz):
        count = max(1, int(round(2 * math.pi * radius / spacing)))
        theta = (np.arange(count) + rng.random()) / count * 2 * math.pi
        ct, st = np.cos(theta), np.sin(theta)
        points.append(np.stack([radius * ct, radius * st, np.full(count, height + z_offset)], axis=1))
        normals.append(np.stack([nr * ct, nr * st, np.full(count, nz)], axis=1))
    points, normals = np.concatenate(points), np.concatenate(normals)
    if flip:
        normals = -normals
    return Surface(points, normals, np.full(len(points), spacing))


def patch(
    origin,
    edge_u,
    edge_v,
    spacing: float,
    rng: np.random.Generator,
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Surface:
    """Jittered grid on the parallelogram origin + u·edge_u + v·edge_v (u, v in [0, 1]); normal u × v."""
    origin, edge_u, edge_v = (np.asarray(a, dtype=np.float64) for a in (origin, edge_u, edge_v))
    nu = max(1, int(math.ceil(np.linalg.norm(edge_u) / spacing)))
    nv = max(1, int(math.ceil(np.linalg.norm(edge_v) / spacing)))
    u, v = np.meshgrid((np.arange(nu) + 0.5) / nu, (np.arange(nv) + 0.5) / nv, indexing="ij")
    u = np.clip(u + (rng.random(u.shape) - 0.5) * 0.3 / nu, 0, 1).ravel()
    v = np.clip(v + (rng.random(v.shape) - 0.5) * 0.3 / nv, 0, 1).ravel()
    if inside is not None:
        keep = inside(u, v)
        u, v = u[keep], v[keep]
    normal = np.cross(edge_u, edge_v)
    normal /= np.linalg.norm(normal)
    points = origin + u[:, None] * edge_u + v[:, None] * edge_v
    return Surface(points, np.repeat(normal[None], len(points), 0), np.full(len(points), spacing))


def box(size, spacing: float, rng, z0: float = 0.0, bottom: bool = False) -> Surface:
    """Axis-aligned box centred on the z axis, from z0 to z0 + size[2]."""
    sx, sy, sz = size
    x0, y0 = -sx / 2, -sy / 2
    faces = [
        patch((x0, y0, z0 + sz), (sx, 0, 0), (0, sy, 0), spacing, rng),  # top (+z)
        patch((x0, y0, z0), (sx, 0, 0), (0, 0, sz), spacing, rng),  # front (-y)
        patch((x0, -y0, z0), (0, 0, sz), (sx, 0, 0), spacing, rng),  # back (+y)
        patch((x0, y0, z0), (0, 0, sz), (0, sy, 0), spacing, rng),  # left (-x)
        patch((-x0, y0, z0), (0, sy, 0), (0, 0, sz), spacing, rng),  # right (+x)
    ]
    if bottom:
        faces.append(patch((x0, y0, z0), (0, sy, 0), (sx, 0, 0), spacing, rng))
    return Surface.concat(faces)


def pyramid(base: float, height: float, spacing: float, rng) -> Surface:
    """Square pyramid standing on z = 0 (four triangular faces)."""
    h = base / 2
    apex = np.array([0.0, 0.0, height])
    corners = [np.array(c) for c in ((-h, -h, 0.0), (h, -h, 0.0), (h, h, 0.0), (-h, h, 0.0))]
    faces = []
    for a, b in zip(corners, corners[1:] + corners[:1]):
        faces.append(patch(a, b - a, apex - a, spacing, rng, inside=lambda u, v: u + v <= 1.0))
    return Surface.concat(faces)


def cylinder(radius: float, height: float, spacing: float, rng, z0: float = 0.0, top: bool = True) -> Surface:
    side = revolve(lambda t: (np.full_like(t, radius), t * height), spacing, rng, z0)
    if not top:
        return side
    cap = revolve(lambda t: ((1 - t) * radius, np.full_like(t, height)), spacing, rng, z0)
    return Surface.concat([side, cap])


def cone(radius: float, height: float, spacing: float, rng, z0: float = 0.0) -> Surface:
    return revolve(lambda t: ((1 - t) * radius, t * height), spacing, rng, z0)


def sphere(radius: float, spacing: float, rng, z0: float = 0.0) -> Surface:
    return revolve(lambda t: (radius * np.sin(np.pi * t), radius - radius * np.cos(np.pi * t)), spacing, rng, z0)


def torus(major: float, minor: float, spacing: float, rng) -> Surface:
    """A torus lying on z = 0 (its tube's lowest point touches the table)."""
    return revolve(
        lambda t: (
            major + minor * np.cos(2 * np.pi * t - np.pi / 2),
            minor + minor * np.sin(2 * np.pi * t - np.pi / 2),
        ),
        spacing,
        rng,
    )


def frustum_shell(
    r_bottom: float, r_top: float, z_bottom: float, z_top: float, spacing: float, rng, thickness: float = 0.004
) -> Surface:
    """Open cone frustum (a lamp shade), outer and inner sides."""
    outer = revolve(lambda t: (r_bottom + (r_top - r_bottom) * t, z_bottom + (z_top - z_bottom) * t), spacing, rng)
    inner = revolve(
        lambda t: (r_bottom - thickness + (r_top - r_bottom) * t, z_bottom + (z_top - z_bottom) * t),
        spacing,
        rng,
        flip=True,
    )
    return Surface.concat([outer, inner])


def bowl(radius: float, spacing: float, rng, thickness: float = 0.006) -> Surface:
    """Open hemispherical bowl resting on z = 0, outer and inner sides and a rim."""
    outer = revolve(
        lambda t: (radius * np.sin(0.5 * np.pi * t), radius - radius * np.cos(0.5 * np.pi * t)), spacing, rng
    )
    r_in = radius - thickness
    inner = revolve(
        lambda t: (r_in * np.sin(0.5 * np.pi * t), radius - r_in * np.cos(0.5 * np.pi * t)), spacing, rng, flip=True
    )
    return Surface.concat([outer, inner])


def hemisphere_cap(radius: float, z0: float, spacing: float, rng) -> Surface:
    """Mushroom cap: the upper half of a sphere centred at height z0 plus its flat underside."""
    dome = revolve(lambda t: (radius * np.cos(0.5 * np.pi * t), z0 + radius * np.sin(0.5 * np.pi * t)), spacing, rng)
    under = revolve(lambda t: (t * radius, np.full_like(t, z0)), spacing, rng)
    return Surface.concat([dome, under])


# ------------------------------------------------------------------------------------------ scene


@dataclass
class SceneConfig:
    """Settings of the demo scene. Every random choice comes from ``seed``."""

    seed: int = 0
    spacing: float = 0.018
    """Distance between neighbouring Gaussians on the objects (world units; the table is ~1.8 long)."""
    table_spacing: float = 0.036
    """Gaussian spacing on the table."""
    width: int = 384
    """Image width of every view (pixels)."""
    height: int = 288
    """Image height of every view (pixels)."""
    fov_y_deg: float = 50.0
    """Vertical field of view of every view."""
    train_views: int = 24
    """Training views (posed images the language field is distilled from)."""
    test_views: int = 8
    """Held-out views (for the evaluation labels; never trained on)."""


# Object layout on the table: key -> (x, y) before the seeded jitter.
LAYOUT = {
    "tower": (-0.55, 0.32),
    "green_ball": (0.02, 0.40),
    "purple_ring": (0.56, 0.36),
    "pink_pyramid": (-0.58, -0.22),
    "cyan_bowl": (0.0, -0.02),
    "lamp": (0.52, -0.20),
    "mushroom": (-0.12, -0.40),
}


@dataclass
class DemoScene:
    """The generated scene.

    Attributes:
        config: its settings.
        field: the RGB Gaussians (SH degree 0, no language features). N Gaussians.
        leaf: node id (index into :data:`CATALOG`) of each Gaussian's finest region. [N] int64
        train_cameras, train_names: training views and their image file names.
        test_cameras, test_names: held-out views and their image file names.
        default_camera: a good first view: {"c2w": 4x4 list (OpenCV axes), "fov_y_deg": float}.
    """

    config: SceneConfig
    field: LanguageField
    leaf: Tensor
    train_cameras: list[Camera]
    train_names: list[str]
    test_cameras: list[Camera]
    test_names: list[str]
    default_camera: dict = field(default_factory=dict)

    @property
    def cameras(self) -> list[Camera]:
        return self.train_cameras + self.test_cameras

    @property
    def names(self) -> list[str]:
        return self.train_names + self.test_names

    def render_rgb(self, camera: Camera) -> np.ndarray:
        """Colour image over the background. [H, W, 3] float32 in [0, 1]"""
        from gags_viewer.render.api import render

        with torch.no_grad():
            out = render(self.field, camera, rgb=True, background=BACKGROUND_RGB, backend=_cpu_backend())
        return out.rgb.clamp(0, 1).cpu().numpy()

    def leaf_map(self, camera: Camera) -> np.ndarray:
        """Node id of the finest region seen at each pixel (background where alpha <= 0.5). [H, W] int64

        Rendered with the real renderer: per-Gaussian one-hot leaf channels, argmax per pixel.
        """
        from gags_viewer.render.api import render

        leaves = torch.unique(self.leaf)
        column = torch.full((len(CATALOG),), -1, dtype=torch.long)
        column[leaves] = torch.arange(len(leaves))
        one_hot = torch.nn.functional.one_hot(column[self.leaf], len(leaves)).float()
        with torch.no_grad():
            out = render(self.field, camera, rgb=False, features=one_hot, backend=_cpu_backend())
        ids = leaves[out.features.argmax(dim=-1)]
        ids = torch.where(out.alpha > MASK_ALPHA, ids, torch.full_like(ids, BACKGROUND))
        return ids.cpu().numpy().astype(np.int64)

    def id_maps(self, camera: Camera) -> dict[str, np.ndarray]:
        """Ground-truth region ids per level: {"s": part, "m": object, "l": group}, each [H, W] int64."""
        leaf = self.leaf_map(camera)
        tables = level_tables()
        return {level: tables[level][leaf] for level in LEVELS}


def _cpu_backend() -> str:
    return "gsplat" if torch.cuda.is_available() else "numba"


def shade(albedo, normals: np.ndarray) -> np.ndarray:
    """Lambert shading with ambient light, baked into the colour. -> [P, 3] in [0, 1]"""
    light = np.clip(normals @ LIGHT, 0.0, 1.0)
    return np.clip(np.asarray(albedo)[None, :] * (0.42 + 0.62 * light)[:, None], 0.0, 1.0)


def _objects(rng: np.random.Generator, d: float) -> dict[str, Surface]:
    """Local-frame surfaces of every leaf region (partless objects are their own leaf)."""
    return {
        "red_cube": box((0.2, 0.2, 0.2), d, rng),
        "blue_cylinder": cylinder(0.075, 0.16, d, rng, z0=0.2),
        "yellow_cone": cone(0.095, 0.2, d, rng, z0=0.36),
        "green_ball": sphere(0.14, d, rng),
        "purple_ring": torus(0.12, 0.048, d, rng),
        "pink_pyramid": pyramid(0.26, 0.26, d, rng),
        "cyan_bowl": bowl(0.15, d, rng),
        "lamp_base": Surface.concat(
            [cylinder(0.12, 0.035, d, rng), cylinder(0.018, 0.3, d * 0.8, rng, z0=0.035, top=False)]
        ),
        "lamp_shade": frustum_shell(0.17, 0.085, 0.24, 0.42, d, rng),
        "mushroom_stem": cylinder(0.05, 0.2, d, rng, top=False),
        "mushroom_cap": hemisphere_cap(0.13, 0.2, d, rng),
    }


OBJECT_OF_LEAF = {
    "red_cube": "tower",
    "blue_cylinder": "tower",
    "yellow_cone": "tower",
    "green_ball": "green_ball",
    "purple_ring": "purple_ring",
    "pink_pyramid": "pink_pyramid",
    "cyan_bowl": "cyan_bowl",
    "lamp_base": "lamp",
    "lamp_shade": "lamp",
    "mushroom_stem": "mushroom",
    "mushroom_cap": "mushroom",
}
"""Which layout slot (see :data:`LAYOUT`) each leaf is placed with."""


def _table(rng: np.random.Generator, d: float) -> Surface:
    top = box((1.8, 1.3, 0.06), d, rng, z0=-0.06)
    legs = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = box((0.07, 0.07, 0.64), d, rng, z0=-0.70)
            legs.append(Surface(leg.points + np.array([sx * 0.8, sy * 0.55, 0.0]), leg.normals, leg.spacing))
    return Surface.concat([top] + legs)


def _gaussians(surface: Surface, albedo, rng: np.random.Generator, opacity: float = 0.97) -> dict[str, np.ndarray]:
    """Flat Gaussians on surface samples: discs of std ~0.6 spacing, thin along the normal."""
    n = len(surface.points)
    normals = surface.normals / np.linalg.norm(surface.normals, axis=1, keepdims=True)
    points = surface.points + (rng.random((n, 3)) - 0.5) * 0.1 * surface.spacing[:, None]
    tangent_std = 0.62 * surface.spacing
    scales = np.stack([tangent_std, tangent_std, 0.12 * surface.spacing], axis=1)
    return {
        "means": points,
        "quats": _quat_z_to(normals),
        "log_scales": np.log(scales),
        "opacity": np.full(n, math.log(opacity / (1 - opacity))),
        "rgb": shade(albedo, normals),
    }


def _quat_z_to(normals: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternions rotating +z onto each unit normal. [P, 3] -> [P, 4]"""
    w = 1.0 + normals[:, 2]
    q = np.stack([w, -normals[:, 1], normals[:, 0], np.zeros(len(normals))], axis=1)
    flipped = w < 1e-6
    q[flipped] = (0.0, 1.0, 0.0, 0.0)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def make_scene(config: SceneConfig | None = None) -> DemoScene:
    """Build the demo scene (geometry, colours, views) from ``config.seed``; no rendering happens here."""
    config = config or SceneConfig()
    rng = np.random.default_rng(config.seed)
    slots = {}
    for key, (x, y) in LAYOUT.items():
        slots[key] = (
            float(rng.uniform(-math.pi, math.pi)),
            (x + rng.uniform(-0.04, 0.04), y + rng.uniform(-0.04, 0.04), 0.0),
        )
    blocks, leaves = [], []
    for key, surface in _objects(rng, config.spacing).items():
        angle, offset = slots[OBJECT_OF_LEAF[key]]
        placed = surface.transformed(angle, offset)
        blocks.append(_gaussians(placed, ALBEDO[key], rng))
        leaves.append(np.full(len(placed.points), NODE_INDEX[key]))
    table = _table(rng, config.table_spacing)
    blocks.append(_gaussians(table, ALBEDO["table"], rng, opacity=0.98))
    leaves.append(np.full(len(table.points), NODE_INDEX["table"]))

    def cat(name):
        return torch.from_numpy(np.concatenate([b[name] for b in blocks])).float()

    rgb = cat("rgb")
    field = LanguageField(
        means=cat("means"),
        quats=cat("quats"),
        log_scales=cat("log_scales"),
        opacity_logits=cat("opacity"),
        sh=((rgb - 0.5) / SH_C0)[:, None, :].contiguous(),
        metadata=FieldMetadata(up=UP, source=f"gags_viewer.demo.scene seed {config.seed}"),
    )
    train = _views(config, rng, config.train_views, held_out=False)
    test = _views(config, rng, config.test_views, held_out=True)
    default_c2w = _camera_pose(azimuth=-60.0, elevation=38.0, distance=2.5, target=(0.0, 0.0, 0.08))
    default_camera = {"c2w": default_c2w.tolist(), "fov_y_deg": config.fov_y_deg}
    field.metadata.default_camera = default_camera
    n_train = len(train)
    names = [f"frame_{i + 1:05d}.png" for i in range(n_train + len(test))]
    return DemoScene(
        config=config,
        field=field.validate(),
        leaf=torch.from_numpy(np.concatenate(leaves)).long(),
        train_cameras=train,
        train_names=names[:n_train],
        test_cameras=test,
        test_names=names[n_train:],
        default_camera=default_camera,
    )


def _camera_pose(azimuth: float, elevation: float, distance: float, target) -> np.ndarray:
    """Camera-to-world (OpenCV axes) on a sphere around ``target``; azimuth 0 looks along +y. [4, 4]"""
    az, el = math.radians(azimuth), math.radians(elevation)
    target = np.asarray(target, dtype=np.float64)
    eye = target + distance * np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    return look_at(eye, target, UP).double().numpy()


def _views(config: SceneConfig, rng: np.random.Generator, count: int, held_out: bool) -> list[Camera]:
    """Cameras around the table. Training views sweep the full circle at three elevations and two
    distances; held-out views sit between them (other azimuths, elevations and distances)."""
    cameras = []
    for i in range(count):
        if held_out:
            azimuth = 360.0 * (i + 0.5) / max(count, 1) + rng.uniform(-6, 6) + 11.0
            elevation = (36.0, 50.0, 43.0, 57.0)[i % 4] + rng.uniform(-3, 3)
            distance = (2.0, 2.35)[i % 2] + rng.uniform(-0.1, 0.1)
        else:
            azimuth = 360.0 * i / max(count, 1) + rng.uniform(-5, 5)
            elevation = (30.0, 47.0, 64.0)[i % 3] + rng.uniform(-4, 4)
            distance = (2.5, 1.85)[(i // 3) % 2] + rng.uniform(-0.1, 0.1)
        target = (rng.uniform(-0.25, 0.25), rng.uniform(-0.18, 0.18), 0.1)
        c2w = _camera_pose(azimuth, elevation, distance, target)
        cameras.append(Camera.from_fov(c2w, config.fov_y_deg, config.width, config.height))
    return cameras
