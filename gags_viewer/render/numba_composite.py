"""Compiled compositing stages of the CPU rasterizer (numba; numpy arrays in and out), driven by
:func:`gags_viewer.render.numba_kernels.rasterize_projected`:

- ``pack``: one 64-byte record per visible Gaussian in depth order (centre, conic, opacity, the data
  of its per-row pixel spans, its pixel box), its channels in the same order (zero-padded to a whole
  number of vector blocks, see :func:`padded_channels`), and its tile rectangle.
- ``runs``: tiles in raster order cut into runs of about equal total list length, which the threads
  claim one at a time (dynamic balance; neighbouring tiles share their Gaussians' cache lines).
- ``composite``: per tile, front-to-back compositing in float32 with gsplat's classic rules (see
  ``tests/reference_render.py``): pixel centres at +0.5, sigma = 0.5 (a dx² + c dy²) + b dx dy,
  alpha = min(0.999, o exp(-sigma)), skip sigma < 0 or alpha < 1/255, stop *before* the Gaussian that
  would bring the transmittance to <= 1e-4, image = sum + T background, alpha = 1 - T. A tile stops as
  soon as all its pixels have stopped. The records of upcoming list entries are prefetched.

Only pixels that can pass alpha >= 1/255 are visited: on each pixel row, the interval where
sigma <= ln(255 opacity) + a small margin (see ``pack``), rounded outwards. Every visited pixel still
gets the exact tests above, so this only skips work; the margin covers float32 rounding of the interval.

Per (Gaussian, pixel row) the compositor first computes the alphas of the tile's whole row of 16 pixels
without branches (0 for a pixel skipped or already stopped), with an inlined float32 exp
(:func:`_exp_neg`, relative error below 1e-6), so the compiler turns that loop into SIMD code; then it
walks the row's span, updating the channels of each contributing pixel a vector block at a time
(:func:`_make_add_scaled`: 4 or 8 floats, or all 16 GAGS features at once). Kept simple on purpose:
variants with runtime loop bounds or more arrays in the SIMD loop lost its vectorisation (1.2-3.5x slower). The compositor
alone may fuse multiply-adds (fastmath "contract"): float32 results then differ between CPUs by a few
units in the last place, far inside the tests' bounds (1e-4, and 2 % around the alpha and stop cuts).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from gags_viewer.render.numba_jit import kernel

TILE_SIZE = 16
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_STOP = 1e-4
# Exponents above ln(255 * opacity) + this margin cannot give alpha >= 1/255 even with float32 rounding.
_SIGMA_CUT_MARGIN = 1e-3
# List entries ahead whose data the compositor prefetches.
_PREFETCH_AHEAD = 4
# Runs of consecutive tiles per thread, claimed dynamically (see runs), and a tile's fixed cost
# (clearing and writing its pixels) in units of list entries.
RUNS_PER_WORKER = 32
_TILE_FIXED_COST = 8
# float32 constants of _exp_neg: log2(e), ln 2 split in a part with few bits (exact products with small
# integers) and the rest, and the largest exponent it takes (exp(-80) is still a normal float32).
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.1219444005469058e-4)
_EXP_ARG_MAX = np.float32(80.0)


def padded_channels(num_channels: int) -> int:
    """Channels of the packed colours and accumulators: a multiple of the vector block the compositor
    updates at once, 4 floats up to 4 channels and 8 above (0 stays 0)."""
    block = 4 if num_channels <= 4 else 8
    return -(-num_channels // block) * block


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


@intrinsic
def _pow2(typingctx, exponent):
    """2.0 ** exponent as float32, built from its bits, for an integer exponent in [-126, 127]."""
    if not isinstance(exponent, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        value = context.cast(builder, args[0], signature.args[0], types.int32)
        bits = builder.shl(builder.add(value, i32(127)), i32(23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(exponent), codegen


def _make_add_scaled(width: int):
    """An intrinsic ``add_scaled(acc, p, start, colors, g, weight)``: acc[p, start:start + width] +=
    weight * colors[g, start:start + width] as one vector operation (2D C-contiguous float32 arrays;
    the caller keeps the block inside both rows)."""

    @intrinsic
    def add_scaled(typingctx, acc, p, start, colors, g, weight):
        arrays_ok = all(
            isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.float32 and a.layout == "C"
            for a in (acc, colors)
        )
        if not (arrays_ok and all(isinstance(i, types.Integer) for i in (p, start, g))):
            return None

        def codegen(context, builder, signature, args):
            acc_type, p_type, start_type, colors_type, g_type, weight_type = signature.args

            def block(array_type, array, row, row_type):
                data = context.make_array(array_type)(context, builder, array)
                index = [
                    context.cast(builder, row, row_type, types.intp),
                    context.cast(builder, args[2], start_type, types.intp),
                ]
                pointer = cgutils.get_item_pointer(context, builder, array_type, data, index, wraparound=False)
                return builder.bitcast(pointer, vector.as_pointer())

            vector = ir.VectorType(ir.FloatType(), width)
            target = block(acc_type, args[0], args[1], p_type)
            source = block(colors_type, args[3], args[4], g_type)
            scalar = context.cast(builder, args[5], weight_type, types.float32)
            weights = cgutils.get_null_value(vector)
            for lane in range(width):
                weights = builder.insert_element(weights, scalar, ir.IntType(32)(lane))
            total = builder.fadd(builder.load(target, align=4), builder.fmul(weights, builder.load(source, align=4)))
            builder.store(total, target, align=4)
            return context.get_dummy_value()

        return types.void(acc, p, start, colors, g, weight), codegen

    return add_scaled


_add_scaled_4 = _make_add_scaled(4)
_add_scaled_8 = _make_add_scaled(8)
_add_scaled_16 = _make_add_scaled(16)


@numba.njit(inline="always")
def _exp_neg(s):
    """exp(-s) in float32 for s >= 0 (s above 80 is taken as 80), without branches or calls.

    exp(-s) = 2^-n exp(r) with n = round(s / ln 2) and r = n ln 2 - s in [-ln2/2, ln2/2] (Cody and
    Waite's two-part ln 2 keeps r accurate), exp(r) by its degree-7 Taylor polynomial (truncation error
    below 6e-9 relative). Relative error below 1e-6 (tests/test_numba_composite.py).
    """
    s = min(s, _EXP_ARG_MAX)
    n = np.int32(s * _LOG2E + np.float32(0.5))
    whole = np.float32(n)
    r = (whole * _LN2_HI - s) + whole * _LN2_LO
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _pow2(-n)


# Fields of the 64-byte float32 record kept per visible Gaussian (one cache line when aligned).
_MX, _MY, _CA, _CB, _CC, _OPACITY, _CUT, _SLOPE, _REACH, _NARROWING, _BX0, _BX1, _BY0, _BY1 = range(14)
RECORD = 16


@kernel(parallel=True)
def pack(rank, means2d, conics, opacities, radii, colors, padded, width, height, tiles_x, tiles_y, records):
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
        sorted_colors [M, padded] float32: the colours in depth order, zero beyond C.
    """
    m = records.shape[0]
    num_channels = colors.shape[1]
    rects = np.empty((m, 4), dtype=np.int32)
    sorted_colors = np.empty((m, padded), dtype=np.float32)
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
        for k in range(num_channels, padded):
            sorted_colors[i, k] = 0.0
    return rects, sorted_colors


@kernel()
def runs(tile_start, num_runs):
    """Cut the tiles, in raster order, into ``num_runs`` runs of about equal estimated cost.

    A tile's cost is estimated as its list length plus a constant (clearing and writing its pixels).
    Threads take runs one at a time (see ``composite``), so runs balance the load whatever the real
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


@numba.njit(inline="never", fastmath={"contract"})
def _composite_tile(
    records, colors, tile_start, ids, tile, width, height, tiles_x, background, image, alpha_out, scratch
):
    """Composite one tile front to back (see ``composite``), using the scratch buffers of its thread:
    ``scratch`` = (transmittance [256], stopped [256] uint8, channel sums [256, padded], row alphas [16]);
    pixel (x0 + k, y0 + j) of the tile is entry 16 j + k."""
    trans, done, acc, alphas = scratch
    num_channels = image.shape[2]
    padded = colors.shape[1]
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
    active = (x1 - x0 + 1) * (y1 - y0 + 1)
    for p in range(TILE_SIZE * TILE_SIZE):
        trans[p] = one
        done[p] = 0
        for ch in range(padded):
            acc[p, ch] = 0.0
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
            k0 = np.int64(np.floor(max(centre - half_w, bx0))) - x0
            k1 = np.int64(np.ceil(min(centre + half_w, bx1))) - x0
            dy_c = cc * dy * dy
            dy_b = cb * dy
            row = (py - y0) * TILE_SIZE
            # the alphas of the tile's whole pixel row (branch-free: SIMD), 0 where a pixel is skipped
            for k in range(TILE_SIZE):
                dx = mx - (np.float32(x0 + k) + half)
                sigma = half * (ca * dx * dx + dy_c) + dy_b * dx
                alpha = min(alpha_max, opacity * _exp_neg(sigma if sigma >= zero else zero))  # NaN -> 0
                used = (sigma >= zero) & (sigma <= cut) & (alpha >= alpha_min) & (done[row + k] == 0)
                alphas[k] = alpha if used else zero
            for k in range(k0, k1 + 1):
                alpha = alphas[k]
                if alpha == zero:
                    continue
                p = row + k
                t = trans[p]
                next_t = t * (one - alpha)
                if next_t <= t_stop:
                    done[p] = 1
                    active -= 1
                    continue
                weight = alpha * t
                if padded == 16:  # GAGS features
                    _add_scaled_16(acc, p, 0, colors, g, weight)
                elif padded == 4:
                    _add_scaled_4(acc, p, 0, colors, g, weight)
                else:
                    for start in range(0, padded, 8):
                        _add_scaled_8(acc, p, start, colors, g, weight)
                trans[p] = next_t
        if active == 0:
            break
    for py in range(y0, y1 + 1):
        row = (py - y0) * TILE_SIZE - x0
        for px in range(x0, x1 + 1):
            p = row + px
            t = trans[p]
            for ch in range(num_channels):
                image[py, px, ch] = acc[p, ch] + t * background[ch]
            alpha_out[py, px] = one - t


@kernel(parallel=True)
def composite(
    records, colors, tile_start, ids, run_bounds, num_workers, width, height, tiles_x, background, image, alpha_out
):
    """Front-to-back compositing per tile into image [H, W, C] and alpha_out [H, W] (float32).

    Args:
        records [M, RECORD] and colors [M, padded] from ``pack``; tile_start and ids from binning (tile
        t's list is ids[tile_start[t]:tile_start[t + 1]], in depth order); run_bounds from ``runs``.

    Each of the ``num_workers`` threads repeatedly claims the next run of tiles (an atomic counter):
    dynamic scheduling, so no thread waits on another's share.
    """
    num_runs = run_bounds.shape[0] - 1
    next_run = np.zeros(1, dtype=np.int64)
    tile_pixels = TILE_SIZE * TILE_SIZE
    for _worker in prange(num_workers):
        scratch = (
            np.empty(tile_pixels, dtype=np.float32),
            np.empty(tile_pixels, dtype=np.uint8),
            np.empty((tile_pixels, colors.shape[1]), dtype=np.float32),
            np.empty(TILE_SIZE, dtype=np.float32),
        )
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
                    scratch,
                )


def aligned_empty(shape, alignment=64):
    """An uninitialised float32 C-contiguous array whose data starts on a cache-line boundary."""
    count = int(np.prod(shape))
    buffer = np.empty(count + alignment // 4, dtype=np.float32)
    offset = (-buffer.ctypes.data % alignment) // 4
    return buffer[offset : offset + count].reshape(shape)
