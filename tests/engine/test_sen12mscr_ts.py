"""SEN12MS-CR-TS reader: series discovery, ROI split, dates, coverage (engine mask, cache,
UnCRtainTS files) and CA-MTCR's sample construction."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import rasterio
import torch

from cloudrm_engine.data import coverage as cov
from cloudrm_engine.data.common import Extent
from cloudrm_engine.data.datasets import DataOptions, detect, open_split
from cloudrm_engine.data.sen12mscr_ts import find_series, select_pair, select_sample
from cloudrm_engine.errors import InputError

from .layouts import write_sen12mscr_ts

PATTERN = [True, True, False, True, True]  # step 2 is the only cloud-free one


@pytest.fixture()
def ts(tmp_path):
    root = tmp_path / "ts"
    write_sen12mscr_ts(root, [("ROIs1868", "36"), ("ROIs2017", "22"), ("ROIs1158", "106"), ("ROIs1970", "999")],
                       [3, 12], PATTERN)
    return root


def test_series_discovery_split_and_dates(ts):
    assert detect(ts)[0] == "sen12mscr_ts"
    series, skipped, unlisted = find_series(ts, "train")
    assert [s.name for s in series] == ["ROIs1868_36_patch_3", "ROIs1868_36_patch_12"]
    assert skipped == [] and unlisted == ["ROIs1970/999"]
    assert [s.name for s in find_series(ts, "val")[0]] == ["ROIs2017_22_patch_3", "ROIs2017_22_patch_12"]
    assert [s.name for s in find_series(ts, "test")[0]] == ["ROIs1158_106_patch_3", "ROIs1158_106_patch_12"]
    s = series[0]
    assert [st.t for st in s.steps] == [0, 1, 2, 3, 4]
    assert str(s.steps[1].s2_date) == "2018-01-13" and str(s.steps[1].s1_date) == "2018-01-10"
    assert s.steps[3].s1.name == "s1_ROIs1868_36_ImgNo_3_2018-02-03_patch_3.tif"


def test_missing_step_is_named_or_skipped(ts):
    gone = next((ts / "ROIs1868" / "36" / "S1" / "4").glob("*_patch_12.tif"))
    gone.unlink()
    with pytest.raises(InputError, match=r"S1 file missing: .*ROIs1868/36/S1/4/s1_ROIs1868_36_ImgNo_4_\*_patch_12"):
        find_series(ts, "train")
    series, skipped, _ = find_series(ts, "train", skip_bad=True)
    assert [s.name for s in series] == ["ROIs1868_36_patch_3"] and len(skipped) == 1


@pytest.mark.parametrize(
    ("cover", "want"),
    [
        ([0.5, 0.9, 0.0, 0.4, 0.8], (1, 2)),  # one clear step, both neighbours cloudy: the earlier
        ([0.0, 0.3, 0.0, 0.0, 0.7], (1, 0)),  # first qualifying clear step (0), its cloudy neighbour 1
        ([0.0, 0.0, 0.0, 0.0, 0.6], (4, 3)),  # only the last clear step has a cloudy neighbour
        ([0.3, 0.2, 0.05, 0.5, 0.9], (3, 2)),  # no clear step: least cloudy, its cloudier neighbour
        ([0.0005, 0.0, 0.2, 0.2, 0.2], (2, 1)),  # ≤ 1e-3 counts as clear
    ],
)
def test_pair_selection_for_validation_and_test(cover, want):
    assert select_pair(cover, None) == want


def test_training_draws_among_qualifying_pairs_and_aux_dates():
    cover = [0.0, 0.5, 0.0, 0.6, 0.0, 0.7]
    pairs = {select_pair(cover, np.random.default_rng(k)) for k in range(40)}
    assert pairs == {(1, 0), (1, 2), (3, 2), (3, 4), (5, 4)}
    inputs, ref = select_sample(cover, None, np.random.default_rng(0))
    assert len(inputs) == 3 and inputs[-1] == 1 and ref == 0
    assert inputs[:2] == sorted(inputs[:2]) and not {0, 1} & set(inputs[:2])
    with pytest.raises(InputError, match="too short"):
        select_sample([0.0, 0.5, 0.5], None, np.random.default_rng(0))


def test_coverage_from_the_default_mask_is_cached(ts, monkeypatch):
    split = open_split(ts, "ca_mtcr", "train", Extent("random", 16), True)
    cache = cov.read_cache(ts / cov.CACHE_NAME)
    assert len(cache) == 2 * 5  # two series of five steps
    clear = [v for k, v in cache.items() if "/S2/2/" in k]
    cloudy = [v for k, v in cache.items() if "/S2/2/" not in k]
    assert clear == [0.0, 0.0] and min(cloudy) > 0.5
    assert split.dataset.cov[0] == [cache[f"ROIs1868/36/S2/{t}/" + s.s2.name] for t, s in
                                    enumerate(split.dataset.series[0].steps)]  # type: ignore[attr-defined]

    def boom(path):
        raise AssertionError(f"recomputed {path}")

    monkeypatch.setattr(cov, "file_cloud_cover", boom)
    open_split(ts, "ca_mtcr", "train", Extent("random", 16), True)  # served from the cache


def test_uncrtaints_coverage_file_is_read_safely(ts, tmp_path):
    series, _, _ = find_series(ts, "val")
    table = {}
    for i, s in enumerate(series):
        table[i] = {"coverage": [torch.tensor([0.0 if st.t == 2 else 0.9], dtype=torch.float64) for st in s.steps],
                    "paths": {"S1": [f"/data/SEN12MSCRTS/{st.s1.relative_to(ts).as_posix()}" for st in s.steps],
                              "S2": [f"/data/SEN12MSCRTS/{st.s2.relative_to(ts).as_posix()}" for st in s.steps]}}
    f = tmp_path / "generic_3_val_all_s2cloudless_mask.npy"
    np.save(f, table, allow_pickle=True)
    values = cov.read_uncrtaints_npy(f)
    key = series[0].steps[1].s2.relative_to(ts).as_posix()
    assert values[key] == pytest.approx(0.9) and len(values) == 10
    split = open_split(ts, "ca_mtcr", "val", Extent("full"), False, DataOptions(coverage=str(f)))
    assert split.dataset.cov[0] == [0.9, 0.9, 0.0, 0.9, 0.9]  # type: ignore[attr-defined]
    assert not (ts / cov.CACHE_NAME).exists()  # nothing had to be computed

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.npy"
    buf = io.BytesIO()
    np.save(buf, np.array([None], dtype=object), allow_pickle=True)
    header_end = buf.getvalue().index(b"\n") + 1
    bad.write_bytes(buf.getvalue()[:header_end] + pickle.dumps({0: Evil()}))
    with pytest.raises(InputError, match="refusing to build"):
        cov.read_uncrtaints_npy(bad)


def test_samples_in_model_order_with_days_and_reference(ts):
    split = open_split(ts, "ca_mtcr", "test", Extent("full"), False, cloud=True)
    ds = split.dataset
    item = ds[0]
    assert item["cloudy"].shape == (3, 13, 32, 32) and item["sar"].shape == (3, 2, 32, 32)
    assert item["target"].shape == (13, 32, 32) and item["cloud"].shape == (1, 32, 32)
    rec = ds.describe(0)  # type: ignore[attr-defined]
    # test split: target N = step 1 (the earlier cloudy neighbour of the clear step 2), reference 2
    assert rec["reference"].startswith("ROIs1158/106/S2/2/") and rec["inputs"][-1].startswith("ROIs1158/106/S2/1/")
    ts_ = [int(p.split("/")[3]) for p in rec["inputs"]]
    assert ts_[:2] == sorted(ts_[:2]) and set(ts_[:2]) <= {0, 3, 4}
    days = [(t - 1) * 12.0 for t in ts_]
    assert item["days"].tolist() == days
    with rasterio.open(ts / rec["reference"]) as r:
        np.testing.assert_allclose(item["target"].numpy(), np.clip(r.read().astype(np.float32), 0, 1e4) / 1e4)
    s1_of_n = next((ts / "ROIs1158/106/S1/1").glob("*_patch_3.tif"))
    with rasterio.open(s1_of_n) as r:
        expect = (np.clip(r.read().astype(np.float32), -25, 0) + 25) / 25  # CA-MTCR: both bands [-25, 0]
    np.testing.assert_allclose(item["sar"][-1].numpy(), expect, atol=1e-6)
    assert item["cloud"].mean() == 1.0  # the target date is cloudy
    again = [ds.describe(0) for _ in range(2)]  # type: ignore[attr-defined]
    ds.set_epoch(5)
    assert ds.describe(0) == again[0] == again[1]  # fixed for test (seed 0)
    train = open_split(ts, "ca_mtcr", "train", Extent("random", 16), True).dataset
    drawn = set()
    for e in range(12):
        train.set_epoch(e)
        drawn.add(tuple(train.describe(0)["inputs"]))  # type: ignore[attr-defined]
    assert len(drawn) > 1  # auxiliary dates re-drawn per epoch
    assert train[0]["cloudy"].shape == (3, 13, 16, 16)
