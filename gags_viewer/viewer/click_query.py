"""Click-to-query: a click on the render becomes a query ("more like this").

Two ways to turn the clicked pixel into a CLIP-space vector:

- **feature click** (always available): render the language features from the browser's camera and decode
  the clicked pixel's feature with the field's decoder, exactly as pixel mode decodes it.
- **SAM click** (with a segment-anything checkpoint): prompt SAM with the clicked point on the rendered RGB
  view, keep its best mask, and embed that masked crop with the CLIP image tower, with the same crop rule as
  preprocessing (:mod:`gags_viewer.preprocess.clip_features`).

The vector is given to the text encoder under a new phrase (``[click 1]``, ``[sam 1]``, ...), so it is
listed, coloured, selected and exported like a typed query.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.render.camera import Camera


def click_pixel(screen_pos: tuple[float, float], width: int, height: int) -> tuple[int, int]:
    """The pixel (x, y) under a click at ``screen_pos`` (0-1, OpenCV image coordinates)."""
    x = int(np.clip(np.floor(float(screen_pos[0]) * width), 0, width - 1))
    y = int(np.clip(np.floor(float(screen_pos[1]) * height), 0, height - 1))
    return x, y


def feature_embedding(engine, camera: Camera, x: int, y: int) -> Tensor:
    """The decoded CLIP-space vector of the rendered feature at pixel (x, y). [E], unit length.

    Raises GagsError when nothing of the field was rendered there, or when the field has several feature
    levels (LangSplat: the pixel decodes to one vector per level, and no rule picks one for a click).
    """
    if engine.field.level_count > 1:
        raise GagsError(
            "a feature click needs one feature per pixel, but this field has one per level "
            f"({', '.join(engine.field.metadata.levels)}); type the query, or click with --sam-checkpoint"
        )
    with torch.no_grad():
        out = engine.render_features(camera, rgb=False)
        if float(out.alpha[y, x]) <= 1e-3:
            raise GagsError("nothing of the field is under the click; click on an object")
        decoded = engine.clip_decoder.decode(out.features[y, x][None].to(engine.device))[0]
    return torch.nn.functional.normalize(decoded.float(), dim=-1)


def load_sam_predictor(checkpoint: Path, device: str | torch.device = "cpu"):
    """A ``segment_anything.SamPredictor`` on the SAM checkpoint (any size), loaded as preprocessing loads it:
    ``torch.load(weights_only=True)``, so a checkpoint cannot run code; one-line errors for bad files."""
    from segment_anything import SamPredictor

    from gags_viewer.preprocess.sam_checkpoint import load_sam

    return SamPredictor(load_sam(checkpoint, device=device))


class SamClicker:
    """Prompts SAM with one point and embeds the best mask with CLIP (the preprocessing crop rule).

    Args:
        predictor: a ``segment_anything.SamPredictor``.
        image_encoder: a :class:`~gags_viewer.preprocess.clip_features.ClipImageEncoder` of the field's CLIP model.
    """

    def __init__(self, predictor, image_encoder):
        self.predictor = predictor
        self.image_encoder = image_encoder
        self._lock = threading.Lock()

    def mask(self, image: np.ndarray, x: int, y: int) -> np.ndarray:
        """SAM's highest-scoring mask for a positive point at (x, y) of ``image`` [H, W, 3] uint8. [H, W] bool"""
        with self._lock, torch.no_grad():
            self.predictor.set_image(np.ascontiguousarray(image, dtype=np.uint8))
            masks, scores, _ = self.predictor.predict(
                point_coords=np.array([[x + 0.5, y + 0.5]], dtype=np.float32),
                point_labels=np.array([1]),
                multimask_output=True,
            )
        best = np.asarray(masks[int(np.argmax(scores))], dtype=bool)
        if not best.any():
            raise GagsError("SAM found no region under the click; click elsewhere")
        return best

    def embedding(self, image: np.ndarray, x: int, y: int) -> tuple[Tensor, np.ndarray]:
        """(the CLIP image embedding of the masked crop [E] unit, the mask [H, W] bool)."""
        mask = self.mask(image, x, y)
        return self.image_encoder.encode_masks(image, [mask])[0], mask


@dataclass
class ClickResult:
    """A click turned into a query: its phrase, and SAM's mask when SAM made it (else None)."""

    phrase: str
    mask: np.ndarray | None = None


class ClickQueries:
    """Names clicked queries and registers their vectors with the text encoder (one numbering per viewer).

    Args:
        sam_checkpoint: a segment-anything checkpoint; None: feature clicks only.
    """

    def __init__(self, sam_checkpoint: Path | None = None):
        self.sam_checkpoint = sam_checkpoint
        self._sam: SamClicker | None = None
        self._lock = threading.Lock()
        self._count = 0

    @property
    def uses_sam(self) -> bool:
        return self.sam_checkpoint is not None

    def sam(self, engine) -> SamClicker:
        """The SAM clicker, built on first use (SAM ViT-H takes a while to load)."""
        if self.sam_checkpoint is None:
            raise GagsError("SAM clicks need a segment-anything checkpoint (view --sam-checkpoint)")
        with self._lock:
            if self._sam is None:
                from gags_viewer.preprocess.clip_features import ClipImageEncoder, load_clip_model

                predictor = load_sam_predictor(self.sam_checkpoint, engine.device)
                self._sam = SamClicker(
                    predictor, ClipImageEncoder(load_clip_model(engine.text_encoder.spec, engine.device))
                )
            return self._sam

    def _name(self, kind: str) -> str:
        with self._lock:
            self._count += 1
            return f"[{kind} {self._count}]"

    def query(self, engine, camera: Camera, x: int, y: int, rgb: np.ndarray | None = None) -> ClickResult:
        """Turn a click at pixel (x, y) of ``camera``'s view into a registered query phrase.

        With SAM, ``rgb`` is the view the user saw ([H, W, 3] uint8, camera-sized; rendered when None).
        """
        mask = None
        if self.uses_sam:
            if rgb is None:
                with torch.no_grad():
                    rendered = engine.render_features(camera, rgb=True).rgb
                rgb = (rendered.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            embedding, mask = self.sam(engine).embedding(rgb, x, y)
            phrase = self._name("sam")
        else:
            embedding = feature_embedding(engine, camera, x, y)
            phrase = self._name("click")
        engine.text_encoder.remember(phrase, embedding.to(engine.device))
        return ClickResult(phrase, mask)
