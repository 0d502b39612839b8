"""Put the SAR raster on the optical grid: as is when the grids match, else resampled per tile.

Models want SAR on the optical pixel grid. When the SAR raster has another CRS, resolution or
origin, :class:`SarTiles` reads, for each optical tile, the matching SAR window (plus a margin)
and resamples it onto the tile's grid with the model card's resampling: ``nearest`` (GDAL
convention: source index floor((i + 0.5) · scale); Align-CR, whose Sentinel-1 input is 10 m SAR
upsampled to 3 m PlanetScope) or ``bilinear`` on the dB values (GLF-CR-type models). Memory
stays one tile; the user is told that SAR is resampled. ``open_sar_on_grid`` gives the same
result as one ``WarpedVRT`` over the whole grid.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from ..errors import InputError
from ..progress import Progress
from .raster import RasterInfo, read_padded, read_window, reading

RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear}


def same_grid(a: RasterInfo, b: RasterInfo, tol: float = 1e-6) -> bool:
    """Same CRS, size and geotransform (to ``tol`` of a pixel)."""
    if (a.width, a.height) != (b.width, b.height) or a.crs != b.crs:
        return False
    px = max(abs(a.transform.a), abs(a.transform.e), 1e-12)
    return all(abs(p - q) <= tol * px for p, q in zip(a.transform[:6], b.transform[:6], strict=True))


def coverage(optical: RasterInfo, sar: RasterInfo) -> float:
    """Fraction of the optical extent that the SAR extent covers (0..1), in the optical CRS."""
    sb = transform_bounds(sar.crs, optical.crs, *sar.bounds, densify_pts=21)
    ob = optical.bounds
    w = min(ob[2], sb[2]) - max(ob[0], sb[0])
    h = min(ob[3], sb[3]) - max(ob[1], sb[1])
    if w <= 0 or h <= 0:
        return 0.0
    return (w * h) / ((ob[2] - ob[0]) * (ob[3] - ob[1]))


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in b) + ")"


def check_grid(
    src: RasterInfo,
    onto: RasterInfo,
    progress: Progress,
    role: str,
    onto_label: str,
    action: str,
    uncovered: str,
) -> bool:
    """True when ``src`` must be resampled onto ``onto``'s grid; warns the user then.

    Messages read "<role> raster 'a' … <onto_label> 'b'; <action>" and, for partial cover,
    "…; <uncovered>" (e.g. role "SAR", onto_label "optical raster").

    Raises:
        InputError: no georeferencing to align with, or no overlap (both rasters named).
    """
    if same_grid(src, onto):
        return False
    if src.crs is None or onto.crs is None:
        raise InputError(
            f"{role} raster {src.describe()} and {onto_label} {onto.describe()} are not on the same "
            "grid and at least one has no CRS, so they cannot be aligned"
        )
    frac = coverage(onto, src)
    if frac <= 0:
        sb = transform_bounds(src.crs, onto.crs, *src.bounds, densify_pts=21)
        raise InputError(
            f"{role} raster {src.describe()} does not overlap {onto_label} {onto.describe()}: "
            f"{role} extent {_fmt_bounds(sb)} vs {onto_label} extent {_fmt_bounds(onto.bounds)} "
            f"(both in {onto.crs.to_string()})"
        )
    rx, ry = src.resolution
    progress.warning(
        f"{role} raster '{src.name}' ({src.crs.to_string()}, {rx:g}×{ry:g} per pixel) is not on the grid "
        f"of {onto_label} '{onto.name}' ({onto.crs.to_string()}, "
        f"{onto.resolution[0]:g}×{onto.resolution[1]:g}); {action}"
    )
    if frac < 0.999:
        progress.warning(
            f"{role} raster '{src.name}' covers only {100 * frac:.1f}% of {onto_label} '{onto.name}'; {uncovered}"
        )
    return True


def check_alignment(sar: RasterInfo, optical: RasterInfo, progress: Progress, resampling: str = "bilinear") -> bool:
    """:func:`check_grid` for SAR onto the optical grid with the model's ``resampling``."""
    if resampling not in RESAMPLING:
        raise InputError(f"unknown SAR resampling {resampling!r}; use one of {', '.join(RESAMPLING)}")
    how = "nearest neighbour, as the model was trained" if resampling == "nearest" else "bilinear, in dB"
    return check_grid(
        sar, optical, progress, "SAR", "optical raster",
        f"resampling SAR onto the optical grid tile by tile ({how})",
        "pixels without SAR get the SAR file mean and their result is unreliable",
    )


@contextlib.contextmanager
def warped_onto(path: str | os.PathLike[str], onto: RasterInfo, resampling: str = "bilinear") -> Iterator[Any]:
    """The raster at ``path`` as a float32 ``WarpedVRT`` on ``onto``'s grid, NaN where it has no data."""
    with reading(path) as src, WarpedVRT(  # may be closed by another thread: see reading()
        src,
        crs=onto.crs,
        transform=onto.transform,
        width=onto.width,
        height=onto.height,
        resampling=RESAMPLING[resampling],
        src_nodata=src.nodata,
        nodata=np.nan,
        dtype="float32",
    ) as vrt:
        yield vrt


@contextlib.contextmanager
def open_sar_on_grid(
    sar: RasterInfo, optical: RasterInfo, progress: Progress, resampling: str = "bilinear"
) -> Iterator[Any]:
    """Yield a readable dataset (``read(indexes, window)``) with SAR on the optical grid.

    Raises:
        InputError: no georeferencing to align with, or no overlap (both rasters named).
    """
    if not check_alignment(sar, optical, progress, resampling):
        with reading(sar.path) as ds:
            yield ds
        return
    with warped_onto(sar.path, optical, resampling) as vrt:
        yield vrt


class SarTiles:
    """SAR for one optical tile at a time, on the tile's grid.

    ``read(y, x, size)`` returns (C, size, size) float32 σ0 (dB); NaN where the SAR raster has
    no data. Like :func:`read_padded`, the part of a tile beyond the optical raster is mirrored,
    so SAR and optical padding agree.
    """

    MARGIN = 3
    """Extra SAR pixels read around a tile: the bilinear kernel and rounding need them."""

    def __init__(
        self,
        sar: RasterInfo,
        optical: RasterInfo,
        progress: Progress | None,
        resampling: str = "bilinear",
        resample: bool | None = None,
    ):
        """``resample``: the result of :func:`check_alignment` when the caller already has it
        (one reader per thread checks and warns once); ``progress`` is then unused."""
        self.sar, self.optical, self.resampling = sar, optical, resampling
        if resample is None:
            if progress is None:
                raise ValueError("SarTiles needs a progress to warn on, or resample=")
            resample = check_alignment(sar, optical, progress, resampling)
        self.resample = resample
        self.ds = rasterio.open(sar.path)

    def __enter__(self) -> SarTiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ds.close()

    def read(self, y: int, x: int, size: int) -> np.ndarray:
        if not self.resample:
            return read_padded(self.ds, y, x, size, what=f"SAR raster '{self.sar.name}'").astype(np.float32)
        opt = self.optical
        h, w = min(size, opt.height - y), min(size, opt.width - x)
        dst_transform = opt.transform * Affine.translation(x, y)
        out = np.full((self.ds.count, h, w), np.nan, dtype=np.float32)
        # Tile bounds in the SAR CRS -> SAR pixel window, widened by a margin, clipped to the file.
        xs = (dst_transform.c, dst_transform.c + dst_transform.a * w)
        ys = (dst_transform.f, dst_transform.f + dst_transform.e * h)
        left, bottom, right, top = transform_bounds(
            opt.crs, self.sar.crs, min(xs), min(ys), max(xs), max(ys), densify_pts=21
        )
        win = from_bounds(left, bottom, right, top, transform=self.ds.transform)
        col0 = max(int(np.floor(win.col_off)) - self.MARGIN, 0)
        row0 = max(int(np.floor(win.row_off)) - self.MARGIN, 0)
        col1 = min(int(np.ceil(win.col_off + win.width)) + self.MARGIN, self.ds.width)
        row1 = min(int(np.ceil(win.row_off + win.height)) + self.MARGIN, self.ds.height)
        if col1 > col0 and row1 > row0:
            sw = Window(col0, row0, col1 - col0, row1 - row0)
            src = read_window(self.ds, sw, what=f"SAR raster '{self.sar.name}'").astype(np.float32)
            if self.ds.nodata is not None and not np.isnan(self.ds.nodata):
                src[src == np.float32(self.ds.nodata)] = np.nan
            reproject(
                source=src,
                destination=out,
                src_transform=self.ds.window_transform(sw),
                src_crs=self.sar.crs,
                src_nodata=np.nan,
                dst_transform=dst_transform,
                dst_crs=opt.crs,
                dst_nodata=np.nan,
                resampling=RESAMPLING[self.resampling],
            )
        if h == size and w == size:
            return out
        return np.pad(out, ((0, 0), (0, size - h), (0, size - w)), mode="reflect" if min(h, w) > 1 else "edge")
