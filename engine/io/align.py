"""Put the SAR raster on the optical grid: as is when the grids match, else warped on the fly.

GLF-CR-type models want SAR pixel-aligned with the optical image. When the SAR raster has
another CRS, resolution or origin, a rasterio ``WarpedVRT`` resamples it onto the optical
grid (bilinear, on the dB values) while tiles are read, and the user is told.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from ..errors import InputError
from ..progress import Progress
from .raster import RasterInfo


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


@contextlib.contextmanager
def open_sar_on_grid(sar: RasterInfo, optical: RasterInfo, progress: Progress) -> Iterator[Any]:
    """Yield a readable dataset (``read(indexes, window)``) with SAR on the optical grid.

    Raises:
        InputError: no georeferencing to align with, or no overlap (both rasters named).
    """
    if same_grid(sar, optical):
        with rasterio.open(sar.path) as ds:
            yield ds
        return
    if sar.crs is None or optical.crs is None:
        raise InputError(
            f"SAR raster {sar.describe()} and optical raster {optical.describe()} are not on the same "
            "grid and at least one has no CRS, so they cannot be aligned"
        )
    frac = coverage(optical, sar)
    if frac <= 0:
        sb = transform_bounds(sar.crs, optical.crs, *sar.bounds, densify_pts=21)
        raise InputError(
            f"SAR raster {sar.describe()} does not overlap optical raster {optical.describe()}: "
            f"SAR extent {_fmt_bounds(sb)} vs optical extent {_fmt_bounds(optical.bounds)} "
            f"(both in {optical.crs.to_string()})"
        )
    rx, ry = sar.resolution
    progress.warning(
        f"SAR raster '{sar.name}' ({sar.crs.to_string()}, {rx:g}×{ry:g} per pixel) is not on the grid "
        f"of optical raster '{optical.name}' ({optical.crs.to_string()}, "
        f"{optical.resolution[0]:g}×{optical.resolution[1]:g}); resampling SAR onto the optical grid "
        "on the fly (bilinear, in dB)"
    )
    if frac < 0.999:
        progress.warning(
            f"SAR raster '{sar.name}' covers only {100 * frac:.1f}% of optical raster '{optical.name}'; "
            "pixels without SAR get the SAR file mean and their result is unreliable"
        )
    with rasterio.open(sar.path) as src, WarpedVRT(
        src,
        crs=optical.crs,
        transform=optical.transform,
        width=optical.width,
        height=optical.height,
        resampling=Resampling.bilinear,
        src_nodata=src.nodata,
        nodata=np.nan,
        dtype="float32",
    ) as vrt:
        yield vrt
