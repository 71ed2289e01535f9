"""Masked, zero-padded square crops (gags-method.md §2.7) and CLIP embeddings per mask."""

import numpy as np
import pytest
import torch

from gags_viewer.preprocess.clip_features import ClipImageEncoder, load_clip_model, mask_box, mask_crops, square_crop
from tests.tiny_clip import make_tiny_clip


def test_mask_box_is_inclusive():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert mask_box(mask) == (3, 2, 8, 4)
    with pytest.raises(ValueError):
        mask_box(np.zeros((3, 3), dtype=bool))


def test_square_crop_zeroes_outside_and_centres_the_box():
    image = torch.rand(10, 12, 3) * 0.5 + 0.5  # never zero
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True  # 3 rows x 6 columns
    mask[2, 3] = False  # a hole inside the box: zeroed too
    crop = square_crop(image, torch.from_numpy(mask), mask_box(mask))
    assert crop.shape == (6, 6, 3)
    # 3 rows centred in 6: one padding row on top ((6 - 3) // 2), two below
    assert (crop[0] == 0).all() and (crop[4:] == 0).all()
    torch.testing.assert_close(crop[1:4, :, :][torch.from_numpy(mask[2:5, 3:9])], image[torch.from_numpy(mask)])
    assert (crop[1, 0] == 0).all()


def test_mask_crops_are_224_squares_in_unit_range():
    image = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    masks = [np.zeros((30, 40), dtype=bool) for _ in range(2)]
    masks[0][5:10, 5:35] = True
    masks[1][0:30, 20:22] = True
    crops = mask_crops(image, masks)
    assert crops.shape == (2, 3, 224, 224)
    assert crops.min() >= 0 and crops.max() <= 1
    # the wide mask is padded top and bottom: the first rows of its crop are black
    assert crops[0, :, :50].abs().max() == 0
    assert crops[1, :, :, :80].abs().max() == 0


def test_clip_image_encoder_embeds_each_mask(tmp_path):
    spec = make_tiny_clip(tmp_path)
    encoder = ClipImageEncoder(load_clip_model(spec), batch_size=2)
    assert encoder.embed_dim == 512 and encoder.size == 32
    image = (np.random.default_rng(1).random((24, 32, 3)) * 255).astype(np.uint8)
    a = np.zeros((24, 32), dtype=bool)
    a[2:10, 2:10] = True
    b = np.zeros((24, 32), dtype=bool)
    b[12:20, 4:30] = True
    cache: dict = {}
    emb = encoder.encode_masks(image, [a, b, a], cache)
    assert emb.shape == (3, 512)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), atol=2e-3, rtol=0)
    assert len(cache) == 2  # the repeated mask is encoded once
    torch.testing.assert_close(emb[0], emb[2])
    assert (emb[0] - emb[1]).abs().max() > 1e-3
    # values carry fp16 precision, like the official features
    torch.testing.assert_close(emb, emb.half().float(), atol=0, rtol=0)
