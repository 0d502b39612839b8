"""True-colour PNG quicklooks (input | output side by side) for people to look at.

Unreadable or missing inputs and unwritable outputs are :class:`InputError` naming the file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from .data.bands import S2_BANDS, S2_RGB, band_indices
from .errors import InputError
from .io.checks import check_destination
from .io.raster import atomic_output, open_raster, raster_info, read_window


def _read_rgb(path: Path, bands: Sequence[str], max_side: int, role: str) -> np.ndarray:
    info = raster_info(path, role=role)  # missing, a folder, not a raster: InputError naming it
    with open_raster(info.path) as ds:
        names = [d or "" for d in ds.descriptions]
        if all(b in names for b in bands):
            idx = [i + 1 for i in band_indices(names, bands, str(path))]
        elif ds.count == 13:  # SEN12MS-CR order without descriptions
            idx = [i + 1 for i in band_indices(S2_BANDS, bands, str(path))]
        elif ds.count >= 3:
            idx = [1, 2, 3]
        else:
            raise InputError(f"{path}: {ds.count} band(s), cannot make a true-colour image")
        f = max(1, int(np.ceil(max(ds.width, ds.height) / max_side)))
        shape = (3, max(1, ds.height // f), max(1, ds.width // f))
        a = read_window(
            ds, Window(0, 0, ds.width, ds.height), bands=idx, what=f"{role} raster '{info.name}'",
            out_shape=shape, resampling=Resampling.average,
        ).astype(np.float32)
        if ds.nodata is not None:
            a[a == ds.nodata] = np.nan
        return a


def stretch(a: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(3, H, W) → uint8 with per-band linear stretch [lo, hi] → [0, 255]; NaN → 0."""
    out = (a - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]
    return (np.nan_to_num(np.clip(out, 0, 1), nan=0.0) * 255 + 0.5).astype(np.uint8)


def side_by_side(
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    bands: Sequence[str] = S2_RGB,
    max_side: int = 1024,
    gap: int = 8,
) -> Path:
    """Write ``before | after`` as one PNG, both with the 2–98 % stretch of ``after``.

    The common stretch comes from the cloud-free output so ground looks natural and
    remaining cloud in the input saturates to white.

    Raises:
        InputError: an input missing or unreadable, or ``out_png`` not a writable ``.png`` path.
    """
    # a quicklook is at most 3 × max_side × (2 max_side + gap) bytes: the folder check is what matters
    check_destination(out_png, 3 * max_side * (2 * max_side + gap), inputs=(before, after), suffixes=(".png",))
    a = _read_rgb(Path(before), bands, max_side, "before")
    b = _read_rgb(Path(after), bands, max_side, "after")
    lo = np.nanpercentile(b.reshape(3, -1), 2, axis=1)
    hi = np.nanpercentile(b.reshape(3, -1), 98, axis=1)
    h = max(a.shape[1], b.shape[1])
    canvas = np.full((3, h, a.shape[2] + gap + b.shape[2]), 255, dtype=np.uint8)
    canvas[:, : a.shape[1], : a.shape[2]] = stretch(a, lo, hi)
    canvas[:, : b.shape[1], a.shape[2] + gap :] = stretch(b, lo, hi)
    with atomic_output(out_png) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a PNG picture, not a map
        with rasterio.open(
            tmp, "w", driver="PNG", width=canvas.shape[2], height=h, count=3, dtype="uint8"
        ) as dst:
            dst.write(canvas)
    return Path(out_png)
