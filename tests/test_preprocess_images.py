"""The official image-height cap of the preprocessing (gags-method.md §2.7): bilinear, no antialiasing."""

import numpy as np
from PIL import Image

from gags_viewer.preprocess.pipeline import capped_size, read_image
from gags_viewer.preprocess.run import processing_size


def test_tall_images_are_resized_to_the_cap(tmp_path):
    ramp = np.tile((np.arange(60) * 4).astype(np.uint8)[:, None, None], (1, 30, 3))  # 60 rows, 30 columns
    path = tmp_path / "tall.png"
    Image.fromarray(ramp).save(path)
    out = read_image(path, max_height=30)
    assert out.shape == (30, 15, 3) and processing_size(path, 30) == (15, 30)
    # exact factor 2 with half-pixel centres (cv2.INTER_LINEAR): each row is the mean of two source rows
    np.testing.assert_array_equal(out[:, 0, 0], (np.arange(30) * 8 + 2).astype(np.uint8))
    assert np.array_equal(read_image(path, max_height=60), ramp) and np.array_equal(read_image(path), ramp)


def test_capped_size_follows_the_official_scale_arithmetic(tmp_path):
    # official: scale = H / 1080, size (int(W / scale), int(H / scale)); float division lands under 1080 for some H
    assert capped_size(1920, 1080, 1080) == (1920, 1080) and capped_size(4000, 3000, 1080) == (1440, 1080)
    assert capped_size(7, 2185, 1080) == (int(7 / (2185 / 1080)), 1079)
    path = tmp_path / "odd.png"
    Image.fromarray(np.zeros((2185, 7, 3), np.uint8)).save(path)
    assert read_image(path, 1080).shape == (1079, 3, 3) and processing_size(path, 1080) == (3, 1079)
