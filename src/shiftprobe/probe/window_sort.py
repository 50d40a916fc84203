"""Sorted values of many windows of the same maps from one sort per map (the sorting test's shared sort in the
crop fast path, docs/performance.md): each channel is sorted once with every value's position, and a window's
sorted values are those whose positions fall inside it, in order. The result equals sorting each window on its
own, except that ``-0.0`` comes before ``0.0``; NaN come last, keeping their bits."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from shiftprobe.probe.metrics import sort_channels, working

METHODS = ("auto", "select", "sort")
#: bytes of an image's sorted values copied once per window of a block (``SharedOrder.windows``)
BLOCK_TILE_BYTES = 1 << 20


def sorted_windows(
    padded: torch.Tensor, origins: torch.Tensor | Sequence, h: int, w: int, method: str = "auto"
) -> torch.Tensor:
    """Each channel's values of every window in ascending order: ``(B, C, H, W) -> (B, S, C, h * w)``.

    ``origins``: ``(S, 2)`` top-left corners ``(y0, x0)`` of ``h x w`` windows inside the map. ``method``:
    ``"select"`` (one sort per map, a selection per window; CPU float32 / float64, the result on the CPU),
    ``"sort"`` (each window sorted on its own) or ``"auto"`` (``"select"`` where ``select_pays``); the same
    values.
    """
    corners = _check(padded, origins, h, w, method)
    padded = working(padded)
    if method == "auto":
        method = "select" if select_pays(padded, h, w) else "sort"
    if method == "sort":
        return _sort_each(padded, corners, h, w)
    if padded.device.type != "cpu" or padded.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"method='select' sorts CPU float32/float64 maps, got {padded.dtype} on {padded.device}; "
                         "use method='auto' or 'sort'")
    return SharedOrder(padded).windows(corners, h, w)


def _check(padded: torch.Tensor, origins, h: int, w: int, method: str) -> np.ndarray:
    """The window corners as an ``(S, 2)`` int64 array; a one-line ValueError for anything unusable."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {', '.join(METHODS)}")
    if not isinstance(padded, torch.Tensor) or padded.dim() != 4 or not padded.is_floating_point():
        raise ValueError(f"padded must be a (B, C, H, W) float tensor, got {getattr(padded, 'shape', type(padded))}")
    corners = np.asarray(origins.cpu() if isinstance(origins, torch.Tensor) else origins, dtype=np.int64)
    if corners.ndim != 2 or corners.shape[1] != 2 or len(corners) == 0:
        raise ValueError(f"origins must be (S, 2) window corners (y0, x0), got shape {corners.shape}")
    size = padded.shape[-2:]
    if h < 1 or w < 1 or h > size[0] or w > size[1]:
        raise ValueError(f"window {h}x{w} does not fit maps of {size[0]}x{size[1]}")
    bad = (corners < 0).any(1) | (corners[:, 0] > size[0] - h) | (corners[:, 1] > size[1] - w)
    if bad.any():
        y0, x0 = corners[bad][0]
        raise ValueError(f"window corner ({y0}, {x0}): a {h}x{w} window there leaves the {size[0]}x{size[1]} map")
    return corners


def select_pays(padded: torch.Tensor, h: int, w: int) -> bool:
    """Whether selection (it scans the whole map per window) beats sorting each window: on the CPU where the
    window covers at least half of the map (0.6x the time at 24x24 of 32x32, 1.9x at 8x8 of 12x12)."""
    cpu = padded.device.type == "cpu" and padded.dtype in (torch.float32, torch.float64)
    return cpu and 2 * h * w >= padded.shape[-2] * padded.shape[-1]


def _sort_each(padded: torch.Tensor, corners: np.ndarray, h: int, w: int) -> torch.Tensor:
    """Every window copied and sorted on its own (``sort_channels``); on the CPU stacked by NumPy (faster than
    ``torch.stack`` of the strided views)."""
    windows = [(y0, x0, y0 + h, x0 + w) for y0, x0 in corners.tolist()]
    if padded.device.type == "cpu":
        maps = padded.detach().numpy()
        stacked = torch.from_numpy(np.stack([maps[:, :, y0:y1, x0:x1] for y0, x0, y1, x1 in windows], axis=1))
    else:
        stacked = torch.stack([padded[:, :, y0:y1, x0:x1] for y0, x0, y1, x1 in windows], dim=1)
    return sort_channels(stacked, inplace=True)


def shared_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted values, their positions)`` of each row of ``values`` (``R x N`` float32 or float64).

    Ascending as ``np.sort`` sorts (NaN last); equal values in position order, except that ``-0.0``
    comes before ``0.0``. float32: one sort of 64-bit keys (order-preserving bits, then the position)."""
    n = values.shape[1]
    if values.dtype != np.float32:
        pos = np.argsort(values, axis=1, kind="stable")
        return np.take_along_axis(values, pos, 1), pos
    bits = values.view(np.uint32)
    # negative floats: all bits flipped; others: the sign bit set (an xor with the sign spread over every
    # bit, or the sign bit alone); every NaN above +inf
    key = bits ^ ((bits.view(np.int32) >> 31).view(np.uint32) | np.uint32(0x80000000))
    key[np.isnan(values)] = np.uint32(0xFFFFFFFF)
    keys = key.astype(np.uint64) << np.uint64(32)
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort(axis=1)
    low = keys.view(np.uint32)[:, ::2] if sys.byteorder == "little" else keys.view(np.uint32)[:, 1::2]
    pos = low.astype(np.intp)
    return np.take(values.reshape(-1), pos + np.arange(0, values.size, n)[:, None]), pos


class SharedOrder:
    """One sort of every channel of ``padded`` (CPU float32 / float64 ``(B, C, H, W)``), then any windows'
    sorted values by selection (``windows``), once per chunk of shifts in the engine."""

    def __init__(self, padded: torch.Tensor):
        maps = padded.detach().contiguous().numpy()
        b, c, height, width = maps.shape
        self.shape = maps.shape
        values, pos = shared_order(maps.reshape(b * c, height * width))
        self.values = values.reshape(b, c * height * width)
        self.small = np.min_scalar_type(max(height, width))  # positions as small unsigned ints: cheap masks
        cells = np.arange(height * width)
        self.ys = (cells // width).astype(self.small)[pos].reshape(b, c, height * width)
        self.xs = (cells % width).astype(self.small)[pos].reshape(b, c, height * width)

    def windows(self, corners: np.ndarray, h: int, w: int) -> torch.Tensor:
        """``(B, S, C, h * w)``: the sorted values of the windows at ``corners`` (``(S, 2)`` int64, checked):
        per image and block of windows, a mask of the positions inside each window (two comparisons of small
        unsigned positions) and one ``np.take`` of its true positions (window, channel, ascending value)."""
        b, c, height, width = self.shape
        n, k = height * width, h * w
        out = np.empty((b, len(corners), c * k), dtype=self.values.dtype)
        block = max(1, BLOCK_TILE_BYTES // (c * n * self.values.itemsize))
        for j0 in range(0, len(corners), block):
            starts = corners[j0 : j0 + block].astype(self.small)
            y0, x0 = starts[:, 0, None, None], starts[:, 1, None, None]
            tile = np.empty((len(starts), c * n), dtype=self.values.dtype)
            inside, in_cols = (np.empty((len(starts), c, n), dtype=bool) for _ in range(2))
            for i in range(b):
                np.less(self.ys[i] - y0, h, out=inside)
                np.less(self.xs[i] - x0, w, out=in_cols)
                inside &= in_cols
                tile[:] = self.values[i]
                np.take(tile.reshape(-1), np.flatnonzero(inside), out=out[i, j0 : j0 + len(starts)].reshape(-1),
                        mode="clip")  # in range by construction
        return torch.from_numpy(out.reshape(b, len(corners), c, k))


class WindowSorter:
    """The sorted windows of one layer for every column of a plan, from one ``SharedOrder`` per source map
    (the engine makes one per batch and window layer): ``sorter(cols)`` for a slice of the columns.

    ``columns[j]``: ``(map, y0, x0)``, column ``j``'s window of ``map`` (``CropWindows.source``)."""

    def __init__(self, columns: Sequence[tuple[torch.Tensor, int, int]], h: int, w: int):
        self.h, self.w = h, w
        sources = {id(source): source for source, _, _ in columns}
        self.orders = {}
        for key, source in sources.items():
            _check(source, [(y0, x0) for s, y0, x0 in columns if s is source], h, w, "select")
            self.orders[key] = SharedOrder(working(source))
        self.columns = [(id(source), y0, x0) for source, y0, x0 in columns]

    def __call__(self, cols: slice) -> torch.Tensor:
        """``(B, S, C, h * w)`` for the columns ``cols``, in their order."""
        items = self.columns[cols]
        keys = list(dict.fromkeys(key for key, _, _ in items))
        parts = [([j for j, it in enumerate(items) if it[0] == key], key) for key in keys]
        if len(parts) == 1:
            return self.orders[keys[0]].windows(np.array([it[1:] for it in items], dtype=np.int64), self.h, self.w)
        out = None
        for js, key in parts:
            part = self.orders[key].windows(np.array([items[j][1:] for j in js], dtype=np.int64), self.h, self.w)
            out = part.new_empty((part.shape[0], len(items), *part.shape[2:])) if out is None else out
            out[:, js] = part
        return out
