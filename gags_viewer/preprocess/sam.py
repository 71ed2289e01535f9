"""A SAM mask source on the stock ``segment-anything`` package (gags-method.md §2.4-2.6).

Every prompt point goes through SAM's prompt decoder with three mask outputs, in batches on one image
embedding. Output 0, 1, 2 of each prompt are the ``s`` (subpart), ``m`` (part) and ``l`` (whole)
candidates; the ``default`` level pools all of them (prompt-major). Each level is then filtered on its
own by :mod:`gags_viewer.preprocess.mask_filters` (predicted IoU, stability, box NMS, small regions,
mask NMS), as LangSplat's SAM fork and GAGS's ``masks_update`` do, without vendoring the fork.

On CUDA the networks run under fp16 autocast; thresholds and NMS use float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gags_viewer.preprocess.mask_filters import (
    MaskFilterConfig,
    box_nms,
    mask_boxes,
    mask_nms,
    pack_masks,
    remove_small_regions,
    unpack_masks,
)
from gags_viewer.preprocess.masks import ALL_LEVELS, LEVELS, LevelMasks


@dataclass
class SamConfig:
    """How prompts go through SAM and how its masks are filtered."""

    points_per_batch: int = 64
    """prompts per decoder batch (each gives 3 full-resolution masks)."""
    crop_layers: int = 0
    """SAM's ``crop_n_layers``: 0 prompts the whole image (GAGS); 1 also each of 2×2 overlapping crops, with
    the same normalised prompts in every crop (LangSplat's grid baseline, ``crop_n_points_downscale_factor=1``)."""
    crop_overlap_ratio: float = 512 / 1500
    """SAM's default overlap of neighbouring crops, as a fraction of the image's short side."""
    filters: MaskFilterConfig = field(default_factory=MaskFilterConfig)


@dataclass
class Candidates:
    """SAM masks that passed the predicted-IoU and stability thresholds, kept bit-packed: thousands of
    full-resolution candidates (1.5 MB each as bool at 1440×1080, 194 kB packed) stay on the device.

    Attributes:
        packed: the masks (logits > 0), :func:`pack_masks` layout. [C, ceil(H * W / 8)] uint8
        size: (H, W) of the masks.
        iou: predicted IoU. [C]
        stability: stability score. [C]
        output: which of the 3 outputs (0 = s, 1 = m, 2 = l). [C] int64
        boxes: XYXY inclusive pixel bounds of the (non-empty) masks. [C, 4] float32
        crop: index of the crop the mask comes from (0 = the whole image). [C] int64
        crop_area: pixel area of that crop. [C] float32
    """

    packed: Tensor
    size: tuple[int, int]
    iou: Tensor
    stability: Tensor
    output: Tensor
    boxes: Tensor
    crop: Tensor
    crop_area: Tensor

    @classmethod
    def from_masks(cls, masks: Tensor, iou: Tensor, stability: Tensor, output: Tensor) -> Candidates:
        """Candidates of the whole image from masks [C, H, W] bool and their scores [C] (outputs [C] int64)."""
        count, height, width = masks.shape
        crop = torch.zeros(count, dtype=torch.int64, device=masks.device)
        area = torch.full((count,), float(height * width), device=masks.device)
        return cls(pack_masks(masks), (height, width), iou, stability, output, mask_boxes(masks), crop, area)

    @classmethod
    def cat(cls, parts: list[Candidates]) -> Candidates:
        """The candidates of several crops of one image, in order."""
        fields = ("packed", "iou", "stability", "output", "boxes", "crop", "crop_area")
        return cls(size=parts[0].size, **{name: torch.cat([getattr(p, name) for p in parts]) for name in fields})

    def __len__(self) -> int:
        return self.packed.shape[0]

    def masks(self, indices: Tensor) -> Tensor:
        """The masks at ``indices`` [K] int64. -> [K, H, W] bool"""
        return unpack_masks(self.packed[indices], self.size)


def network_precision(device: torch.device) -> torch.autocast:
    """fp16 autocast on CUDA (as the networks run there), plain float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def decode_prompts(predictor, coords: Tensor) -> tuple[Tensor, Tensor]:
    """SAM's prompt encoder + mask decoder for one batch of single-point prompts, three outputs each.

    Args:
        predictor: a ``SamPredictor`` with the image set.
        coords: prompts in the model's input frame (``predictor.transform.apply_coords``). [B, 2] float64

    Returns:
        (low-resolution logits [B * 3, 1, h, w], predicted IoU [B * 3]), prompt-major.
    """
    model = predictor.model
    labels = torch.ones(coords.shape[0], 1, dtype=torch.int64, device=coords.device)
    sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
    low_res, iou = model.mask_decoder(
        image_embeddings=predictor.features,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    return low_res.flatten(0, 1)[:, None], iou.flatten(0, 1)


def predict_candidates(
    predictor,
    points: np.ndarray,
    config: SamConfig,
    crop_box: tuple[int, int, int, int] | None = None,
    image_size: tuple[int, int] | None = None,
    crop_index: int = 0,
) -> Candidates:
    """Run every prompt with 3 outputs in batches on the predictor's image and keep the confident masks.

    Only masks above the predicted-IoU threshold are upsampled to the image size (SAM's
    ``postprocess_masks``) for the stability score and the binary mask: the others would be dropped anyway.
    Empty masks (possible only with a stability threshold of 0) are dropped. When the predictor holds a
    crop of the image, masks whose box reaches within 20 px of a crop edge that is no image edge are
    dropped (SAM's ``is_box_near_crop_edge``) and the rest are placed back in the whole image.

    Args:
        predictor: a ``SamPredictor`` with the image (or a crop of it) set.
        points: prompts in pixels (x, y) of the predictor's image. [P, 2]
        config: batching and thresholds.
        crop_box: (x0, y0, x1, y1) of the predictor's image inside the whole image; None: it is the whole image.
        image_size: (H, W) of the whole image (with ``crop_box``).
        crop_index: recorded in :attr:`Candidates.crop`.
    """
    from segment_anything.utils.amg import (
        calculate_stability_score,
        is_box_near_crop_edge,
        uncrop_boxes_xyxy,
        uncrop_masks,
    )

    device = predictor.device
    filters = config.filters
    height, width = image_size or predictor.original_size
    x0, y0, x1, y1 = crop_box or (0, 0, width, height)
    kept: dict[str, list[Tensor]] = {"packed": [], "iou": [], "stability": [], "output": [], "boxes": []}
    for start in range(0, len(points), config.points_per_batch):
        # float64 coordinates, as SamAutomaticMaskGenerator passes them (the prompt encoder casts after scaling)
        batch = np.asarray(points[start : start + config.points_per_batch], dtype=np.float64)
        coords = torch.as_tensor(predictor.transform.apply_coords(batch, predictor.original_size), device=device)
        with network_precision(device):
            low_res, iou = decode_prompts(predictor, coords)
        iou = iou.float()
        output = torch.arange(3, device=device).repeat(len(batch))
        confident = torch.nonzero(iou > filters.pred_iou_thresh).squeeze(1)
        logits = predictor.model.postprocess_masks(
            low_res[confident].float(), predictor.input_size, predictor.original_size
        )[:, 0]
        stability = calculate_stability_score(logits, 0.0, filters.stability_score_offset)
        masks = logits > 0
        keep = (stability >= filters.stability_score_thresh) & masks.flatten(1).any(dim=1)
        masks, stability, chosen = masks[keep], stability[keep], confident[keep]
        boxes = mask_boxes(masks)
        inside = ~is_box_near_crop_edge(boxes, [x0, y0, x1, y1], [0, 0, width, height])
        masks, boxes, stability, chosen = masks[inside], boxes[inside], stability[inside], chosen[inside]
        for key, value in (
            ("packed", pack_masks(uncrop_masks(masks, [x0, y0, x1, y1], height, width))),
            ("iou", iou[chosen]),
            ("stability", stability),
            ("output", output[chosen]),
            ("boxes", uncrop_boxes_xyxy(boxes, [x0, y0, x1, y1]).float()),
        ):
            kept[key].append(value)
    if not kept["packed"]:
        empty = torch.zeros(0, height, width, dtype=torch.bool, device=device)
        scores = torch.zeros(0, device=device)
        return Candidates.from_masks(empty, scores, scores, torch.zeros(0, dtype=torch.int64, device=device))
    count = sum(len(values) for values in kept["iou"])
    crop = torch.full((count,), crop_index, dtype=torch.int64, device=device)
    area = torch.full((count,), float((x1 - x0) * (y1 - y0)), device=device)
    return Candidates(
        size=(height, width), crop=crop, crop_area=area, **{key: torch.cat(values) for key, values in kept.items()}
    )


class SmallRegionCache:
    """Small-region cleanup (holes, then islands) of candidates, computed once per candidate across levels."""

    def __init__(self, candidates: Candidates, area: int):
        self.candidates, self.area = candidates, int(area)
        self.done: dict[int, tuple[Tensor, bool]] = {}

    def __call__(self, index: int) -> tuple[Tensor, bool]:
        """(cleaned mask [H, W] bool on the candidates' device, whether it is unchanged)."""
        if index not in self.done:
            mask = self.candidates.masks(torch.tensor([index], device=self.candidates.packed.device))[0]
            if self.area <= 0:
                self.done[index] = (mask, True)
            else:
                array = mask.cpu().numpy()
                array, holes = remove_small_regions(array, self.area, "holes")
                array, islands = remove_small_regions(array, self.area, "islands")
                self.done[index] = (torch.from_numpy(array).to(mask.device), not (holes or islands))
        return self.done[index]


def filter_level(
    candidates: Candidates, members: Tensor, cleanup: SmallRegionCache, filters: MaskFilterConfig
) -> list[np.ndarray]:
    """Box NMS per crop, box NMS across crops (masks of smaller crops first), small regions, box NMS, mask
    NMS of one level's candidates (``members`` [K] indices), in SamAutomaticMaskGenerator's order.

    Returns:
        The level's masks in painting order, each [H, W] bool.
    """
    boxes = candidates.boxes
    per_crop = [members[candidates.crop[members] == crop] for crop in torch.unique(candidates.crop[members])]
    order = torch.cat(
        [group[box_nms(boxes[group], candidates.iou[group], filters.box_nms_thresh)] for group in per_crop] or [members]
    )
    if len(per_crop) > 1:
        order = order[box_nms(boxes[order], 1.0 / candidates.crop_area[order], filters.crop_nms_thresh)]
    cleaned = [cleanup(int(i)) for i in order]
    masks = torch.stack([m for m, _ in cleaned]) if cleaned else candidates.masks(order)
    unchanged = torch.tensor([float(u) for _, u in cleaned], device=masks.device)
    second = box_nms(mask_boxes(masks), unchanged, filters.box_nms_thresh)
    masks, order = masks[second], order[second]
    nonempty = masks.flatten(1).any(dim=1)
    masks, order = masks[nonempty], order[nonempty]
    keep = mask_nms(masks, candidates.stability[order] * candidates.iou[order], filters)
    return [m for m in masks[keep].cpu().numpy()]


def split_levels(candidates: Candidates, filters: MaskFilterConfig) -> LevelMasks:
    """The four levels from SAM's candidates: outputs 0/1/2 as s/m/l, all pooled as default."""
    cleanup = SmallRegionCache(candidates, filters.min_mask_region_area)
    everything = torch.arange(len(candidates), device=candidates.packed.device)
    result = LevelMasks()
    for level in ALL_LEVELS:
        members = everything if level == "default" else everything[candidates.output == LEVELS.index(level)]
        setattr(result, level, filter_level(candidates, members, cleanup, filters))
    return result


class SamMaskSource:
    """The :class:`~gags_viewer.preprocess.masks.MaskSource` of GAGS: prompts -> SAM -> four filtered levels.

    Args:
        model: a ``segment_anything.modeling.Sam`` (e.g. from
            :func:`~gags_viewer.preprocess.sam_checkpoint.load_sam`).
        prompts: ``(image [H, W, 3] uint8, name) -> points [P, 2]`` normalised (x / W, y / H).
        config: batching and filter thresholds.
    """

    def __init__(self, model, prompts: Callable[[np.ndarray, str], np.ndarray], config: SamConfig | None = None):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(model)
        self.prompts = prompts
        self.config = config or SamConfig()

    def __call__(self, image: np.ndarray, name: str) -> LevelMasks:
        from segment_anything.utils.amg import generate_crop_boxes

        height, width = image.shape[:2]
        points = np.asarray(self.prompts(image, name), dtype=np.float64)
        device = self.predictor.device
        crops, _ = generate_crop_boxes((height, width), self.config.crop_layers, self.config.crop_overlap_ratio)
        parts = []
        with torch.no_grad():
            for index, (x0, y0, x1, y1) in enumerate(crops):
                with network_precision(device):
                    self.predictor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
                crop_points = points * np.array([x1 - x0, y1 - y0])
                crop_box = (x0, y0, x1, y1)
                parts.append(
                    predict_candidates(self.predictor, crop_points, self.config, crop_box, (height, width), index)
                )
        masks = split_levels(Candidates.cat(parts), self.config.filters)
        self.predictor.reset_image()
        return masks
