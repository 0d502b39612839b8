"""Keep clear pixels: clear pixels bit-exact, mask grown by the buffer, feathering inside it only,
windowed = whole, and the same result inside the predictor as from an existing prediction."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from cloudrm_engine.errors import Canceled, InputError
from cloudrm_engine.inference.composite import disk, feather_weight, grow, keep_clear
from tests.conftest import S2_SAMPLE, RecordingProgress, crop_sample, write_geotiff


def square(y0: int, y1: int, x0: int, x1: int, size: int = 64) -> np.ndarray:
    m = np.zeros((1, size, size), dtype=np.uint8)
    m[0, y0:y1, x0:x1] = 1
    return m


@pytest.fixture
def pair(tmp_path):
    """64×64 13-band uint16 input (1000 + column), a prediction (3000) on the same 10 m grid."""
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


def test_grow_is_a_disk_dilation():
    assert disk(1).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).sum() == 13
    m = np.zeros((9, 9), dtype=bool)
    m[4, 4] = True
    np.testing.assert_array_equal(grow(m, 2)[2:7, 2:7], disk(2))
    assert grow(m, 2).sum() == 13 and grow(m, 0).sum() == 1
    edge = np.zeros((5, 5), dtype=bool)
    edge[0, 0] = True  # beyond the array nothing is masked
    assert grow(edge, 1).sum() == 3


def test_known_values_with_a_mask_raster(pair, tmp_path):
    opt, pred, inp, p = pair
    mask = write_geotiff(tmp_path / "mask.tif", square(16, 48, 16, 48))
    out, filled = tmp_path / "out.tif", tmp_path / "filled.tif"
    res = keep_clear(opt, pred, out, mask=mask, buffer_m=0, feather_px=4, mask_out=filled)
    with rasterio.open(out) as ds, rasterio.open(filled) as mk:
        y, m = ds.read(), mk.read(1)
        assert ds.dtypes[0] == "uint16" and mk.dtypes[0] == "uint8"
        assert ds.tags()["CLOUDRM_KEEP_CLEAR"] == "mask=raster mask.tif, buffer_m=0, feather_px=4"
    cloud = square(16, 48, 16, 48)[0].astype(bool)
    assert np.array_equal(y[:, ~cloud], inp[:, ~cloud])  # clear: bit-exact
    assert np.array_equal(y[:, 19:45, 19:45], p[:, 19:45, 19:45])  # ≥ 4 px inside: the prediction
    # first masked ring: 1/4 of the prediction, 3/4 of the input (rounded to DN)
    assert y[0, 16, 30] == round(0.75 * inp[0, 16, 30] + 0.25 * 3000)
    assert y[0, 17, 30] == round(0.5 * inp[0, 17, 30] + 0.5 * 3000)
    assert y[0, 30, 16] == round(0.75 * inp[0, 30, 16] + 0.25 * 3000)
    assert np.array_equal(m.astype(bool), cloud)
    assert (res.pixels, res.cloudy_pixels, res.filled_pixels, res.buffer_px) == (4096, 32 * 32, 32 * 32, 0)


def test_buffer_in_metres_grows_the_mask(pair, tmp_path):
    opt, pred, inp, p = pair  # 10 m pixels: 30 m = 3 px
    mask = write_geotiff(tmp_path / "mask.tif", square(30, 34, 30, 34))
    out = tmp_path / "out.tif"
    res = keep_clear(opt, pred, out, mask=mask, buffer_m=30, feather_px=0)
    with rasterio.open(out) as ds:
        y = ds.read()
    grown = grow(square(30, 34, 30, 34)[0].astype(bool), 3)
    assert res.buffer_px == 3 and res.cloudy_pixels == grown.sum() == 16 + 4 * 4 * 3 + 4 * 4  # 4 px per rounded corner
    np.testing.assert_array_equal(y[:, grown], p[:, grown])
    np.testing.assert_array_equal(y[:, ~grown], inp[:, ~grown])


def test_hard_switch_without_feather(pair, tmp_path):
    opt, pred, inp, p = pair
    out = tmp_path / "out.tif"
    keep_clear(opt, pred, out, mask=write_geotiff(tmp_path / "m.tif", square(0, 10, 0, 64)), buffer_m=0,
               feather_px=0)
    with rasterio.open(out) as ds:
        y = ds.read()
    assert np.array_equal(y[:, :10], p[:, :10]) and np.array_equal(y[:, 10:], inp[:, 10:])


def test_mask_values_nonzero_replace_and_nodata_does_not(pair, tmp_path):
    opt, pred, inp, p = pair
    m = np.zeros((1, 64, 64), np.uint8)
    m[0, :8] = 2  # shadow (cloudmask's value 2): replaced
    m[0, 8:16] = 255  # the mask's nodata: kept
    out = tmp_path / "out.tif"
    keep_clear(opt, pred, out, mask=write_geotiff(tmp_path / "m.tif", m, nodata=255), buffer_m=0, feather_px=0)
    with rasterio.open(out) as ds:
        y = ds.read()
    assert np.array_equal(y[:, :8], p[:, :8]) and np.array_equal(y[:, 8:], inp[:, 8:])


def test_real_sample_with_a_computed_mask_and_block_size_does_not_matter(tmp_path):
    from cloudrm_engine.masks import cloud_mask_scene

    with rasterio.open(S2_SAMPLE) as ds:
        a, crs, transform = ds.read(), ds.crs.to_string(), ds.transform
    pred = np.clip(a.astype(np.int32) - 700, 0, None).astype(np.uint16)  # differs everywhere
    pred_path = write_geotiff(tmp_path / "pred.tif", pred, crs, transform)
    outs = []
    for block in (48, 1024):
        out, mask = tmp_path / f"out{block}.tif", tmp_path / f"mask{block}.tif"
        progress = RecordingProgress()
        res = keep_clear(S2_SAMPLE, pred_path, out, method="cafr_rule", buffer_m=20, mask_out=mask,
                         block_size=block, progress=progress)
        with rasterio.open(out) as ds, rasterio.open(mask) as mk:
            outs.append((ds.read(), mk.read(1)))
            assert (ds.crs, ds.transform) == (rasterio.crs.CRS.from_string(crs), transform)
        assert progress.updates[-1] == (100, 100)
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    y, filled = outs[0]
    cloud_mask_scene(S2_SAMPLE, tmp_path / "cm.tif", "cafr_rule")  # clouds 1 and shadows 2
    with rasterio.open(tmp_path / "cm.tif") as ds:
        masked = grow(ds.read(1) > 0, 2)  # 20 m = 2 px
    assert 0.1 < masked.mean() < 0.9
    assert np.array_equal(y[:, ~masked], a[:, ~masked])  # clear pixels bit-identical
    assert np.array_equal(filled.astype(bool), masked)  # the prediction differs everywhere
    deep = feather_weight(masked, 8) >= 1
    assert deep.any() and np.array_equal(y[:, deep], pred[:, deep])
    assert res.cloudy_pixels == int(masked.sum()) == res.filled_pixels


def test_cancel_writes_nothing(pair, tmp_path):
    opt, pred, _, _ = pair
    out, mask = tmp_path / "out.tif", tmp_path / "filled.tif"
    m = write_geotiff(tmp_path / "m.tif", square(0, 8, 0, 8))
    with pytest.raises(Canceled):
        keep_clear(opt, pred, out, mask=m, mask_out=mask, block_size=16, progress=RecordingProgress(cancel_after=2))
    assert not out.exists() and not mask.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "m.tif", "pred.tif"]


def test_input_errors(pair, tmp_path):
    opt, pred, inp, _ = pair
    from rasterio.transform import Affine

    shifted = write_geotiff(tmp_path / "shifted.tif", inp, transform=Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(InputError, match="is not on the grid of the optical input"):
        keep_clear(opt, shifted, tmp_path / "o.tif")
    four = write_geotiff(tmp_path / "four.tif", inp[:4])
    with pytest.raises(
        InputError,
        match=r"computes its cloud mask from the 13 Sentinel-2 L1C bands; "
        r"optical raster 'four.tif' .* has 4: give a mask",
    ):
        keep_clear(four, four, tmp_path / "o.tif")
    with pytest.raises(InputError, match=r"has 4 bands, the optical input .* 13"):
        keep_clear(opt, four, tmp_path / "o.tif")
    with pytest.raises(InputError, match="is the optical input"):
        keep_clear(opt, pred, opt)
    far = write_geotiff(tmp_path / "far.tif", square(0, 8, 0, 8), transform=Affine(10, 0, 1e5, 0, -10, 5e6))
    with pytest.raises(InputError, match=r"mask raster 'far.tif' .* does not overlap optical raster 'in.tif'"):
        keep_clear(opt, pred, tmp_path / "o.tif", mask=far)
    assert not (tmp_path / "o.tif").exists()


def test_nodata_pixels_stay_nodata(tmp_path):
    inp = np.full((13, 32, 32), 6000, dtype=np.uint16)
    inp[:, :4, :] = 0  # nodata strip
    pred = np.full((13, 32, 32), 200, dtype=np.uint16)
    opt = write_geotiff(tmp_path / "in.tif", inp, nodata=0)
    prd = write_geotiff(tmp_path / "p.tif", pred, nodata=0)
    mask = np.ones((1, 32, 32), np.uint8)  # everything masked, the nodata strip too
    keep_clear(opt, prd, tmp_path / "o.tif", mask=write_geotiff(tmp_path / "m.tif", mask), buffer_m=0,
               mask_out=tmp_path / "f.tif")
    with rasterio.open(tmp_path / "o.tif") as ds, rasterio.open(tmp_path / "f.tif") as mk:
        y, m = ds.read(), mk.read(1)
        assert ds.nodata == 0
    assert (y[:, :4] == 0).all() and (m[:4] == 0).all()
    assert (y[:, 4:] == 200).all() and (m[4:] == 1).all()  # no clear pixel to feather from: all prediction


def test_predictor_keep_clear_equals_compositing_its_own_prediction(tmp_path):
    """Inside the predictor (per emitted block, clear tiles skipped) = keep_clear on its full prediction."""
    from cloudrm_engine.api import predict_scene
    from tests.conftest import make_checkpoint

    opt, sar = crop_sample(tmp_path, 0, 64, 128)
    ckpt = make_checkpoint("mpir4", tmp_path / "mpir4.pt")
    mask = np.zeros((1, 128, 128), np.uint8)
    mask[0, 10:30, 70:100] = 1  # one cloud: with 64 px tiles, most tiles are clear and skipped
    mask_path = write_geotiff(tmp_path / "m.tif", mask, *_grid_of(opt))
    full, kept, again = tmp_path / "full.tif", tmp_path / "kept.tif", tmp_path / "again.tif"
    predict_scene(opt, sar, full, model="mpir4", checkpoint=ckpt, device="cpu", tile_size=64, overlap=16)
    res = predict_scene(opt, sar, kept, model="mpir4", checkpoint=ckpt, device="cpu", tile_size=64, overlap=16,
                        keep_clear=True, mask=str(mask_path), mask_buffer_m=40,
                        filled_mask=str(tmp_path / "kept_filled.tif"))
    assert res.skipped_tiles == 7 and res.tiles == 9  # 3×3 tiles; the cloud (+ 4 px) lies in 2 of them
    with rasterio.open(opt) as ds:
        rgb = ds.read([4, 3, 2])
    rgb_path = write_geotiff(tmp_path / "rgb.tif", rgb, *_grid_of(opt))
    keep_clear(rgb_path, full, again, mask=mask_path, buffer_m=40, mask_out=tmp_path / "again_filled.tif")
    with rasterio.open(kept) as a, rasterio.open(again) as b:
        assert a.read().tobytes() == b.read().tobytes()
    with rasterio.open(tmp_path / "kept_filled.tif") as a, rasterio.open(tmp_path / "again_filled.tif") as b:
        flags = a.read(1)
        assert flags.tobytes() == b.read().tobytes()
    assert res.filled_fraction == pytest.approx(flags.mean())
    assert res.cloudy_fraction == pytest.approx(grow(mask[0] > 0, 4).mean())


def _grid_of(path):
    with rasterio.open(path) as ds:
        return ds.crs.to_string(), ds.transform
