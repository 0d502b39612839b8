"""Raster I/O with rasterio: descriptions, streamed statistics, windowed reads, atomic writes.

Outputs are written to a temporary file next to the destination and renamed into place only
when complete, so a failure or a cancel never leaves a half-written GeoTIFF behind.

No rasterio or GDAL exception leaves this module's readers: a file that cannot be opened or
a block that cannot be read is an :class:`InputError` naming the file, its label and the
block, so callers never show a GDAL traceback.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import CloudrmError, InputError
from .checks import ValueStats, _human, check_destination, raster_label
from .per_thread import PerThread


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


def _quiet_open(path: Path) -> Any:
    """``rasterio.open(path)`` without NotGeoreferencedWarning: a raster without georeferencing
    is reported by the grid checks as an error with its name, not as a Python warning on stderr."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


@contextlib.contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[Any]:
    """:func:`open_raster` as a context manager that any thread may exit.

    rasterio ≥ 1.4 gives a dataset entered with ``with`` a GDAL environment when the entering
    thread has none, and ends it on exit in whichever thread exits. Reader threads open
    datasets that the main thread closes when the run ends: that ended the main thread's
    environment instead ("No GDAL environment exists" when its own ``rasterio.Env`` closed).
    Opening without entering the dataset and closing it explicitly touches no environment.
    """
    ds = _quiet_open(Path(path))
    try:
        yield ds
    finally:
        ds.close()


def thread_env() -> None:
    """Give the calling worker thread a GDAL environment for the rest of its life.

    For pool threads that end with the run (the pipeline's readers, the statistics pass).
    Without one, :func:`read_window` opened and closed an environment around every read, two
    reads a tile: with in-place scaling, reading a 256-px 13-band tile went from 5.1 to 4.1 ms
    (``scripts/bench_io.py``). Never call it on a thread that outlives the run (the caller's,
    QGIS's task threads).
    """
    if not rasterio.env.hasenv():
        rasterio.env.defenv()


def open_raster(path: str | os.PathLike[str]) -> Any:
    """``rasterio.open(path)`` for reading, without rasterio's NotGeoreferencedWarning.

    The engine's grid checks name a raster without georeferencing themselves; rasterio's
    warning would print two lines of Python internals on stderr. Use it for every read.
    """
    return _quiet_open(Path(path))


def raster_info(path: str | os.PathLike[str], name: str | None = None, role: str = "raster") -> RasterInfo:
    """Open ``path`` and describe it; errors name the role ('optical', 'SAR'), label and path."""
    path = Path(path)
    label = name or path.name
    what = raster_label(role, label)
    if not path.exists():
        raise InputError(f"{what}: file not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} ({path}) is a folder, not a raster file")
    try:
        with _quiet_open(path) as ds:
            if ds.count == 0:  # e.g. a NetCDF/HDF container: its layers are subdatasets
                raise InputError(
                    f"{what} ({path}) has no raster band (a container of subdatasets?): "
                    "give a GeoTIFF with the bands"
                )
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
    except CloudrmError:
        raise
    except Exception as exc:  # RasterioIOError, CRSError, CPLE_*, OSError, ValueError: all the file's fault
        raise InputError(
            f"{what} cannot be read as a raster ({path}): {gdal_message(exc)}"
        ) from exc


def invalid_mask(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) True where a pixel is nodata or NaN in every band (GDAL's dataset-mask rule)."""
    bad = np.isnan(block) if block.dtype.kind == "f" else np.zeros(block.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad = bad | (block == nodata)
    return bad.all(axis=0)


_GENERIC = re.compile(r"^(Read or write failed\.|Read failed\. See previous exception for details\.)\s*")
"""rasterio's own words around GDAL's message: 1.3 prefixes it, 1.4 raises this text from
GDAL's error (its ``__cause__``)."""


def gdal_message(exc: BaseException) -> str:
    """A GDAL/rasterio error as one short line: GDAL's message, without rasterio's generic text."""
    e: BaseException | None = exc
    text = ""
    for _ in range(5):  # down the explicit `raise … from` chain to GDAL's own message
        if e is None:
            break
        text = _GENERIC.sub("", " ".join(str(e).split()))
        if text:
            break
        e = e.__cause__
    if not text:
        return type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _source(ds: Any) -> str:
    """The file behind ``ds`` (a WarpedVRT's ``name`` is 'WarpedVRT(...)'; its files say which)."""
    try:
        files = ds.files or []
    except Exception:  # not every dataset-like object lists its files
        files = []
    return str(files[0]) if files else str(getattr(ds, "name", "raster"))


def _what(ds: Any, what: str | None) -> str:
    """'optical raster 'x.tif' (/path/x.tif)' for messages."""
    src = _source(ds)
    return f"{what} ({src})" if what else f"raster '{Path(src).name}' ({src})"


def _span(start: int, length: int) -> str:
    return f"{start}–{start + length - 1}" if length > 1 else str(start)


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a failed GDAL read raises through rasterio (the CPLE_* classes are not RasterioError)."""
    from rasterio.errors import RasterioError

    try:
        from rasterio._err import CPLE_BaseError
    except ImportError:  # pragma: no cover - rasterio moved it
        return (RasterioError, OSError)
    return (RasterioError, CPLE_BaseError, OSError)


def read_window(
    ds: Any,
    window: Window,
    bands: Sequence[int] | int | None = None,
    what: str | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """``ds.read(bands, window=window, **kwargs)``; a failed read is an :class:`InputError`.

    Args:
        ds: an open rasterio dataset (or WarpedVRT).
        window: the pixels to read.
        bands: 1-based band index(es), None for all.
        what: label for the message, e.g. ``"optical raster 'scene.tif'"`` (the path is added);
            None: ``"raster '<file name>'"``.
        kwargs: passed to ``ds.read`` (``out_shape``, ``resampling``, ...).

    Raises:
        InputError: "cannot read rows 256–511, columns 0–255 of optical raster 'x.tif'
            (/path/x.tif): the file is truncated or corrupt (<GDAL's message>)".
    """
    try:
        if rasterio.env.hasenv():
            return ds.read(indexes=bands, window=window, **kwargs)
        # outside an Env, GDAL prints its own "ERROR 1: ..." lines to stderr before rasterio
        # raises; inside one they go to logging, and our one-line InputError says it all
        with rasterio.Env():
            return ds.read(indexes=bands, window=window, **kwargs)
    except _read_errors() as exc:
        w = Window(*window.flatten()) if hasattr(window, "flatten") else window
        r0, c0 = int(w.row_off), int(w.col_off)
        raise InputError(
            f"cannot read rows {_span(r0, int(w.height))}, columns {_span(c0, int(w.width))} of "
            f"{_what(ds, what)}: the file is truncated or corrupt ({gdal_message(exc)})"
        ) from exc


def scan_statistics(
    ds: Any,
    nodata: float | None = None,
    block: int = 1024,
    bands: Sequence[int] | None = None,
    what: str | None = None,
    role: str = "raster",
    clip: tuple[float, float] | None = None,
    threads: int | None = None,
) -> ValueStats:
    """One block-wise pass over ``ds`` (memory bounded by ``block``² per thread): mean and value counts.

    The mean (over all bands and usable values: not NaN, not ±inf, not ``nodata``) is the
    fill value for missing pixels; the counts feed :meth:`ValueStats.warnings` and
    :func:`~.checks.check_not_empty`. Read failures are :class:`InputError` (see
    :func:`read_window`). ``threads``: readers (None: :func:`scan_threads`; 1: this thread only).
    """
    nodata = ds.nodata if nodata is None else nodata
    dtype = ds.dtypes[(bands[0] - 1) if bands else 0]
    stats = ValueStats(role=role, dtype=dtype, nodata=nodata, clip=clip)
    idx = list(bands) if bands else None
    windows = [Window(x, y, min(block, ds.width - x), min(block, ds.height - y))
               for y in range(0, ds.height, block) for x in range(0, ds.width, block)]
    n = min(scan_threads() if threads is None else threads, len(windows))
    if n <= 1 or not _reopenable(ds):
        for w in windows:
            stats.add(read_window(ds, w, bands=idx, what=what))
        return stats
    # Decoding dominates (a whole S2 tile's SAR: ~4 s on one core) and GDAL releases the GIL
    # while decoding, so blocks are read by threads, each with its own handle (GDAL handles are
    # not thread-safe). Merging the per-block counts in block order adds the same float64 sums
    # in the same order as one thread would: the result is bit-identical.
    handles: PerThread[Any] = PerThread(lambda: open_raster(ds.name), lambda h: h.close())

    def part(w: Window) -> ValueStats:
        one = ValueStats(role=role, dtype=dtype, nodata=nodata, clip=clip)
        one.add(read_window(handles.get(), w, bands=idx, what=what))
        return one

    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="cloudrm-scan", initializer=thread_env) as pool:
            for one in pool.map(part, windows):
                stats.merge(one)
    finally:
        handles.close()
    return stats


def scan_threads() -> int:
    """Threads for a statistics pass: the cores, up to 8 (decoding scales about that far)."""
    return max(1, min(8, os.cpu_count() or 1))


def _reopenable(ds: Any) -> bool:
    """Whether ``ds`` can be opened again by name for reading (a file or a GDAL virtual path)."""
    name = str(getattr(ds, "name", ""))
    return getattr(ds, "mode", "r") == "r" and (name.startswith("/vsi") or os.path.isfile(name))


def file_mean(ds: Any, nodata: float | None = None, block: int = 1024, what: str | None = None) -> float:
    """Mean over all bands and valid values, read block-wise (memory bounded by ``block``²).

    NaN, ±inf and ``nodata`` values are skipped; this is the fill value for them (spec: file
    nanmean); 0.0 when nothing is valid. See :func:`scan_statistics` for the counts as well.
    """
    return scan_statistics(ds, nodata, block, what=what).mean


def read_padded(
    ds: Any, y: int, x: int, size: int, bands: list[int] | None = None, what: str | None = None
) -> np.ndarray:
    """Read a size×size window at (y, x); parts beyond the raster are mirrored (reflect).

    Returns (C, size, size) in the file's dtype; the valid part is the top-left
    min(size, H − y) × min(size, W − x). A failed read is an :class:`InputError` naming the
    file (``what`` labels it) and the window.
    """
    h = min(size, ds.height - y)
    w = min(size, ds.width - x)
    a = read_window(ds, Window(x, y, w, h), bands=bands, what=what)
    if h == size and w == size:
        return a
    mode: Literal["reflect", "edge"] = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(a, ((0, 0), (0, size - h), (0, size - w)), mode=mode)


# ------------------------------------------------------------------ cheap read check

_TIFF_ITEM = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # SHORT, LONG, LONG8: offsets and counts
_BLOCK_TAGS = {273: "offsets", 279: "counts", 324: "offsets", 325: "counts"}  # strips, tiles
_MAX_IFDS = 4096  # overviews, masks: far beyond any real file; stops a looping chain


@dataclass(frozen=True)
class TiffExtent:
    """Where a TIFF's image data ends, from its directories (no pixel decoded)."""

    size: int  # file size in bytes
    end: int  # first byte after the furthest directory, offset array or block
    blocks: int  # non-empty strips/tiles over all directories (overviews, masks included)
    empty: int = 0  # strips/tiles with no data on disk (offset or byte count 0): sparse, or never written


def tiff_extent(path: str | os.PathLike[str]) -> TiffExtent | None:
    """Walk a (Big)TIFF's directories and block tables; None when not a TIFF or not parseable.

    Reads only the directories and the strip/tile offset and byte-count tables (a few KB to
    a few hundred KB for a 10980×10980 scene), never pixel data. A block table that points
    past the end of the file (``end > size``) means the file is truncated.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _walk_tiff(f, size)
    except (OSError, struct.error, ValueError, OverflowError, MemoryError):
        return None


def _walk_tiff(f: Any, size: int) -> TiffExtent | None:
    head = f.read(16)
    if head[:2] == b"II":
        e = "<"
    elif head[:2] == b"MM":
        e = ">"
    else:
        return None
    magic = struct.unpack(e + "H", head[2:4])[0]
    if magic == 42:
        big, ifd = False, struct.unpack(e + "I", head[4:8])[0]
    elif magic == 43 and len(head) == 16:
        big, ifd = True, struct.unpack(e + "Q", head[8:16])[0]
    else:
        return None
    count_fmt, count_len, entry_len, off_fmt, off_len = (
        ("Q", 8, 20, "Q", 8) if big else ("H", 2, 12, "I", 4)
    )
    end, blocks, empty = 0, 0, 0
    seen: set[int] = set()
    while ifd and ifd not in seen and len(seen) < _MAX_IFDS:
        seen.add(ifd)
        if ifd + count_len > size:
            return TiffExtent(size, ifd + count_len, blocks, empty)
        f.seek(ifd)
        n = struct.unpack(e + count_fmt, f.read(count_len))[0]
        if ifd + count_len + n * entry_len + off_len > size:
            return TiffExtent(size, ifd + count_len + n * entry_len + off_len, blocks, empty)
        raw = f.read(n * entry_len)
        ifd = struct.unpack(e + off_fmt, f.read(off_len))[0]
        tables: dict[int, np.ndarray] = {}
        for i in range(n):
            entry = raw[i * entry_len : (i + 1) * entry_len]
            tag, typ = struct.unpack(e + "HH", entry[:4])
            if tag not in _BLOCK_TAGS or typ not in _TIFF_ITEM:
                continue
            cnt = struct.unpack(e + count_fmt.replace("H", "I"), entry[4 : 4 + off_len])[0]
            item, width = _TIFF_ITEM[typ]
            nbytes = cnt * width
            if nbytes > size:
                return None  # a count no real file has: leave the verdict to GDAL
            if nbytes <= off_len:
                data = entry[4 + off_len : 4 + off_len + nbytes]
            else:
                at = struct.unpack(e + off_fmt, entry[4 + off_len : 4 + 2 * off_len])[0]
                end = max(end, at + nbytes)
                if at + nbytes > size:
                    return TiffExtent(size, end, blocks, empty)
                f.seek(at)
                data = f.read(nbytes)
            tables[tag] = np.frombuffer(data, dtype=np.dtype(e + item)).astype(np.uint64)
        for off_tag, cnt_tag in ((273, 279), (324, 325)):
            offs, cnts = tables.get(off_tag), tables.get(cnt_tag)
            if offs is None or cnts is None or len(offs) != len(cnts):
                continue
            used = (cnts > 0) & (offs > 0)  # sparse blocks (offset 0, count 0) hold no data
            if used.any():
                end = max(end, int((offs[used] + cnts[used]).max()))
                blocks += int(used.sum())
            empty += int((~used).sum())
    return TiffExtent(size, end, blocks, empty)


_SAMPLE_SIDE = 512
"""At most this many rows and columns are read from each sampled block: decoding any pixel
decodes the whole block (the point of the check) but the array returned stays small even
when a block is a whole image (single-strip compressed TIFF)."""


def _sample_windows(ds: Any, samples: int) -> list[Window]:
    """Windows in ``samples`` blocks spread over the raster: the first, the last, some between."""
    bh, bw = ds.block_shapes[0] if ds.block_shapes else (256, 256)
    bh, bw = max(1, min(int(bh), ds.height)), max(1, min(int(bw), ds.width))
    ny, nx = -(-ds.height // bh), -(-ds.width // bw)
    total = nx * ny
    picks = sorted({round(float(k)) for k in np.linspace(0, total - 1, min(samples, total))})
    out = []
    for k in picks:
        by, bx = divmod(k, nx)
        y, x = by * bh, bx * bw
        out.append(Window(x, y, min(bw, ds.width - x, _SAMPLE_SIDE), min(bh, ds.height - y, _SAMPLE_SIDE)))
    return out


def check_readable(info: RasterInfo, role: str = "raster", samples: int = 8) -> None:
    """Cheap read check of ``info``'s file, meant for before the model loads.

    1. For every TIFF among the dataset's files (the raster, external ``.ovr`` overviews):
       the directories and strip/tile tables are walked (no pixel decoded) and every block
       must lie inside the file: this catches **any truncation** (an interrupted download or
       copy), wherever the cut falls.
    2. ``samples`` blocks are decoded (the first, the last and some spread between; all
       bands): catches an unreadable header, an unsupported compression and damage in those
       blocks, for any format GDAL reads.

    It cannot catch damage inside a block that is not sampled (e.g. a corrupt deflate stream
    in a middle tile of a complete file, or flipped bits in an uncompressed file, which decode
    silently to wrong values); the former is reported when the run reaches it, by
    :func:`read_window`'s error, and the run leaves no output. Cost: milliseconds for the
    tables of a 10980×10980 scene plus ``samples`` block decodes.

    Raises:
        InputError: naming the role, label, path and what is wrong.
    """
    label = raster_label(role, info.name)
    try:
        ds_ctx = _quiet_open(info.path)
    except Exception as exc:
        raise InputError(f"{label} cannot be read as a raster ({info.path}): {gdal_message(exc)}") from exc
    with ds_ctx as ds:
        try:
            files = [Path(p) for p in (ds.files or [info.path])]
        except Exception:  # some drivers cannot list their files
            files = [Path(info.path)]
        for f in files:
            ext = tiff_extent(f) if f.is_file() else None
            if ext is not None and ext.end > ext.size:
                which = "" if f == Path(info.path) else f" (its file {f})"
                raise InputError(
                    f"{label} ({info.path}) is truncated{which}: its image data runs to byte {ext.end} "
                    f"but the file has {ext.size} bytes; an interrupted download or copy? Get the file again"
                )
        for w in _sample_windows(ds, samples):
            read_window(ds, w, what=label)


# -------------------------------------------------------------------- atomic output

SIDECARS: tuple[str, ...] = (".aux.xml", ".ovr", ".msk")
"""GDAL side files of a raster ``x.tif`` (``x.tif.aux.xml`` holds cached statistics)."""


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """Temporary files of ``path`` written by :func:`atomic_output`: group 1 is the writer's PID.

    ``mkstemp``'s random part has no dots, so ``.a.1.<pid>.<rnd>.part.tif`` (output
    ``a.1.tif``) never matches the pattern of output ``a.tif``.
    """
    return re.compile(
        rf"^\.{re.escape(path.stem)}\.(\d+)\.[A-Za-z0-9_]+\.part{re.escape(path.suffix)}"
        rf"({'|'.join(re.escape(s) for s in SIDECARS)})?$"
    )


def pid_alive(pid: int) -> bool:
    """True unless process ``pid`` surely does not exist (unsure counts as alive)."""
    if pid <= 0:
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # type: ignore[attr-defined]  # access denied: it exists
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return not ok or code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files of output ``path`` left by writers that no longer run.

    Only files named like :func:`atomic_output`'s temporaries *of this output* are looked at,
    and only those whose PID is not a running process are removed; a concurrent live
    writer's file is never touched (a reused PID keeps a stale file: harmless).

    Limit: a writer on another machine sharing the folder is judged by this machine's PIDs.

    Returns:
        The removed paths.
    """
    path = Path(path)
    pattern = _temp_pattern(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _cannot_write(path: Path, exc: OSError) -> InputError:
    reason = os.strerror(exc.errno).lower() if exc.errno is not None else " ".join(str(exc).split())
    return InputError(f"cannot write output {path}: {reason}")


def _make_folders(folder: Path) -> list[Path]:
    """``folder.mkdir(parents=True)``; returns the folders it created, deepest first."""
    missing = []
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are still empty (another writer may use them)."""
    for d in folders:
        with contextlib.suppress(OSError):
            d.rmdir()


def written_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the raster just written at ``path`` is not complete, or None when it reads back.

    GDAL reports a failed write (a full disk, a quota, an I/O error while flushing its block
    cache on close) as a logged error, not as an exception: the file is then empty, truncated
    or lacks blocks, yet ``close()`` returns. This catches it: the file is not empty; for a
    TIFF every strip/tile of every directory lies inside the file and none is missing (GDAL
    writes every block of a new GeoTIFF unless ``SPARSE_OK`` is set, which the engine never
    sets); GDAL opens it and decodes sample blocks (:func:`check_readable`'s choice).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"it cannot be found after writing ({os.strerror(exc.errno).lower() if exc.errno else exc})"
    if size == 0:
        return "nothing was written (0 bytes)"
    if path.suffix.lower() in (".tif", ".tiff"):
        ext = tiff_extent(path)
        if ext is None:
            return f"its TIFF header or directory is missing or damaged ({size} bytes written)"
        if ext.end > ext.size:
            return f"its image data runs to byte {ext.end} but only {ext.size} bytes were written"
        if ext.empty:
            return f"{ext.empty} of its {ext.blocks + ext.empty} blocks were not written"
    try:
        with _quiet_open(path) as ds:
            for w in _sample_windows(ds, 8):
                read_window(ds, w)
    except Exception as exc:
        return f"it does not read back ({gdal_message(exc)})"
    return None


def _incomplete(path: Path, problem: str) -> InputError:
    try:
        free = f"{_human(shutil.disk_usage(path.parent).free)} free in {path.parent}"
    except OSError:
        free = f"free space in {path.parent} unknown"
    return InputError(
        f"cannot write output {path}: the file written is incomplete, {problem}; {free}: is the disk full? "
        "Free some space or choose another folder"
    )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], verify: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary file is ``.<stem>.<pid>.<random>.part<suffix>``: stale ones of the same
    output whose writer no longer runs are removed first (:func:`remove_stale_temps`).

    When the body returns, the temporary file must read back as a complete raster
    (``verify``, see :func:`written_problem`): GDAL does not raise when a full disk makes its
    writes fail, so without this check an empty or truncated file would be renamed into place.

    On success the side files of the replaced file (``.aux.xml`` statistics, ``.ovr``,
    ``.msk``) are removed, or replaced by the temporary file's own, so no stale statistics
    describe the new data.

    On any exception (including KeyboardInterrupt, SIGTERM under
    :func:`~.signals.terminate_as_interrupt`, and a cancel) the temporary file and its side
    files are deleted, so are the folders this call created for ``path``, and ``path`` is left
    untouched (an existing file there is not removed). Concurrent writers each rename a
    complete file; the last one wins.

    Raises:
        InputError: ``path`` is a folder or another non-regular file, its folder cannot be
            created or written, or the file written is incomplete (one line, with the reason).
    """
    path = Path(path)
    # the reasons of the check before a run (a folder, a file on the way, /proc, read-only...),
    # for callers that did not make it
    check_destination(path, suffixes=(path.suffix.lower(),))
    try:
        created = _make_folders(path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=".part" + path.suffix, dir=path.parent)
    except OSError as exc:
        _remove_folders(created)
        raise _cannot_write(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    done = False
    try:
        yield tmp_path
        problem = written_problem(tmp_path) if verify else None
        if problem is not None:
            raise _incomplete(path, problem)
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _cannot_write(path, exc) from exc
        done = True
        for side in SIDECARS:
            own, old = Path(f"{tmp_path}{side}"), Path(f"{path}{side}")
            with contextlib.suppress(OSError):  # a stale side file is worse than none, not fatal
                if own.exists():
                    os.replace(own, old)
                else:
                    old.unlink(missing_ok=True)
    finally:
        tmp_path.unlink(missing_ok=True)
        for side in SIDECARS:
            Path(f"{tmp_path}{side}").unlink(missing_ok=True)
        if not done:
            _remove_folders(created)


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
