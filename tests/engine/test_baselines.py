"""Weight-free multi-temporal baselines: exact picks on a made-up series with known clear pixels."""

import numpy as np
import pytest
import rasterio

from cloudrm_engine.baselines import least_cloudy, mosaicing
from cloudrm_engine.data.cloudmask import cloud_mask
from tests.conftest import RecordingProgress, write_geotiff


def made_up_series():
    """3 dates × 2 bands × 4×6 px; date t has value 10·(t+1) + band, clouds where known.

    Pixel classes (row, col):
      (0, 0..5)  clear in all dates           → least_cloudy: target (t=2); mean/median: t=1 value
      (1, 0..2)  cloudy in target only        → least_cloudy: t=1 (latest clear)
      (1, 3..5)  cloudy in t=2 and t=1        → both: t=0
      (2, 0..5)  cloudy everywhere            → both: the target (fallback)
      (3, 0..5)  clear in t=0 and t=2 only    → least_cloudy: t=2; mean: (t0+t2)/2
    """
    t, c, h, w = 3, 2, 4, 6
    stack = np.zeros((t, c, h, w), dtype=np.float32)
    for k in range(t):
        for b in range(c):
            stack[k, b] = 10 * (k + 1) + b
    stack += np.arange(w, dtype=np.float32) * 100  # columns differ, so a wrong column would show
    cloud = np.zeros((t, h, w), dtype=bool)
    cloud[2, 1, :] = True
    cloud[1, 1, 3:] = True
    cloud[:, 2, :] = True
    cloud[1, 3, :] = True
    return stack, cloud


def test_least_cloudy_per_pixel_picks_the_latest_clear_date():
    stack, cloud = made_up_series()
    out = least_cloudy(stack, cloud)
    assert out.shape == (2, 4, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], stack[2][:, 0])
    np.testing.assert_array_equal(out[:, 1, :3], stack[1][:, 1, :3])
    np.testing.assert_array_equal(out[:, 1, 3:], stack[0][:, 1, 3:])
    np.testing.assert_array_equal(out[:, 2], stack[2][:, 2])  # nothing clear: the target
    np.testing.assert_array_equal(out[:, 3], stack[2][:, 3])
    assert out[0, 1, 4] == 10 + 400  # t=0, band 0, column 4


@pytest.mark.parametrize("reducer", ["mean", "median"])
def test_mosaicing_uses_only_clear_observations(reducer):
    stack, cloud = made_up_series()
    out = mosaicing(stack, cloud, reducer=reducer)
    assert out.shape == (2, 4, 6)
    np.testing.assert_array_equal(out[:, 0], stack[1][:, 0])  # mean = median of 10, 20, 30 (+b) = 20
    np.testing.assert_array_equal(out[:, 1, :3], (stack[0] + stack[1])[:, 1, :3] / 2)
    np.testing.assert_array_equal(out[:, 1, 3:], stack[0][:, 1, 3:])
    np.testing.assert_array_equal(out[:, 2], stack[2][:, 2])  # fallback to the target
    np.testing.assert_array_equal(out[:, 3], (stack[0] + stack[2])[:, 3] / 2)
    assert out[1, 3, 5] == (11 + 31) / 2 + 500


def test_mean_and_median_differ_on_an_outlier():
    stack = np.array([1.0, 2.0, 30.0]).reshape(3, 1, 1, 1)
    cloud = np.zeros((3, 1, 1), dtype=bool)
    assert mosaicing(stack, cloud, "median")[0, 0, 0] == 2.0
    assert mosaicing(stack, cloud, "mean")[0, 0, 0] == 11.0


def test_tile_mode_takes_one_whole_acquisition():
    stack, cloud = made_up_series()
    # cloud fractions: t0 6/24, t1 15/24, t2 12/24 → t0 wins
    out = least_cloudy(stack, cloud, per="tile")
    np.testing.assert_array_equal(out, stack[0])
    # a tie between t0 and t2 goes to the later t2
    cloud2 = cloud.copy()
    cloud2[0] = cloud2[2]
    np.testing.assert_array_equal(least_cloudy(stack, cloud2, per="tile"), stack[2])


def test_float_score_and_bad_arguments():
    stack = np.arange(3 * 1 * 1 * 2, dtype=np.float32).reshape(3, 1, 1, 2)
    score = np.array([[[0.1, 0.5]], [[0.3, 0.5]], [[0.2, 0.9]]])
    # pixel 0: t0 least; pixel 1: t0/t1 tie → t1
    np.testing.assert_array_equal(least_cloudy(stack, score)[0, 0], [stack[0, 0, 0, 0], stack[1, 0, 0, 1]])
    with pytest.raises(ValueError, match="per must be"):
        least_cloudy(stack, score, per="scene")
    with pytest.raises(ValueError, match="reducer must be"):
        mosaicing(stack, score > 0.4, reducer="max")
    with pytest.raises(ValueError, match=r"cloud must be \(T, H, W\)"):
        least_cloudy(stack, score[:2])


def test_predict_series_baselines_on_constant_images(tmp_path):
    """End to end through the cloud mask: bright blocks are clouds, dark flat images are clear."""
    from cloudrm_engine.api import predict_series

    h = w = 40
    paths = []
    for k, day in enumerate(("2024-03-01", "2024-03-11", "2024-03-21")):
        a = np.full((13, h, w), 500 + 100 * k, dtype=np.uint16)  # dark: clear for the S2 cloud rule
        if k == 2:
            a[:, 10:30, 10:30] = 8000  # cloud in the target
        if k == 1:
            a[:, 10:30, 20:30] = 8000  # cloud in the middle date, right half of the target's cloud
        paths.append(write_geotiff(tmp_path / f"S2_{day}.tif", a))
    prog = RecordingProgress()
    res = predict_series(paths[::-1], None, tmp_path / "lc.tif", method="least_cloudy", tile_size=32,
                         overlap=8, progress=prog)
    with rasterio.open(res.output) as ds:
        y = ds.read()
        assert ds.dtypes[0] == "uint16" and ds.tags()["CLOUDRM_METHOD"] == "least_cloudy"
    assert res.dates == ["2024-03-01", "2024-03-11", "2024-03-21"] and res.tiles == 4
    assert (y[:, 14:26, 14:16] == 600).all()  # left half: the middle date
    assert (y[:, 14:26, 24:26] == 500).all()  # right half: the first date
    assert (y[:, :6, :] == 700).all()  # clear in the target: kept
    # filled share = the target's cloud mask (460 px: the block, a 1 px fringe, rounded corners)
    # up to tile-border effects of the mask's 7 px context
    with rasterio.open(paths[2]) as ds:
        target_cloud = cloud_mask(ds.read().astype(np.float32) / 10000).sum()
    assert target_cloud == 460
    assert res.replaced_fraction == pytest.approx(460 / 1600, abs=0.005)
    assert any("28.5% of the target's pixels were cloudy" in m for m in prog.infos)
    res = predict_series(paths, None, tmp_path / "mo.tif", method="mosaicing", tile_size=32, overlap=8)
    with rasterio.open(res.output) as ds:
        y = ds.read()
    assert (y[:, 14:26, 14:16] == 550).all() and (y[:, 14:26, 24:26] == 500).all()
    assert (y[:, :6, :] == 600).all()  # median of 500, 600, 700


def test_nodata_counts_as_worse_than_cloud(tmp_path):
    from cloudrm_engine.api import predict_series

    old = np.full((13, 32, 32), 500, dtype=np.uint16)
    old[:, :, :16] = 0  # no data in the left half of the older date
    target = np.full((13, 32, 32), 700, dtype=np.uint16)
    target[:, 8:24, 4:28] = 8000  # cloud across both halves
    target[:, 28:, 20:] = 0  # no data in the target's bottom-right corner
    a = write_geotiff(tmp_path / "S2_20240101.tif", old, nodata=0)
    b = write_geotiff(tmp_path / "S2_20240201.tif", target, nodata=0)
    for method in ("least_cloudy", "mosaicing"):
        out = tmp_path / f"{method}.tif"
        predict_series([a, b], None, out, method=method, tile_size=32, overlap=0)
        with rasterio.open(out) as ds:
            y = ds.read()
        assert (y[:, 12:20, 6:12] == 8000).all(), method  # only cloud or no data: keep the cloudy target
        assert (y[:, 12:20, 20:26] == 500).all(), method  # clear older date fills the cloud
        assert (y[:, 29:, 24:] == 500).all(), method  # target without data: filled from the older date
        assert (y[:, :4, :16] == 700).all(), method  # the older date has no data there
        assert (y[:, :4, 16:] == (700 if method == "least_cloudy" else 600)).all(), method  # both clear
    res = predict_series([a, b], None, tmp_path / "tile.tif", method="least_cloudy", per="tile", tile_size=32)
    with rasterio.open(res.output) as ds:
        y = ds.read()
    # cloud 16×24 + fringe in the target vs no data on half of the older date: the target wins,
    # and its own no-data corner stays no data
    assert (y[:, :4, :] == 700).all() and (y[:, 29:, 24:] == 0).all()
