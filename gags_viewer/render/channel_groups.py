"""How to split C composited channels into gsplat rasterizer calls: as few zero-padded channels and calls
as pays.

gsplat 1.5's ``rasterize_to_pixels`` has kernels for SUPPORTED_CHANNELS only; any other count is padded
with zeros to the next power of two (19 channels, rgb + 16 features, run as 32), and more than 513 are
refused. Every call also redoes the per-pixel alpha evaluation and the walk over the tile's Gaussians,
whatever its channel count, so a split is only worth it where it saves more padding than that fixed cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

SUPPORTED_CHANNELS = (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512, 513)

CALL_COST_IN_CHANNELS = 24
"""The fixed work of one more rasterizer call, counted in channels. Per (pixel, Gaussian) pair the kernel
spends ~20 instructions whatever the channel count (the conic, one exp, the tests); where the Gaussian
contributes, ~6 more plus 2 per channel (a load and a multiply-add). A warp runs that channel loop when
any of its 32 pixels contributes: for ~50 % of the pairs on ``benchmarks/render.py``'s 1M scene at
1920x1080 (38 % at 640x480, measured on CPU from the projected Gaussians). One more call thus costs about
(20 + 0.5 * 6) / (0.5 * 2) = 23 channels (29 at 640x480). With 24, rgb + 16 features run as one call
padded to 32 (cost 56, not 67 for 3 + 16); a cost below 13 would split them. An estimate: calibrate it on
a GPU by timing ``benchmarks/render.py --backends gsplat --channels 19,20`` against a tree with another
value (``--compare-tree``)."""


def padded_channels(channels: int) -> int:
    """The channel count gsplat's rasterizer actually runs for ``channels`` (1 to 513)."""
    if not 1 <= channels <= SUPPORTED_CHANNELS[-1]:
        raise ValueError(f"a rasterizer call takes 1 to {SUPPORTED_CHANNELS[-1]} channels, got {channels}")
    return channels if channels in SUPPORTED_CHANNELS else 1 << (channels - 1).bit_length()


def channel_groups(blocks: Sequence[int], call_cost: int = CALL_COST_IN_CHANNELS) -> list[tuple[int, int]]:
    """Consecutive channel ranges, one rasterizer call each, covering all ``sum(blocks)`` channels.

    Minimises the total work, sum over calls of (call_cost + padded_channels(size)); among
    splits of equal work, the one with fewer calls, then the one that cuts at more block boundaries (so a
    call can take a whole input block, e.g. the rgb of the SH, without copying columns together).

    Args:
        blocks: sizes of the input blocks in channel order, e.g. (3, 16) for rgb then 16 features.
        call_cost: the fixed work of a call, in channels (see CALL_COST_IN_CHANNELS).

    Returns:
        [(start, stop), ...] in channel order, each of a size from 1 to 513.
    """
    return list(_groups(tuple(int(b) for b in blocks), call_cost))


@lru_cache(maxsize=64)
def _groups(blocks: tuple[int, ...], call_cost: int) -> tuple[tuple[int, int], ...]:
    if not blocks or min(blocks) < 1:
        raise ValueError(f"channel blocks must be positive sizes, got {list(blocks)}")
    total = sum(blocks)
    boundaries = {sum(blocks[:i]) for i in range(len(blocks) + 1)}
    # best[end]: (work, calls, cuts off a boundary) of the best split of channels [0, end), and its last start
    best: list[tuple[tuple[int, int, int], int]] = [((0, 0, 0), 0)]
    for end in range(1, total + 1):
        options = []
        for size in range(1, min(end, SUPPORTED_CHANNELS[-1]) + 1):
            (work, calls, off), _ = best[end - size]
            cut_off = int(end - size not in boundaries)
            options.append(((work + call_cost + padded_channels(size), calls + 1, off + cut_off), end - size))
        best.append(min(options))
    groups, end = [], total
    while end > 0:
        start = best[end][1]
        groups.append((start, end))
        end = start
    return tuple(reversed(groups))
