"""predict_scene end to end: georeferencing, exact identity, nodata, errors, cancel."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from cloudrm_engine.api import predict_scene
from cloudrm_engine.errors import Canceled, CheckpointError, InputError
from tests.conftest import RecordingProgress, crop_sample, write_geotiff


def grid_of(path):
    with rasterio.open(path) as ds:
        return ds.crs, ds.transform, ds.width, ds.height, ds.count, ds.dtypes[0], ds.nodata


def leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_identity_model_through_tiles_reproduces_the_input(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 96, 64, 80)  # real radiometry incl. cloud edges
    out = tmp_path / "out.tif"
    prog = RecordingProgress()
    res = predict_scene(opt, sar, out, checkpoint=identity_checkpoint, tile_size=32, overlap=16, progress=prog)
    assert res.tiles == 16 and res.tile_size == 32 and res.overlap == 16
    assert grid_of(out) == grid_of(opt)
    with rasterio.open(opt) as a, rasterio.open(out) as b:
        assert np.array_equal(b.read(), a.read())  # uint16 DN identical, every band, every pixel
        assert b.descriptions[:4] == ("B1", "B2", "B3", "B4")
        assert b.tags()["CLOUDRM_MODEL"] == "glf_cr"
        assert b.profile["tiled"] and b.profile["compress"] == "deflate"
    assert prog.updates[-1] == (16, 16)
    assert leftovers(tmp_path, {"crop_s2.tif", "crop_s1.tif", "out.tif"}) == []


def test_nodata_is_propagated(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 0, 0, 48)
    with rasterio.open(opt) as ds:
        a = ds.read()
        crs, t = ds.crs.to_string(), ds.transform
    a[:, :10, :10] = 0  # a nodata corner
    a[:, 20, 20] = 0
    a[:3, 30, 30] = 0  # zero in some bands only: still a valid pixel
    a[0, 40, 40] = 1  # valid value that must stay valid
    nod = write_geotiff(tmp_path / "nodata_s2.tif", a, crs, t, nodata=0)
    out = tmp_path / "out.tif"
    predict_scene(nod, sar, out, checkpoint=identity_checkpoint, tile_size=32, overlap=16)
    _crs, _transform, _w, _h, _c, dtype, nodata = grid_of(out)
    assert (nodata, dtype) == (0.0, "uint16")
    with rasterio.open(out) as ds:
        b = ds.read()
    assert (b[:, :10, :10] == 0).all() and (b[:, 20, 20] == 0).all()
    # an all-band-valid pixel never reads as nodata: zeros in single bands are nudged to 1
    assert (b[:3, 30, 30] == 1).all() and (b[3:, 30, 30] == a[3:, 30, 30]).all()
    valid = ~((a == 0).all(axis=0))
    assert np.array_equal(b[:, valid & (a != 0).all(axis=0)], a[:, valid & (a != 0).all(axis=0)])


def test_sar_on_another_grid_is_resampled_with_a_warning(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 0, 0, 64)
    with rasterio.open(sar) as src:
        dst_t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        geo = np.zeros((2, h, w), np.float32)
        reproject(src.read(), geo, src_transform=src.transform, src_crs=src.crs, dst_transform=dst_t,
                  dst_crs="EPSG:4326", resampling=Resampling.bilinear)
    sar_geo = write_geotiff(tmp_path / "s1_4326.tif", geo, "EPSG:4326", dst_t)
    out = tmp_path / "out.tif"
    prog = RecordingProgress()
    predict_scene(opt, sar_geo, out, checkpoint=identity_checkpoint, tile_size=64, overlap=0, progress=prog)
    assert any("resampling SAR onto the optical grid" in m for m in prog.warnings)
    assert grid_of(out) == grid_of(opt)


def test_sar_without_overlap_is_a_clear_error_and_writes_nothing(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 0, 0, 32)
    with rasterio.open(sar) as ds:
        a = ds.read()
    far = write_geotiff(tmp_path / "far_s1.tif", a, "EPSG:32631", Affine(10, 0, 100000, 0, -10, 5000000))
    out = tmp_path / "out.tif"
    with pytest.raises(InputError) as err:
        predict_scene(opt, far, out, checkpoint=identity_checkpoint, optical_name="S2 cloudy",
                      sar_name="S1 far away")
    msg = str(err.value)
    assert "'S1 far away'" in msg and "'S2 cloudy'" in msg and "does not overlap" in msg
    assert not out.exists()
    assert leftovers(tmp_path, {"crop_s2.tif", "crop_s1.tif", "far_s1.tif"}) == []


def test_band_count_errors_name_what_was_expected(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 0, 0, 32)
    four = write_geotiff(tmp_path / "rgbn.tif", np.ones((4, 32, 32), np.uint16))
    with pytest.raises(InputError, match=r"'rgbn.tif' .* has 4 bands; model glf_cr .* expects 13 bands: B1, B2"):
        predict_scene(four, sar, tmp_path / "o.tif", checkpoint=identity_checkpoint)
    one = write_geotiff(tmp_path / "vv.tif", np.ones((1, 32, 32), np.float32))
    with pytest.raises(InputError, match=r"SAR raster 'vv.tif' .* has 1 bands; .* expects 2: VV, VH"):
        predict_scene(opt, one, tmp_path / "o.tif", checkpoint=identity_checkpoint)
    with pytest.raises(InputError, match=r"is the input raster 'crop_s2.tif'"):
        predict_scene(opt, sar, opt, checkpoint=identity_checkpoint)
    with pytest.raises(InputError, match=r"optical raster 'nope.tif': file not found"):
        predict_scene(tmp_path / "nope.tif", sar, tmp_path / "o.tif", checkpoint=identity_checkpoint)


def test_cancel_removes_partial_output(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 0, 0, 64)
    out = tmp_path / "out.tif"
    out_before = out.exists()
    with pytest.raises(Canceled):
        predict_scene(opt, sar, out, checkpoint=identity_checkpoint, tile_size=32, overlap=16,
                      progress=RecordingProgress(cancel_after=2))
    assert not out_before and not out.exists()
    assert leftovers(tmp_path, {"crop_s2.tif", "crop_s1.tif"}) == []


def test_device_and_checkpoint_errors(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 0, 0, 32)
    with pytest.raises(InputError, match="device 'cuda:7' requested but torch sees"):
        predict_scene(opt, sar, tmp_path / "o.tif", checkpoint=identity_checkpoint, device="cuda:7")
    with pytest.raises(InputError, match="not understood"):
        predict_scene(opt, sar, tmp_path / "o.tif", checkpoint=identity_checkpoint, device="tpu")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        predict_scene(opt, sar, tmp_path / "o.tif", checkpoint=tmp_path / "missing.pt")
    assert not (tmp_path / "o.tif").exists()


def test_output_conversion_equals_clip_round_and_nudges_nodata():
    """The writer's in-place DN conversion gives np.clip + np.rint's values, NaN and nodata included."""
    from types import SimpleNamespace

    from cloudrm_engine.inference.predictor import _output_converter

    rng = np.random.default_rng(5)
    block = np.concatenate([rng.normal(0.5, 0.7, (3, 40, 40)), (rng.random((1, 40, 40)) > 0.1)]).astype(np.float64)
    block[0, 0, :5] = [np.nan, 0.0, 1e-4, 0.99995, 1.5]
    block[3, 0, 0] = 0.0  # the NaN pixel is invalid: it becomes nodata
    like = SimpleNamespace(dtype="uint16", nodata=0.0)
    got = _output_converter(like, 10000.0, 10000.0, 3)(block.copy())
    invalid = block[3] < 0.5
    ref = np.rint(np.clip(block[:3] * 10000.0, 0.0, 10000.0))
    ref[(ref == 0) & ~invalid] = 1  # a valid pixel never reads as nodata
    ref[:, invalid] = 0
    assert np.array_equal(got, ref.astype(np.uint16))
    assert got.dtype == np.uint16 and got[0, 0, 0] == 0 and got[0, 0, 4] == 10000
