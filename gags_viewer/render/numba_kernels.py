"""Compiled kernels of the fast forward-only CPU rasterizer (numba; numpy arrays in and out).

Pipeline (driven by :func:`rasterize_projected`; :mod:`gags_viewer.render.numba_backend` wraps it):

0. ``project``: the formula-for-formula twin of :func:`gags_viewer.render.projection.project_gaussians`
   (that torch function defines the semantics; a test holds the two together).
1. ``_depth_rank``: front-to-back rank of the visible Gaussians (radii > 0), by a stable radix sort.
2. :func:`~gags_viewer.render.numba_composite.pack`: one record per visible Gaussian in depth order,
   its channels in the same order, and its tile rectangle.
3. ``_bin``: a parallel counting sort of (Gaussian, tile) pairs by tile. Each thread counts and then
   scatters a contiguous slice of the depth-ordered Gaussians, so every tile's list stays in depth order.
   A Gaussian goes to every 16x16 tile its ceil(3.33 sigma) box touches, as in gsplat.
4. :func:`~gags_viewer.render.numba_composite.runs`: tiles cut into runs the threads claim one at a time.
5. :func:`~gags_viewer.render.numba_composite.composite`: per-tile front-to-back compositing with
   gsplat's classic rules (see that module).

Stages below a size run on one thread (waking the thread pool costs more, and on a busy machine far
more). Kernels are cached on disk (:mod:`gags_viewer.render.numba_jit`). Constants that live in other
modules are passed as arguments, never read as globals: numba's cache only notices changes to this file.
"""

from __future__ import annotations

import contextlib
import time

import numba
import numpy as np
from numba import prange

from gags_viewer.render.numba_composite import (
    RECORD,
    RUNS_PER_WORKER,
    TILE_SIZE,
    aligned_empty,
    composite,
    pack,
    padded_channels,
    runs,
)
from gags_viewer.render.numba_jit import kernel as _kernel

# Below these sizes a stage runs on one thread (about a millisecond of work or less).
PARALLEL_MIN_GAUSSIANS = 20_000
_PARALLEL_MIN_WORK = 8_000  # (Gaussian, tile) pairs + pixels / 16


@_kernel(parallel=True)
def project(means, quats, scales, viewmat, K, width, height, near_plane, far_plane, eps_2d, radius_sigmas):
    """Per-Gaussian twin of :func:`gags_viewer.render.projection.project_gaussians` (float32).

    That torch function defines the semantics; this kernel repeats it formula for formula in one
    parallel loop (the torch version issues ~40 tensor ops, each a parallel region: slow at 300k and on
    busy machines). ``tests/test_render_numba.py`` holds the two together.

    Args:
        means [N, 3], quats [N, 4] (wxyz, normalised again here), scales [N, 3]: float32.
        viewmat [4, 4] world-to-camera, K [3, 3]: float32.
        near_plane, far_plane, eps_2d, radius_sigmas: the constants of :mod:`.projection` (arguments,
            not globals, so that numba's on-disk cache never keeps stale values of them).

    Returns:
        means2d [N, 2], conics [N, 3], depths [N] float32 and radii [N, 2] int32 (0 where culled).
    """
    n = means.shape[0]
    means2d = np.empty((n, 2), dtype=np.float32)
    conics = np.empty((n, 3), dtype=np.float32)
    depths = np.empty(n, dtype=np.float32)
    radii = np.empty((n, 2), dtype=np.int32)
    f32 = np.float32
    zero = f32(0.0)
    one = f32(1.0)
    two = f32(2.0)
    fx = f32(K[0, 0])
    fy = f32(K[1, 1])
    cx = f32(K[0, 2])
    cy = f32(K[1, 2])
    w = f32(width)
    h = f32(height)
    lim_x_pos = (w - cx) / fx + f32(0.3) * (f32(0.5 * width) / fx)
    lim_x_neg = cx / fx + f32(0.3) * (f32(0.5 * width) / fx)
    lim_y_pos = (h - cy) / fy + f32(0.3) * (f32(0.5 * height) / fy)
    lim_y_neg = cy / fy + f32(0.3) * (f32(0.5 * height) / fy)
    eps_z = f32(1e-12)
    eps_2d = f32(eps_2d)
    radius_sigmas = f32(radius_sigmas)
    near = f32(near_plane)
    far = f32(far_plane)
    for i in prange(n):
        # camera-space centre
        tx = viewmat[0, 0] * means[i, 0] + viewmat[0, 1] * means[i, 1] + viewmat[0, 2] * means[i, 2] + viewmat[0, 3]
        ty = viewmat[1, 0] * means[i, 0] + viewmat[1, 1] * means[i, 1] + viewmat[1, 2] * means[i, 2] + viewmat[1, 3]
        tz = viewmat[2, 0] * means[i, 0] + viewmat[2, 1] * means[i, 1] + viewmat[2, 2] * means[i, 2] + viewmat[2, 3]
        # rotation of the normalised quaternion, columns scaled by the scales: M = R(q) S
        qw = quats[i, 0]
        qx = quats[i, 1]
        qy = quats[i, 2]
        qz = quats[i, 3]
        norm = max(np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), f32(1e-12))
        qw, qx, qy, qz = qw / norm, qx / norm, qy / norm, qz / norm
        r00 = one - two * (qy * qy + qz * qz)
        r01 = two * (qx * qy - qw * qz)
        r02 = two * (qx * qz + qw * qy)
        r10 = two * (qx * qy + qw * qz)
        r11 = one - two * (qx * qx + qz * qz)
        r12 = two * (qy * qz - qw * qx)
        r20 = two * (qx * qz - qw * qy)
        r21 = two * (qy * qz + qw * qx)
        r22 = one - two * (qx * qx + qy * qy)
        # R S (columns scaled), then m = W (R S) with W the view rotation; cov_cam = m m^T
        s0 = scales[i, 0]
        s1 = scales[i, 1]
        s2 = scales[i, 2]
        a00, a01, a02 = r00 * s0, r01 * s1, r02 * s2
        a10, a11, a12 = r10 * s0, r11 * s1, r12 * s2
        a20, a21, a22 = r20 * s0, r21 * s1, r22 * s2
        m00 = viewmat[0, 0] * a00 + viewmat[0, 1] * a10 + viewmat[0, 2] * a20
        m01 = viewmat[0, 0] * a01 + viewmat[0, 1] * a11 + viewmat[0, 2] * a21
        m02 = viewmat[0, 0] * a02 + viewmat[0, 1] * a12 + viewmat[0, 2] * a22
        m10 = viewmat[1, 0] * a00 + viewmat[1, 1] * a10 + viewmat[1, 2] * a20
        m11 = viewmat[1, 0] * a01 + viewmat[1, 1] * a11 + viewmat[1, 2] * a21
        m12 = viewmat[1, 0] * a02 + viewmat[1, 1] * a12 + viewmat[1, 2] * a22
        m20 = viewmat[2, 0] * a00 + viewmat[2, 1] * a10 + viewmat[2, 2] * a20
        m21 = viewmat[2, 0] * a01 + viewmat[2, 1] * a11 + viewmat[2, 2] * a21
        m22 = viewmat[2, 0] * a02 + viewmat[2, 1] * a12 + viewmat[2, 2] * a22
        c00 = m00 * m00 + m01 * m01 + m02 * m02
        c01 = m00 * m10 + m01 * m11 + m02 * m12
        c02 = m00 * m20 + m01 * m21 + m02 * m22
        c11 = m10 * m10 + m11 * m11 + m12 * m12
        c12 = m10 * m20 + m11 * m21 + m12 * m22
        c22 = m20 * m20 + m21 * m21 + m22 * m22
        safe_z = tz if abs(tz) > eps_z else eps_z
        clamped_x = safe_z * min(max(tx / safe_z, -lim_x_neg), lim_x_pos)
        clamped_y = safe_z * min(max(ty / safe_z, -lim_y_neg), lim_y_pos)
        # Jacobian rows: (j00, 0, j02) and (0, j11, j12)
        j00 = fx / safe_z
        j02 = -fx * clamped_x / (safe_z * safe_z)
        j11 = fy / safe_z
        j12 = -fy * clamped_y / (safe_z * safe_z)
        # cov2d = J cov J^T + eps2d I
        u0 = j00 * c00 + j02 * c02
        u1 = j00 * c01 + j02 * c12
        u2 = j00 * c02 + j02 * c22
        v0 = j11 * c01 + j12 * c02
        v1 = j11 * c11 + j12 * c12
        v2 = j11 * c12 + j12 * c22
        a = u0 * j00 + u2 * j02 + eps_2d
        b01 = u1 * j11 + u2 * j12
        b10 = v0 * j00 + v2 * j02
        c = v1 * j11 + v2 * j12 + eps_2d
        b = f32(0.5) * (b01 + b10)
        det = a * c - b * b
        safe_det = max(det, f32(1e-10))
        conics[i, 0] = c / safe_det
        conics[i, 1] = -b / safe_det
        conics[i, 2] = a / safe_det
        mx = fx * tx / safe_z + cx
        my = fy * ty / safe_z + cy
        means2d[i, 0] = mx
        means2d[i, 1] = my
        depths[i] = tz
        rx = np.ceil(radius_sigmas * np.sqrt(max(a, zero)))
        ry = np.ceil(radius_sigmas * np.sqrt(max(c, zero)))
        valid = det > zero and tz > near and tz < far
        inside = mx + rx > zero and mx - rx < w and my + ry > zero and my - ry < h
        if valid and inside:
            radii[i, 0] = np.int32(rx)
            radii[i, 1] = np.int32(ry)
        else:
            radii[i, 0] = 0
            radii[i, 1] = 0
    return means2d, conics, depths, radii


@_kernel()
def _depth_rank(depths, radii):
    """Front-to-back rank of each visible Gaussian (radii > 0), -1 for the others.

    A stable LSD radix sort on the float32 bit patterns of the depths (all > 0 for visible Gaussians,
    so the patterns order like the values): equal depths keep index order, as a stable argsort does.

    Returns:
        the number M of visible Gaussians, rank [N] int64 and order [M] int64 (order[rank[g]] = g).
    """
    n = depths.shape[0]
    bits = depths.view(np.uint32)
    m = 0
    for g in range(n):
        if radii[g, 0] > 0 and radii[g, 1] > 0:
            m += 1
    order = np.empty(m, dtype=np.int64)
    keys = np.empty(m, dtype=np.uint32)
    j = 0
    for g in range(n):
        if radii[g, 0] > 0 and radii[g, 1] > 0:
            order[j] = g
            keys[j] = bits[g]
            j += 1
    order_tmp = np.empty(m, dtype=np.int64)
    keys_tmp = np.empty(m, dtype=np.uint32)
    counts = np.empty(2048, dtype=np.int64)
    for shift in (0, 11, 22):
        counts[:] = 0
        for j in range(m):
            counts[(keys[j] >> shift) & 2047] += 1
        total = 0
        for b in range(2048):
            c = counts[b]
            counts[b] = total
            total += c
        for j in range(m):
            b = (keys[j] >> shift) & 2047
            position = counts[b]
            counts[b] = position + 1
            keys_tmp[position] = keys[j]
            order_tmp[position] = order[j]
        keys, keys_tmp = keys_tmp, keys
        order, order_tmp = order_tmp, order
    rank = np.full(n, -1, dtype=np.int64)
    for j in range(m):
        rank[order[j]] = j
    return m, rank, order


@_kernel(parallel=True)
def _bin(rects, tiles_x, num_tiles, num_chunks):
    """Counting sort of (Gaussian, tile) pairs by tile, keeping Gaussian order within each tile.

    Returns:
        tile_start [num_tiles + 1] int64: tile t's list is ids[tile_start[t]:tile_start[t + 1]].
        ids [total] int32: indices into the packed Gaussians.
    """
    m = rects.shape[0]
    chunk = (m + num_chunks - 1) // num_chunks
    counts = np.zeros((num_chunks, num_tiles), dtype=np.int64)
    for c in prange(num_chunks):
        for i in range(c * chunk, min(m, (c + 1) * chunk)):
            for ty in range(rects[i, 2], rects[i, 3]):
                row = ty * tiles_x
                for tx in range(rects[i, 0], rects[i, 1]):
                    counts[c, row + tx] += 1
    # Exclusive prefix sum in (tile, chunk) order: chunk c's entries of a tile follow chunk c-1's.
    tile_start = np.empty(num_tiles + 1, dtype=np.int64)
    total = 0
    for t in range(num_tiles):
        tile_start[t] = total
        for c in range(num_chunks):
            n = counts[c, t]
            counts[c, t] = total
            total += n
    tile_start[num_tiles] = total
    ids = np.empty(total, dtype=np.int32)
    for c in prange(num_chunks):
        for i in range(c * chunk, min(m, (c + 1) * chunk)):
            for ty in range(rects[i, 2], rects[i, 3]):
                row = ty * tiles_x
                for tx in range(rects[i, 0], rects[i, 1]):
                    ids[counts[c, row + tx]] = i
                    counts[c, row + tx] += 1
    return tile_start, ids


def rasterize_projected(
    means2d, conics, depths, radii, opacities, colors, background, width, height, num_threads=None, timings=None
):
    """Composite projected Gaussians (numpy in, numpy out).

    Args:
        means2d [N, 2], conics [N, 3], depths [N], opacities [N], colors [N, C], background [C]: float32.
        radii [N, 2] int32: 0 marks a culled Gaussian.
        num_threads: most threads to use (default: numba's current thread count). Small stages run on
            one thread: waking a thread pool costs more than they do, and far more on a busy machine.
        timings: if a dict, seconds per stage are added to it (sort, pack, bin, schedule, composite)
            and the number of (Gaussian, tile) pairs under "intersections".

    Returns:
        image [H, W, C] float32 and alpha [H, W] float32.
    """
    num_channels = colors.shape[1]
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
    num_tiles = tiles_x * tiles_y
    most = numba.get_num_threads() if num_threads is None else int(num_threads)
    most = max(1, min(most, numba.config.NUMBA_NUM_THREADS))

    clock = _Clock(timings)
    num_visible, rank, _ = _depth_rank(depths, radii)
    clock.lap("sort")
    records = aligned_empty((num_visible, RECORD))
    with using_threads(threads_for(depths.shape[0], PARALLEL_MIN_GAUSSIANS, most)):
        rects, sorted_colors = pack(
            rank,
            means2d,
            conics,
            opacities,
            radii,
            colors,
            padded_channels(num_channels),
            width,
            height,
            tiles_x,
            tiles_y,
            records,
        )
    clock.lap("pack")
    bin_threads = threads_for(num_visible, PARALLEL_MIN_GAUSSIANS, most)
    with using_threads(bin_threads):
        tile_start, ids = _bin(rects, tiles_x, num_tiles, bin_threads)
    clock.lap("bin")
    workers = threads_for(ids.shape[0] + width * height // 16, _PARALLEL_MIN_WORK, most)
    run_bounds = runs(tile_start, 1 if workers == 1 else workers * RUNS_PER_WORKER)
    clock.lap("schedule")
    image = np.empty((height, width, num_channels), dtype=np.float32)
    alpha = np.empty((height, width), dtype=np.float32)
    with using_threads(workers):
        composite(
            records,
            sorted_colors,
            tile_start,
            ids,
            run_bounds,
            workers,
            width,
            height,
            tiles_x,
            background,
            image,
            alpha,
        )
    clock.lap("composite")
    if timings is not None:
        timings["intersections"] = timings.get("intersections", 0) + int(ids.shape[0])
    return image, alpha


def threads_for(work: int, parallel_min: int, most: int) -> int:
    """Threads for a stage of ``work`` units: one below ``parallel_min``, else up to ``most``."""
    return 1 if work < parallel_min else max(1, most)


@contextlib.contextmanager
def using_threads(count: int):
    """Run numba's parallel kernels on ``count`` threads inside the block (numba's setting is per
    calling thread, so concurrent renders in other threads are unaffected)."""
    previous = numba.get_num_threads()
    if count == previous:
        yield
        return
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


class _Clock:
    """Adds elapsed seconds per stage to a dict (or does nothing without one)."""

    def __init__(self, timings):
        self._timings = timings
        self._last = time.perf_counter() if timings is not None else 0.0

    def lap(self, name):
        if self._timings is None:
            return
        now = time.perf_counter()
        self._timings[name] = self._timings.get(name, 0.0) + now - self._last
        self._last = now
