"""Planet-CR / M3R-CR reader on a made-up dataset in the real layout (docs/training.md, "Planet-CR / M3R-CR")."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import Affine

from cloudrm_engine.data.planet_cr import (
    PlanetCRDataset,
    discover,
    load_sample,
    nearest_indices,
    read_index,
)
from cloudrm_engine.errors import InputError

from ..conftest import write_geotiff


def _write_sample(root, split="train", season="fall", aoi="1", patch="457", seed=0):
    rng = np.random.default_rng(seed)
    rel = {}

    def path(kind, ext="tif"):
        p = root / split / f"{kind}_{season}" / f"{kind}_{season}_{aoi}" / f"{kind}_{season}_{aoi}_p_{patch}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        rel[kind] = str(p.relative_to(root))
        return p

    t3 = Affine(3, 0, 600000, 0, -3, 3000000)
    t10 = Affine(10, 0, 600001.5, 0, -10, 2999998.0)  # origins 1–2 m apart, as in the samples
    rows, cols = np.mgrid[0:300, 0:300]
    cloudy = np.stack([rows, cols, rows + cols, np.full_like(rows, 12000)]).astype(np.uint16)
    write_geotiff(path("planet_cloudfree"), rng.integers(1, 4000, (4, 300, 300)).astype(np.uint16), "EPSG:32646", t3, 0)
    write_geotiff(path("planet_cloudy"), cloudy, "EPSG:32646", t3, 0)
    r10, c10 = np.mgrid[0:90, 0:90]
    sar = np.stack([-c10 * 0.25, -r10 * 0.25]).astype(np.float64)  # VV encodes the column, VH the row
    sar[0, 0, 0] = np.nan
    sar[1, 5, 5] = 11.0  # positive dB values occur; they are clipped
    write_geotiff(path("S1"), sar, "EPSG:32646", t10)
    lc = np.full((1, 90, 90), 10, np.uint8)
    lc[0, :, 45:] = 80
    write_geotiff(path("landcover"), lc, "EPSG:32646", t10)
    mask = np.zeros((300, 300), bool)
    mask[100:200, 50:150] = True
    np.save(path("cloudmask", "npy"), mask)
    return [rel[k] for k in ("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask")]


def test_gdal_nearest_indices_run_3_4_3():
    idx = nearest_indices(90, 300)
    assert idx[:10].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert np.bincount(idx).tolist() == [3, 4, 3] * 30


def test_load_sample_scales_and_upsamples(tmp_path):
    rel = _write_sample(tmp_path)
    (tmp_path / "train.csv").write_text(",".join(rel) + "\n")
    (s,) = read_index(tmp_path / "train.csv")
    d = load_sample(s)
    assert d["cloudy"].shape == (4, 300, 300) and d["cloudy"].dtype == np.float32
    assert d["cloudy"][1, 0, 123] == pytest.approx(123 / 10000)
    assert np.all(d["cloudy"][3] == 1.0)  # 12000 DN clipped to 10000
    assert d["sar"].shape == (2, 300, 300)
    # VV column value c -> dB -0.25c -> (x + 25) / 25; column 3 of the output reads SAR column 1.
    assert d["sar"][0, 50, 3] == pytest.approx((25 - 0.25) / 25)
    assert d["sar"][0, 50, 2] == pytest.approx(1.0)
    assert d["sar"][1, 17, 17] == pytest.approx(1.0)  # +11 dB clipped to 0 dB -> 1
    assert np.isfinite(d["sar"]).all()  # NaN filled with the file mean
    assert d["mask"].sum() == 100 * 100
    assert set(np.unique(d["landcover"])) == {0, 5}  # forest and water
    assert (d["landcover"][:, :150] == 0).all() and (d["landcover"][:, 150:] == 5).all()


def test_random_crops_keep_all_rasters_co_located(tmp_path):
    rel = _write_sample(tmp_path)
    (tmp_path / "train.csv").write_text("cloudfree,cloudy,s1,lc,mask\n" + ",".join(rel) + "\n")
    samples = read_index(tmp_path / "train.csv")
    ds = PlanetCRDataset(samples, crop=160, train=True, seed=3)
    item = ds[0]
    y, x = item["offset"]
    assert item["cloudy"].shape == (4, 160, 160) and item["sar"].shape == (2, 160, 160)
    assert item["cloudy"][0, 0, 0].item() == pytest.approx(y / 10000, abs=1e-7)
    assert item["cloudy"][1, 0, 0].item() == pytest.approx(x / 10000, abs=1e-7)
    full = load_sample(samples[0])
    assert np.array_equal(item["mask"][0].numpy(), full["mask"][y : y + 160, x : x + 160])
    assert np.array_equal(item["sar"].numpy(), full["sar"][:, y : y + 160, x : x + 160])
    assert ds[0]["offset"] == (y, x)  # reproducible
    test = PlanetCRDataset(samples, crop=160, train=False)
    assert test[0]["offset"] == (70, 70)
    assert item["key"] == "fall_1_p_457"


def test_discover_walks_the_layout_and_errors_name_the_file(tmp_path):
    _write_sample(tmp_path, patch="1")
    _write_sample(tmp_path, season="winter", aoi="7", patch="2")
    found = discover(tmp_path, "train")
    assert [s.key for s in found] == ["fall_1_p_1", "winter_7_p_2"]
    found[1].sar.unlink()
    with pytest.raises(InputError, match=r"S1 file missing: .*S1_winter_7_p_2\.tif"):
        load_sample(found[1])
    (tmp_path / "bad.csv").write_text("a.tif,b.tif\n")
    with pytest.raises(InputError, match="line 1: expected 5 paths"):
        read_index(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="split folder not found"):
        discover(tmp_path, "test")


# -- the official layout as shipped: CSVs relative to the split folder ------------------------

from cloudrm_engine.data.common import Extent  # noqa: E402
from cloudrm_engine.data.datasets import DataOptions, detect, open_split  # noqa: E402
from cloudrm_engine.data.planet_cr import find_csv, holdout, split_samples  # noqa: E402

from .layouts import write_planet_cr, write_planet_sample  # noqa: E402


def test_official_csv_rows_are_relative_to_the_split_folder(tmp_path):
    rows = [write_planet_sample(tmp_path, "train", aoi=str(i), patch=str(i)) for i in (1, 2)]
    assert rows[0][2] == "S1_fall/S1_fall_1/S1_fall_1_p_1.tif"  # as in the official one_train_sample.csv
    (tmp_path / "one_train_sample.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    assert detect(tmp_path)[0] == "planet_cr"
    assert find_csv(tmp_path, "train") == tmp_path / "one_train_sample.csv"
    samples, skipped = split_samples(tmp_path, "train", val_fraction=0.0)
    assert skipped == [] and samples[0].sar == tmp_path / "train" / rows[0][2]
    assert [s.key for s in samples] == ["fall_1_p_1", "fall_2_p_2"]
    assert find_csv(tmp_path, "test") is None  # no test CSV: the test folder is walked
    (tmp_path / "one_train_sample.csv").rename(tmp_path / "a_train.csv")
    (tmp_path / "train_other.csv").write_text("x")
    with pytest.raises(InputError, match="several Planet-CR CSVs for split 'train'"):
        find_csv(tmp_path, "train")


def test_s1_nan_filled_after_upsampling_with_the_upsampled_mean(tmp_path):
    rel = _write_sample(tmp_path)
    (tmp_path / "train.csv").write_text(",".join(rel) + "\n")
    (s,) = read_index(tmp_path / "train.csv", tmp_path)
    import rasterio

    with rasterio.open(s.sar) as ds:
        raw, crs, tr = ds.read(), ds.crs.to_string(), ds.transform
    raw[:, :, 1] = 40.0  # source column 1 becomes 4 output columns (runs 3, 4, 3): weights differ
    raw[0, 0, 0] = np.nan
    write_geotiff(s.sar, raw, crs, tr)
    up = raw[:, nearest_indices(90, 300)[:, None], nearest_indices(90, 300)[None, :]]
    fill = np.nanmean(up)
    assert abs(fill - np.nanmean(raw)) > 1e-3  # the two conventions differ on this patch
    d = load_sample(s)
    assert d["sar"].dtype == np.float32
    want = (np.clip(fill, -25, 0) + 25) / 25
    assert d["sar"][0, :3, :3] == pytest.approx(np.full((3, 3), want), abs=1e-6)  # 1 NaN cell → 3×3 pixels


def test_landcover_code_zero_keeps_the_official_mapping(tmp_path):
    write_planet_sample(tmp_path, "test", aoi="4", patch="9")
    (s,) = discover(tmp_path, "test")
    d = load_sample(s)
    assert d["landcover"].dtype == np.float32
    # code 0 (no data) in the top-left 3×3 cells of the 90×90 raster → 0 (forest), like code 10
    assert (d["landcover"][:10, :10] == 0).all()
    assert set(np.unique(d["landcover"]).tolist()) == {0.0, 5.0}
    d2 = load_sample(s, lc_level="2")
    assert set(np.unique(d2["landcover"]).tolist()) == {0.0, 7.0}  # trees, open water


def test_validation_holds_out_training_aois_and_items_are_complete(tmp_path):
    write_planet_cr(tmp_path, train=5, test=2, size=100)
    tr, _ = split_samples(tmp_path, "train", val_fraction=0.2)
    va, _ = split_samples(tmp_path, "val", val_fraction=0.2)
    assert [s.aoi for s in va] == ["fall_5"] and len(tr) == 4 and not {s.aoi for s in tr} & {"fall_5"}
    assert holdout(tr, 0.0) == (tr, [])
    split = open_split(tmp_path, "align_cr", "test", Extent("center", 32), False, DataOptions(lc_level="1"))
    assert split.layout == "official CSV" and len(split.dataset) == 2
    item = split.dataset[0]
    assert item["cloudy"].shape == (4, 32, 32) and item["sar"].shape == (2, 32, 32)
    assert item["mask"].shape == item["cloud"].shape == item["weight"].shape == (1, 32, 32)
    assert item["landcover"].shape == (32, 32) and item["offset"] == (34, 34)
    (tmp_path / "test" / "S1_fall" / "S1_fall_2" / "S1_fall_2_p_11.tif").unlink()
    with pytest.raises(InputError, match=r"Planet-CR S1 file missing: .*S1_fall_2_p_11\.tif"):
        split_samples(tmp_path, "test")
    kept, skipped = split_samples(tmp_path, "test", skip_bad=True)
    assert len(kept) == 1 and "S1_fall_2_p_11.tif" in skipped[0]
