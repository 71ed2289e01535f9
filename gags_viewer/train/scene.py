"""Reader of a preprocessed GAGS scene (COLMAP + images + language features) and of the initial 3DGS.

Layout (official, gags-method.md §1.2-1.3)::

    <scene>/sparse/0/{cameras,images}.{bin,txt}       PINHOLE / SIMPLE_PINHOLE (OPENCV & co. as pinhole)
    <scene>/images/<name>                             used for the original image size only
    <scene>/language_features/<stem>_f.npy            (M, 512) float32 mask embeddings, rows of all levels
    <scene>/language_features/<stem>_s.npy            (4, H, W) float32: level 0 = default (ignored),
                                                      1 = s, 2 = m, 3 = l; global row index into _f or -1

Images and feature files are paired by **stem**, explicitly (``frame_1.jpg`` <-> ``frame_1_f.npy``), never
by position in two sorted lists (gags-method.md §6 item 5). For names with several dots the official
``name.split('.')[0]`` stem is accepted as a fallback. Images without features are reported and skipped.

Every problem with a feature file is a one-line :class:`FormatError` naming the file: a missing
``_s.npy``, a feature dimension other than 512, a row index out of range, a shape that does not match
the image. The ``_s`` maps are resized with nearest-neighbour sampling to the render resolution, as the
official camera loader does, and kept as small integer tensors.
"""

from __future__ import annotations

import logging
import math
import os
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gags_viewer.errors import FormatError, GagsError
from gags_viewer.field.language_field import LanguageField
from gags_viewer.render.camera import Camera

log = logging.getLogger(__name__)

CLIP_DIM = 512
NUM_LEVELS = 4  # default, s, m, l
FEATURES_DIR = "language_features"
IMAGES_DIR = "images"
OFFICIAL_RESOLUTIONS = (1, 2, 4, 8)
MAX_AUTO_WIDTH = 1600
ASPECT_TOLERANCE = 0.02
NPY_MAX_HEADER_BYTES = 10000  # numpy's own limit (np.load's max_header_size)


@dataclass
class TrainView:
    """One training image at the render resolution.

    Attributes:
        name: Image name as COLMAP stores it (e.g. ``frame_00001.jpg``).
        camera: Pinhole camera at the render resolution.
        seg: Mask row per level (s, m, l) at the render resolution, -1 = none. [3, H, W] int16 or int32
        embeddings: The image's mask embeddings (its ``_f.npy``). [M, 512] float32
    """

    name: str
    camera: Camera
    seg: Tensor
    embeddings: Tensor

    @property
    def width(self) -> int:
        return self.camera.width

    @property
    def height(self) -> int:
        return self.camera.height


@dataclass
class PreprocessedScene:
    """The training views of a scene and what could not be used.

    Attributes:
        root: The scene directory.
        views: Views with features, sorted by image name.
        missing_features: Names of registered images that have no ``<stem>_f.npy`` (skipped).
        unused_features: Stems of ``_f.npy`` files that match no registered image.
        distorted: Whether the COLMAP cameras carry a lens distortion that is ignored (pinhole used).
    """

    root: Path
    views: list[TrainView]
    missing_features: list[str] = field(default_factory=list)
    unused_features: list[str] = field(default_factory=list)
    distorted: bool = False

    def report(self) -> list[str]:
        """Human-readable warnings (one line each) about skipped images and unused feature files."""
        lines = []
        if self.missing_features:
            shown = ", ".join(self.missing_features[:8]) + (" ..." if len(self.missing_features) > 8 else "")
            lines.append(f"{len(self.missing_features)} image(s) have no language features and are skipped: {shown}")
        if self.unused_features:
            shown = ", ".join(self.unused_features[:8]) + (" ..." if len(self.unused_features) > 8 else "")
            lines.append(f"{len(self.unused_features)} feature file(s) match no registered image: {shown}")
        if self.distorted:
            lines.append("COLMAP cameras have lens distortion; it is ignored (use undistorted images)")
        return lines


def render_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Training render size from the original image size, with the official ``-r`` semantics.

    ``resolution`` 1, 2, 4 or 8 divides both sides (rounded); -1 keeps the size but caps the width at
    1600 px; a value above 8 is the target width in pixels. -> (width, height)
    """
    if resolution in OFFICIAL_RESOLUTIONS:
        return round(width / resolution), round(height / resolution)
    if resolution == -1:
        scale = width / MAX_AUTO_WIDTH if width > MAX_AUTO_WIDTH else 1.0
    elif resolution > 8:
        scale = width / resolution
    else:
        raise GagsError(f"--resolution must be 1, 2, 4, 8, -1 (auto) or a target width > 8, got {resolution}")
    return round(width / scale), round(height / scale)


def read_preprocessed_scene(
    root: Path,
    resolution: int = 2,
    center_principal_point: bool = True,
    images_dir: str = IMAGES_DIR,
    features_dir: str = FEATURES_DIR,
) -> PreprocessedScene:
    """Read and validate a preprocessed scene (see module doc).

    Args:
        root: Scene directory (with ``sparse/0``, ``images/``, ``language_features/``).
        resolution: Render-resolution rule, see :func:`render_size` (official default 2).
        center_principal_point: Principal point at the image centre, as the official renderer does; False
            uses COLMAP's cx, cy.
        images_dir, features_dir: Sub-folder names.

    Raises:
        FormatError / GagsError with one line naming the offending file.
    """
    from gags_viewer.dataset.colmap import read_scene

    root = Path(root)
    if not root.is_dir():
        raise GagsError(f"{root}: scene directory does not exist")
    colmap = read_scene(root)
    feature_root = root / features_dir
    if not feature_root.is_dir():
        raise FormatError(feature_root, "missing; run the GAGS preprocessing (language_features/<stem>_f.npy, _s.npy)")
    feature_stems = {p.name[: -len("_f.npy")] for p in feature_root.glob("*_f.npy")}
    seg_stems = {p.name[: -len("_s.npy")] for p in feature_root.glob("*_s.npy")}

    views, missing, used, distorted = [], [], set(), False
    for image in colmap.images:
        stem = _feature_stem(image.name, feature_stems | seg_stems)
        if stem is None:
            missing.append(image.name)
            continue
        used.add(stem)
        f_path, s_path = feature_root / f"{stem}_f.npy", feature_root / f"{stem}_s.npy"
        if not s_path.is_file():
            raise FormatError(s_path, f"missing: every <stem>_f.npy needs its <stem>_s.npy (image '{image.name}')")
        if not f_path.is_file():
            raise FormatError(f_path, f"missing: every <stem>_s.npy needs its <stem>_f.npy (image '{image.name}')")
        colmap_camera = colmap.camera_of(image)
        distorted |= colmap_camera.distorted
        orig_w, orig_h = _image_size(root / images_dir / image.name, colmap_camera.width, colmap_camera.height)
        width, height = render_size(orig_w, orig_h, resolution)
        camera = colmap.render_camera(image, width, height, centered_principal_point=center_principal_point)
        embeddings = _read_embeddings(f_path)
        seg = _read_segmentation(s_path, embeddings.shape[0], orig_w, orig_h, width, height)
        views.append(TrainView(name=image.name, camera=camera, seg=seg, embeddings=embeddings))

    unused = sorted(feature_stems - used)
    if not views:
        raise GagsError(
            f"{feature_root}: no registered image of {colmap.folder} has language features "
            f"({len(colmap.images)} images, {len(feature_stems)} _f.npy files; files are paired by name stem)"
        )
    scene = PreprocessedScene(
        root=root, views=views, missing_features=missing, unused_features=unused, distorted=distorted
    )
    for line in scene.report():  # run_training prints these; library callers read scene.report()
        log.info("%s", line)
    return scene


def _feature_stem(name: str, stems: set[str]) -> str | None:
    """The feature-file stem of an image name: ``Path(name).stem``, else the official ``split('.')[0]``."""
    base = Path(name).name
    for candidate in (Path(base).stem, base.split(".")[0]):
        if candidate in stems:
            return candidate
    return None


def _image_size(path: Path, default_w: int, default_h: int) -> tuple[int, int]:
    """(width, height) of an image file from its header; COLMAP's size when the file is absent."""
    if not path.is_file():
        return default_w, default_h
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.size
    except Exception as error:  # noqa: BLE001 - any unreadable image is a format problem
        raise FormatError(path, f"cannot read image header ({error})") from None


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """A numeric ``.npy`` array; never unpickles, never allocates more than the file's data holds."""
    try:
        _check_npy_size(path)
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as error:  # numpy parses a damaged
        # header with the tokenizer, which raises its own errors
        raise FormatError(path, f"not a readable .npy array ({str(error).splitlines()[0][:160]})") from None


def _check_npy_size(path: Path) -> None:
    """Refuse a ``.npy`` whose header declares more data than the file holds (before numpy allocates it)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise FormatError(path, f"unknown .npy format version {version[0]}.{version[1]}")
        start = handle.tell()
        header_length = int.from_bytes(handle.read(2 if version == (1, 0) else 4), "little")
        if header_length > NPY_MAX_HEADER_BYTES:  # numpy would read (allocate) it all before checking
            raise FormatError(
                path, f"declares a {header_length}-byte .npy header (numpy accepts {NPY_MAX_HEADER_BYTES})"
            )
        handle.seek(start)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle, max_header_size=NPY_MAX_HEADER_BYTES)
        data_bytes = os.fstat(handle.fileno()).st_size - handle.tell()
    if dtype.hasobject:
        raise FormatError(path, "holds Python objects, not numbers; refusing to unpickle it")
    declared = dtype.itemsize * math.prod(shape)
    if declared > data_bytes:
        raise FormatError(
            path, f"header declares shape {list(shape)} ({declared} bytes) but the file holds {data_bytes}"
        )


def _read_embeddings(path: Path) -> Tensor:
    """``_f.npy`` -> [M, 512] float32, checked."""
    array = _load_npy(path)
    if array.ndim != 2:
        raise FormatError(path, f"must be a (M, {CLIP_DIM}) array of mask embeddings, got shape {list(array.shape)}")
    if array.shape[1] != CLIP_DIM:
        raise FormatError(
            path, f"feature dimension is {array.shape[1]}, expected {CLIP_DIM} (CLIP ViT-B-16 embeddings)"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise FormatError(path, f"must hold floating-point embeddings, got {array.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(tensor).all():
        raise FormatError(path, "contains NaN or Inf")
    return tensor


def _read_segmentation(path: Path, num_rows: int, image_w: int, image_h: int, width: int, height: int) -> Tensor:
    """``_s.npy`` -> levels s, m, l nearest-resized to (height, width). [3, height, width] int16/int32"""
    array = _load_npy(path, mmap=True)
    if array.ndim != 3 or array.shape[0] != NUM_LEVELS:
        raise FormatError(path, f"must have shape (4, H, W) (levels default, s, m, l), got {list(array.shape)}")
    seg_h, seg_w = int(array.shape[1]), int(array.shape[2])
    if seg_h < 1 or seg_w < 1:
        raise FormatError(path, f"has an empty segmentation of size {seg_w}x{seg_h}")
    image_aspect, seg_aspect = image_w / image_h, seg_w / seg_h
    if abs(seg_aspect - image_aspect) > ASPECT_TOLERANCE * image_aspect:
        raise FormatError(
            path,
            f"shape mismatch: segmentation is {seg_w}x{seg_h} but the image is {image_w}x{image_h} (aspect ratios differ)",
        )
    levels = np.asarray(array[1:])
    if not (np.issubdtype(levels.dtype, np.integer) or np.issubdtype(levels.dtype, np.floating)):
        raise FormatError(path, f"must hold integer or real numbers, got {levels.dtype}")
    if np.issubdtype(levels.dtype, np.floating):
        if not np.isfinite(levels).all():
            raise FormatError(path, "contains NaN or Inf")
        if not (levels == np.round(levels)).all():
            raise FormatError(path, "must hold integer row indices (or -1)")
    low, high = (int(levels.min()), int(levels.max())) if levels.size else (-1, -1)
    if low < -1:
        raise FormatError(path, f"has index {low}; indices must be -1 (no mask) or a row of the _f.npy file")
    if high >= num_rows:
        raise FormatError(path, f"index out of range: row {high} but the matching _f.npy has {num_rows} rows")
    dtype = torch.int16 if num_rows < 2**15 else torch.int32
    seg = torch.from_numpy(levels.astype(np.int32))
    if (seg_h, seg_w) != (height, width):
        seg = F.interpolate(seg[None].float(), size=(height, width), mode="nearest")[0].round().to(torch.int32)
    return seg.to(dtype).contiguous()


# ------------------------------------------------------------------------------------------ geometry


def load_geometry(path: Path) -> LanguageField:
    """The pretrained 3DGS the language field is distilled on (features are discarded).

    Accepts an Inria ``point_cloud.ply``, an official / Inria / native output directory, a gsplat
    ``simple_trainer`` checkpoint (``{"step", "splats": {means, quats, scales, opacities, sh0, shN}}``)
    or an Inria ``chkpnt<it>.pth`` ((12- or 13-tuple, iteration)). Checkpoints are read with
    ``torch.load(weights_only=True)``; nothing else is ever unpickled.
    """
    path = Path(path)
    if not path.exists():
        raise GagsError(f"{path}: initial 3DGS model does not exist")
    if path.is_dir():
        from gags_viewer.field.load import load_field

        field = load_field(path)
    elif path.suffix.lower() == ".ply":
        from gags_viewer.field.ply import read_ply

        field = read_ply(path)
    elif path.suffix.lower() in (".pt", ".pth", ".ckpt"):
        field = _read_torch_checkpoint(path)
    else:
        raise FormatError(path, "unknown model file; expected a .ply, a gsplat .pt checkpoint or an output directory")
    field.features = None
    field.decoder = None
    field.granularity_decoder = None
    return field.validate()


def _read_torch_checkpoint(path: Path) -> LanguageField:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load fails in many ways; weights_only refused code
        detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise FormatError(path, f"not a readable tensor-only checkpoint ({detail})") from None
    try:
        if isinstance(payload, dict) and isinstance(payload.get("splats"), dict):
            splats = payload["splats"]
            need = ("means", "quats", "scales", "opacities", "sh0")
            missing = [key for key in need if key not in splats]
            if missing:
                raise FormatError(path, f"gsplat checkpoint lacks splats {', '.join(missing)}")
            means, quats, scales, opacities, sh = (_float_tensor(splats[key], key, path) for key in need)
            if "shN" in splats and _float_tensor(splats["shN"], "shN", path).numel():
                sh = torch.cat([sh, splats["shN"].float()], dim=1)
            return LanguageField(
                means=means, quats=quats, log_scales=scales, opacity_logits=opacities.reshape(-1), sh=sh.contiguous()
            )
        if isinstance(payload, (tuple, list)) and len(payload) == 2 and isinstance(payload[0], (tuple, list)):
            capture = payload[0]
            if len(capture) in (12, 13):
                names = ("xyz", "features_dc", "features_rest", "scaling", "rotation", "opacity")
                xyz, dc, rest, scaling, rotation, opacity = map(_float_tensor, capture[1:7], names, [path] * 6)
                return LanguageField(
                    means=xyz,
                    quats=rotation,
                    log_scales=scaling,
                    opacity_logits=opacity.reshape(-1),
                    sh=torch.cat([dc, rest], dim=1).contiguous(),
                )
    except (RuntimeError, IndexError) as error:  # tensors whose shapes do not fit together (cat, reshape)
        raise FormatError(
            path, f"checkpoint tensors do not fit together ({str(error).splitlines()[0][:120]})"
        ) from None
    raise FormatError(path, "neither a gsplat checkpoint ({'splats': ...}) nor an Inria chkpnt (tuple, iteration)")


def _float_tensor(value, name: str, path: Path) -> Tensor:
    """``value`` as a float32 tensor, or a :class:`FormatError` naming the checkpoint entry."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise FormatError(path, f"checkpoint entry '{name}' is not a floating-point tensor")
    return value.float()
