"""Keep clear pixels: clear pixels bit-exact, feathering inside the cloud only, windowed = whole."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from cloudrm_engine.data.cloudmask import cloud_mask
from cloudrm_engine.errors import Canceled, InputError
from cloudrm_engine.inference.composite import feather_weight, keep_clear
from tests.conftest import S2_SAMPLE, RecordingProgress, write_geotiff


def square_mask(y0: int, y1: int, x0: int, x1: int):
    def fn(refl: np.ndarray) -> np.ndarray:  # ignores the pixels: a fixed cloud, for known answers
        m = np.zeros(refl.shape[1:], dtype=bool)
        m[y0:y1, x0:x1] = True
        return m

    return fn


@pytest.fixture
def pair(tmp_path):
    """64×64 13-band uint16 input (value 1000) and a prediction (value 3000) on the same grid."""
    inp = np.full((13, 64, 64), 1000, dtype=np.uint16)
    inp[:, :, :] += np.arange(64, dtype=np.uint16)[None, None, :]  # varying, so copies are checked
    pred = np.full((13, 64, 64), 3000, dtype=np.uint16)
    return write_geotiff(tmp_path / "in.tif", inp), write_geotiff(tmp_path / "pred.tif", pred), inp, pred


def test_feather_weight_known_values():
    cloudy = np.zeros((1, 12), dtype=bool)
    cloudy[0, 3:] = True
    w = feather_weight(cloudy, 4)
    assert w[0].tolist() == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1]
    assert feather_weight(cloudy, 0)[0].tolist() == [0, 0, 0] + [1] * 9
    # chessboard distance in 2-D; a fully cloudy array has no edge to feather from
    c2 = np.ones((7, 7), dtype=bool)
    c2[3, 3] = False
    assert feather_weight(c2, 3)[0, 0] == 1.0 and feather_weight(c2, 3)[2, 2] == pytest.approx(1 / 3)
    assert feather_weight(c2, 3)[1, 1] == pytest.approx(2 / 3)
    assert (feather_weight(np.ones((5, 5), dtype=bool), 8) == 1).all()
    # distances count from `clear` only: the left column is nodata, not clear
    valid = np.ones((1, 12), dtype=bool)
    valid[0, 0] = False
    cl = np.zeros((1, 12), dtype=bool)
    cl[0, 1:3] = True
    cloudy0 = ~cl & valid
    assert feather_weight(cloudy0, 4, clear=cl)[0].tolist() == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1]


def test_known_values_with_a_fixed_mask(pair, tmp_path):
    opt, pred, inp, p = pair
    out, mask = tmp_path / "out.tif", tmp_path / "mask.tif"
    res = keep_clear(opt, pred, out, cloud_mask_fn=square_mask(16, 48, 16, 48), feather_px=4, mask_out=mask)
    with rasterio.open(out) as ds, rasterio.open(mask) as mk:
        y, m = ds.read(), mk.read(1)
        assert ds.dtypes[0] == "uint16" and mk.dtypes[0] == "uint8"
    cloud = np.zeros((64, 64), dtype=bool)
    cloud[16:48, 16:48] = True
    assert np.array_equal(y[:, ~cloud], inp[:, ~cloud])  # clear: bit-exact
    assert np.array_equal(y[:, 19:45, 19:45], p[:, 19:45, 19:45])  # ≥ 4 px inside: the prediction
    # first cloudy ring: 1/4 of the prediction, 3/4 of the input (rounded to DN)
    assert y[0, 16, 30] == round(0.75 * inp[0, 16, 30] + 0.25 * 3000)
    assert y[0, 17, 30] == round(0.5 * inp[0, 17, 30] + 0.5 * 3000)
    assert y[0, 30, 16] == round(0.75 * inp[0, 30, 16] + 0.25 * 3000)
    assert np.array_equal(m.astype(bool), cloud)
    assert (res.pixels, res.cloudy_pixels, res.filled_pixels) == (4096, 32 * 32, 32 * 32)


def test_hard_switch_without_feather(pair, tmp_path):
    opt, pred, inp, p = pair
    out = tmp_path / "out.tif"
    keep_clear(opt, pred, out, cloud_mask_fn=square_mask(0, 10, 0, 64), feather_px=0)
    with rasterio.open(out) as ds:
        y = ds.read()
    assert np.array_equal(y[:, :10], p[:, :10]) and np.array_equal(y[:, 10:], inp[:, 10:])


def test_real_sample_clear_pixels_exact_and_blocks_do_not_matter(tmp_path):
    with rasterio.open(S2_SAMPLE) as ds:
        a, crs, transform = ds.read(), ds.crs.to_string(), ds.transform
    pred = np.clip(a.astype(np.int32) - 700, 0, None).astype(np.uint16)  # differs everywhere
    pred_path = write_geotiff(tmp_path / "pred.tif", pred, crs, transform)
    outs = []
    for block in (48, 1024):
        out, mask = tmp_path / f"out{block}.tif", tmp_path / f"mask{block}.tif"
        progress = RecordingProgress()
        res = keep_clear(S2_SAMPLE, pred_path, out, mask_out=mask, block_size=block, progress=progress)
        with rasterio.open(out) as ds, rasterio.open(mask) as mk:
            outs.append((ds.read(), mk.read(1)))
            assert (ds.crs, ds.transform) == (rasterio.crs.CRS.from_string(crs), transform)
        assert progress.updates[-1] == (len(range(0, 256, block)) ** 2,) * 2
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    y, filled = outs[0]
    cloudy = cloud_mask(a.astype(np.float32) / 10000.0)  # as the engine computes it (float32)
    assert 0.1 < cloudy.mean() < 0.9
    assert np.array_equal(y[:, ~cloudy], a[:, ~cloudy])  # clear pixels bit-identical
    assert np.array_equal(filled.astype(bool), cloudy)  # the prediction differs everywhere
    deep = feather_weight(cloudy, 8) >= 1
    assert deep.any() and np.array_equal(y[:, deep], pred[:, deep])
    assert res.cloudy_pixels == int(cloudy.sum()) == res.filled_pixels


def test_cancel_writes_nothing(pair, tmp_path):
    opt, pred, _, _ = pair
    out, mask = tmp_path / "out.tif", tmp_path / "mask.tif"
    with pytest.raises(Canceled):
        keep_clear(opt, pred, out, cloud_mask_fn=square_mask(0, 8, 0, 8), mask_out=mask, block_size=16,
                   progress=RecordingProgress(cancel_after=2))
    assert not out.exists() and not mask.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "pred.tif"]


def test_input_errors(pair, tmp_path):
    opt, pred, inp, _ = pair
    from rasterio.transform import Affine

    shifted = write_geotiff(tmp_path / "shifted.tif", inp, transform=Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(InputError, match="is not on the grid of the optical input"):
        keep_clear(opt, shifted, tmp_path / "o.tif")
    four = write_geotiff(tmp_path / "four.tif", inp[:4])
    with pytest.raises(InputError, match="needs the 13 S2 L1C bands .* has 4"):
        keep_clear(four, four, tmp_path / "o.tif")
    with pytest.raises(InputError, match="has 4 bands, the optical input .* 13"):
        keep_clear(opt, four, tmp_path / "o.tif")
    with pytest.raises(InputError, match="is the optical input"):
        keep_clear(opt, pred, opt)
    with pytest.raises(InputError, match="unknown cloud mask method 'fmask'"):
        keep_clear(opt, pred, tmp_path / "o.tif", cloud_mask_fn="fmask")
    assert not (tmp_path / "o.tif").exists()


def test_nodata_pixels_stay_nodata(tmp_path):
    inp = np.full((13, 32, 32), 6000, dtype=np.uint16)  # bright: cloudy by the S2 rule everywhere
    inp[9] = 1000
    inp[:, :4, :] = 0  # nodata strip
    pred = np.full((13, 32, 32), 200, dtype=np.uint16)
    opt = write_geotiff(tmp_path / "in.tif", inp, nodata=0)
    prd = write_geotiff(tmp_path / "p.tif", pred, nodata=0)
    keep_clear(opt, prd, tmp_path / "o.tif", mask_out=tmp_path / "m.tif")
    with rasterio.open(tmp_path / "o.tif") as ds, rasterio.open(tmp_path / "m.tif") as mk:
        y, m = ds.read(), mk.read(1)
        assert ds.nodata == 0
    assert (y[:, :4] == 0).all() and (m[:4] == 0).all()
    assert np.array_equal(y[:, m == 0], inp[:, m == 0]) and (y[:, 16:] == 200).all()
