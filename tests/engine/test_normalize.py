"""Input scaling (docs/data.md, "Scaling conventions") and the file-mean NaN fill."""

import numpy as np
import pytest
import rasterio

from cloudrm_engine.data.normalize import apply_card, fill_invalid, normalize_optical, normalize_sar
from cloudrm_engine.io.raster import file_mean, invalid_mask
from cloudrm_engine.models import model_card
from tests.conftest import write_geotiff


def test_sar_ranges_per_band():
    vv = np.array([-40.0, -25.0, -12.5, 0.0, 3.0], dtype=np.float32)
    vh = np.array([-40.0, -32.5, -16.25, 0.0, 3.0], dtype=np.float32)
    out = normalize_sar(np.stack([vv, vh])[:, None, :])
    np.testing.assert_array_equal(out[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(out[1, 0], [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_optical_clip_and_scale():
    x = np.array([[[-5, 0, 2500, 10000, 12000]]], dtype=np.float32)
    np.testing.assert_allclose(normalize_optical(x)[0, 0], [0.0, 0.0, 0.25, 1.0, 1.0])


def test_card_normalisation_is_the_documented_one():
    norm = model_card("glf_cr").normalisation
    assert norm["sar"]["clip"] == [[-25.0, 0.0], [-32.5, 0.0]]
    assert norm["optical"] == {"clip": [0, 10000], "scale": 10000}
    o, s = apply_card(np.full((13, 2, 2), 5000, np.uint16), np.full((2, 2, 2), -12.5, np.float32), norm)
    assert o.max() == o.min() == 0.5
    np.testing.assert_allclose(s[0], 0.5)
    np.testing.assert_allclose(s[1], 1 - 12.5 / 32.5, rtol=1e-6)


def test_nan_and_nodata_get_the_file_mean(tmp_path):
    a = np.array([[[1.0, np.nan], [3.0, -9999.0]], [[5.0, 7.0], [np.nan, -9999.0]]], dtype=np.float32)
    path = write_geotiff(tmp_path / "s1.tif", a, nodata=-9999.0)
    with rasterio.open(path) as ds:
        mean = file_mean(ds, block=1)  # block-wise streaming gives the same mean
        data = ds.read()
    assert mean == np.mean([1.0, 3.0, 5.0, 7.0])
    bad = invalid_mask(data, -9999.0)
    np.testing.assert_array_equal(bad, [[False, False], [False, True]])
    filled = fill_invalid(data, bad, mean)
    np.testing.assert_array_equal(filled, [[[1, 4], [3, 4]], [[5, 7], [4, 4]]])


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_scaling_equals_the_plain_clip_formula_bit_for_bit(dtype):
    """The in-place scaling gives np.clip's values exactly (NaN stays NaN) and leaves its input alone."""
    rng = np.random.default_rng(2)
    opt = rng.normal(3000, 6000, (13, 40, 40))
    opt = (opt.clip(0, 65535) if dtype == np.uint16 else opt).astype(dtype)  # negatives and > 10000 too
    sar = rng.normal(-15, 12, (2, 40, 40)).astype(np.float32)
    sar[0, 0, 0] = np.nan
    before = opt.copy(), sar.copy()
    got_o = normalize_optical(opt, (0, 10000), 10000)
    ref_o = (np.clip(opt.astype(np.float32), 0, 10000) / np.float32(10000)).astype(np.float32)
    ranges = ((-25.0, 0.0), (-32.5, 0.0))
    got_s = normalize_sar(sar, ranges)
    ref_s = np.stack([(np.clip(sar[i], lo, hi) - np.float32(lo)) / np.float32(hi - lo)
                      for i, (lo, hi) in enumerate(ranges)])
    assert got_o.dtype == got_s.dtype == np.float32
    assert np.array_equal(got_o, ref_o) and np.array_equal(got_s, ref_s, equal_nan=True)
    assert np.isnan(got_s[0, 0, 0])
    assert np.array_equal(opt, before[0]) and np.array_equal(sar, before[1], equal_nan=True)
