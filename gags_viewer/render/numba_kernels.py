"""Compiled kernels of the fast forward-only CPU rasterizer (numba; numpy arrays in and out).

Pipeline (driven by :func:`rasterize_projected`; :mod:`gags_viewer.render.numba_backend` wraps it):

0. ``project``: the formula-for-formula twin of :func:`gags_viewer.render.projection.project_gaussians`
   (that torch function defines the semantics; a test holds the two together).
1. ``_depth_rank``: front-to-back rank of the visible Gaussians (radii > 0), by a stable radix sort.
2. ``_pack``: one 64-byte record per visible Gaussian in depth order (centre, conic, opacity, the data
   of its per-row pixel spans, its pixel box), its channels in the same order, and its tile rectangle.
3. ``_bin``: a parallel counting sort of (Gaussian, tile) pairs by tile. Each thread counts and then
   scatters a contiguous slice of the depth-ordered Gaussians, so every tile's list stays in depth order.
   A Gaussian goes to every 16x16 tile its ceil(3.33 sigma) box touches, as in gsplat.
4. ``_runs``: tiles in raster order cut into runs of about equal total list length, which the threads
   claim one at a time (dynamic balance; neighbouring tiles share their Gaussians' cache lines).
5. ``_composite``: per tile, front-to-back compositing in float32 with gsplat's classic rules (see
   ``tests/reference_render.py``): pixel centres at +0.5, sigma = 0.5 (a dx² + c dy²) + b dx dy,
   alpha = min(0.999, o exp(-sigma)), skip sigma < 0 or alpha < 1/255, stop *before* the Gaussian that
   would bring the transmittance to <= 1e-4, image = sum + T background, alpha = 1 - T. A tile stops as
   soon as all its pixels have stopped. The records of upcoming list entries are prefetched.

Only pixels that can pass alpha >= 1/255 are visited: on each pixel row, the interval where
sigma <= ln(255 opacity) + a small margin (see ``_pack``), rounded outwards. Every visited pixel still
gets the exact tests above, so this only skips work; the margin covers float32 rounding of the interval.

Stages below a size run on one thread (waking the thread pool costs more, and on a busy machine far
more). Kernels are cached on disk (``cache=True``). When no cache location is writable (read-only install,
unwritable ``NUMBA_CACHE_DIR`` and home), they fall back to compiling in memory with a warning.
Constants that live in other modules are passed as arguments, never read as globals: numba's cache
only notices changes to this file.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numba
import numpy as np
from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

TILE_SIZE = 16
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_STOP = 1e-4
# Exponents above ln(255 * opacity) + this margin cannot give alpha >= 1/255 even with float32 rounding.
_SIGMA_CUT_MARGIN = 1e-3
# List entries ahead whose data the compositor prefetches.
_PREFETCH_AHEAD = 4
# Runs of consecutive tiles per thread, claimed dynamically (see _runs), and a tile's fixed cost
# (clearing and writing its pixels) in units of list entries.
_RUNS_PER_WORKER = 32
_TILE_FIXED_COST = 8
# Below these sizes a stage runs on one thread (about a millisecond of work or less).
PARALLEL_MIN_GAUSSIANS = 20_000
_PARALLEL_MIN_WORK = 8_000  # (Gaussian, tile) pairs + pixels / 16


class _CachedKernel:
    """A numba dispatcher compiled with ``cache=True`` that degrades to an in-memory compile.

    numba raises RuntimeError at decoration time when no cache directory is usable, and OSError at the
    first call when the directory it picked cannot be written any more; both fall back (once) to
    ``cache=False`` with a warning instead of breaking rendering.
    """

    def __init__(self, py_func, options):
        self._py_func = py_func
        self._options = options
        self._cached = True
        try:
            self._dispatcher = numba.njit(cache=True, **options)(py_func)
        except RuntimeError as exc:
            self._fall_back(exc)
        self.__name__ = py_func.__name__
        self.__doc__ = py_func.__doc__

    def _fall_back(self, exc: Exception) -> None:
        warnings.warn(
            f"numba cannot cache the render kernel {self._py_func.__name__} ({exc}); it is compiled in "
            "memory instead (a few seconds at each start). Set NUMBA_CACHE_DIR to a writable directory "
            "to keep compiled kernels.",
            RuntimeWarning,
            stacklevel=3,
        )
        self._cached = False
        self._dispatcher = numba.njit(cache=False, **self._options)(self._py_func)

    def __call__(self, *args):
        try:
            return self._dispatcher(*args)
        except OSError as exc:  # the kernels do no I/O: this comes from writing or reading the cache
            if not self._cached:
                raise
            self._fall_back(exc)
            return self._dispatcher(*args)


# LLVM >= 15 has opaque pointers ("p0"); older LLVM mangles the pointee type into the name.
_PREFETCH_INTRINSIC = "llvm.prefetch.p0" if llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch_row(typingctx, array, row):
    """Hint the CPU to fetch the cache line of ``array[row, 0]`` (a 2D C-contiguous array)."""
    if not (isinstance(array, types.Array) and array.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array_type, row_type = signature.args
        data = context.make_array(array_type)(context, builder, args[0])
        index = context.cast(builder, args[1], row_type, types.intp)
        zero = context.get_constant(types.intp, 0)
        pointer = cgutils.get_item_pointer(context, builder, array_type, data, [index, zero], wraparound=False)
        i8_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch_type = ir.FunctionType(ir.VoidType(), [i8_pointer, i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(builder.module, prefetch_type, _PREFETCH_INTRINSIC)
        # read access, high temporal locality, data cache
        builder.call(prefetch, [builder.bitcast(pointer, i8_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, row), codegen


@intrinsic
def _fetch_add(typingctx, counter, value):
    """Atomically add ``value`` to ``counter[0]`` (an int64 array) and return its previous value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        counter_type, value_type = signature.args
        data = context.make_array(counter_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        pointer = cgutils.get_item_pointer(context, builder, counter_type, data, [zero], wraparound=False)
        amount = context.cast(builder, args[1], value_type, types.int64)
        return builder.atomic_rmw("add", pointer, amount, "seq_cst")

    return types.int64(counter, value), codegen


def _kernel(**options):
    def wrap(py_func):
        return _CachedKernel(py_func, options)

    return wrap


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


# Fields of the 64-byte float32 record kept per visible Gaussian (one cache line when aligned).
_MX, _MY, _CA, _CB, _CC, _OPACITY, _CUT, _SLOPE, _REACH, _NARROWING, _BX0, _BX1, _BY0, _BY1 = range(14)
RECORD = 16


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
def _pack(rank, means2d, conics, opacities, radii, colors, width, height, tiles_x, tiles_y, records):
    """Write the visible Gaussians, in depth order (``rank``), into ``records`` [M, 16] float32.

    A Gaussian can only reach alpha >= 1/255 where sigma <= ln(255 opacity) ("the cut", kept with a
    small margin). On pixel row y that region is an interval of x: with dy = my - (y + 0.5), pixel
    centres x + 0.5 in mx + slope dy -+ sqrt(reach - narrowing dy²), where slope = b/a, reach =
    2 cut / a and narrowing = det / a², det = ac - b², for the conic (a, b, c). The compositor visits
    only those intervals (rounded outwards) inside the cut ellipse's bounding box and still applies the
    exact per-pixel tests; the cut's margin absorbs the float32 rounding of the interval.

    Record fields: mean x, mean y, conic a, b, c, opacity, cut, slope, reach, narrowing, and the
    inclusive pixel box x0, x1, y0, y1 of the cut ellipse (widened by a pixel, clamped to the image;
    empty when x0 > x1 or y0 > y1).

    Returns:
        rects [M, 4] int32: tiles touched by the ceil(3.33 sigma) box: tx0, tx1, ty0, ty1 (half-open).
        sorted_colors [M, C] float32.
    """
    m = records.shape[0]
    num_channels = colors.shape[1]
    rects = np.empty((m, 4), dtype=np.int32)
    sorted_colors = np.empty((m, num_channels), dtype=np.float32)
    tile = np.float64(TILE_SIZE)
    # Reads in input order and writes scattered: cheaper than gathering by depth order.
    for g in prange(rank.shape[0]):
        i = rank[g]
        if i < 0:
            continue
        mx = np.float64(means2d[g, 0])
        my = np.float64(means2d[g, 1])
        ca = np.float64(conics[g, 0])
        cb = np.float64(conics[g, 1])
        cc = np.float64(conics[g, 2])
        opacity = np.float64(opacities[g])
        cut = math.log(opacity * 255.0) + _SIGMA_CUT_MARGIN if opacity > 0.0 else -1.0
        det = ca * cc - cb * cb
        slope, reach, narrowing = 0.0, -1.0, 0.0
        if cut < 0.0:  # sigma >= 0 always exceeds the cut: never contributes
            bx0, bx1, by0, by1 = 1.0, 0.0, 1.0, 0.0
        elif ca > 0.0 and cc > 0.0 and det > 0.0:
            slope = cb / ca
            reach = 2.0 * cut / ca
            narrowing = det / (ca * ca)
            half_x = math.sqrt(2.0 * cut * cc / det)
            half_y = math.sqrt(2.0 * cut * ca / det)
            bx0 = math.floor(max(mx - 0.5 - half_x, -2.0)) - 1.0
            bx1 = math.ceil(min(mx - 0.5 + half_x, width + 1.0)) + 1.0
            by0 = math.floor(max(my - 0.5 - half_y, -2.0)) - 1.0
            by1 = math.ceil(min(my - 0.5 + half_y, height + 1.0)) + 1.0
        else:  # numerically degenerate conic: whole rows of the touched tiles
            reach = math.inf
            bx0, bx1, by0, by1 = 0.0, width - 1.0, 0.0, height - 1.0
        rec = records[i]
        rec[_MX] = means2d[g, 0]
        rec[_MY] = means2d[g, 1]
        rec[_CA] = conics[g, 0]
        rec[_CB] = conics[g, 1]
        rec[_CC] = conics[g, 2]
        rec[_OPACITY] = opacities[g]
        rec[_CUT] = cut
        rec[_SLOPE] = slope
        rec[_REACH] = reach
        rec[_NARROWING] = narrowing
        rec[_BX0] = min(max(bx0, 0.0), float(width))
        rec[_BX1] = min(max(bx1, -1.0), width - 1.0)
        rec[_BY0] = min(max(by0, 0.0), float(height))
        rec[_BY1] = min(max(by1, -1.0), height - 1.0)
        rec[14] = 0.0
        rec[15] = 0.0
        rx = np.float64(radii[g, 0])
        ry = np.float64(radii[g, 1])
        rects[i, 0] = np.int32(math.floor(min(max((mx - rx) / tile, 0.0), np.float64(tiles_x))))
        rects[i, 1] = np.int32(math.ceil(min(max((mx + rx) / tile, 0.0), np.float64(tiles_x))))
        rects[i, 2] = np.int32(math.floor(min(max((my - ry) / tile, 0.0), np.float64(tiles_y))))
        rects[i, 3] = np.int32(math.ceil(min(max((my + ry) / tile, 0.0), np.float64(tiles_y))))
        for k in range(num_channels):
            sorted_colors[i, k] = colors[g, k]
    return rects, sorted_colors


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


@_kernel()
def _runs(tile_start, num_runs):
    """Cut the tiles, in raster order, into ``num_runs`` runs of about equal estimated cost.

    A tile's cost is estimated as its list length plus a constant (clearing and writing its pixels).
    Threads take runs one at a time (see ``_composite``), so runs balance the load whatever the real
    costs (early termination, Gaussian sizes) and whatever share of the CPU each thread gets; within a
    run, neighbouring tiles share their Gaussians' cache lines.

    Returns:
        bounds [num_runs + 1] int64: run r covers tiles bounds[r] .. bounds[r + 1] - 1.
    """
    num_tiles = tile_start.shape[0] - 1
    total = 0
    for t in range(num_tiles):
        total += tile_start[t + 1] - tile_start[t] + _TILE_FIXED_COST
    bounds = np.empty(num_runs + 1, dtype=np.int64)
    bounds[0] = 0
    run = 1
    cost = 0
    for t in range(num_tiles):
        cost += tile_start[t + 1] - tile_start[t] + _TILE_FIXED_COST
        while run < num_runs and cost * num_runs >= run * total:
            bounds[run] = t + 1
            run += 1
    while run <= num_runs:
        bounds[run] = num_tiles
        run += 1
    return bounds


@numba.njit(inline="never")
def _composite_tile(
    records, colors, tile_start, ids, tile, width, height, tiles_x, background, image, alpha_out, trans, done, acc
):
    """Composite one tile front to back (see ``_composite``), using the scratch buffers of its thread."""
    num_channels = colors.shape[1]
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    alpha_max = np.float32(ALPHA_MAX)
    alpha_min = np.float32(ALPHA_MIN)
    t_stop = np.float32(T_STOP)
    ty = tile // tiles_x
    tx = tile - ty * tiles_x
    x0 = tx * TILE_SIZE
    y0 = ty * TILE_SIZE
    x1 = min(x0 + TILE_SIZE, width) - 1  # inclusive
    y1 = min(y0 + TILE_SIZE, height) - 1
    tile_w = x1 - x0 + 1
    num_px = tile_w * (y1 - y0 + 1)
    for p in range(num_px):
        trans[p] = one
        done[p] = 0
        for ch in range(num_channels):
            acc[p, ch] = 0.0
    active = num_px
    fx0 = np.float32(x0)
    fx1 = np.float32(x1)
    end = tile_start[tile + 1]
    for li in range(tile_start[tile], end):
        g = ids[li]
        if li + _PREFETCH_AHEAD < end:  # hide the memory latency of the next lists' entries
            upcoming = ids[li + _PREFETCH_AHEAD]
            _prefetch_row(records, upcoming)
            _prefetch_row(colors, upcoming)
        rec = records[g]
        by0 = max(np.int64(rec[_BY0]), y0)
        by1 = min(np.int64(rec[_BY1]), y1)
        bx0 = max(rec[_BX0], fx0)
        bx1 = min(rec[_BX1], fx1)
        if by0 > by1 or bx0 > bx1:
            continue
        mx = rec[_MX]
        my = rec[_MY]
        ca = rec[_CA]
        cb = rec[_CB]
        cc = rec[_CC]
        opacity = rec[_OPACITY]
        cut = rec[_CUT]
        slope = rec[_SLOPE]
        reach = rec[_REACH]
        narrowing = rec[_NARROWING]
        centre0 = mx - half
        for py in range(by0, by1 + 1):
            dy = my - (np.float32(py) + half)
            q = reach - narrowing * dy * dy
            if q < zero:
                continue
            half_w = np.sqrt(q)
            centre = centre0 + slope * dy
            sx0 = np.int64(np.floor(max(centre - half_w, bx0)))
            sx1 = np.int64(np.ceil(min(centre + half_w, bx1)))
            dy_c = cc * dy * dy
            dy_b = cb * dy
            row = (py - y0) * tile_w - x0
            for px in range(sx0, sx1 + 1):
                p = row + px
                if done[p]:
                    continue
                dx = mx - (np.float32(px) + half)
                sigma = half * (ca * dx * dx + dy_c) + dy_b * dx
                if sigma < zero or sigma > cut:
                    continue
                alpha = min(alpha_max, opacity * math.exp(-sigma))
                if alpha < alpha_min:
                    continue
                t = trans[p]
                next_t = t * (one - alpha)
                if next_t <= t_stop:
                    done[p] = 1
                    active -= 1
                    continue
                weight = alpha * t
                for ch in range(num_channels):
                    acc[p, ch] += weight * colors[g, ch]
                trans[p] = next_t
        if active == 0:
            break
    for py in range(y0, y1 + 1):
        row = (py - y0) * tile_w - x0
        for px in range(x0, x1 + 1):
            p = row + px
            t = trans[p]
            for ch in range(num_channels):
                image[py, px, ch] = acc[p, ch] + t * background[ch]
            alpha_out[py, px] = one - t


@_kernel(parallel=True)
def _composite(
    records, colors, tile_start, ids, run_bounds, num_workers, width, height, tiles_x, background, image, alpha_out
):
    """Front-to-back compositing per tile into image [H, W, C] and alpha_out [H, W] (float32).

    Each of the ``num_workers`` threads repeatedly claims the next run of tiles (an atomic counter):
    dynamic scheduling, so no thread waits on another's share.
    """
    num_channels = colors.shape[1]
    num_runs = run_bounds.shape[0] - 1
    next_run = np.zeros(1, dtype=np.int64)
    tile_pixels = TILE_SIZE * TILE_SIZE
    for _worker in prange(num_workers):
        trans = np.empty(tile_pixels, dtype=np.float32)
        done = np.empty(tile_pixels, dtype=np.uint8)
        acc = np.empty((tile_pixels, num_channels), dtype=np.float32)
        while True:
            run = _fetch_add(next_run, 1)
            if run >= num_runs:
                break
            for tile in range(run_bounds[run], run_bounds[run + 1]):
                _composite_tile(
                    records,
                    colors,
                    tile_start,
                    ids,
                    tile,
                    width,
                    height,
                    tiles_x,
                    background,
                    image,
                    alpha_out,
                    trans,
                    done,
                    acc,
                )


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
    records = _aligned_empty((num_visible, RECORD))
    with using_threads(threads_for(depths.shape[0], PARALLEL_MIN_GAUSSIANS, most)):
        rects, sorted_colors = _pack(
            rank, means2d, conics, opacities, radii, colors, width, height, tiles_x, tiles_y, records
        )
    clock.lap("pack")
    bin_threads = threads_for(num_visible, PARALLEL_MIN_GAUSSIANS, most)
    with using_threads(bin_threads):
        tile_start, ids = _bin(rects, tiles_x, num_tiles, bin_threads)
    clock.lap("bin")
    workers = threads_for(ids.shape[0] + width * height // 16, _PARALLEL_MIN_WORK, most)
    run_bounds = _runs(tile_start, 1 if workers == 1 else workers * _RUNS_PER_WORKER)
    clock.lap("schedule")
    image = np.empty((height, width, num_channels), dtype=np.float32)
    alpha = np.empty((height, width), dtype=np.float32)
    with using_threads(workers):
        _composite(
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


def _aligned_empty(shape, alignment=64):
    """An uninitialised float32 C-contiguous array whose data starts on a cache-line boundary."""
    count = int(np.prod(shape))
    buffer = np.empty(count + alignment // 4, dtype=np.float32)
    offset = (-buffer.ctypes.data % alignment) // 4
    return buffer[offset : offset + count].reshape(shape)


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
