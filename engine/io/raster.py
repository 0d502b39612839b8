"""Raster I/O with rasterio: descriptions, streamed statistics, windowed reads, atomic writes.

Outputs are written to a temporary file next to the destination and renamed into place only
when complete, so a failure or a cancel never leaves a half-written GeoTIFF behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import InputError


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about an input raster."""

    path: Path
    name: str  # label for messages: a QGIS layer name or the file name
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Any  # affine.Affine
    nodata: float | None
    descriptions: tuple[str | None, ...]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the raster's CRS."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def resolution(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    def describe(self) -> str:
        crs = self.crs.to_string() if self.crs else "no CRS"
        return f"'{self.name}' ({self.width}×{self.height} px, {self.count} bands, {crs})"


def raster_info(path: str | os.PathLike[str], name: str | None = None, role: str = "raster") -> RasterInfo:
    """Open ``path`` and describe it; errors name the role ('optical', 'SAR'), label and path."""
    path = Path(path)
    label = name or path.name
    if not path.exists():
        raise InputError(f"{role} raster '{label}': file not found: {path}")
    try:
        with rasterio.open(path) as ds:
            return RasterInfo(
                path=path,
                name=label,
                width=ds.width,
                height=ds.height,
                count=ds.count,
                dtype=ds.dtypes[0],
                crs=ds.crs,
                transform=ds.transform,
                nodata=ds.nodata,
                descriptions=tuple(ds.descriptions),
            )
    except rasterio.RasterioIOError as exc:
        raise InputError(f"{role} raster '{label}' cannot be read as a raster ({path}): {exc}") from exc


def invalid_mask(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) True where a pixel is nodata or NaN in every band (GDAL's dataset-mask rule)."""
    bad = np.isnan(block) if block.dtype.kind == "f" else np.zeros(block.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad = bad | (block == nodata)
    return bad.all(axis=0)


def file_mean(ds: rasterio.io.DatasetReader, nodata: float | None = None, block: int = 1024) -> float:
    """Mean over all bands and valid pixels, read block-wise (memory bounded by ``block``²).

    NaN and ``nodata`` pixels are skipped; this is the fill value for them (spec: file nanmean).
    """
    nodata = ds.nodata if nodata is None else nodata
    total, count = 0.0, 0
    for y in range(0, ds.height, block):
        for x in range(0, ds.width, block):
            w = Window(x, y, min(block, ds.width - x), min(block, ds.height - y))
            a = ds.read(window=w).astype(np.float64)
            ok = ~np.isnan(a)
            if nodata is not None and not math.isnan(nodata):
                ok &= a != nodata
            total += float(a[ok].sum())
            count += int(ok.sum())
    return total / count if count else 0.0


def read_padded(ds: Any, y: int, x: int, size: int, bands: list[int] | None = None) -> np.ndarray:
    """Read a size×size window at (y, x); parts beyond the raster are mirrored (reflect).

    Returns (C, size, size) in the file's dtype; the valid part is the top-left
    min(size, H − y) × min(size, W − x).
    """
    h = min(size, ds.height - y)
    w = min(size, ds.width - x)
    a = ds.read(indexes=bands, window=Window(x, y, w, h))
    if h == size and w == size:
        return a
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(a, ((0, 0), (0, size - h), (0, size - w)), mode=mode)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    On any exception (including cancel) the temporary file is deleted and ``path`` is left
    untouched (an existing file there is not removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        aux = tmp_path.with_name(tmp_path.name + ".aux.xml")
        aux.unlink(missing_ok=True)


def geotiff_profile(info: RasterInfo, count: int, dtype: str, nodata: float | None) -> dict[str, Any]:
    """Creation options for a tiled, compressed GeoTIFF on ``info``'s exact grid."""
    integer = np.dtype(dtype).kind in "iu"
    return {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": count,
        "dtype": dtype,
        "crs": info.crs,
        "transform": info.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2 if integer else 3,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
