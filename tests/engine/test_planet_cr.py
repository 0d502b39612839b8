"""Planet-CR / M3R-CR reader on a made-up dataset in the real layout (align_cr.md §5, §8.9)."""

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
