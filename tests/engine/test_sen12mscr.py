"""SEN12MS-CR reader: both on-disk layouts, scene split, windows, scaling, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from cloudrm_engine.data.common import Extent, collate
from cloudrm_engine.data.datasets import detect, open_split
from cloudrm_engine.data.sen12mscr import (
    Sen12MSCRDataset,
    find_seasonal,
    read_data_csv,
    scene_split,
)
from cloudrm_engine.errors import InputError
from cloudrm_engine.models import model_card

from ..conftest import write_geotiff
from .layouts import clear_patch, cloudy_of, write_sen12mscr_glf, write_sen12mscr_seasonal

NORM = model_card("glf_cr").normalisation
ALL = model_card("glf_cr").optical_bands


def test_scene_split_matches_scene_names_exactly():
    assert scene_split("spring", "106") == "test" and scene_split("spring", "17") == "val"
    # the substring pitfall: 'spring 1' would match '106', '17', '10' in a substring test
    assert scene_split("spring", "1") == "train" and scene_split("spring", "10") == "train"
    assert scene_split("summer", "17") == "val" and scene_split("fall", "17") == "train"
    assert scene_split("winter", "63") == "test" and scene_split("winter", "6") == "train"


def test_seasonal_layout_walk_and_split(tmp_path):
    write_sen12mscr_seasonal(tmp_path, [("spring", "1", [2, 10]), ("spring", "10", [1]), ("spring", "106", [5]),
                                        ("spring", "17", [3]), ("winter", "22", [4]), ("winter", "6", [7])])
    assert detect(tmp_path) == ("sen12mscr", "seasonal")
    train, skipped = find_seasonal(tmp_path, "train")
    assert [t.name for t in train] == ["ROIs1158_spring_1_p2", "ROIs1158_spring_1_p10", "ROIs1158_spring_10_p1",
                                       "ROIs2017_winter_6_p7"]  # natural order, p2 before p10
    assert skipped == []
    assert [t.name for t in find_seasonal(tmp_path, "val")[0]] == ["ROIs1158_spring_17_p3", "ROIs2017_winter_22_p4"]
    assert [t.name for t in find_seasonal(tmp_path, "test")[0]] == ["ROIs1158_spring_106_p5"]
    assert [t.name for t in find_seasonal(tmp_path, "train", ["winter"])[0]] == ["ROIs2017_winter_6_p7"]
    t = train[0]
    assert t.s2 == tmp_path / "ROIs1158_spring_s2" / "s2_1" / "ROIs1158_spring_s2_1_p2.tif"
    assert t.s2_cloudy == tmp_path / "ROIs1158_spring_s2_cloudy" / "s2_cloudy_1" / "ROIs1158_spring_s2_cloudy_1_p2.tif"
    with pytest.raises(InputError, match="unknown season"):
        find_seasonal(tmp_path, "train", ["autumn"])


def test_glf_cr_layout_rows_by_split_column(tmp_path):
    write_sen12mscr_glf(tmp_path, [(1, "ROIs2017_winter_112_p797"), (3, "ROIs1970_fall_139_p839"),
                                   (1, "ROIs1158_spring_5_p1"), (2, "ROIs1868_summer_19_p30")])
    assert detect(tmp_path) == ("sen12mscr", "glf_cr")
    train, _ = read_data_csv(tmp_path, "train")
    assert [t.name for t in train] == ["ROIs2017_winter_112_p797", "ROIs1158_spring_5_p1"]  # file order
    assert [t.name for t in read_data_csv(tmp_path, "val")[0]] == ["ROIs1868_summer_19_p30"]
    assert [t.name for t in read_data_csv(tmp_path, "test")[0]] == ["ROIs1970_fall_139_p839"]
    assert [t.name for t in read_data_csv(tmp_path, "train", ["spring"])[0]] == ["ROIs1158_spring_5_p1"]
    assert train[0].s1 == tmp_path / "s1" / "ROIs2017_winter_112_p797.tif"
    (tmp_path / "data.csv").write_text("1,s1,s2_cloudfree,s2_cloudy\n")
    with pytest.raises(InputError, match=r"data.csv line 1: expected 'split \(1/2/3\)"):
        read_data_csv(tmp_path, "train")


def test_both_layouts_give_identical_samples(tmp_path):
    seas, glf = tmp_path / "seasonal", tmp_path / "glf"
    write_sen12mscr_seasonal(seas, [("fall", "139", [839])])
    write_sen12mscr_glf(glf, [(3, "ROIs1970_fall_139_p839")])
    a = open_split(seas, "glf_cr", "test", Extent("center", 16), False).dataset[0]
    b = open_split(glf, "glf_cr", "test", Extent("center", 16), False).dataset[0]
    assert a["name"] == b["name"] == "ROIs1970_fall_139_p839"
    for k in ("cloudy", "sar", "target"):
        assert torch.equal(a[k], b[k])


def test_scaling_rgb_bands_and_co_located_random_windows(tmp_path):
    write_sen12mscr_seasonal(tmp_path, [("spring", "1", [1])])
    (t,), _ = find_seasonal(tmp_path, "train")
    with rasterio.open(t.s2_cloudy) as a, rasterio.open(t.s1) as b, rasterio.open(t.s2) as c:
        cloudy, sar, clear = a.read().astype(np.float32), b.read().astype(np.float32), c.read().astype(np.float32)
    ds = Sen12MSCRDataset([t], ("B4", "B3", "B2"), model_card("mmcanet").normalisation, Extent("random", 16), seed=3)
    ds.set_epoch(2)
    item = ds[0]
    first = item["cloudy"]
    # find the window: the reader's random offset is reproducible from (seed, epoch, index)
    from cloudrm_engine.data.common import item_rng

    y, x, _, _ = Extent("random", 16).window(32, 32, item_rng(3, 2, 0))
    sl = (slice(y, y + 16), slice(x, x + 16))
    np.testing.assert_allclose(first.numpy(), np.clip(cloudy[[3, 2, 1]][(slice(None), *sl)], 0, 10000) / 10000)
    np.testing.assert_allclose(item["target"].numpy(), np.clip(clear[[3, 2, 1]][(slice(None), *sl)], 0, 1e4) / 1e4)
    vv = (np.clip(sar[0][sl], -25, 0) + 25) / 25
    vh = (np.clip(sar[1][sl], -32.5, 0) + 32.5) / 32.5
    np.testing.assert_allclose(item["sar"].numpy(), np.stack([vv, vh]), rtol=1e-6, atol=1e-6)
    assert torch.equal(ds[0]["cloudy"], first)  # same epoch: same window
    ds.set_epoch(3)
    assert not torch.equal(ds[0]["cloudy"], first)  # next epoch: a new window


def test_nan_filled_with_whole_file_mean_in_a_window(tmp_path):
    """A windowed read equals the official whole-file read (NaN → nanmean of the whole file,
    all bands), then a crop: pixels outside the window count in the mean."""
    write_sen12mscr_glf(tmp_path, [(1, "ROIs1158_spring_5_p1")])
    s1 = tmp_path / "s1" / "ROIs1158_spring_5_p1.tif"
    with rasterio.open(s1) as ds:
        a, crs, tr = ds.read(), ds.crs.to_string(), ds.transform
    a[:, 28:, :] = 20.0  # outside the centre 16 px window (rows 8-23)
    a[0, 10, 12] = np.nan  # inside it
    write_geotiff(s1, a, crs, tr)
    mean = float(np.nanmean(a.astype(np.float64)))
    window_only = float(np.nanmean(a[:, 8:24, 8:24].astype(np.float64)))
    assert abs(mean - window_only) > 1  # the test can tell the two apart
    item = Sen12MSCRDataset(read_data_csv(tmp_path, "train")[0], ALL, NORM, Extent("center", 16))[0]
    assert item["sar"][0, 2, 4].item() == pytest.approx((np.clip(mean, -25, 0) + 25) / 25, abs=1e-6)
    whole = Sen12MSCRDataset(read_data_csv(tmp_path, "train")[0], ALL, NORM, Extent("full"))[0]
    assert torch.equal(whole["sar"][:, 8:24, 8:24], item["sar"])


def test_cafr_mask_is_computed_on_the_whole_patch_before_the_crop(tmp_path):
    from cloudrm_engine.data.cloudmask import cafr_cloud_mask

    write_sen12mscr_glf(tmp_path, [(1, "ROIs1158_spring_5_p1")])
    (t,), _ = read_data_csv(tmp_path, "train")
    with rasterio.open(t.s2_cloudy) as ds:
        whole = cafr_cloud_mask(ds.read())
    item = Sen12MSCRDataset([t], ALL, NORM, Extent("center", 16), need_mask=True)[0]
    assert item["mask"].shape == (1, 16, 16)
    np.testing.assert_array_equal(item["mask"][0].numpy(), whole[8:24, 8:24].astype(np.float32))
    assert 0 < item["mask"].mean() < 1
    plain = Sen12MSCRDataset([t], ALL, NORM, Extent("center", 16))[0]
    assert plain["mask"].abs().sum() == 0 and plain["weight"].min() == 1


def test_resize_then_window(tmp_path):
    """MMCANet's protocol: the whole 64 px patch resized to 32 px (antialiased bilinear)."""
    write_sen12mscr_seasonal(tmp_path, [("spring", "1", [1])], size=64)
    (t,), _ = find_seasonal(tmp_path, "train")
    item = Sen12MSCRDataset([t], ("B4", "B3", "B2"), NORM, Extent("full", 0, 32), cloud=True)[0]
    assert item["cloudy"].shape == (3, 32, 32) and item["cloud"].shape == (1, 32, 32)
    with rasterio.open(t.s2_cloudy) as ds:
        rgb = torch.from_numpy(np.clip(ds.read([4, 3, 2]).astype(np.float32), 0, 1e4) / 1e4)
    ref = torch.nn.functional.interpolate(rgb[None], size=(32, 32), mode="bilinear", antialias=True)[0]
    assert torch.allclose(item["cloudy"], ref, atol=1e-6)
    assert set(item["cloud"].unique().tolist()) <= {0.0, 1.0}


def test_missing_twin_and_broken_files_are_named(tmp_path):
    write_sen12mscr_seasonal(tmp_path, [("spring", "1", [1, 2, 3])])
    gone = tmp_path / "ROIs1158_spring_s2_cloudy" / "s2_cloudy_1" / "ROIs1158_spring_s2_cloudy_1_p2.tif"
    gone.unlink()
    with pytest.raises(InputError, match=r"cloudy S2 file missing: .*ROIs1158_spring_s2_cloudy_1_p2\.tif"):
        find_seasonal(tmp_path, "train")
    triplets, skipped = find_seasonal(tmp_path, "train", skip_bad=True)
    assert [t.name for t in triplets] == ["ROIs1158_spring_1_p1", "ROIs1158_spring_1_p3"]
    assert len(skipped) == 1 and "s2_cloudy_1_p2.tif" in skipped[0]
    # a file that exists but is not a raster, and one with the wrong band count
    triplets[0].s1.write_bytes(b"not a tiff")
    clear, _ = clear_patch(0)
    write_geotiff(triplets[1].s2, clear[:4], "EPSG:32631")
    ds = Sen12MSCRDataset(triplets, ALL, NORM, Extent("center", 16))
    bad = ds[0]
    assert "S1 file unreadable" in bad["error"] and "ROIs1158_spring_s1_1_p1.tif" in bad["error"]
    assert "--skip-bad" in bad["error"] and collate([bad])["errors"] == [bad["error"]]
    assert "has 4 band(s); expected 13" in ds[1]["error"]
    ds.skip_bad = True
    assert "error" in ds[0]  # every sample is bad: nothing to substitute


def test_skip_bad_substitutes_the_next_good_sample(tmp_path):
    write_sen12mscr_seasonal(tmp_path, [("spring", "1", [1, 2, 3])])
    triplets, _ = find_seasonal(tmp_path, "train")
    triplets[1].s1.write_bytes(b"broken")
    ds = Sen12MSCRDataset(triplets, ALL, NORM, Extent("center", 16), skip_bad=True)
    item = ds[1]
    assert item["name"] == "ROIs1158_spring_1_p3" and len(item["skipped"]) == 1
    assert "ROIs1158_spring_s1_1_p2.tif" in item["skipped"][0]
    batch = collate([ds[0], item])
    assert batch["cloudy"].shape == (2, 13, 16, 16) and len(batch["skipped"]) == 1


def test_open_split_checks_model_against_dataset(tmp_path):
    write_sen12mscr_seasonal(tmp_path, [("spring", "1", [1])])
    with pytest.raises(InputError, match="holds SEN12MS-CR; model align_cr trains on Planet-CR"):
        open_split(tmp_path, "align_cr", "train", Extent("random", 16), True)
    with pytest.raises(InputError, match="no known dataset layout"):
        detect(tmp_path / "ROIs1158_spring_s1")
    with pytest.raises(InputError, match="window 64 px is larger than the image 32×32"):
        item = open_split(tmp_path, "glf_cr", "train", Extent("center", 64), False).dataset[0]
        raise InputError(item["error"])


def test_cloudy_fixture_is_what_the_readers_see():
    clear, _ = clear_patch(1)
    c = cloudy_of(clear, 1)
    assert c.dtype == np.uint16 and (c != clear).any() and (c == clear).any()
