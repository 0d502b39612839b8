"""Issue 14, engine level: every hostile input ends in our one-line error (or a warning), never a
GDAL/torch traceback, a wrapped value, a stale side file or a leftover temporary file.

Covers engine/io/raster.py (reads, cheap read check, atomic output), engine/io/checks.py
(dtype, destination, value statistics), engine/io/signals.py (SIGTERM), engine/io/checkpoint.py
(malformed checkpoints), engine/quicklook.py and the duplicate-date warning of engine/io/series.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine
from rasterio.windows import Window

from cloudrm_engine import cli
from cloudrm_engine.errors import CheckpointError, InputError, Terminated
from cloudrm_engine.io import checks as checks_mod
from cloudrm_engine.io import raster as raster_mod
from cloudrm_engine.io.checkpoint import Checkpoint, build_model, load_checkpoint
from cloudrm_engine.io.checks import (
    ValueStats,
    check_destination,
    check_not_empty,
    check_optical_dtype,
    estimate_output_bytes,
)
from cloudrm_engine.io.raster import (
    RasterInfo,
    atomic_output,
    check_readable,
    file_mean,
    raster_info,
    read_padded,
    read_window,
    remove_stale_temps,
    scan_statistics,
    tiff_extent,
)
from cloudrm_engine.io.series import load_series
from cloudrm_engine.io.signals import terminate_as_interrupt
from cloudrm_engine.models import model_card
from cloudrm_engine.quicklook import side_by_side
from tests.conftest import RecordingProgress, write_geotiff

T0 = Affine(10, 0, 600000.0, 0, -10, 5000000.0)
BLOCK = 64


def tiled(path: Path, array: np.ndarray, nodata: float | None = None, **options) -> Path:
    """A tiled (64×64) deflate GeoTIFF of (C, H, W) ``array``; ``options`` add creation options."""
    c, h, w = array.shape
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": c, "dtype": array.dtype.name,
        "crs": "EPSG:32631", "transform": T0, "nodata": nodata, "tiled": True,
        "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", **options,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def noise(c: int = 3, h: int = 192, w: int = 192, seed: int = 0) -> np.ndarray:
    """Incompressible uint16 DN, so every tile holds many bytes."""
    return np.random.default_rng(seed).integers(0, 10000, (c, h, w), dtype=np.uint16)


def truncate(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def block_offset(path: Path, bx: int, by: int) -> tuple[int, int]:
    """(offset, byte count) of tile (bx, by) of band 1, from GDAL's TIFF metadata domain."""
    gdal = pytest.importorskip("osgeo.gdal")
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    off = int(band.GetMetadataItem(f"BLOCK_OFFSET_{bx}_{by}", "TIFF"))
    size = int(band.GetMetadataItem(f"BLOCK_SIZE_{bx}_{by}", "TIFF"))
    ds = None
    return off, size


def corrupt_block(src: Path, dst: Path, bx: int, by: int) -> Path:
    """Copy of ``src`` with garbage in the middle of tile (bx, by)'s deflate stream."""
    off, size = block_offset(src, bx, by)
    data = bytearray(src.read_bytes())
    data[off + 8 : off + size - 8] = np.random.default_rng(1).integers(0, 256, size - 16, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------- opening


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: (d / "notes.tif").write_text("hello, not a raster\n") and d / "notes.tif",
         r"optical raster 'notes.tif' cannot be read as a raster \(.*notes.tif\): .*not recognized"),
        (lambda d: (d / "empty.tif").write_bytes(b"") or d / "empty.tif",
         r"optical raster 'empty.tif' cannot be read as a raster \(.*empty.tif\)"),
        (lambda d: (d / "folder.tif").mkdir() or d / "folder.tif",
         r"optical raster 'folder.tif' \(.*folder.tif\) is a folder, not a raster file"),
        (lambda d: d / "missing.tif", r"optical raster 'missing.tif': file not found: .*missing.tif"),
    ],
    ids=["text", "empty", "folder", "missing"],
)
def test_raster_info_turns_every_open_failure_into_an_input_error(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(InputError, match=match) as err:
        raster_info(path, role="optical")
    one_line(str(err.value))


@pytest.mark.parametrize("exc", [PermissionError(errno.EACCES, "Permission denied"), RuntimeError("odd driver")])
def test_raster_info_maps_any_exception_from_rasterio_open(tmp_path, monkeypatch, exc):
    path = tiled(tmp_path / "x.tif", noise())

    def refuse(*args, **kwargs):
        raise exc

    monkeypatch.setattr(raster_mod.rasterio, "open", refuse)
    with pytest.raises(InputError, match=r"SAR raster 'x.tif' cannot be read as a raster \(.*x.tif\): "):
        raster_info(path, role="SAR")


# ----------------------------------------------------------------------------- reads


def test_reads_of_a_truncated_file_name_the_file_and_the_block(tmp_path):
    good = tiled(tmp_path / "good.tif", noise())
    bad = truncate(good, tmp_path / "cut.tif", 0.5)
    info = raster_info(bad, role="optical")  # the header is intact: opening works
    with rasterio.open(bad) as ds:
        assert read_padded(ds, 0, 0, 64).shape == (3, 64, 64)  # the first tile is still there
        with pytest.raises(
            InputError,
            match=r"^cannot read rows 128–191, columns 128–191 of optical raster 'cut.tif' \(.*cut.tif\): "
            r"the file is truncated or corrupt \(.*IReadBlock failed",
        ) as err:
            read_padded(ds, 128, 128, 64, what="optical raster 'cut.tif'")
        one_line(str(err.value))
        with pytest.raises(InputError, match=r"rows 100–191, columns 150–191 of raster 'cut.tif'"):
            read_padded(ds, 100, 150, 128)  # padded part beyond the raster: the window read is named
        with pytest.raises(InputError, match=r"of SAR raster 'cut.tif' \(.*\): the file is truncated or corrupt"):
            read_window(ds, Window(0, 0, 192, 192), what="SAR raster 'cut.tif'")
        with pytest.raises(InputError, match=r"cut\.tif.*truncated or corrupt"):
            file_mean(ds)
    assert info.width == 192


def test_read_window_names_the_file_behind_a_warped_vrt(tmp_path):
    from rasterio.vrt import WarpedVRT

    bad = truncate(tiled(tmp_path / "good.tif", noise()), tmp_path / "cut.tif", 0.5)
    with (
        rasterio.open(bad) as src,
        WarpedVRT(src, crs="EPSG:32631") as vrt,
        pytest.raises(InputError, match=r"of raster 'cut.tif' \(.*cut.tif\): the file is truncated"),
    ):
        read_window(vrt, Window(0, 0, 192, 192))


def test_read_errors_print_no_gdal_lines(tmp_path):
    """Outside a rasterio.Env GDAL prints 'ERROR 1: ...' itself; read_window keeps stderr clean."""
    bad = truncate(tiled(tmp_path / "good.tif", noise()), tmp_path / "cut.tif", 0.5)
    code = textwrap.dedent(f"""
        import rasterio
        from rasterio.windows import Window
        from cloudrm_engine.errors import InputError
        from cloudrm_engine.io.raster import read_window
        with rasterio.open({str(bad)!r}) as ds:
            try:
                read_window(ds, Window(0, 0, 192, 192))
            except InputError as exc:
                print("caught", exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("caught cannot read rows 0–191"), r.stdout + r.stderr
    assert "ERROR" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------- read check


@pytest.mark.parametrize(
    "options",
    [{}, {"interleave": "band"}, {"BIGTIFF": "YES"}, {"ENDIANNESS": "BIG"}, {"tiled": False, "compress": "lzw"}],
    ids=["pixel", "band", "bigtiff", "big-endian", "strips"],
)
@pytest.mark.parametrize("keep", [0.99, 0.5, 0.1])
def test_check_readable_catches_any_truncation(tmp_path, options, keep):
    good = tiled(tmp_path / "good.tif", noise(), **options)
    ext = tiff_extent(good)
    assert ext is not None and ext.end == ext.size and ext.blocks >= 3  # 9 tiles or 3 strips
    check_readable(raster_info(good), "optical")  # the intact file passes
    bad = truncate(good, tmp_path / "cut.tif", keep)
    try:
        info = raster_info(bad, role="optical")
    except InputError:
        return  # cut so deep that the header is gone: caught even earlier, also before the model
    with pytest.raises(
        InputError,
        match=rf"^optical raster 'cut.tif' \(.*cut.tif\) is truncated: its image data runs to byte {ext.size} "
        rf"but the file has {bad.stat().st_size} bytes; .*Get the file again$",
    ):
        check_readable(info, "optical")


def test_check_readable_catches_a_truncated_external_overview(tmp_path):
    good = tiled(tmp_path / "scene.tif", noise())
    with rasterio.Env(TIFF_USE_OVR=True), rasterio.open(good, "r+") as ds:  # external: scene.tif.ovr
        ds.build_overviews([2, 4])
    ovr = tmp_path / "scene.tif.ovr"
    assert ovr.is_file()
    check_readable(raster_info(good), "optical")
    truncate(ovr, ovr, 0.5)
    with pytest.raises(InputError, match=r"'scene.tif' \(.*\) is truncated \(its file .*scene.tif.ovr\)"):
        check_readable(raster_info(good), "optical")


def test_check_readable_decodes_sample_blocks_and_stays_cheap(tmp_path, monkeypatch):
    good = tiled(tmp_path / "good.tif", noise(h=640, w=640))  # 10 × 10 tiles
    bad_first = corrupt_block(good, tmp_path / "first.tif", 0, 0)
    with pytest.raises(InputError, match=r"cannot read rows 0–63, columns 0–63 of optical raster 'first.tif' \("):
        check_readable(raster_info(bad_first), "optical")
    with pytest.raises(InputError, match=r"cannot read rows 0–63, columns 0–63 of raster 'first.tif' \("):
        check_readable(raster_info(bad_first))  # the generic role: not "raster raster"
    bad_last = corrupt_block(good, tmp_path / "last.tif", 9, 9)
    with pytest.raises(InputError, match=r"rows 576–639, columns 576–639 of optical raster 'last.tif'"):
        check_readable(raster_info(bad_last), "optical")

    reads: list[Window] = []
    real = raster_mod.read_window
    monkeypatch.setattr(raster_mod, "read_window", lambda ds, w, **kw: reads.append(w) or real(ds, w, **kw))
    check_readable(raster_info(good), "optical", samples=8)
    assert len(reads) == 8 and all(w.width <= BLOCK and w.height <= BLOCK for w in reads)
    assert (reads[0].row_off, reads[0].col_off, reads[-1].row_off, reads[-1].col_off) == (0, 0, 576, 576)


def test_a_corrupt_middle_block_passes_the_check_and_fails_the_read_clearly(tmp_path):
    """The documented limit: damage inside an unsampled block of a complete file."""
    good = tiled(tmp_path / "good.tif", noise(h=640, w=640))
    bad = corrupt_block(good, tmp_path / "mid.tif", 4, 5)
    info = raster_info(bad, role="optical")
    check_readable(info, "optical", samples=2)  # only the first and last blocks are decoded
    with rasterio.open(bad) as ds, pytest.raises(
        InputError, match=r"^cannot read rows 320–383, columns 256–319 of optical raster 'mid.tif' \(.*mid.tif\): "
        r"the file is truncated or corrupt \("
    ):
        read_padded(ds, 320, 256, 64, what="optical raster 'mid.tif'")


def test_tiff_extent_is_none_for_other_formats(tmp_path):
    (tmp_path / "a.txt").write_text("II*\x00 no more")  # a TIFF header whose directory lies beyond the end
    ext = tiff_extent(tmp_path / "a.txt")
    assert ext is not None and ext.end > ext.size
    (tmp_path / "b.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert tiff_extent(tmp_path / "b.bin") is None
    assert tiff_extent(tmp_path / "missing.tif") is None


# --------------------------------------------------------------------------- dtypes


def fake_info(path: Path, dtype: str, name: str = "scene.tif") -> RasterInfo:
    return RasterInfo(path, name, 8, 8, 13, dtype, None, T0, None, (None,) * 13)


@pytest.mark.parametrize(
    ("dtype", "match"),
    [
        ("int8", r"has data type int8, which cannot hold values up to 10000 \(its maximum is 127\)"),
        ("uint8", r"has data type uint8, which cannot hold values up to 10000 \(its maximum is 255\)"),
        ("bool", r"has data type bool, which is not reflectance"),
        ("complex64", r"has data type complex64, which is not reflectance"),
        ("complex_int16", r"has data type complex_int16"),
    ],
)
def test_an_optical_dtype_that_cannot_hold_the_dn_range_is_refused(tmp_path, dtype, match):
    with pytest.raises(InputError, match=rf"^optical raster 'scene.tif' \(.*scene.tif\) {match}.*"
                                         r"expected reflectance × 10000 \(0–10000\), e.g. uint16") as err:
        check_optical_dtype(fake_info(tmp_path / "scene.tif", dtype))
    one_line(str(err.value))


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint32", "int32", "float32", "float64"])
def test_dtypes_that_hold_the_dn_range_pass(tmp_path, dtype):
    check_optical_dtype(fake_info(tmp_path / "scene.tif", dtype))


def test_dtype_check_on_real_int8_and_uint8_files(tmp_path):
    for dtype in ("int8", "uint8"):
        path = write_geotiff(tmp_path / f"{dtype}.tif", np.ones((13, 8, 8), dtype=dtype))
        with pytest.raises(InputError, match=f"optical raster '{dtype}.tif' .* has data type {dtype}"):
            clip_hi = model_card("glf_cr").normalisation["optical"]["clip"][1]
            check_optical_dtype(raster_info(path, role="optical"), clip_hi)


# ---------------------------------------------------------------------- destination


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder on a read-only file system: a real ro tmpfs mount when allowed (root in a
    container with CAP_SYS_ADMIN), else None and the test monkeypatches the errno path."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if shutil.which("mount") is None:
        yield None
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if r.returncode != 0:
        yield None
        return
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_destination_on_a_read_only_file_system(tmp_path, readonly_dir, monkeypatch):
    if readonly_dir is None:  # no mount allowed here: the errno path, as the probe would see it
        readonly_dir = tmp_path / "ro"

        def erofs(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(checks_mod.tempfile, "mkstemp", erofs)
    with pytest.raises(
        InputError,
        match=r"^cannot write output .*ro/out.tif: cannot create a file in its folder: read-only file system$",
    ):
        check_destination(readonly_dir / "out.tif", 1000)


def test_destination_permission_denied_errno_path(tmp_path, monkeypatch):
    """Tests run as root, which chmod cannot stop: the probe's PermissionError is simulated."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checks_mod.tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match=r"output .*out.tif: cannot create a file in its folder: permission denied"):
        check_destination(tmp_path / "out.tif")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "out.png",
         r"^output .*out.png: outputs are GeoTIFF files \(.tif/.tiff\); name it e.g. out.tif$"),
        (lambda d: d / "out", r"^output .*out: outputs are GeoTIFF files"),
        (lambda d: (d / "dir.tif").mkdir() or d / "dir.tif",
         r"^output .*dir.tif is an existing folder: give a file name"),
        (lambda d: (d / "file").write_text("x") and d / "file" / "out.tif",
         r"^cannot write output .*file/out.tif: .*file is a file, not a folder$"),
        (lambda d: (d / "file").write_text("x") and d / "file" / "sub" / "out.tif",
         r"^cannot write output .*file/sub/out.tif: .*/file is a file, not a folder$"),
        (lambda d: Path("/proc/cloudrm_out.tif"),
         r"^cannot write output /proc/cloudrm_out.tif: cannot create a file in its folder: the folder does not "
         r"accept new files \(a virtual file system such as /proc or /sys\?\)$"),
        (lambda d: Path("/proc/self/cloudrm_out.tif"),
         r"^cannot write output /proc/self/cloudrm_out.tif: cannot create a file"),
        (lambda d: Path("/proc/nope/x.tif"),
         r"^cannot write output /proc/nope/x.tif: cannot create a file in /proc \(its folder would be created there"),
    ],
    ids=["png", "no-suffix", "directory", "parent-is-file", "ancestor-is-file", "proc", "proc-self", "proc-missing"],
)
def test_unwritable_destinations_are_one_line_input_errors(tmp_path, make, match):
    out = make(tmp_path)
    before = listing(tmp_path)
    with pytest.raises(InputError, match=match) as err:
        check_destination(out, 10_000)
    one_line(str(err.value))
    assert listing(tmp_path) == before  # no probe, no folder left behind


def test_destination_that_is_a_device_is_refused(tmp_path):
    dev = tmp_path / "dev.tif"
    os.symlink("/dev/null", dev)
    with pytest.raises(InputError, match=r"output .*dev.tif exists and is not a regular file"):
        check_destination(dev)
    with pytest.raises(InputError, match="not a regular file"), atomic_output(dev):
        pass
    assert Path("/dev/null").is_char_device()


def test_destination_equal_to_an_input_is_refused_even_through_a_link(tmp_path):
    src = tiled(tmp_path / "in.tif", noise())
    info = raster_info(src, "my layer", role="optical")
    with pytest.raises(InputError, match=r"output .*in.tif is the input raster 'my layer' \(.*in.tif\): choose"):
        check_destination(src, inputs=[info])
    link = tmp_path / "link.tif"
    os.symlink(src, link)
    with pytest.raises(InputError, match=r"is the input raster 'in.tif'"):
        check_destination(link, inputs=[src])
    with pytest.raises(InputError, match=r"is the input raster 'in.tif'"):
        check_destination(tmp_path / "sub" / ".." / "in.tif", inputs=[str(src)])


def test_destination_free_space(tmp_path, monkeypatch):
    assert check_destination(tmp_path / "new" / "deeper" / "out.tif", 1000) == tmp_path / "new" / "deeper" / "out.tif"
    assert not (tmp_path / "new").exists()  # checked, not created
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(InputError, match=r"^not enough free space for output .*out.tif: about .* needed \(uncompressed "
                                         r"estimate\), .* free in "):
        check_destination(tmp_path / "out.tif", free * 4 + 10**9)

    class Usage:
        free = 5 * 1024**2

    monkeypatch.setattr(checks_mod.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(InputError, match=r"about 20.0 MB needed \(uncompressed estimate\), 5.0 MB free"):
        check_destination(tmp_path / "out.tiff", 20 * 1024**2)
    check_destination(tmp_path / "OUT.TIF", 4 * 1024**2)
    assert listing(tmp_path) == set()


def test_estimate_output_bytes_is_at_least_the_raw_size():
    raw = 10980 * 10980 * 13 * 2
    est = estimate_output_bytes(10980, 10980, 13, "uint16")
    assert raw < est < raw * 1.02
    assert estimate_output_bytes(100, 100, 4, np.dtype("float32")) > 100 * 100 * 4 * 4


# -------------------------------------------------------------------- atomic output


def write_small(path: Path, value: int) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint16",
                       crs="EPSG:32631", transform=T0) as dst:
        dst.write(np.full((1, 4, 4), value, dtype=np.uint16))


def test_temp_name_carries_the_pid_and_nothing_is_left(tmp_path):
    out = tmp_path / "result.tif"
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".result.{os.getpid()}.") and tmp.name.endswith(".part.tif")
        write_small(tmp, 7)
    assert listing(tmp_path) == {"result.tif"}
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_overwriting_removes_the_old_side_files(tmp_path):
    out = tmp_path / "result.tif"
    write_small(out, 65535)
    with rasterio.open(out) as ds:  # GDAL computes statistics and caches them in result.tif.aux.xml
        ds.statistics(1, approx=False)
    aux = tmp_path / "result.tif.aux.xml"
    if not aux.exists():  # older rasterio: write the cache GDAL would write
        aux.write_text('<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MAXIMUM">65535</MDI>'
                       "</Metadata></PAMRasterBand></PAMDataset>")
    assert "65535" in aux.read_text()
    (tmp_path / "result.tif.ovr").write_bytes(b"old overviews")
    (tmp_path / "result.tif.msk").write_bytes(b"old mask")
    with atomic_output(out) as tmp:
        write_small(tmp, 786)
    assert listing(tmp_path) == {"result.tif"}
    with rasterio.open(out) as ds:
        assert ds.statistics(1, approx=False).max == 786  # not the stale 65535


def test_the_temp_files_own_side_file_follows_it(tmp_path):
    out = tmp_path / "result.tif"
    (tmp_path / "result.tif.aux.xml").write_text("stale")
    with atomic_output(out) as tmp:
        write_small(tmp, 1)
        Path(f"{tmp}.aux.xml").write_text("fresh")  # what GDAL's PAM writes for the temp file
    assert listing(tmp_path) == {"result.tif", "result.tif.aux.xml"}
    assert (tmp_path / "result.tif.aux.xml").read_text() == "fresh"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, Terminated(signal.SIGTERM, "SIGTERM"), InputError("cancel")])
def test_any_exception_leaves_the_old_output_and_no_temp(tmp_path, exc):
    out = tmp_path / "result.tif"
    write_small(out, 5)
    (tmp_path / "result.tif.aux.xml").write_text("old stats")
    before = out.read_bytes()
    with pytest.raises(type(exc) if isinstance(exc, BaseException) else exc), atomic_output(out) as tmp:
        write_small(tmp, 9)
        Path(f"{tmp}.aux.xml").write_text("new")
        raise exc
    assert out.read_bytes() == before
    assert listing(tmp_path) == {"result.tif", "result.tif.aux.xml"}
    assert (tmp_path / "result.tif.aux.xml").read_text() == "old stats"


def tiled_tiff(path: Path, n: int = 128) -> Path:
    """A tiled (64×64) deflate GeoTIFF of incompressible noise: 4 blocks of many bytes each."""
    return tiled(path, noise(1, n, n))


def zero_block_entry(path: Path, k: int) -> Path:
    """``path`` with tile ``k``'s offset and byte count zeroed in the TIFF directory (never written)."""
    gdal = pytest.importorskip("osgeo.gdal")
    ds = gdal.Open(str(path))
    off = int(ds.GetRasterBand(1).GetMetadataItem(f"BLOCK_OFFSET_{k % 2}_{k // 2}", "TIFF"))
    ds = None
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<I", off))  # the entry in the TileOffsets array (classic TIFF)
    assert at > 0
    data[at : at + 4] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b""), r"^nothing was written \(0 bytes\)$"),
        (lambda p: truncate(tiled_tiff(p.with_name("src.tif")), p, 0.7),
         r"^its image data runs to byte \d+ but only \d+ bytes were written$"),
        (lambda p: p.write_bytes(tiled_tiff(p.with_name("src.tif")).read_bytes()[:6]),
         r"^its TIFF header or directory is missing or damaged \(6 bytes written\)$"),
        (lambda p: zero_block_entry(tiled_tiff(p), 1), r"^1 of its 4 blocks were not written$"),
    ],
    ids=["empty", "truncated", "no-directory", "missing-block"],
)
def test_written_problem_names_what_a_failed_write_left(tmp_path, make, match):
    out = tmp_path / "out.tif"
    make(out)
    assert re.match(match, raster_mod.written_problem(out) or "")


def test_written_problem_passes_complete_files_and_reads_other_formats(tmp_path):
    assert raster_mod.written_problem(tiled_tiff(tmp_path / "ok.tif")) is None
    sparse = tiled(tmp_path / "sparse.tif", np.zeros((1, 128, 128), np.uint16), SPARSE_OK=True)
    assert tiff_extent(sparse).empty == 4  # sparse blocks are counted, not taken as data
    png = tmp_path / "look.png"
    with warnings.catch_warnings():  # a picture, not a map
        warnings.simplefilter("ignore")
        with rasterio.open(png, "w", driver="PNG", width=64, height=64, count=3, dtype="uint8") as dst:
            dst.write(np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    assert raster_mod.written_problem(png) is None
    png.write_bytes(png.read_bytes()[:200])
    assert re.match(r"^it does not read back \(.+\)$", raster_mod.written_problem(png) or "")


def test_atomic_output_never_renames_an_incomplete_file_into_place(tmp_path):
    """GDAL does not raise when a full disk fails its writes: the file left is checked instead."""
    out = tmp_path / "result.tif"
    write_small(out, 5)
    before = out.read_bytes()
    with (
        pytest.raises(InputError, match=r"^cannot write output .*result.tif: the file written is incomplete, "
                                        r"nothing was written \(0 bytes\); .* free in .*: is the disk full\?"),
        atomic_output(out),
    ):
        pass  # the writer "succeeded" without a byte reaching the disk
    assert out.read_bytes() == before and listing(tmp_path) == {"result.tif"}
    with atomic_output(tmp_path / "raw.tif", verify=False) as tmp:  # a caller that checks by itself
        tmp.write_bytes(b"")
    assert (tmp_path / "raw.tif").stat().st_size == 0


@pytest.mark.parametrize("fail", [False, True])
def test_atomic_output_removes_the_folders_it_created_when_it_fails(tmp_path, fail):
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "new" / "deeper" / "out.tif"
    with contextlib.suppress(InputError), atomic_output(out) as tmp:
        write_small(tmp, 3)
        if fail:
            raise InputError("a corrupt block")
    if fail:
        assert listing(tmp_path) == {"kept"} and listing(tmp_path / "kept") == set()
    else:
        assert out.is_file()
    # a folder another writer put a file into meanwhile stays
    with contextlib.suppress(InputError), atomic_output(tmp_path / "other" / "out.tif") as tmp:
        (tmp_path / "other" / "theirs.tif").write_bytes(b"x")
        raise InputError("stop")
    assert listing(tmp_path / "other") == {"theirs.tif"}


def test_open_raster_reads_without_rasterio_warnings(tmp_path):
    bare = tmp_path / "bare.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(bare, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
            dst.write(np.zeros((1, 4, 4), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with raster_mod.open_raster(bare) as ds:
            assert ds.crs is None and ds.read().shape == (1, 4, 4)


def test_atomic_output_refuses_a_directory_before_any_work(tmp_path):
    (tmp_path / "out.tif").mkdir()
    with (
        pytest.raises(InputError, match=r"output .*out.tif is an existing folder"),
        atomic_output(tmp_path / "out.tif"),
    ):
        pytest.fail("the body must not run")
    assert listing(tmp_path) == {"out.tif"}


def test_atomic_output_under_a_regular_file_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(InputError, match=r"^cannot write output .*file/out.tif: .*/file is a file, not a folder$"),
        atomic_output(tmp_path / "file" / "out.tif"),
    ):
        pytest.fail("the body must not run")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the PID names no process now
    return child.pid


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    out = tmp_path / "scene.tif"
    dead = dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".scene.{dead}.ab_12cd.part.tif",
            "dead_aux": f".scene.{dead}.ab_12cd.part.tif.aux.xml",
            "live_child": f".scene.{sleeper.pid}.zz9.part.tif",
            "live_self": f".scene.{os.getpid()}.qq1.part.tif",
            "init": ".scene.1.xyz.part.tif",  # PID 1 always exists (and is not ours to signal)
            "other_output": f".scene2.{dead}.ab_12cd.part.tif",
            "other_dotted": f".scene.1.{dead}.ab_12cd.part.tif",  # the temp of output 'scene.1.tif'
            "legacy": ".scene.k3j4h5.part.tif",  # old name without a PID: owner unknown
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        removed = remove_stale_temps(out)
        assert {p.name for p in removed} == {names["dead"], names["dead_aux"]}
        left = listing(tmp_path)
        assert left == set(names.values()) - {names["dead"], names["dead_aux"]}
        # atomic_output does the same before writing
        (tmp_path / names["dead"]).write_bytes(b"partial")
        with atomic_output(out) as tmp:
            write_small(tmp, 3)
        assert listing(tmp_path) == left | {"scene.tif"}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_concurrent_writers_each_rename_a_complete_file(tmp_path):
    out = tmp_path / "same.tif"
    errors: list[BaseException] = []

    def writer(value: int) -> None:
        try:
            with atomic_output(out) as tmp:
                write_small(tmp, value)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (11, 22, 33)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with rasterio.open(out) as ds:
        assert int(ds.read(1)[0, 0]) in (11, 22, 33)
    assert listing(tmp_path) == {"same.tif"}


# ------------------------------------------------------------------------- SIGTERM

SLOW_WRITER = """
import sys, time
from pathlib import Path
from cloudrm_engine import cli
from cloudrm_engine.io.raster import atomic_output

def slow(args):
    with atomic_output(sys.argv[1]) as tmp:
        Path(tmp).write_bytes(b"half a GeoTIFF")
        print("writing", tmp, flush=True)
        try:
            time.sleep(60)
        except Exception:  # a careless handler must not swallow the termination
            pass
    return 0

cli._info = slow
sys.exit(cli.main(["info", "unused.pt"]))
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_temp_file(tmp_path, sig):
    out = tmp_path / "out.tif"
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("writing"), line + child.stderr.read()
        assert any(n.endswith(".part.tif") for n in listing(tmp_path))
        child.send_signal(sig)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    if sig == signal.SIGTERM:
        assert child.returncode == 128 + signal.SIGTERM
        assert err.strip() == "cloudrm: terminated by SIGTERM; no output written"
    else:
        assert child.returncode == 130
        assert err.strip() == "cloudrm: interrupted; no output written"
    assert listing(tmp_path) == set()


def test_terminate_as_interrupt_restores_the_handler_and_skips_other_threads():
    before = signal.getsignal(signal.SIGTERM)
    with terminate_as_interrupt() as installed:
        assert installed and signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(Terminated, match="terminated by SIGTERM") as err:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs in the main thread at the next bytecode
                time.sleep(0.01)
        assert isinstance(err.value, KeyboardInterrupt) and err.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    seen: list[bool] = []
    t = threading.Thread(target=lambda: seen.append(terminate_as_interrupt().__enter__()))
    t.start()
    t.join()
    assert seen == [False]


# ------------------------------------------------------------------ CLI last resort


def test_cli_prints_one_line_for_an_unexpected_exception(monkeypatch, capsys):
    def broken(args):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(cli, "_info", broken)
    monkeypatch.delenv("CLOUDRM_DEBUG", raising=False)
    assert cli.main(["info", "x.pt"]) == 1
    err = capsys.readouterr().err
    assert err == "cloudrm: internal error: ValueError: boom second line (set CLOUDRM_DEBUG=1 for the traceback)\n"
    monkeypatch.setenv("CLOUDRM_DEBUG", "1")
    with pytest.raises(ValueError, match="boom"):
        cli.main(["info", "x.pt"])


# -------------------------------------------------------------------- value checks


def stats_of(a: np.ndarray, role: str = "optical", nodata: float | None = None, **kw) -> ValueStats:
    s = ValueStats(role=role, dtype=a.dtype.name, nodata=nodata, **kw)
    s.add(a)
    return s


def test_saturated_dn_everywhere_is_a_warning_with_the_fraction():
    s = stats_of(np.full((13, 16, 16), 65535, dtype=np.uint16))
    assert s.saturated == 256 and s.above == 0
    w = s.warnings("x.tif")
    assert w == [
        "optical raster 'x.tif': 100.0 % of pixels are saturated (65535, the uint16 maximum) in some band; "
        "expected reflectance × 10000 (0–10000): check the input scaling"
    ]


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([-5.0, 100.0, 100.0, 100.0],
         r"^optical raster 'x': 25.0 % of pixels have negative values \(min -5\); .* clipped to 0$"),
        ([np.inf, 100.0, -np.inf, 100.0],
         r"^optical raster 'x': 50.0 % of pixels hold ±inf in some band; they are clipped into 0–10000"),
        ([20000.0, 100.0, 100.0, 100.0],
         r"^optical raster 'x': 25.0 % of pixels exceed 10000 \(max 20000\); they are clipped to 10000"),
        ([0.1, 0.2, 0.3, 0.05],
         r"^optical raster 'x' has values 0.05–0.3: this looks like reflectance 0–1, .* multiply by 10000$"),
    ],
    ids=["negative", "inf", "above-clip", "reflectance-0-1"],
)
def test_out_of_range_optical_values_warn(values, match):
    a = np.array(values, dtype=np.float32).reshape(1, 2, 2).repeat(3, axis=0)
    w = stats_of(a).warnings("x")
    assert len(w) == 1 and re.match(match, w[0]), w


def test_clean_values_and_tiny_fractions_do_not_warn():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 10000, (13, 100, 100), dtype=np.uint16)
    assert stats_of(a).warnings("x") == []
    a[0, 0, :5] = 65535  # 5 saturated pixels of 10 000: real scenes have a few
    assert stats_of(a).saturated == 5 and stats_of(a).warnings("x") == []
    a[0, 1, :] = 65535  # 105 of 10 000 = 1.05 %
    assert stats_of(a).warnings("x")[0].startswith("optical raster 'x': 1.1 % of pixels are saturated")


def test_partial_nan_and_nodata_count_and_the_mean_skips_them():
    a = np.full((2, 2, 2), 100.0, dtype=np.float32)
    a[0, 0, 0] = np.nan  # partial: band 2 still valid
    a[:, 1, 1] = np.nan  # empty pixel
    a[:, 1, 0] = -1  # nodata pixel
    a[1, 0, 1] = np.inf
    s = stats_of(a, nodata=-1)
    assert (s.pixels, s.empty, s.valid, s.partial_nan, s.infinite) == (4, 2, 2, 1, 1)
    assert s.mean == 100.0 and s.count == 2 * 4 - 4 - 1 - 1  # two empty pixels, one NaN, one inf
    assert any("NaN in some but not all bands" in w for w in s.warnings("x"))


def test_valid_mask_counts_only_the_selected_pixels_and_merge_adds():
    a = np.zeros((1, 4, 4), dtype=np.uint16)
    a[0, :, 2:] = 65535  # the mirrored padding of a tile, say
    keep = np.zeros((4, 4), dtype=bool)
    keep[:, :2] = True
    s = ValueStats(dtype="uint16")
    s.add(a, keep)
    assert (s.pixels, s.saturated, s.vmax) == (8, 0, 0.0)
    t = stats_of(a)
    s.merge(t)
    assert (s.pixels, s.saturated) == (24, 8)


def test_sar_warnings():
    assert stats_of(np.full((2, 4, 4), -12.0, dtype=np.float32), role="SAR", clip=None).warnings("s1.tif") == []
    w = stats_of(np.full((2, 4, 4), 0.05, dtype=np.float32), role="SAR", clip=None).warnings("s1.tif")
    assert w == ["SAR raster 's1.tif' has no negative value (min 0.05, max 0.05): expected σ0 in dB "
                 "(10·log10 of the linear backscatter, mostly −25…0)"]


def test_scan_statistics_and_file_mean_on_a_file(tmp_path):
    a = np.full((2, 70, 90), 1000.0, dtype=np.float32)
    a[0, :10] = np.nan
    a[1, 12:15, :] = np.inf
    a[:, 60:, :] = -9999
    a[1, :10, :] = -9999  # where band 1 is NaN: those pixels are empty
    a[1, 20:30, 40:50] = 3000.0
    path = write_geotiff(tmp_path / "f.tif", a, nodata=-9999)
    ok = np.isfinite(a) & (a != -9999)
    with rasterio.open(path) as ds:
        s = scan_statistics(ds, block=32, role="optical", clip=(0, 10000))
        assert s.mean == pytest.approx(float(a[ok].mean()))
        assert file_mean(ds, block=32) == pytest.approx(float(a[ok].mean()))
    assert (s.pixels, s.empty, s.infinite, s.negative) == (70 * 90, 20 * 90, 3 * 90, 0)  # nodata is not negative
    assert s.partial_nan == 0  # band 1 NaN where band 2 is -9999 (nodata): an empty pixel, not a partial one


def test_per_thread_objects_are_made_once_per_thread_and_all_closed():
    import threading

    from cloudrm_engine.io.per_thread import PerThread

    made, closed = [], []
    per = PerThread(lambda: made.append(threading.get_ident()) or len(made), closed.append)
    seen: dict[int, set[int]] = {}

    together = threading.Barrier(3)  # alive at once, so no thread id is reused

    def use(wait: bool = True) -> None:
        for _ in range(3):
            seen.setdefault(threading.get_ident(), set()).add(per.get())
        if wait:
            together.wait()

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    use(wait=False)  # and this thread
    assert len(made) == 4 and all(len(v) == 1 for v in seen.values())  # one object per thread, reused
    assert len({next(iter(v)) for v in seen.values()}) == 4
    per.close()
    assert sorted(closed) == [1, 2, 3, 4]
    assert per.get() == 5  # after close, a fresh one


def test_a_threaded_statistics_pass_equals_one_thread_bit_for_bit(tmp_path):
    rng = np.random.default_rng(3)
    a = (rng.random((3, 150, 170)) * 12000).astype(np.float32)  # some above the 10000 clip
    a[0, :20] = np.nan
    a[2, 40:43] = np.inf
    a[:, 100:, :30] = -9999
    a[1, 5, 5] = -3.0
    path = write_geotiff(tmp_path / "t.tif", a, nodata=-9999)
    with rasterio.open(path) as ds:
        one = scan_statistics(ds, block=32, role="optical", clip=(0, 10000), threads=1)
        four = scan_statistics(ds, block=32, role="optical", clip=(0, 10000), threads=4)  # 30 blocks
    assert four == one  # every count, and mean/min/max as the same floats (same order of additions)
    assert one.above > 0 and one.negative == 1 and one.infinite == 3 * 170 and one.empty == 50 * 30


def test_a_threaded_statistics_pass_names_the_damaged_file(tmp_path):
    good = tiled(tmp_path / "good.tif", noise())
    bad = truncate(good, tmp_path / "cut.tif", 0.5)
    with rasterio.open(bad) as ds, pytest.raises(InputError, match=r"^cannot read rows .* of SAR raster 'cut.tif' "
                                                                   r"\(.*cut.tif\): the file is truncated or corrupt"):
        scan_statistics(ds, block=64, what="SAR raster 'cut.tif'", threads=3)


@pytest.mark.parametrize(
    ("fill_value", "nodata", "dtype", "what"),
    [(np.nan, None, "float32", "NaN"), (0, 0, "uint16", "nodata"), (np.nan, -1, "float32", "nodata/NaN")],
)
def test_an_empty_optical_raster_is_an_error_an_empty_sar_a_warning(tmp_path, fill_value, nodata, dtype, what):
    path = write_geotiff(tmp_path / "e.tif", np.full((2, 8, 8), fill_value, dtype=dtype), nodata=nodata)
    info = raster_info(path, "my layer")
    with rasterio.open(path) as ds:
        stats = scan_statistics(ds)
    with pytest.raises(InputError, match=rf"^optical raster 'my layer' \(.*e.tif\) has no valid pixel \(all {what}\)"):
        check_not_empty(stats, info, "optical")
    msg = check_not_empty(stats, info, "SAR", fill=-20.0)
    assert msg is not None and msg.startswith(f"SAR raster 'my layer' ({path}) has no valid value (all {what}): "
                                              "filled with -20 dB, so the result relies on the optical data alone")
    full = ValueStats(dtype=dtype, nodata=nodata)
    full.add(np.ones((2, 8, 8), dtype=dtype))
    assert check_not_empty(full, info, "optical") is None


# ------------------------------------------------------------------- checkpoints


def tiny_cloudrm(**change) -> dict:
    card = model_card("glf_cr")
    blob = {
        "format": "cloudrm-checkpoint", "format_version": 1, "model": "glf_cr", "config": {},
        "bands": {"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
        "normalisation": card.normalisation, "trained_on": "test", "training": {},
        "created": "", "software": "", "state_dict": {"w": torch.zeros(2, 2)},
    }
    for k, v in change.items():
        if v is DROP:
            blob.pop(k)
        else:
            blob[k] = v
    return blob


DROP = object()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _zip_cut(d: Path) -> Path:
    torch.save(tiny_cloudrm(), d / "full.pt")
    return truncate(d / "full.pt", d / "c.pt", 0.6)


MALFORMED = [
    ("no-state-dict", lambda d: torch.save(tiny_cloudrm(state_dict=DROP), d / "c.pt"),
     r"c.pt is not a valid cloudrm checkpoint: 'state_dict' missing \(a cloudrm checkpoint holds format, model, "
     r"bands, normalisation, state_dict\)"),
    ("no-model-no-bands", lambda d: torch.save(tiny_cloudrm(model=DROP, bands=DROP), d / "c.pt"),
     r"c.pt is not a valid cloudrm checkpoint: 'model', 'bands' missing"),
    ("no-normalisation", lambda d: torch.save(tiny_cloudrm(normalisation=DROP), d / "c.pt"),
     r"'normalisation' missing"),
    ("no-format", lambda d: torch.save(tiny_cloudrm(format=DROP), d / "c.pt"), r"'format' missing"),
    ("lightning-like", lambda d: torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, d / "c.pt"),
     r"'format', 'model', 'bands', 'normalisation' missing"),
    ("wrong-format", lambda d: torch.save(tiny_cloudrm(format="other"), d / "c.pt"),
     r"'format' is 'other', expected 'cloudrm-checkpoint'"),
    ("newer", lambda d: torch.save(tiny_cloudrm(format_version=99), d / "c.pt"),
     r"c.pt: format version 99 is newer than this cloudrm: update cloudrm"),
    ("version-text", lambda d: torch.save(tiny_cloudrm(format_version="one"), d / "c.pt"),
     r"'format_version' is 'one', not a whole number"),
    ("state-dict-list", lambda d: torch.save(tiny_cloudrm(state_dict=[1, 2]), d / "c.pt"),
     r"c.pt: 'state_dict' is a list, not a dict of tensors"),
    ("state-dict-values", lambda d: torch.save(tiny_cloudrm(state_dict={"w": torch.zeros(1), "x": "text"}), d / "c.pt"),
     r"c.pt: 'state_dict' entry 'x' is a str, not a tensor \(1 such entry\)"),
    ("state-dict-empty", lambda d: torch.save(tiny_cloudrm(state_dict={}), d / "c.pt"), r"'state_dict' is empty"),
    ("model-number", lambda d: torch.save(tiny_cloudrm(model=3), d / "c.pt"), r"'model' is a int, not a model name"),
    ("model-unknown", lambda d: torch.save(tiny_cloudrm(model="nope"), d / "c.pt"),
     r"unknown model 'nope' \(known: .*glf_cr"),
    ("bands-list", lambda d: torch.save(tiny_cloudrm(bands=["B1"]), d / "c.pt"),
     r"'bands' must be a dict with lists of band names under 'optical' and 'sar', found \['B1'\]"),
    ("bands-not-lists", lambda d: torch.save(tiny_cloudrm(bands={"optical": "B1", "sar": ["VV"]}), d / "c.pt"),
     r"'bands' must be a dict"),
    ("bands-no-sar", lambda d: torch.save(tiny_cloudrm(bands={"optical": ["B1"]}), d / "c.pt"), r"'bands' must be"),
    ("normalisation-text", lambda d: torch.save(tiny_cloudrm(normalisation="dn/10000"), d / "c.pt"),
     r"'normalisation' must give the optical scale and clip \[lo, hi\] and one SAR clip \[lo, hi\] per band, "
     r"found 'dn/10000'"),
    ("normalisation-no-sar", lambda d: torch.save(tiny_cloudrm(normalisation={"optical": {"scale": 1, "clip": [0, 1]}}),
                                                  d / "c.pt"), r"'normalisation' must give"),
    ("config-list", lambda d: torch.save(tiny_cloudrm(config=[1]), d / "c.pt"), r"'config' is a list, not a dict"),
    ("format-tensor", lambda d: torch.save(tiny_cloudrm(format=torch.zeros(3)), d / "c.pt"),
     r"'format' is a tensor of shape \(3,\), expected"),
    ("a-list", lambda d: torch.save([torch.zeros(1)], d / "c.pt"),
     r"c.pt: expected a dict \(a checkpoint or a state dict\), found a list"),
    ("network-not-dict", lambda d: torch.save({"network": "weights"}, d / "c.pt"),
     r"c.pt: 'network' is a str, not a dict of tensors: neither a cloudrm checkpoint nor a state dict"),
    ("empty-dict", lambda d: torch.save({}, d / "c.pt"), r"c.pt: the file is empty \(no weights\)"),
    ("random-bytes", lambda d: (d / "c.pt").write_bytes(np.random.default_rng(0).bytes(4096)),
     r"c.pt is not a readable weights-only PyTorch checkpoint: it is neither a zip archive nor a pickle"),
    ("random-after-zip-magic", lambda d: (d / "c.pt").write_bytes(b"PK\x03\x04" + np.random.default_rng(0).bytes(4096)),
     r"c.pt is not a readable weights-only PyTorch checkpoint: the zip archive is truncated or corrupt"),
    ("text", lambda d: (d / "c.pt").write_text("model: glf_cr\nweights: none\n"),
     r"c.pt is not a readable weights-only PyTorch checkpoint: it is neither a zip archive nor a pickle"),
    ("empty-file", lambda d: (d / "c.pt").write_bytes(b""),
     r"c.pt is not a readable weights-only PyTorch checkpoint: it is empty \(0 bytes\)"),
    ("truncated-zip", _zip_cut,
     r"c.pt is not a readable weights-only PyTorch checkpoint: the zip archive is truncated or corrupt"),
    ("code", lambda d: torch.save({"network": Evil()}, d / "c.pt"),
     r"c.pt is not a readable weights-only PyTorch checkpoint: it contains objects that weights-only loading refuses "
     r"\(posix.system\), so it was not written by cloudrm or as a plain state dict"),
    ("plain-pickle", lambda d: (d / "c.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4)),
     r"c.pt is not a readable weights-only PyTorch checkpoint: its pickle data is not only tensors and plain "
     r"containers"),
    ("folder", lambda d: (d / "c.pt").mkdir(), r"checkpoint .*c.pt is a folder, not a checkpoint file"),
    ("missing", lambda d: None, r"checkpoint file not found: .*c.pt"),
]


@pytest.mark.parametrize(("make", "match"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_every_malformed_checkpoint_is_a_one_line_checkpoint_error(tmp_path, make, match):
    make(tmp_path)
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(tmp_path / "c.pt")
    text = str(err.value)
    one_line(text)
    assert "weights_only" not in text and "trust" not in text  # never torch's advice
    assert str(tmp_path / "c.pt") in text


def test_cli_info_on_a_checkpoint_without_state_dict(tmp_path):
    torch.save(tiny_cloudrm(state_dict=DROP), tmp_path / "c.pt")
    r = subprocess.run([sys.executable, "-m", "cloudrm_engine.cli", "info", str(tmp_path / "c.pt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("cloudrm: error: ") and "'state_dict' missing" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_a_valid_tiny_cloudrm_dict_loads_and_an_unbuildable_config_is_named(tmp_path):
    torch.save(tiny_cloudrm(config={"no_such_option": 1}), tmp_path / "c.pt")
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert isinstance(ckpt, Checkpoint) and ckpt.model == "glf_cr"
    with pytest.raises(CheckpointError, match=r"c.pt: model 'glf_cr' cannot be built with the checkpoint's config "
                                              r"\{'no_such_option': 1\}"):
        build_model(ckpt)


# ---------------------------------------------------------------------- quicklook


def test_quicklook_names_a_non_raster_or_missing_input_and_a_bad_output(tmp_path):
    good = write_geotiff(tmp_path / "good.tif", noise(3, 16, 16))
    (tmp_path / "notes.txt").write_text("not a raster")
    with pytest.raises(InputError, match=r"^before raster 'notes.txt' cannot be read as a raster \(.*notes.txt\)"):
        side_by_side(tmp_path / "notes.txt", good, tmp_path / "q.png")
    with pytest.raises(InputError, match=r"^after raster 'gone.tif': file not found: .*gone.tif"):
        side_by_side(good, tmp_path / "gone.tif", tmp_path / "q.png")
    with pytest.raises(InputError, match=r"outputs are .png files \(.png\); name it e.g. q.png"):
        side_by_side(good, good, tmp_path / "q.tif")
    bad = truncate(tiled(tmp_path / "t.tif", noise()), tmp_path / "cut.tif", 0.5)
    with pytest.raises(InputError, match=r"of after raster 'cut.tif' \(.*cut.tif\): the file is truncated or corrupt"):
        side_by_side(good, bad, tmp_path / "q.png")
    assert side_by_side(good, good, tmp_path / "q.png").is_file()
    assert listing(tmp_path) == {"good.tif", "notes.txt", "t.tif", "cut.tif", "q.png"}


# ------------------------------------------------------------------------- series


def test_duplicate_dates_in_a_series_warn_naming_both_files(tmp_path):
    paths = [write_geotiff(tmp_path / f"s2_{k}.tif", np.full((13, 8, 8), 500, dtype=np.uint16), "EPSG:32631", T0)
             for k in "abc"]
    rec = RecordingProgress()
    series = load_series(paths, None, rec, dates=["2023-01-05", "2023-01-05", "2022-12-01"])
    assert [i.optical.name for i in series.items] == ["s2_c.tif", "s2_a.tif", "s2_b.tif"]
    dup = [w for w in rec.warnings if "same acquisition date" in w]
    assert dup == [
        f"optical rasters 's2_a.tif' ({paths[0]}) and 's2_b.tif' ({paths[1]}) have the same acquisition date "
        "2023-01-05 (from parameter): 's2_b.tif' (the last given) is the target, the other history; "
        "give the dates explicitly if that is wrong"
    ]
    rec = RecordingProgress()
    load_series(paths, None, rec, dates=["2023-01-05", "2022-12-01", "2022-12-01"])
    assert [w for w in rec.warnings if "same acquisition date" in w] == [
        f"optical rasters 's2_b.tif' ({paths[1]}) and 's2_c.tif' ({paths[2]}) have the same acquisition date "
        "2022-12-01 (from parameter): all are used, in the order given; give the dates explicitly if that is wrong"
    ]
    rec = RecordingProgress()
    load_series(paths, None, rec, dates=["2023-01-05", "2022-12-01", "2022-11-01"])
    assert not [w for w in rec.warnings if "same acquisition date" in w]


def test_gdal_message_finds_gdals_words_under_rasterio_14s_generic_error():
    from rasterio.errors import RasterioIOError

    def raised() -> BaseException:
        try:
            try:
                raise RuntimeError("/data/cut.tif, band 1: IReadBlock failed at X offset 2, Y offset 2")
            except RuntimeError as gdal:  # rasterio 1.4: a generic error raised from GDAL's
                raise RasterioIOError("Read failed. See previous exception for details.") from gdal
        except RasterioIOError as exc:
            return exc
        raise AssertionError("not raised")

    assert raster_mod.gdal_message(raised()) == "/data/cut.tif, band 1: IReadBlock failed at X offset 2, Y offset 2"
    # rasterio 1.3: one error with a generic prefix
    assert raster_mod.gdal_message(RasterioIOError("Read or write failed. x.tif: IReadBlock failed")) == (
        "x.tif: IReadBlock failed")
    assert raster_mod.gdal_message(RasterioIOError("")) == "RasterioIOError"
