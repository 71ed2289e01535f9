"""The vectorised LERF-OVS protocol against direct loop implementations of its documented definitions."""

import numpy as np
import pytest

from gags_viewer.eval import protocol

SIZES = [(1, 1), (1, 9), (2, 2), (5, 7), (7, 7), (8, 9), (16, 15), (30, 41), (45, 31)]


def reflect101(p: int, n: int) -> int:
    """cv2 BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba), reflected as often as needed."""
    if n == 1:
        return 0
    while not 0 <= p < n:
        p = -p if p < 0 else 2 * (n - 1) - p
    return p


def loop_box30(r: np.ndarray) -> np.ndarray:
    """cv2.filter2D(r, -1, ones((30, 30)) / 900): anchor (15, 15), so rows i-15 .. i+14, reflect-101."""
    h, w = r.shape
    out = np.zeros((h, w))
    for i in range(h):
        rows = [reflect101(i + u, h) for u in range(-15, 15)]
        for j in range(w):
            cols = [reflect101(j + v, w) for v in range(-15, 15)]
            total = 0.0
            for y in rows:
                total += r[y, cols].astype(np.float64).sum()
            out[i, j] = total / 900.0
    return out


def loop_majority(mask: np.ndarray) -> np.ndarray:
    """eval/utils.py::smooth as documented: window rows [max(0,i-3), min(i+4, H-1)) and likewise for
    columns; the mode with ties to 0 (an empty window gives 0)."""
    h, w = mask.shape
    out = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            ones = zeros = 0
            for y in range(max(0, i - 3), min(i + 4, h - 1)):
                for x in range(max(0, j - 3), min(j + 4, w - 1)):
                    if mask[y, x]:
                        ones += 1
                    else:
                        zeros += 1
            out[i, j] = ones > zeros
    return out


@pytest.mark.parametrize("shape", SIZES)
def test_box_filter_equals_loop(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    r = rng.random(shape).astype(np.float32)
    np.testing.assert_allclose(protocol.box_filter(r), loop_box30(r), rtol=0, atol=1e-12)


def test_box_filter_anchor_and_reflection():
    # An impulse at row 30 reaches outputs 16..45 (15 before, 14 after the anchor), scaled by 1/900.
    r = np.zeros((60, 60))
    r[30, 30] = 1.0
    out = protocol.box_filter(r)
    rows, cols = np.nonzero(out > 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (16, 45, 16, 45)
    assert out[16, 16] == pytest.approx(1 / 900)
    # An impulse on the first row is reflected to row 1 as well (reflect-101 does not repeat the edge).
    edge = np.zeros((40, 40))
    edge[0, 20] = 1.0
    out = protocol.box_filter(edge)
    assert out[0, 20] == pytest.approx(1 / 900)


def test_box_filter_batched():
    rng = np.random.default_rng(3)
    r = rng.random((3, 12, 17))
    batched = protocol.box_filter(r)
    for k in range(3):
        np.testing.assert_allclose(batched[k], protocol.box_filter(r[k]), rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", SIZES)
def test_smoothing_equals_loop(shape):
    rng = np.random.default_rng(7 + shape[0] + 13 * shape[1])
    r = rng.random(shape)
    np.testing.assert_allclose(protocol.smooth_relevancy(r), 0.5 * (r + loop_box30(r)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SIZES + [(3, 40), (60, 4)])
@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
def test_majority_filter_equals_loop(shape, density):
    rng = np.random.default_rng(int(density * 10) + shape[0] * 31 + shape[1])
    mask = rng.random(shape) < density
    np.testing.assert_array_equal(protocol.majority_filter(mask), loop_majority(mask))


def test_majority_filter_ties_go_to_zero():
    # On a checkerboard every window with an even number of cells holds as many ones as zeros.
    mask = (np.indices((10, 10)).sum(axis=0) % 2).astype(bool)
    out = protocol.majority_filter(mask)
    np.testing.assert_array_equal(out, loop_majority(mask))
    # Pixel (0, 0): window rows 0..3, cols 0..3 = 16 cells, 8 ones -> tie -> 0.
    assert not out[0, 0]


def test_majority_filter_far_border_is_off_by_one():
    # Only the last row is set: it never votes, so everything is 0 -- even the last row itself.
    mask = np.zeros((9, 9), dtype=bool)
    mask[-1] = True
    assert not protocol.majority_filter(mask).any()
    # The first row does vote: a full first four rows make the top rows 1.
    mask = np.zeros((9, 9), dtype=bool)
    mask[:4] = True
    out = protocol.majority_filter(mask)
    assert out[0].all() and out[1].all()
    np.testing.assert_array_equal(out, loop_majority(mask))


def test_normalize_clip_by_hand():
    r = np.array([[0.0, 0.5], [0.75, 1.0]])
    o = protocol.normalize_clip(r)
    # (r - 0) / (1 + 1e-9), then 2x - 1, clipped.
    expected = np.clip(2 * r / (1 + 1e-9) - 1, 0, 1)
    np.testing.assert_allclose(o, expected)
    assert o[0, 0] == 0 and o[0, 1] == 0 and o[1, 0] == pytest.approx(0.5)
    # A constant map normalises to 0 everywhere (the 1e-9 keeps it finite).
    assert not protocol.normalize_clip(np.full((4, 4), 0.3)).any()


def test_predict_mask_equals_loop_composition():
    rng = np.random.default_rng(11)
    r = rng.random((37, 29))
    # A bright blob so that the mask is not empty.
    r[10:25, 8:20] += 1.5
    smoothed = 0.5 * (r + loop_box30(r))
    o = (smoothed - smoothed.min()) / ((smoothed - smoothed.min()).max() + 1e-9)
    o = np.clip(2 * o - 1, 0, 1)
    expected = loop_majority(o > 0.4)
    got = protocol.predict_mask(r)
    np.testing.assert_array_equal(got, expected)
    assert got.any()


def test_iou_by_hand():
    pred = np.zeros((6, 8), dtype=bool)
    gt = np.zeros((6, 8), dtype=bool)
    pred[1:4, 1:5] = True  # 12 px
    gt[2:5, 3:7] = True  # 12 px, overlap rows 2..3 x cols 3..4 = 4 px
    assert protocol.iou(pred, gt) == pytest.approx(4 / 20)
    assert protocol.iou(gt, gt) == 1.0
    assert protocol.iou(pred, np.zeros_like(gt)) == 0.0
    assert protocol.iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    with pytest.raises(ValueError):
        protocol.iou(pred, gt[:5])


def block_map():
    """60x60 zeros with a 30x30 block of ones at rows 10..39, cols 20..49: box30 peaks at (x=35, y=25) only."""
    r = np.zeros((60, 60))
    r[10:40, 20:50] = 1.0
    return r


def test_localization_peak_by_hand():
    loc = protocol.localize(block_map(), [[30, 20, 40, 30]])
    np.testing.assert_array_equal(loc.peaks, [[35, 25]])
    assert loc.score == pytest.approx(1.0)
    assert loc.hit


@pytest.mark.parametrize(
    "boxes, hit",
    [
        ([[35, 25, 35, 25]], True),  # a one-pixel box on the peak: inclusive
        ([[40, 30, 30, 20]], True),  # corners given in reverse order
        ([[36, 20, 50, 30]], False),  # one column right of the peak
        ([[0, 0, 10, 10], [35.0, 0, 36.5, 25.0]], True),  # the second box holds it (bottom edge inclusive)
        ([[0, 0, 10, 10], [30, 26, 40, 40]], False),
    ],
)
def test_localization_boxes(boxes, hit):
    assert protocol.localize(block_map(), boxes).hit is hit


def test_localization_uses_all_tied_peaks():
    r = np.zeros((60, 120))
    r[10:40, 5:35] = 1.0  # peak at x=20, y=25
    r[10:40, 80:110] = 1.0  # peak at x=95, y=25
    loc = protocol.localize(r, [[90, 20, 100, 30]])
    assert sorted(map(tuple, loc.peaks.tolist())) == [(20, 25), (95, 25)]
    assert loc.hit


def test_localization_ignores_half_mixing():
    # The raw map's own maximum is a single bright pixel; box30 prefers the broad plateau.
    r = np.zeros((60, 60))
    r[10:40, 20:50] = 0.5
    r[55, 5] = 50.0  # 50/900 < 0.5 after box30
    loc = protocol.localize(r, [[35, 25, 35, 25]])
    np.testing.assert_array_equal(loc.peaks, [[35, 25]])
