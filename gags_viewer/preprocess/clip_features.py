"""CLIP image embedding of every mask: masked, zero-padded square crops (gags-method.md §2.7).

Per mask, as the official ``preprocess.py`` does:

1. copy the image and zero every pixel outside the mask;
2. cut the mask's bounding box (inclusive pixel bounds, ``[y0:y1+1, x0:x1+1]``);
3. zero-pad it to a centred square of side max(w, h);
4. resize to 224×224 (bilinear, like ``cv2.resize``), values in [0, 1];
5. the CLIP model's own preprocessing: resize to its input size when that is not 224 (bicubic with
   antialiasing, as open_clip's ``Resize`` does), then normalise with its mean / std;
6. ``encode_image``, L2-normalise, round through fp16 (the official features carry fp16 precision).

The official code cuts SAM's XYWH box ``[y:y+h, x:x+w]``; SAM derives that box from the mask's extreme
pixels, so its last row and column may be dropped. The inclusive box here keeps them (a one-pixel-wide
mask still gives a crop); the difference is at most one pixel row and column of a masked crop.

Any open_clip model works (built by :func:`load_clip_model` from a :class:`ClipSpec`); the bundled demo
uses its own small model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gags_viewer.field.language_field import ClipSpec

CROP_SIZE = 224
"""Side of the official square crops."""


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive pixel bounds of a mask, (x0, y0, x1, y1). Raises ValueError for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no bounding box")
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def square_crop(image: Tensor, mask: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """Steps 1-3: the masked box, zero-padded to a centred square.

    Args:
        image: [H, W, 3] float in [0, 1]
        mask: [H, W] bool
        box: (x0, y0, x1, y1) inclusive, from :func:`mask_box`.

    Returns:
        [S, S, 3] float, S = max(box width, box height); the box sits in the middle, rounded down.
    """
    x0, y0, x1, y1 = box
    cut = image[y0 : y1 + 1, x0 : x1 + 1] * mask[y0 : y1 + 1, x0 : x1 + 1, None].to(image.dtype)
    h, w = cut.shape[:2]
    side = max(h, w)
    out = torch.zeros(side, side, image.shape[2], dtype=image.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = cut
    return out


def mask_crops(image: np.ndarray | Tensor, masks: Sequence[np.ndarray], size: int = CROP_SIZE) -> Tensor:
    """Steps 1-4 for every mask of one image.

    Args:
        image: RGB image. [H, W, 3] uint8, or float in [0, 1]
        masks: each [H, W] bool, non-empty.
        size: output side (224 in the official pipeline).

    Returns:
        Crops in [0, 1], channels first. [M, 3, size, size] float32
    """
    image = _as_float_image(image)
    crops = []
    for mask in masks:
        mask_t = torch.as_tensor(np.asarray(mask, dtype=bool))
        square = square_crop(image, mask_t, mask_box(np.asarray(mask, dtype=bool)))
        crops.append(
            F.interpolate(square.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        )
    if not crops:
        return torch.zeros(0, 3, size, size)
    return torch.stack(crops).clamp(0.0, 1.0)


def _as_float_image(image: np.ndarray | Tensor) -> Tensor:
    tensor = torch.from_numpy(np.array(image)) if not isinstance(image, Tensor) else image
    if tensor.ndim != 3 or tensor.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {list(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    return tensor.float()


def load_clip_model(spec: ClipSpec, device: str | torch.device = "cpu", half: bool = False):
    """The full open_clip model (image and text towers) of ``spec``, in eval mode, fp32 (fp16 if ``half``).

    Resolution and offline checks are those of the text encoder (local config + checkpoint, or a cached
    pretrained tag); the model is then built by ``open_clip.create_model``.
    """
    import open_clip

    from gags_viewer.language.clip_text import TextEncoder

    name, weights = TextEncoder(spec, device=device).checkpoint_path()
    model = open_clip.create_model(name, pretrained=weights, device=device)
    model = model.half() if half else model
    return model.eval().requires_grad_(False)


def preprocess_config(model) -> tuple[int, Tensor, Tensor]:
    """(input side, mean [3], std [3]) of an open_clip model's image preprocessing."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", CROP_SIZE)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return size, torch.tensor(cfg["mean"], dtype=torch.float32), torch.tensor(cfg["std"], dtype=torch.float32)


def model_inputs(crops: Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    """Step 5: crops [M, 3, S, S] in [0, 1] -> normalised model inputs [M, 3, size, size]."""
    if crops.shape[-1] != size:
        crops = F.interpolate(crops, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return (crops - mean[None, :, None, None]) / std[None, :, None, None]


class ClipImageEncoder:
    """Embeds masks of images with an open_clip image tower (steps 1-6 of the module doc).

    Args:
        model: an open_clip CLIP model (eval mode), e.g. from :func:`load_clip_model`.
        batch_size: crops per forward pass.
        fp16_round_trip: round embeddings through fp16 like the official (fp16) pipeline.
    """

    def __init__(self, model, batch_size: int = 64, fp16_round_trip: bool = True):
        self.model = model
        self.batch_size = int(batch_size)
        self.fp16_round_trip = fp16_round_trip
        self.size, self.mean, self.std = preprocess_config(model)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model.visual, "proj", None)
        if proj is not None:
            return int(proj.shape[1])
        return int(self.model.visual.output_dim)

    def encode_crops(self, crops: Tensor) -> Tensor:
        """Crops [M, 3, S, S] in [0, 1] -> unit embeddings [M, E] float32 (CPU)."""
        out = []
        with torch.no_grad():
            for start in range(0, crops.shape[0], self.batch_size):
                batch = model_inputs(crops[start : start + self.batch_size], self.size, self.mean, self.std)
                embeds = F.normalize(self.model.encode_image(batch.to(self.device, self.dtype)).float(), dim=-1)
                if self.fp16_round_trip:
                    embeds = embeds.half().float()
                out.append(embeds.cpu())
        if not out:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(out)

    def encode_masks(
        self, image: np.ndarray | Tensor, masks: Sequence[np.ndarray], cache: dict | None = None
    ) -> Tensor:
        """Unit embeddings of the masks of one image. [M, E] float32

        Args:
            image: [H, W, 3] uint8 or float in [0, 1].
            masks: each [H, W] bool, non-empty.
            cache: optional dict shared across calls for the *same image*: identical masks (e.g. a
                partless object that is its own part) are encoded once.
        """
        keys = [np.packbits(np.asarray(m, dtype=bool)).tobytes() for m in masks]
        cache = {} if cache is None else cache
        first: dict[bytes, int] = {}
        for index, key in enumerate(keys):
            if key not in cache and key not in first:
                first[key] = index
        if first:
            crops = mask_crops(image, [masks[i] for i in first.values()])
            for key, embed in zip(first, self.encode_crops(crops)):
                cache[key] = embed
        if not keys:
            return torch.zeros(0, self.embed_dim)
        return torch.stack([cache[key] for key in keys])
