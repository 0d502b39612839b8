"""Checks that run before a model loads, and value statistics gathered while tiles are read.

Every failed check is an :class:`~..errors.InputError` with one line naming the file (and the
layer label), the problem and what is expected. Warnings are returned as one-line strings
for the caller's ``Progress.warning``: this module never prints.

Needs numpy and the standard library only (no rasterio, no torch), so the plugin and the
CLI can check a destination before importing anything heavy.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:  # raster.py imports this module; the dataclass is only needed for types
    from .raster import RasterInfo


def raster_label(role: str, name: str) -> str:
    """"optical raster 'x.tif'" for messages; "raster 'x.tif'" for the generic role."""
    return f"raster '{name}'" if role in ("", "raster") else f"{role} raster '{name}'"

GEOTIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
"""Output suffixes the engine writes GeoTIFF to (compared case-insensitively)."""

DEFAULT_CLIP: tuple[float, float] = (0.0, 10000.0)
"""The models' optical input range in DN (reflectance × 10000); see the model cards."""


# ---------------------------------------------------------------------------- dtypes


def check_optical_dtype(info: RasterInfo, clip_hi: float = DEFAULT_CLIP[1], role: str = "optical") -> None:
    """Refuse an optical dtype that cannot hold the model's DN range ``0…clip_hi``.

    Integer types whose maximum is below ``clip_hi`` (uint8, int8 for 10000) would make the
    written prediction wrap around (the output keeps the input's dtype); bool and complex
    data are not reflectance at all. Float types and integers reaching ``clip_hi`` pass.

    Raises:
        InputError: naming the raster, its dtype and what is expected.
    """
    expected = f"reflectance × 10000 (0–{clip_hi:g}), e.g. uint16 or float32"
    where = f"{raster_label(role, info.name)} ({info.path})"
    try:
        dt = np.dtype(info.dtype)
    except TypeError:  # GDAL types numpy has no name for (complex_int16, ...)
        raise InputError(f"{where} has data type {info.dtype}: expected {expected}") from None
    if dt.kind in "fd":
        return
    if dt.kind in "iu" and np.iinfo(dt).max >= clip_hi:
        return
    why = (
        f"which cannot hold values up to {clip_hi:g} (its maximum is {np.iinfo(dt).max})"
        if dt.kind in "iu"
        else "which is not reflectance"
    )
    raise InputError(f"{where} has data type {dt.name}, {why}: expected {expected}")


# ---------------------------------------------------------------------- destination


def estimate_output_bytes(width: int, height: int, bands: int, dtype: str | np.dtype) -> int:
    """Uncompressed size of a ``bands``×``height``×``width`` raster plus 1 % for headers.

    Conservative: the engine writes deflate-compressed GeoTIFF, usually 2–4× smaller.
    """
    try:
        item = np.dtype(dtype).itemsize
    except TypeError:
        item = 8
    raw = int(width) * int(height) * int(bands) * item
    return raw + raw // 100 + 64 * 1024


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists (``path.parent`` when it does)."""
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _os_reason(exc: OSError) -> str:
    """'permission denied', 'read-only file system', ... from an OSError, one line."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return " ".join(str(exc).split()) or type(exc).__name__


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - loop always returns


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_destination(
    out: str | os.PathLike[str],
    estimated_bytes: int = 0,
    inputs: Iterable[str | os.PathLike[str] | RasterInfo] = (),
    suffixes: tuple[str, ...] = GEOTIFF_SUFFIXES,
) -> Path:
    """Check that ``out`` can be written, before any model loads; leaves nothing behind.

    Checks, in order: the suffix (GeoTIFF ``.tif``/``.tiff`` unless ``suffixes`` says
    otherwise); ``out`` is not an existing folder or another non-regular file (a device,
    a pipe); it is none of ``inputs``; its folder exists or can be created (no regular file on
    the way); a file can be created there (probed with a temporary file that is removed at
    once: catches permissions, read-only file systems, ``/proc`` and the like); the free space
    there is at least ``estimated_bytes`` (see :func:`estimate_output_bytes`).

    Does not create missing folders (``atomic_output`` does, when writing starts).

    Returns:
        ``out`` as a Path.

    Raises:
        InputError: one line naming the path and the reason.
    """
    path = Path(out)
    if path.suffix.lower() not in suffixes:
        kinds = "/".join(suffixes)
        what = "GeoTIFF files" if suffixes == GEOTIFF_SUFFIXES else f"{kinds} files"
        raise InputError(
            f"output {path}: outputs are {what} ({kinds}); name it e.g. {path.with_suffix(suffixes[0]).name}"
        )
    if path.is_dir():
        raise InputError(
            f"output {path} is an existing folder: give a file name inside it, "
            f"e.g. {path / ('cloudfree' + suffixes[0])}"
        )
    if path.exists() and not path.is_file():
        raise InputError(
            f"output {path} exists and is not a regular file (a device, pipe or socket): choose another path"
        )
    for item in inputs:
        if isinstance(item, (str, os.PathLike)):
            src, label = Path(item), Path(item).name
        else:
            src, label = item.path, item.name
        if _same_file(path, src):
            raise InputError(f"output {path} is the input raster '{label}' ({src}): choose another file")
    folder = _existing_ancestor(path)
    if not folder.is_dir():
        raise InputError(f"cannot write output {path}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=".probe", dir=folder)
    except OSError as exc:
        where = "its folder" if folder == path.parent else f"{folder} (its folder would be created there)"
        reason = _os_reason(exc)
        if exc.errno == errno.ENOENT:  # the folder exists, yet creating in it says "no such file"
            reason = "the folder does not accept new files (a virtual file system such as /proc or /sys?)"
        raise InputError(f"cannot write output {path}: cannot create a file in {where}: {reason}") from None
    os.close(fd)
    os.unlink(probe)
    if estimated_bytes > 0:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:  # a file system that does not report it: the write will tell
            free = None
        if free is not None and free < estimated_bytes:
            raise InputError(
                f"not enough free space for output {path}: about {_human(estimated_bytes)} needed "
                f"(uncompressed estimate), {_human(free)} free in {folder}"
            )
    return path


# ------------------------------------------------------------------------- values


def _num(x: float) -> str:
    """20000 rather than 2e+04; 0.05 as is."""
    return f"{x:.0f}" if math.isfinite(x) and x == int(x) and abs(x) < 1e12 else f"{x:.4g}"


def _pct(n: int, total: int) -> str:
    """'12.5 %', '< 0.1 %' (never '0.0 %' for a non-zero count)."""
    p = 100.0 * n / total if total else 0.0
    if 0 < p < 0.1:
        return "< 0.1 %"
    if 99.9 < p < 100:
        return "> 99.9 %"
    return f"{p:.1f} %"


@dataclass
class ValueStats:
    """Counts of suspicious values, accumulated block by block (no extra pass over a file).

    Counts are of *pixels* (a location counts once if any of its bands is affected), among
    the pixels added; a pixel is *empty* when every band is nodata or NaN (GDAL's mask rule,
    as :func:`~.raster.invalid_mask`). The mean (over bands and usable values: not NaN, not
    ±inf, not nodata) is the file mean the engine fills missing values with.

    Args:
        role: "optical" (DN, reflectance × 10000) or "SAR" (σ0 in dB); selects the warnings.
        dtype: the raster's data type (saturation is the dtype's maximum for integers).
        nodata: the raster's nodata value, or None.
        clip: the model's input range for this role (optical: (0, 10000)); values above it
            are counted. None: not counted.
    """

    role: str = "optical"
    dtype: str = "float32"
    nodata: float | None = None
    clip: tuple[float, float] | None = DEFAULT_CLIP
    pixels: int = 0
    empty: int = 0
    partial_nan: int = 0
    infinite: int = 0
    saturated: int = 0
    negative: int = 0
    above: int = 0
    count: int = 0
    total: float = 0.0
    vmin: float = math.inf
    vmax: float = -math.inf
    min_fraction: dict[str, float] = field(
        default_factory=lambda: {"saturated": 0.001, "above": 0.01, "partial_nan": 0.001}
    )
    """Warn only from these fractions on (real scenes hold a few saturated or > 1.0 pixels)."""
    _float: bool = field(init=False, repr=False, default=False)
    _signed: bool = field(init=False, repr=False, default=False)
    _sat: int | None = field(init=False, repr=False, default=None)
    _nodata: float | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            dt = np.dtype("float64")
        self._float = dt.kind == "f"
        self._signed = dt.kind in "if"
        self._sat = np.iinfo(dt).max if dt.kind in "iu" else None
        nd = self.nodata
        self._nodata = None if nd is None or (isinstance(nd, float) and math.isnan(nd)) else nd

    @property
    def floating(self) -> bool:
        """True for a float dtype (NaN and ±inf possible)."""
        return self._float

    @property
    def valid(self) -> int:
        """Pixels with at least one usable band."""
        return self.pixels - self.empty

    @property
    def mean(self) -> float:
        """Mean of usable values over all bands; 0.0 when there is none."""
        return self.total / self.count if self.count else 0.0

    def add(self, block: np.ndarray, valid_mask: np.ndarray | None = None) -> None:
        """Count the (C, H, W) ``block`` in the file's dtype (before any fill).

        ``valid_mask``: (H, W) bool, True for the pixels to count (e.g. a tile's part inside
        the raster, not its mirrored padding); None counts them all.
        """
        a = block
        if a.ndim == 2:
            a = a[None]
        sel = None if valid_mask is None else np.asarray(valid_mask, dtype=bool)
        n_sel = a.shape[1] * a.shape[2] if sel is None else int(sel.sum())
        if n_sel == 0:
            return
        self.pixels += n_sel
        bad = np.isnan(a) if self._float else None  # value-level: NaN
        if self._nodata is not None:
            nd = a == self._nodata
            bad = nd if bad is None else bad | nd
        if bad is not None:
            empty = bad.all(axis=0)
            if sel is not None:
                empty &= sel
            self.empty += int(empty.sum())
        usable = None if bad is None else ~bad  # value-level: neither NaN nor nodata
        if self._float:
            inf = np.isinf(a)
            if inf.any():
                self.infinite += self._count_px(inf, sel)
                usable = ~inf if usable is None else usable & ~inf
            if bad is not None:
                nan = np.isnan(a)
                if nan.any():
                    partial = nan.any(axis=0) & ~bad.all(axis=0)  # NaN somewhere, yet not an empty pixel
                    self.partial_nan += self._count_px(partial[None], sel)
        if sel is not None:
            usable = np.broadcast_to(sel, a.shape) if usable is None else usable & sel
        vals = a if usable is None else a[usable]
        if vals.size:
            lo, hi = float(vals.min()), float(vals.max())
            self.count += int(vals.size)
            self.total += float(vals.sum(dtype=np.float64))
            self.vmin, self.vmax = min(self.vmin, lo), max(self.vmax, hi)
            # the per-pixel counts below cost a pass each: only where this block needs them
            if self._sat is not None and hi >= self._sat:
                self.saturated += self._count_px(self._where(a == self._sat, usable), None)
            if self._signed and lo < 0:
                self.negative += self._count_px(self._where(a < 0, usable), None)
            if self.clip is not None and hi > self.clip[1]:
                over = a > self.clip[1]
                if self._sat is not None:
                    over &= a != self._sat  # counted as saturated, not twice
                self.above += self._count_px(self._where(over, usable), None)

    @staticmethod
    def _where(cond: np.ndarray, usable: np.ndarray | None) -> np.ndarray:
        return cond if usable is None else cond & usable

    @staticmethod
    def _count_px(cond: np.ndarray, sel: np.ndarray | None) -> int:
        px = cond.any(axis=0)
        if sel is not None:
            px &= sel
        return int(px.sum())

    def merge(self, other: ValueStats) -> None:
        """Add ``other``'s counts (e.g. per-thread accumulators)."""
        for name in ("pixels", "empty", "partial_nan", "infinite", "saturated", "negative", "above", "count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.total += other.total
        self.vmin = min(self.vmin, other.vmin)
        self.vmax = max(self.vmax, other.vmax)

    def _due(self, kind: str, n: int) -> bool:
        return n > 0 and n / max(self.valid, 1) >= self.min_fraction.get(kind, 0.0)

    def warnings(self, name: str) -> list[str]:
        """One-line warnings with the fraction of (non-empty) pixels affected; [] when clean.

        ``name`` labels the raster (layer name or file name). An empty raster gives no
        warning here: see :func:`check_not_empty`.
        """
        if self.valid <= 0:
            return []
        where = raster_label(self.role, name)
        n = self.valid
        out: list[str] = []
        optical = self.role.lower() != "sar"
        lo, hi = self.clip if self.clip is not None else (None, None)
        rng = f"{lo:g}–{hi:g}" if lo is not None and hi is not None else "the model's range"
        if self._due("infinite", self.infinite):
            out.append(
                f"{where}: {_pct(self.infinite, n)} of pixels hold ±inf in some band; "
                f"they are clipped into {rng}{'' if optical else ' dB'} (check how the file was made)"
            )
        if self._due("partial_nan", self.partial_nan):
            out.append(
                f"{where}: {_pct(self.partial_nan, n)} of pixels are NaN in some but not all bands; "
                f"those bands are filled with the file mean ({self.mean:.4g})"
            )
        if not optical:
            if self.count and self.vmin >= 0:
                out.append(
                    f"{where} has no negative value (min {_num(self.vmin)}, max {_num(self.vmax)}): "
                    "expected σ0 in dB (10·log10 of the linear backscatter, mostly −25…0)"
                )
            return out
        if self._due("saturated", self.saturated):
            out.append(
                f"{where}: {_pct(self.saturated, n)} of pixels are saturated ({self._sat}, the "
                f"{np.dtype(self.dtype).name} maximum) in some band; expected reflectance × 10000 "
                f"({rng}): check the input scaling"
            )
        if self._due("negative", self.negative):
            out.append(
                f"{where}: {_pct(self.negative, n)} of pixels have negative values (min {_num(self.vmin)}); "
                f"reflectance cannot be negative: they are clipped to {lo if lo is not None else 0:g}"
            )
        if self._due("above", self.above):
            out.append(
                f"{where}: {_pct(self.above, n)} of pixels exceed {hi:g} (max {_num(self.vmax)}); "
                f"they are clipped to {hi:g}: expected reflectance × 10000"
            )
        if self._float and self.count and self.vmin >= 0 and self.vmax <= 2.0 and (hi or 0) > 100:
            out.append(
                f"{where} has values {_num(self.vmin)}–{_num(self.vmax)}: this looks like reflectance "
                f"0–1, but the model expects reflectance × 10000 (0–{hi:g}): multiply by 10000"
            )
        return out


def check_not_empty(
    stats: ValueStats, info: RasterInfo, role: str = "optical", fill: float | None = None
) -> str | None:
    """Stop on an optical raster without a valid pixel; word the warning for others.

    Call after the raster's statistics are complete (e.g. from
    :func:`~.raster.scan_statistics`, which the engine's file-mean pass already is).

    Returns:
        None when the raster has a valid pixel; for a non-optical role (SAR) the warning
        line to emit ("... filled with <fill> dB"), the run goes on without SAR information.

    Raises:
        InputError: for the optical role (nothing to remove clouds from), naming the raster.
    """
    if stats.pixels == 0 or stats.valid > 0:
        return None
    what = "nodata" if stats.nodata is not None else "NaN"
    if stats.nodata is not None and stats.floating:
        what = "nodata/NaN"
    if role.lower() != "sar":
        raise InputError(
            f"{raster_label(role, info.name)} ({info.path}) has no valid pixel (all {what}): nothing to remove "
            "clouds from; check the file or its nodata value"
        )
    filled = f"filled with {fill:g} dB" if fill is not None else "filled with a constant"
    return (
        f"{raster_label(role, info.name)} ({info.path}) has no valid value (all {what}): {filled}, so the "
        "result relies on the optical data alone"
    )
