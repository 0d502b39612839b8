"""Tiling of a full scene for models with a fixed input granularity. Knows no model.

- :class:`TileGrid` places square tiles of ``size`` px every ``stride`` px (``stride`` a
  multiple of the model's size multiple, so every tile sits on the model's window period).
  The last tile of a row/column may reach beyond the scene; the reader pads it (reflect)
  and the blender crops it.
- :func:`weight_window` is a separable cos² ramp over the overlap: neighbouring tiles'
  weights sum to 1, the centre weight is 1, and scene borders are not down-weighted.
- :class:`StreamingBlender` accumulates weighted predictions per *cell* (rectangles cut
  by all tile edges) and emits a cell as soon as all tiles covering it have been added.
  In row-major order the pending cells are at most one band of height ``size`` across
  the scene width, so memory does not grow with the scene height, only with tile size
  and scene width (overlap × width for the carried strip).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A tile's top-left corner and the part of it that lies inside the scene."""

    index: int
    y: int
    x: int
    h: int  # valid rows (≤ size)
    w: int  # valid columns (≤ size)


def _round_up(n: int, m: int) -> int:
    return ((n + m - 1) // m) * m


class TileGrid:
    """Square tiles covering a ``height`` × ``width`` scene.

    Args:
        height, width: scene size in pixels.
        tile_size: requested tile size; rounded down to a multiple of ``multiple`` and
            capped at the scene size rounded up to ``multiple``.
        overlap: requested overlap; the stride ``size − overlap`` is rounded down to a
            multiple of ``multiple`` (so the effective overlap may grow a little).
        multiple: the model's size multiple (16 for GLF-CR).
    """

    def __init__(self, height: int, width: int, tile_size: int, overlap: int, multiple: int = 1) -> None:
        if height <= 0 or width <= 0:
            raise ValueError(f"scene size must be positive, got {height}×{width}")
        if tile_size < multiple:
            raise ValueError(f"tile size {tile_size} is smaller than the model's multiple {multiple}")
        if overlap < 0 or overlap >= tile_size:
            raise ValueError(f"overlap must be in [0, tile size {tile_size}), got {overlap}")
        size = (tile_size // multiple) * multiple
        size = min(size, _round_up(max(height, width), multiple))
        stride = max(multiple, ((size - min(overlap, size - 1)) // multiple) * multiple)
        self.height, self.width = height, width
        self.size, self.stride, self.overlap = size, stride, size - stride
        self.requested = (tile_size, overlap)
        self.ys = self._origins(height)
        self.xs = self._origins(width)

    def _origins(self, n: int) -> list[int]:
        if n <= self.size:
            return [0]
        count = math.ceil((n - self.size) / self.stride) + 1
        return [i * self.stride for i in range(count)]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def __iter__(self) -> Iterator[Tile]:
        i = 0
        for y in self.ys:
            for x in self.xs:
                yield Tile(i, y, x, min(self.size, self.height - y), min(self.size, self.width - x))
                i += 1

    def weight(self, tile: Tile) -> np.ndarray:
        """(size, size) float32 blending weight of ``tile``."""
        # ramps only towards neighbours: the first/last tile keeps full weight at the scene edge
        wy = weight_window(self.size, self.overlap, tile.y > 0, tile.y != self.ys[-1])
        wx = weight_window(self.size, self.overlap, tile.x > 0, tile.x != self.xs[-1])
        return np.outer(wy, wx).astype(np.float32)

    def describe(self) -> str:
        return (
            f"{len(self)} tile(s) ({len(self.ys)}×{len(self.xs)}) of {self.size} px, "
            f"overlap {self.overlap} px"
        )


def weight_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D weights (size,): cos² ramps of length ``overlap`` where a neighbour overlaps.

    Ramp values are sin²(π/2·(i + ½)/overlap): never 0, and a rising ramp plus the
    neighbour's falling ramp is exactly 1 at every position (a partition of unity).
    """
    w = np.ones(size, dtype=np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        if ramp_start:
            w[:overlap] = np.minimum(w[:overlap], ramp)
        if ramp_end:
            w[size - overlap :] = np.minimum(w[size - overlap :], ramp[::-1])
    return w


Emit = Callable[[int, int, np.ndarray], None]


class StreamingBlender:
    """Weighted average of overlapping tile predictions, emitted region by region.

    ``emit(y, x, values)`` receives (C, h, w) float64 arrays whose pixels are final.
    Every scene pixel is emitted exactly once.
    """

    def __init__(self, grid: TileGrid, channels: int, emit: Emit) -> None:
        self.grid = grid
        self.channels = channels
        self.emit = emit
        self.yb = sorted({0, grid.height, *grid.ys, *(min(y + grid.size, grid.height) for y in grid.ys)})
        self.xb = sorted({0, grid.width, *grid.xs, *(min(x + grid.size, grid.width) for x in grid.xs)})
        self.remaining = np.zeros((len(self.yb) - 1, len(self.xb) - 1), dtype=np.int32)
        for t in grid:
            cy, cx = self._cells(t)
            self.remaining[cy, cx] += 1
        self.pending: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.peak_pending_pixels = 0

    def _cells(self, t: Tile) -> tuple[slice, slice]:
        cy0 = bisect.bisect_left(self.yb, t.y)
        cy1 = bisect.bisect_left(self.yb, t.y + t.h)
        cx0 = bisect.bisect_left(self.xb, t.x)
        cx1 = bisect.bisect_left(self.xb, t.x + t.w)
        return slice(cy0, cy1), slice(cx0, cx1)

    def add(self, tile: Tile, pred: np.ndarray, weight: np.ndarray) -> None:
        """Add one tile's prediction (C, ≥h, ≥w) with its (≥h, ≥w) weight; extra is cropped."""
        cys, cxs = self._cells(tile)
        for cy in range(cys.start, cys.stop):
            y0, y1 = self.yb[cy], self.yb[cy + 1]
            for cx in range(cxs.start, cxs.stop):
                x0, x1 = self.xb[cx], self.xb[cx + 1]
                ly, lx = slice(y0 - tile.y, y1 - tile.y), slice(x0 - tile.x, x1 - tile.x)
                key = (cy, cx)
                if self.remaining[cy, cx] == 1 and key not in self.pending:
                    # only this tile covers the cell (most of each tile: 73 % at 256 px / 32 px
                    # overlap): its weighted mean is its own values. p·w/w == p exactly here (float32
                    # p and w > 0 multiply exactly in float64), so skipping the arithmetic changes
                    # no bit, and the writer does a quarter of the work
                    self.remaining[cy, cx] = 0
                    self.emit(y0, x0, pred[:, ly, lx].astype(np.float64))
                    continue
                w = weight[ly, lx].astype(np.float64)
                contrib = pred[:, ly, lx].astype(np.float64) * w
                if key in self.pending:
                    acc, wsum = self.pending[key]
                    acc += contrib
                    wsum += w
                else:
                    acc, wsum = contrib, w.copy()
                    self.pending[key] = (acc, wsum)
                self.remaining[cy, cx] -= 1
                if self.remaining[cy, cx] == 0:
                    del self.pending[key]
                    self.emit(y0, x0, acc / wsum)
        self.peak_pending_pixels = max(
            self.peak_pending_pixels, sum(v[1].size for v in self.pending.values())
        )

    @property
    def done(self) -> bool:
        return not self.pending and not self.remaining.any()
