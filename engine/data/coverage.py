"""Cloud cover of Sentinel-2 L1C patches by the engine's default cloud mask, and its cache.

The default mask is the one ``cloudrm:cloudmask`` (and ``engine.masks.cloud_mask_scene``) use
without options: s2cloudless, probability threshold 0.4, averaged over a disk and dilated with
the package's recommended sizes scaled by the pixel size (22 and 11 px at 10 m), native
resolution. Coverage = fraction of cloudy pixels. As in the SEN12MS-CR-TS loaders, a blank
image (mean and standard deviation of the DN below 1e-5) counts as fully cloudy, so it is
never picked as a cloud-free reference.

Coverage of a time series costs 30 mask computations per patch location (≈0.4 s each for
256² px on one CPU core), so values are cached in ``cloudrm_coverage.csv`` (columns ``path``
— relative to the dataset root — and ``coverage``). The SEN12MS-CR-TS authors' precomputed
``generic_<n>_<split>_<region>_s2cloudless_mask.npy`` files can be imported too; they are
pickled, so they are read with an unpickler that only builds numbers, strings, containers,
numpy arrays and tensors (never arbitrary objects). Their values come from s2cloudless with
UnCRtainTS's own disk sizes (4 and 2 px), so they are not identical to the engine's mask.
"""

from __future__ import annotations

import csv
import io
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from .common import SampleError, open_raster, read_window

CACHE_NAME = "cloudrm_coverage.csv"
_DETECTORS: dict[tuple[int, int], Any] = {}


def _detector(pixel_size: float) -> Any:
    from ..masks import DEFAULT_THRESHOLD, _s2cloudless_detector, s2cloudless_disks

    disks = s2cloudless_disks(pixel_size)
    if disks not in _DETECTORS:
        _DETECTORS[disks] = _s2cloudless_detector(DEFAULT_THRESHOLD["s2cloudless"], *disks)
    return _DETECTORS[disks]


def default_cloud_mask(dn: np.ndarray, pixel_size: float = 10.0) -> np.ndarray:
    """The engine's default cloud mask of one L1C patch.

    Args:
        dn: (13, H, W) raw DN (reflectance × 10000), bands B1 … B8, B8A, B9 … B12; NaN allowed.
        pixel_size: metres per pixel (sets the disk sizes).

    Returns:
        (H, W) uint8, 1 = cloud. A blank patch gives all ones.
    """
    from ..masks import _s2cloudless_block

    if dn.ndim != 3 or dn.shape[0] != 13:
        raise InputError(f"the default cloud mask needs a (13, H, W) L1C array; got {dn.shape}")
    a = np.nan_to_num(dn.astype(np.float32), nan=0.0)
    if float(a.mean()) < 1e-5 and float(a.std()) < 1e-5:
        return np.ones(a.shape[1:], np.uint8)
    valid = np.ones(a.shape[1:], bool)
    return _s2cloudless_block(_detector(pixel_size), a, valid)


def pixel_size(ds: Any) -> float:
    """Metres per pixel of an open raster (10 m when the CRS is geographic or missing)."""
    if ds.crs is None or ds.crs.is_geographic:
        return 10.0
    return float(abs(ds.transform.a))


def file_cloud_cover(path: Path, what: str = "S2") -> float:
    """Coverage of one 13-band L1C GeoTIFF by :func:`default_cloud_mask`."""
    with open_raster(path, what, bands=13) as ds:
        dn = read_window(ds, what)
        return float(default_cloud_mask(dn, pixel_size(ds)).mean())


def read_cache(path: Path) -> dict[str, float]:
    """``{relative path: coverage}`` from a cache CSV (empty when the file is absent)."""
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or (n == 1 and row[0] == "path"):
                continue
            if len(row) < 2:
                raise InputError(f"{path} line {n}: expected 'path,coverage'")
            try:
                out[row[0]] = float(row[1])
            except ValueError:
                raise InputError(f"{path} line {n}: coverage {row[1]!r} is not a number") from None
    return out


def write_cache(path: Path, values: dict[str, float]) -> Path:
    """Write ``values`` sorted by path (atomic rename, so a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "coverage"])
        for k in sorted(values):
            w.writerow([k, f"{values[k]:.6f}"])
    tmp.replace(path)
    return path


class _SafeUnpickler(pickle.Unpickler):
    """Builds only plain containers, numbers, strings, numpy arrays/scalars and tensors."""

    _NUMPY: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        import collections

        import torch

        if (module, name) in self._NUMPY:
            return getattr(__import__(module, fromlist=[name]), name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            from torch._utils import _rebuild_tensor_v2

            return _rebuild_tensor_v2
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            # torch's own helper would torch.load(weights_only=False); only tensors are allowed here
            return lambda b: torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}")


def read_uncrtaints_npy(path: Path) -> dict[str, float]:
    """``{'<roi dir>/<roi>/S2/<t>/<file>': coverage}`` from an UnCRtainTS ``generic_*.npy`` file.

    The file holds ``{index: {'coverage': [per-step], 'paths': {'S1': [...], 'S2': [...]}}}``;
    paths are matched on their last five components (``ROIs1868/73/S2/0/s2_….tif``).
    """
    from numpy.lib import format as npy

    try:
        with path.open("rb") as f:
            version = npy.read_magic(f)
            if version == (1, 0):
                _, _, dtype = npy.read_array_header_1_0(f)
            else:
                _, _, dtype = npy.read_array_header_2_0(f)
            if dtype != np.dtype(object):
                raise InputError(f"{path}: expected a pickled dict (dtype object), found {dtype}")
            obj = _SafeUnpickler(f).load()
    except (OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise InputError(f"{path}: not a readable UnCRtainTS coverage file ({exc})") from exc
    table = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(table, dict):
        raise InputError(f"{path}: expected a dict of samples, found {type(table).__name__}")
    out: dict[str, float] = {}
    for entry in table.values():
        try:
            covs, paths = entry["coverage"], entry["paths"]["S2"]
        except (KeyError, TypeError):
            raise InputError(
                f"{path}: entries need 'coverage' and 'paths'/'S2' (an UnCRtainTS 'generic' file)"
            ) from None
        for c, p in zip(covs, paths, strict=False):
            p = p[0] if isinstance(p, (list, tuple)) else p
            out["/".join(str(p).replace("\\", "/").split("/")[-5:])] = float(np.asarray(c, dtype=np.float64).ravel()[0])
    return out


def lookup(values: dict[str, float], rel: str) -> float | None:
    """Coverage of ``rel`` (dataset-relative path) in a cache or an imported UnCRtainTS table."""
    if rel in values:
        return values[rel]
    return values.get("/".join(rel.split("/")[-5:]))


def compute_missing(
    root: Path, paths: Iterable[Path], known: dict[str, float], workers: int = 0, progress: Any = None
) -> dict[str, float]:
    """Coverage of every path not yet in ``known`` (keys relative to ``root``); returns the new ones.

    ``workers`` > 0 spreads the work over that many processes. A file that cannot be read is a
    :class:`SampleError` naming it.
    """
    from .common import relpath

    todo = [p for p in paths if lookup(known, relpath(p, root)) is None]
    new: dict[str, float] = {}
    if not todo:
        return new
    if workers > 0 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for n, (p, c) in enumerate(zip(todo, pool.map(file_cloud_cover, todo, chunksize=8), strict=True), 1):
                new[relpath(p, root)] = c
                if progress is not None:
                    progress.update(n, len(todo))
    else:
        for n, p in enumerate(todo, 1):
            new[relpath(p, root)] = file_cloud_cover(p)
            if progress is not None:
                progress.update(n, len(todo))
    return new


__all__ = [
    "CACHE_NAME", "SampleError", "compute_missing", "default_cloud_mask", "file_cloud_cover", "lookup",
    "read_cache", "read_uncrtaints_npy", "write_cache",
]
