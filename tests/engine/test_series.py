"""Time-series inputs: dates (parameter, metadata, file name), sorting, pairing, grids, cancel."""

import datetime as dt

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from cloudrm_engine.errors import Canceled, InputError
from cloudrm_engine.io.series import load_series, open_series, parse_date
from tests.conftest import RecordingProgress, crop_sample, write_geotiff

T0 = Affine(10, 0, 600000.0, 0, -10, 5000000.0)


def opt(path, value=500, h=32, w=32, transform=T0, crs="EPSG:32631", tags=None, nodata=None):
    p = write_geotiff(path, np.full((13, h, w), value, dtype=np.uint16), crs, transform, nodata)
    if tags:
        with rasterio.open(p, "r+") as ds:
            ds.update_tags(**tags)
    return p


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("S2A_MSIL1C_20230105T103421_N0509_R108_T31UDQ_20230105T123456.tif", dt.date(2023, 1, 5)),
        ("s2_ROIs1970_21_ImgNo_0_2018-01-06_patch_250.tif", dt.date(2018, 1, 6)),
        ("2023:01:05 10:34:21", dt.date(2023, 1, 5)),  # TIFFTAG_DATETIME
        ("2021-06-30T10:50:31.024Z", dt.date(2021, 6, 30)),
        ("patch_12345678_20191301_x.tif", None),  # 1234-56-78 and month 13: not dates
        ("ROIs1868_summer_s2_cloudy_19_p30.tif", None),
    ],
)
def test_parse_date(text, date):
    assert parse_date(text) == date


def test_dates_from_metadata_and_names_sort_the_series(tmp_path):
    a = opt(tmp_path / "scene_a.tif", tags={"ACQUISITION_DATE": "2023-03-10T10:00:00Z"})
    b = opt(tmp_path / "S2_20230101.tif")
    c = opt(tmp_path / "c.tif", tags={"TIFFTAG_DATETIME": "2023:02:01 00:00:00"})
    d = opt(tmp_path / "s2_2023-02-15_x.tif", tags={"DATATAKE_1_DATATAKE_SENSING_START": "2023-02-14T10:00:00Z"})
    prog = RecordingProgress()
    s = load_series([a, b, c, d], None, prog)
    assert [i.optical.path.name for i in s.items] == ["S2_20230101.tif", "c.tif", "s2_2023-02-15_x.tif", "scene_a.tif"]
    assert [i.date_source for i in s.items] == [
        "file name", "metadata TIFFTAG_DATETIME", "metadata DATATAKE_1_DATATAKE_SENSING_START",
        "metadata ACQUISITION_DATE",
    ]
    assert s.dates() == ["2023-01-01", "2023-02-01", "2023-02-14", "2023-03-10"]  # metadata beats the name
    assert s.days().tolist() == [-68.0, -37.0, -24.0, 0.0]
    assert s.target.path == a and not s.has_sar
    assert prog.infos[-1] == "series target: 2023-03-10 (date from metadata ACQUISITION_DATE) 'scene_a.tif'"


def test_explicit_dates_win_and_are_checked(tmp_path):
    a = opt(tmp_path / "S2_20230101.tif")
    b = opt(tmp_path / "S2_20230201.tif")
    s = load_series([a, b], None, RecordingProgress(), dates=["2023-05-01", "2023-04-01"])
    assert [i.optical.path for i in s.items] == [b, a]
    assert {i.date_source for i in s.items} == {"parameter"}
    with pytest.raises(InputError, match=r"1 date\(s\) given for 2 optical raster\(s\)"):
        load_series([a, b], None, RecordingProgress(), dates=["2023-05-01"])
    with pytest.raises(InputError, match="'5/1/2023' is not an ISO date"):
        load_series([a, b], None, RecordingProgress(), dates=["5/1/2023", "2023-04-01"])


def test_undated_series_keeps_order_but_mixed_is_an_error(tmp_path):
    a, b = opt(tmp_path / "first.tif"), opt(tmp_path / "second.tif")
    prog = RecordingProgress()
    s = load_series([b, a], None, prog)
    assert [i.optical.path for i in s.items] == [b, a] and s.days().tolist() == [0.0, 0.0]
    assert "keeping the given order" in prog.warnings[0]
    c = opt(tmp_path / "S2_20230101.tif")
    with pytest.raises(InputError) as err:
        load_series([a, c, b], None, RecordingProgress())
    assert "'first.tif'" in str(err.value) and "'second.tif'" in str(err.value) and "S2_2023" not in str(err.value)


def test_sar_pairs_by_date_order_and_counts_must_match(tmp_path):
    o1, o2 = opt(tmp_path / "S2_20230110.tif"), opt(tmp_path / "S2_20230101.tif")
    s_late = write_geotiff(tmp_path / "S1_20230109.tif", np.full((2, 32, 32), -10.0, np.float32), transform=T0)
    s_early = write_geotiff(tmp_path / "S1_20221231.tif", np.full((2, 32, 32), -12.0, np.float32), transform=T0)
    s = load_series([o1, o2], [s_late, s_early], RecordingProgress())
    assert [(i.optical.path.name, i.sar.path.name) for i in s.items] == [
        ("S2_20230101.tif", "S1_20221231.tif"), ("S2_20230110.tif", "S1_20230109.tif")]
    # undated SAR: paired in the order the optical rasters were given
    u1 = write_geotiff(tmp_path / "sar_a.tif", np.full((2, 32, 32), -10.0, np.float32), transform=T0)
    u2 = write_geotiff(tmp_path / "sar_b.tif", np.full((2, 32, 32), -10.0, np.float32), transform=T0)
    s = load_series([o1, o2], [u1, u2], RecordingProgress())
    assert [i.sar.path.name for i in s.items] == ["sar_b.tif", "sar_a.tif"]
    with pytest.raises(InputError, match=r"1 SAR raster\(s\) for 2 optical raster\(s\)"):
        load_series([o1, o2], [u1], RecordingProgress())
    with pytest.raises(InputError, match=r"optical raster 'missing.tif': file not found"):
        load_series([o1, tmp_path / "missing.tif"], None, RecordingProgress())


def test_other_grids_are_resampled_onto_the_target_grid(tmp_path):
    from cloudrm_engine.api import predict_series

    # target 32×32 at 10 m; an older date at 20 m, shifted, larger; another in EPSG:32632
    target = opt(tmp_path / "S2_20230301.tif", value=700, tags=None, nodata=0)
    coarse = opt(tmp_path / "S2_20230201.tif", value=600, h=24, w=24,
                 transform=Affine(20, 0, 599900.0, 0, -20, 5000100.0))
    prog = RecordingProgress()
    s = load_series([coarse, target], None, prog)
    with open_series(s, prog) as (opts, sars):
        assert sars == []
        assert [(d.width, d.height, d.transform, d.crs) for d in opts] == [(32, 32, T0, s.target.crs)] * 2
        a = opts[0].read(window=((0, 32), (0, 32)))
        assert a.dtype == np.float32 and np.allclose(a, 600)
    assert any("resampling it onto the target grid" in w and "'S2_20230201.tif'" in w for w in prog.warnings)
    far = opt(tmp_path / "S2_20230101.tif", transform=Affine(10, 0, 100000.0, 0, -10, 1000000.0))
    with (
        pytest.raises(
            InputError, match=r"optical raster 'S2_20230101.tif' .* does not overlap the target 'S2_20230301.tif'"
        ),
        open_series(load_series([far, target], None, RecordingProgress()), RecordingProgress()),
    ):
        pass
    out = tmp_path / "out.tif"
    predict_series([target, coarse], None, out, method="mosaicing", reducer="mean")
    with rasterio.open(target) as t, rasterio.open(out) as o:
        assert (o.crs, o.transform, o.width, o.height, o.dtypes[0], o.nodata) == (
            t.crs, t.transform, t.width, t.height, "uint16", 0.0)
        assert (o.read() == 650).all()  # mean of 600 and 700: both clear


def test_real_crops_and_cancel_leave_no_output(tmp_path):
    from cloudrm_engine.api import predict_series

    o, s = crop_sample(tmp_path, 64, 136, 64)
    series = []
    with rasterio.open(o) as ds:
        base, crs, tr = ds.read(), ds.crs.to_string(), ds.transform
    for k in range(3):
        series.append(write_geotiff(tmp_path / f"S2_2020010{k + 1}.tif", base, crs, tr))
    out = tmp_path / "cancel.tif"
    prog = RecordingProgress(cancel_after=1)
    with pytest.raises(Canceled):
        predict_series(series, None, out, method="least_cloudy", tile_size=48, overlap=16, progress=prog)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".cancel")]
    assert prog.updates == [(0, 4), (1, 4)]
    with pytest.raises(InputError, match=r"is the input raster 'S2_20200103.tif'"):
        predict_series(series, None, series[2], method="least_cloudy")
    with pytest.raises(InputError, match="method 'median' not known"):
        predict_series(series, None, out, method="median")
    four = write_geotiff(tmp_path / "S2_20200104.tif", base[:4], crs, tr)
    with pytest.raises(InputError, match="optical rasters have different band counts"):
        predict_series([*series, four], None, out, method="least_cloudy")
    res = predict_series(series, [s, s, s], out, method="least_cloudy", tile_size=32, overlap=0)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), base)  # identical dates: the target itself
        assert ds.tags()["CLOUDRM_DATES"] == "2020-01-01;2020-01-02;2020-01-03"
    assert res.target.name == "S2_20200103.tif"


def test_ca_mtcr_untrained_through_predict_series(tmp_path):
    from cloudrm_engine.api import predict_series
    from cloudrm_engine.errors import CheckpointError
    from cloudrm_engine.models import list_models
    from tests.conftest import make_checkpoint

    if "ca_mtcr" not in list_models():
        pytest.skip("ca_mtcr is not registered")
    o, s = crop_sample(tmp_path, 64, 136, 40)
    with rasterio.open(o) as ds:
        base, crs, tr = ds.read(), ds.crs.to_string(), ds.transform
    with rasterio.open(s) as ds:
        s1 = ds.read()
    opts, sars = [], []
    for k, day in enumerate(("20220301", "20220306", "20220316")):
        a = base.copy()
        if k == 2:
            a[:, 0, 0] = 0  # nodata in the target → nodata in the output
        opts.append(write_geotiff(tmp_path / f"S2_{day}.tif", a, crs, tr, nodata=0))
        sars.append(write_geotiff(tmp_path / f"S1_{day}.tif", s1, crs, tr))
    ckpt = make_checkpoint("ca_mtcr", tmp_path / "ca.pt")
    prog = RecordingProgress()
    out = tmp_path / "ca.tif"
    res = predict_series(opts[::-1], sars, out, method="ca_mtcr", checkpoint=ckpt, device="cpu",
                         tile_size=36, overlap=8, progress=prog)
    assert (res.tile_size, res.overlap, res.tiles) == (32, 8, 4)  # 36 → multiple of 8; stride 24
    assert any("adjusted to 32/8" in m for m in prog.infos)
    assert any("days [-15, -10, 0]" in m for m in prog.infos)
    with rasterio.open(out) as ds:
        y = ds.read()
        assert (ds.transform, ds.nodata, ds.dtypes[0], ds.count) == (tr, 0.0, "uint16", 13)
        assert ds.tags()["CLOUDRM_MODEL"] == "ca_mtcr" and ds.descriptions[12] == "B12"
    assert (y[:, 0, 0] == 0).all() and (y[:, 1:, 1:] > 0).all() and y.max() <= 10000
    glf = make_checkpoint("glf_cr", tmp_path / "glf.pt")
    with pytest.raises(CheckpointError, match=r"glf\.pt holds model 'glf_cr', not 'ca_mtcr'"):
        predict_series(opts, sars, tmp_path / "x.tif", method="ca_mtcr", checkpoint=glf, device="cpu")
    with pytest.raises(InputError, match="method ca_mtcr needs one SAR raster"):
        predict_series(opts, None, tmp_path / "x.tif", method="ca_mtcr", checkpoint=ckpt)
    assert not (tmp_path / "x.tif").exists()


def test_cli_predict_series(tmp_path, capsys):
    from cloudrm_engine.cli import main

    a = opt(tmp_path / "S2_20230101.tif", value=500)
    b = opt(tmp_path / "S2_20230111.tif", value=700)
    out = tmp_path / "cli.tif"
    assert main(["predict-series", "--optical", str(b), str(a), "--method", "mosaicing", "--reducer", "mean",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(target S2_20230111.tif, dates 2023-01-01, 2023-01-11; mosaicing, 1 tiles of 32 px" in printed
    with rasterio.open(out) as ds:
        assert (ds.read() == 600).all()
    assert main(["predict-series", "--optical", str(a), str(b), "--dates", "2023-01-01", "--out", str(out)]) == 2
    assert "1 date(s) given for 2 optical raster(s)" in capsys.readouterr().err


def test_reader_threads_leave_no_dataset_for_another_thread_to_exit(tmp_path, monkeypatch):
    """rasterio ≥ 1.4 gives a dataset entered with ``with`` a GDAL environment of the entering
    thread and ends it on exit in whichever thread exits; reader threads' datasets are closed by
    the main thread, which then lost its own environment ("No GDAL environment exists", seen
    with rasterio 1.4.3 on the GPU machine's set-up). No dataset may be entered on one thread and
    exited on another: checked here on every rasterio, for the series readers (a date on
    another grid: a WarpedVRT) and keep-clear's per-thread mask handles."""
    import threading

    from rasterio.io import DatasetReader

    from cloudrm_engine.api import predict_scene, predict_series
    from tests.conftest import DEMO_CKPT

    entered: dict[int, str] = {}
    crossed: list[tuple[str, str, str]] = []
    real_enter, real_exit = DatasetReader.__enter__, DatasetReader.__exit__

    def enter(self):
        entered[id(self)] = threading.current_thread().name
        return real_enter(self)

    def leave(self, *exc):
        who, me = entered.pop(id(self), None), threading.current_thread().name
        if who is not None and who != me:
            crossed.append((self.name, who, me))
        return real_exit(self, *exc)

    monkeypatch.setattr(DatasetReader, "__enter__", enter)
    monkeypatch.setattr(DatasetReader, "__exit__", leave)

    target = opt(tmp_path / "S2_20230301.tif", value=700, nodata=0)
    coarse = opt(tmp_path / "S2_20230201.tif", value=600, h=24, w=24,
                 transform=Affine(20, 0, 599900.0, 0, -20, 5000100.0))
    predict_series([target, coarse], None, tmp_path / "mosaic.tif", method="mosaicing", reducer="mean",
                   tile_size=16, overlap=4)
    s2, s1 = crop_sample(tmp_path, 0, 0, 64)
    with rasterio.open(s2) as ds:
        profile = {**ds.profile, "count": 1, "dtype": "uint8", "nodata": None}
    mask = tmp_path / "mask.tif"
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(np.pad(np.ones((1, 16, 16), np.uint8), ((0, 0), (24, 24), (24, 24))))
    res = predict_scene(s2, s1, tmp_path / "kept.tif", checkpoint=DEMO_CKPT, device="cpu", tile_size=32,
                        overlap=8, keep_clear=True, mask=str(mask))
    assert res.filled_fraction is not None and 0 < res.filled_fraction < 1
    assert crossed == []
