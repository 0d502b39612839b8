"""Per-tile SAR resampling onto the optical grid (issue 3: multi-resolution inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.warp
from rasterio.transform import Affine

from cloudrm_engine.io.align import SarTiles, open_sar_on_grid
from cloudrm_engine.io.raster import raster_info

from ..conftest import RecordingProgress, write_geotiff

X0, Y0 = 500010.0, 4000020.0


def _pair(tmp_path, sar_array, sar_res=10.0, opt_res=3.0, opt_size=60, dx=0.0, dy=0.0, crs="EPSG:32633"):
    opt = write_geotiff(
        tmp_path / "opt.tif", np.ones((4, opt_size, opt_size), np.uint16), crs,
        Affine(opt_res, 0, X0, 0, -opt_res, Y0),
    )
    sar = write_geotiff(
        tmp_path / "sar.tif", sar_array.astype(np.float32), crs,
        Affine(sar_res, 0, X0 + dx, 0, -sar_res, Y0 + dy),
    )
    return raster_info(opt, role="optical"), raster_info(sar, role="SAR")


def test_nearest_follows_gdal_convention_3_4_3_runs(tmp_path):
    # 10 m SAR whose value is its column (band 1) and row (band 2), optical at 3 m.
    rows, cols = np.mgrid[0:18, 0:18]
    opt, sar = _pair(tmp_path, np.stack([cols, rows]))
    prog = RecordingProgress()
    with SarTiles(sar, opt, prog, "nearest") as tiles:
        a = tiles.read(0, 0, 30)
    want = np.floor((np.arange(30) + 0.5) * 0.3)  # GDAL: source index floor((i + 0.5) * 3/10)
    assert np.array_equal(a[0, 0], want)
    assert np.array_equal(a[1][:, 0], want)
    assert list(np.bincount(a[0, 0].astype(int))) == [3, 4, 3] * 3  # torch 'nearest' would give 4, 3, 3
    assert any("nearest neighbour, as the model was trained" in w for w in prog.warnings)


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_tiles_equal_one_warp_of_the_whole_grid(tmp_path, resampling):
    rng = np.random.default_rng(0)
    # SAR origin 1.5 m / 2 m off the optical grid, as in M3R-CR (docs/data.md).
    opt, sar = _pair(tmp_path, rng.uniform(-25, 0, (2, 24, 24)), dx=-1.5, dy=2.0)
    with open_sar_on_grid(sar, opt, RecordingProgress(), resampling) as vrt:
        whole = vrt.read().astype(np.float32)
    with SarTiles(sar, opt, RecordingProgress(), resampling) as tiles:
        for y, x in [(0, 0), (16, 32), (32, 16), (44, 44)]:
            t = tiles.read(y, x, 16)
            np.testing.assert_allclose(t, whole[:, y : y + 16, x : x + 16], atol=1e-4)


def test_tile_beyond_the_raster_is_mirrored_like_the_optical(tmp_path):
    rng = np.random.default_rng(1)
    opt, sar = _pair(tmp_path, rng.uniform(-25, 0, (2, 24, 24)))
    with SarTiles(sar, opt, RecordingProgress(), "bilinear") as tiles:
        t = tiles.read(48, 48, 16)  # 12 valid px, 4 mirrored
    np.testing.assert_array_equal(t[:, 12:, :12], t[:, 10:6:-1, :12])


def test_uncovered_pixels_are_nan_and_partial_coverage_warns(tmp_path):
    # SAR covers only the west half of the optical extent.
    opt, sar = _pair(tmp_path, np.full((2, 18, 9), -10.0))
    prog = RecordingProgress()
    with SarTiles(sar, opt, prog, "nearest") as tiles:
        t = tiles.read(0, 0, 60)
    assert np.all(t[:, :, :29] == -10.0) and np.all(np.isnan(t[:, :, 31:]))
    assert any("covers only" in w for w in prog.warnings)


def test_same_grid_reads_directly_without_warning(tmp_path):
    a = np.random.default_rng(2).uniform(-25, 0, (2, 32, 32)).astype(np.float32)
    opt = write_geotiff(tmp_path / "o.tif", np.ones((13, 32, 32), np.uint16))
    sar = write_geotiff(tmp_path / "s.tif", a)
    prog = RecordingProgress()
    with SarTiles(raster_info(sar), raster_info(opt), prog, "nearest") as tiles:
        np.testing.assert_array_equal(tiles.read(0, 0, 32), a)
    assert prog.warnings == []


def test_other_crs_is_reprojected(tmp_path):
    # SAR in geographic coordinates, optical in UTM: still lands on the tile grid.
    opt = write_geotiff(
        tmp_path / "o.tif", np.ones((4, 32, 32), np.uint16), "EPSG:32633", Affine(3, 0, 500000, 0, -3, 4000000)
    )
    (lon,), (lat,) = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [500000 - 20], [4000000 + 20])
    sar = write_geotiff(
        tmp_path / "s.tif", np.full((2, 20, 20), -12.0, np.float32), "EPSG:4326",
        Affine(0.0001, 0, lon, 0, -0.0001, lat),
    )
    prog = RecordingProgress()
    with rasterio.open(sar) as ds:
        assert ds.crs.to_epsg() == 4326
    with SarTiles(raster_info(sar), raster_info(opt), prog, "bilinear") as tiles:
        t = tiles.read(0, 0, 32)
    assert t.shape == (2, 32, 32)
    assert np.nanmax(np.abs(t + 12.0)) < 1e-4 and np.isfinite(t).mean() > 0.5
    assert any("EPSG:4326" in w for w in prog.warnings)
