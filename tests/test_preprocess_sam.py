"""The SAM mask source: official mask-NMS rules and level split on constructed masks, SAM loading, a tiny SAM.

The reference rules here are written from gags-method.md §2.4-2.5, as a direct loop over masks and pairs.
"""

import numpy as np
import pytest
import torch

from gags_viewer.preprocess.mask_filters import (
    MaskFilterConfig,
    mask_nms,
    pack_masks,
    remove_small_regions,
    unpack_masks,
)
from gags_viewer.preprocess.sam import Candidates, SamConfig, SamMaskSource, split_levels
from gags_viewer.preprocess.sam_checkpoint import SamCheckpointError, load_sam
from tests.tiny_sam import make_tiny_sam, save_tiny_sam


def rules_from_the_doc(masks, scores, iou_thr=0.8, score_thr=0.7):
    """§2.5: sort by score; drop j if a higher-scored mask has IoU > 0.8 with it; drop if score <= 0.7;
    drop A if A lies >= 85 % inside some B and covers < 50 % of B. Survivors in original order."""
    masks = [np.asarray(m, bool) for m in masks]
    order = sorted(range(len(masks)), key=lambda i: -scores[i])
    kept = []
    for rank, j in enumerate(order):
        drop = scores[j] <= score_thr
        for i in order[:rank]:
            inter = np.logical_and(masks[i], masks[j]).sum()
            union = np.logical_or(masks[i], masks[j]).sum()
            drop |= inter / union > iou_thr
        for b in range(len(masks)):
            if b != j:
                inter = np.logical_and(masks[j], masks[b]).sum()
                drop |= inter / masks[j].sum() >= 0.85 and inter / masks[b].sum() < 0.5
        if not drop:
            kept.append(j)
    return sorted(kept)


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_nms_constructed_cases():
    h = w = 40
    masks = [
        box(h, w, 0, 20, 0, 20),  # 0 A, score 0.90
        box(h, w, 0, 20, 1, 20),  # 1 A', IoU 0.95 with A, higher score 0.95 -> A is dropped
        box(h, w, 2, 6, 2, 6),  # 2 tiny, inside A and A', covers < 50 %: dropped although best score
        box(h, w, 25, 35, 25, 35),  # 3 separate, score 0.65 <= 0.7: dropped
        box(h, w, 25, 40, 0, 15),  # 4 separate, kept
        box(h, w, 0, 15, 0, 15),  # 5 inside A' but covers >= 50 % of it (and IoU 0.59): kept
    ]
    scores = [0.90, 0.95, 0.99, 0.65, 0.8, 0.75]
    expected = rules_from_the_doc(masks, scores)
    assert expected == [1, 4, 5]
    got = mask_nms(torch.from_numpy(np.stack(masks)), torch.tensor(scores))
    assert got.tolist() == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_nms_matches_the_rules_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    masks = []
    for _ in range(40):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        masks.append(box(h, w, y0, y0 + rng.integers(2, h - y0 + 1), x0, x0 + rng.integers(2, w - x0 + 1)))
    masks += [m.copy() for m in masks[:5]]  # exact duplicates: equal IoU 1, the lower-ranked one goes
    scores = np.round(rng.uniform(0.6, 1.0, len(masks)), 2)  # rounded: ties, resolved by original order
    expected = rules_from_the_doc(masks, list(scores))
    got = mask_nms(torch.from_numpy(np.stack(masks)), torch.from_numpy(scores).float())
    assert got.tolist() == expected


def test_remove_small_regions_holes_and_islands():
    mask = box(30, 30, 5, 25, 5, 25)
    mask[10:12, 10:12] = False  # a 4-px hole
    mask[0:2, 0:2] = True  # a 4-px island (not 8-connected to the square)
    filled, changed = remove_small_regions(mask, 10, "holes")
    assert changed and filled[10:12, 10:12].all() and filled[0:2, 0:2].all()
    cleaned, changed = remove_small_regions(filled, 10, "islands")
    assert changed and not cleaned[0:2, 0:2].any() and cleaned[5:25, 5:25].all()
    assert not remove_small_regions(cleaned, 10, "islands")[1]
    # every island small: the largest is kept
    specks = np.zeros((10, 10), bool)
    specks[0, 0] = specks[5, 5] = specks[5, 6] = True
    kept, _ = remove_small_regions(specks, 10, "islands")
    assert kept.sum() == 2 and kept[5, 5] and kept[5, 6]


def test_level_split_takes_outputs_as_subpart_part_whole():
    h, w = 40, 40
    # prompt 0: s = small box, m = medium, l = large; prompt 1: the same s (duplicate), other m, same l
    masks = [
        box(h, w, 0, 12, 0, 12),
        box(h, w, 0, 20, 0, 20),
        box(h, w, 0, 40, 0, 40),
        box(h, w, 0, 12, 0, 12),
        box(h, w, 20, 40, 20, 40),
        box(h, w, 0, 40, 0, 40),
    ]
    masks[1][30:32, 30:32] = True  # a 4-px island of the part mask, removed by the small-region filter
    candidates = Candidates.from_masks(
        masks=torch.from_numpy(np.stack(masks)),
        iou=torch.tensor([0.90, 0.95, 0.99, 0.91, 0.93, 0.97]),
        stability=torch.full((6,), 0.95),
        output=torch.tensor([0, 1, 2, 0, 1, 2]),
    )
    filters = MaskFilterConfig(min_mask_region_area=10)
    levels = split_levels(candidates, filters)
    as_boxes = {
        name: [tuple(np.argwhere(m).min(0)) + tuple(np.argwhere(m).max(0)) for m in levels.level(name)]
        for name in ("default", "s", "m", "l")
    }
    # s: the duplicate small box goes (box NMS keeps the higher predicted IoU), one mask
    assert as_boxes["s"] == [(0, 0, 11, 11)]
    # m: both parts, the island removed; the second box NMS puts masks the cleanup left unchanged first,
    # so the unchanged part (predicted IoU 0.93) is painted before the cleaned one (0.95)
    assert as_boxes["m"] == [(20, 20, 39, 39), (0, 0, 19, 19)]
    assert not levels.m[1][30:32, 30:32].any()
    # l: one whole
    assert as_boxes["l"] == [(0, 0, 39, 39)]
    # default pools all outputs: the small box lies inside the whole and covers < 50 % -> nesting rule drops it;
    # the 20x20 part covers 25 % of the whole: dropped too; the whole stays
    assert as_boxes["default"] == [(0, 0, 39, 39)]


def test_load_sam_reads_the_architecture_and_checks_the_file(tmp_path):
    path = save_tiny_sam(tmp_path / "tiny.pth")
    model = load_sam(path)
    reference = make_tiny_sam()
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert model.image_encoder.img_size == 256 and len(model.image_encoder.blocks) == 2
    with pytest.raises(SamCheckpointError, match="dl.fbaipublicfiles.com"):
        load_sam(tmp_path / "missing.pth")
    with pytest.raises(SamCheckpointError, match="not SAM vit_h"):
        load_sam(path, "vit_h")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SamCheckpointError, match="not a readable SAM checkpoint"):
        load_sam(tmp_path / "junk.pth")


def test_tiny_sam_source_gives_four_levels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    prompts = np.array([[0.25, 0.25], [0.75, 0.5], [0.5, 0.75]])
    source = SamMaskSource(make_tiny_sam(), lambda im, name: prompts)
    levels = source(image, "a.png")
    for name in ("default", "s", "m", "l"):
        assert all(m.shape == (48, 64) and m.dtype == bool and m.any() for m in levels.level(name))
    assert levels.s and levels.m and levels.l
    # deterministic
    again = source(image, "a.png")
    assert all(np.array_equal(a, b) for a, b in zip(levels.default, again.default))


def test_candidates_equal_the_stock_predictor_with_the_thresholds():
    """Upsampling only the confident masks gives what SamPredictor.predict_torch + thresholds gives."""
    from segment_anything import SamPredictor
    from segment_anything.utils.amg import calculate_stability_score

    from gags_viewer.preprocess.sam import predict_candidates

    model = make_tiny_sam(seed=3)
    with torch.no_grad():  # spread the predicted IoUs around the 0.7 threshold
        model.mask_decoder.iou_prediction_head.layers[-1].weight.normal_(0.0, 0.5)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    points = rng.uniform(0, 1, (10, 2)) * np.array([56, 40])
    predictor = SamPredictor(model)
    predictor.set_image(image)
    with torch.no_grad():
        got = predict_candidates(predictor, points, SamConfig(points_per_batch=4))
        coords = torch.as_tensor(predictor.transform.apply_coords(points, predictor.original_size))  # float64, as AMG
        logits, iou, _ = predictor.predict_torch(
            coords[:, None], torch.ones(10, 1), multimask_output=True, return_logits=True
        )
    logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
    keep = (iou > 0.7) & (calculate_stability_score(logits, 0.0, 1.0) >= 0.85)
    assert 0 < int(keep.sum()) < len(keep)
    assert torch.equal(got.masks(torch.arange(len(got))), logits[keep] > 0)
    assert torch.equal(got.output, torch.arange(3).repeat(10)[keep])
    torch.testing.assert_close(got.iou, iou[keep])


@pytest.mark.gpu
def test_tiny_sam_source_on_cuda_in_fp16():
    """The CUDA path (fp16 autocast) runs and gives non-empty, image-sized masks at every level."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    prompts = rng.uniform(0, 1, (50, 2))
    levels = SamMaskSource(make_tiny_sam().cuda(), lambda im, name: prompts)(image, "a.png")
    assert levels.s and levels.m and levels.l and levels.default
    assert all(m.shape == (48, 64) and m.any() for name in ("default", "s", "m", "l") for m in levels.level(name))


def full_image_cleanup(mask, area, mode):
    """SAM's rule on the whole image (doc §2.4), for comparison: 8-connected components of the mask
    (islands) or of its complement (holes); components under ``area`` pixels are removed / filled."""
    from scipy import ndimage

    holes = mode == "holes"
    labels, count = ndimage.label(~mask if holes else mask, structure=np.ones((3, 3), bool))
    sizes = np.array([(labels == k).sum() for k in range(1, count + 1)])
    if count == 0 or not (sizes < area).any():
        return mask, False
    if holes:
        return mask | np.isin(labels, 1 + np.flatnonzero(sizes < area)), True
    big = 1 + np.flatnonzero(sizes >= area)
    return np.isin(labels, big if big.size else [1 + int(np.argmax(sizes))]), True


@pytest.mark.parametrize("seed", range(6))
def test_small_region_cleanup_in_the_box_equals_the_whole_image(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((30, 40)) < 0.55
    if seed % 2:  # a mask away from the borders
        mask[:4], mask[-4:], mask[:, :5], mask[:, -3:] = False, False, False, False
    for mode in ("holes", "islands"):
        got, changed = remove_small_regions(mask, 6, mode)
        expected, expected_changed = full_image_cleanup(mask, 6, mode)
        assert changed == expected_changed and np.array_equal(got, expected), mode


@pytest.mark.parametrize("rows, cols", [((2, 30), (0, 40)), ((0, 27), (3, 40)), ((1, 29), (1, 39)), ((3, 26), (4, 35))])
def test_small_region_cleanup_of_background_outside_a_nearly_full_mask(rows, cols):
    """On a small image the background outside a mask can itself be under the area: SAM then fills it."""
    mask = np.zeros((30, 40), bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    mask[10:12, 10:12] = False
    for area in (50, 100, 200, 500):
        for mode in ("holes", "islands"):
            got, changed = remove_small_regions(mask, area, mode)
            expected, expected_changed = full_image_cleanup(mask, area, mode)
            assert changed == expected_changed and np.array_equal(got, expected), (area, mode)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 8), (7, 13)])
def test_packed_masks_unpack_to_the_same_masks(size):
    rng = np.random.default_rng(size[0] * 100 + size[1])
    masks = torch.from_numpy(rng.random((6,) + size) < 0.5)
    masks[0], masks[1] = True, False
    packed = pack_masks(masks)
    assert packed.dtype == torch.uint8 and packed.shape == (6, -(-size[0] * size[1] // 8))
    assert torch.equal(unpack_masks(packed, size), masks)
    # pixel (0, 0) is bit 0 of byte 0 (the empty-mask check of the level filter reads it)
    assert torch.equal((packed[:, 0] & 1).bool(), masks[:, 0, 0])
    assert torch.equal(unpack_masks(pack_masks(masks[:0]), size), masks[:0])


def test_a_sam_without_confident_masks_gives_empty_levels():
    source = SamMaskSource(make_tiny_sam(confident=False), lambda im, name: np.array([[0.5, 0.5], [0.2, 0.7]]))
    levels = source(np.zeros((40, 50, 3), np.uint8), "a.png")
    assert [len(levels.level(name)) for name in ("default", "s", "m", "l")] == [0, 0, 0, 0]


def disc_decoder(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in for SAM's prompt decoder with varied masks: per prompt, three discs of growing radius
    (s, m, l) around the point, each with a small hole and a small island, random sharpness (soft ones
    fail the stability score) and random predicted IoU, all drawn from the point's rounded position.

    coords: prompts in the 256-px input frame [B, 2] -> (low-res logits [B, 3, 256, 256], IoU [B, 3]).
    """
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    logits, ious = [], []
    for x, y in coords.tolist():
        g = torch.Generator().manual_seed(round(x * 10) * 10000 + round(y * 10))
        levels = []
        for radius in (12.0, 30.0, 70.0):
            r = radius * (0.7 + 0.6 * torch.rand((), generator=g))
            sharpness = 0.5 + 20 * torch.rand((), generator=g)
            logit = sharpness * (r - ((xx - x) ** 2 + (yy - y) ** 2).sqrt())
            logit = torch.where((xx - x - 0.3 * r) ** 2 + (yy - y) ** 2 < (0.15 * r) ** 2, -5 * sharpness, logit)
            logit = torch.where((xx - x + 1.6 * r) ** 2 + (yy - y) ** 2 < 9.0, 5 * sharpness, logit)
            levels.append(logit)
        logits.append(torch.stack(levels))
        ious.append(0.55 + 0.45 * torch.rand(3, generator=g))
    return torch.stack(logits), torch.stack(ious)


@pytest.mark.parametrize("seed, crop_layers", [(0, 0), (1, 0), (2, 1)])
def test_filters_equal_the_stock_automatic_mask_generator(seed, crop_layers, monkeypatch):
    """With the mask NMS switched off, the pooled default level is exactly what segment-anything's own
    SamAutomaticMaskGenerator returns for the same prompts and the official settings (§2.4): predicted IoU,
    stability, box NMS, small regions and the second box NMS, in the same order; with one crop layer
    (LangSplat's grid baseline) also the crops, the crop-edge filter and the NMS across crops. The decoder
    is replaced by :func:`disc_decoder` in both, since a random-weight SAM gives one mask for every prompt."""
    from segment_anything import SamAutomaticMaskGenerator

    import gags_viewer.preprocess.sam as sam

    model = make_tiny_sam()
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    points = rng.uniform(0, 1, (70, 2))
    generator = SamAutomaticMaskGenerator(
        model,
        points_per_side=None,
        point_grids=[points] * (crop_layers + 1),
        pred_iou_thresh=0.7,
        stability_score_thresh=0.85,
        box_nms_thresh=0.7,
        crop_n_layers=crop_layers,
        crop_n_points_downscale_factor=1,
        min_mask_region_area=100,
    )
    predictor = generator.predictor

    def predict_torch(point_coords, point_labels, multimask_output=True, return_logits=False, **_):
        low_res, iou = disc_decoder(point_coords[:, 0])
        masks = model.postprocess_masks(low_res, predictor.input_size, predictor.original_size)
        return (masks if return_logits else masks > 0), iou, low_res

    monkeypatch.setattr(predictor, "predict_torch", predict_torch)
    stock = [m["segmentation"] for m in generator.generate(image)]

    def decode(predictor, coords):
        low_res, iou = disc_decoder(coords)
        return low_res.flatten(0, 1)[:, None], iou.flatten(0, 1)

    monkeypatch.setattr(sam, "decode_prompts", decode)
    no_mask_nms = MaskFilterConfig(nms_iou_thresh=1.0, nms_score_thresh=-1.0, nms_inner_thresh=0.0)
    config = SamConfig(crop_layers=crop_layers, filters=no_mask_nms)
    levels = SamMaskSource(model, lambda im, name: points, config)(image, "a.png")
    assert len(stock) > 40 and all(levels.level(name) for name in ("s", "m", "l"))
    assert len(levels.default) == len(stock)
    assert all(np.array_equal(a, b) for a, b in zip(levels.default, stock))
