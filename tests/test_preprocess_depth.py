"""Minimum observed depth (gags-method.md §2.1) against a direct per-Gaussian, per-view loop."""

import math

import numpy as np
import torch

from gags_viewer.preprocess.depth import depth_sample_map, minimum_observed_depth, render_depth
from gags_viewer.train.synthetic import make_synthetic_scene


def loop_reference(means, cameras, depths, tolerance=0.25):
    """The official rules written out per Gaussian and per view (doc §2.1), in float64."""
    means = means.double().numpy()
    n = len(means)
    best = np.full(n, math.inf)
    hits = []
    for camera, depth in zip(cameras, depths):
        w2c = camera.world_to_camera.double().numpy()
        K = camera.K.double().numpy()
        depth = depth.double().numpy()
        view_hits = []
        for i in range(n):
            x, y, z = w2c[:3, :3] @ means[i] + w2c[:3, 3]
            if z == 0:
                continue
            u = round(K[0, 0] * x / z + K[0, 2])
            v = round(K[1, 1] * y / z + K[1, 2])
            if not (0 <= u < camera.width and 0 <= v < camera.height):
                continue
            d = depth[v, u]
            if abs(d - z) <= tolerance * d:
                best[i] = min(best[i], d)
                view_hits.append((i, v, u))
        hits.append(view_hits)
    maps = []
    for camera, view_hits in zip(cameras, hits):
        sparse = np.zeros((camera.height, camera.width))
        for i, v, u in view_hits:  # in Gaussian order: the last write wins
            sparse[v, u] = best[i]
        maps.append(sparse)
    return best, maps


def test_minimum_observed_depth_equals_a_direct_loop():
    scene = make_synthetic_scene(num_objects=2, gaussians_per_object=40, num_views=3, width=40, height=30)
    depths = [render_depth(scene.field, camera, backend="torch") for camera in scene.cameras]
    # centres the renders did not include: deep below the objects (hidden) and far off to the side
    means = torch.cat([scene.field.means, torch.tensor([[0.0, 0.0, -5.0], [0.3, 0.0, -8.0], [50.0, 50.0, 0.0]])])
    result = minimum_observed_depth(means, scene.cameras, depths, chunk=17)
    expected, expected_maps = loop_reference(means, scene.cameras, depths)
    finite = np.isfinite(expected)
    assert finite.sum() > 20 and not finite[-3:].any()
    np.testing.assert_array_equal(np.isfinite(result.numpy()), finite)
    # the minimum is one of the rendered depths, copied: float32 equality
    np.testing.assert_array_equal(result.numpy()[finite], expected[finite].astype(np.float32))
    for camera, depth, expected_map in zip(scene.cameras, depths, expected_maps):
        sparse = depth_sample_map(means, camera, depth, result, chunk=13)
        np.testing.assert_array_equal(sparse.numpy(), expected_map.astype(np.float32))


def test_rounding_and_tolerance_edges():
    from gags_viewer.render.camera import Camera, intrinsics

    camera = Camera(torch.eye(4), intrinsics(10.0, 10.0, 8, 6), 8, 6)
    depth = torch.full((6, 8), 4.0)
    means = torch.tensor(
        [
            [0.0, 0.0, 4.0],  # centre pixel (3, 4): visible
            [0.0, 0.0, 5.0],  # |4 - 5| = 1.0 <= 0.25 * 4: visible (tolerance edge)
            [0.0, 0.0, 5.01],  # just outside the tolerance
            [0.0, 0.0, -4.0],  # behind the camera: fails the depth test
            [2.0, 0.0, 4.0],  # u = round(5 + 4) = 9: off-screen
        ]
    )
    result = minimum_observed_depth(means, [camera], [depth])
    assert torch.isfinite(result).tolist() == [True, True, False, False, False]
    sparse = depth_sample_map(means, camera, depth, result)
    assert sparse[3, 4] == 4.0 and int((sparse != 0).sum()) == 1
