"""Rule-based cloud score (DSen2-CR, docs/data.md) on the real sample and on known pixels."""

import numpy as np
import rasterio

from cloudrm_engine.data.cloudmask import cloud_mask, cloud_score


def test_sample_cloud_fraction(sample):
    with rasterio.open(sample[0]) as ds:
        s2 = ds.read().astype(np.float32) / 10000
    frac = cloud_mask(s2).mean()
    # the sample's README: about 19 % bright cloud; the detector also flags haze around it
    assert 0.15 < frac < 0.45, frac


def test_dark_vegetation_is_clear_and_white_is_cloud():
    s2 = np.full((13, 16, 16), 0.03, dtype=np.float32)
    s2[7] = 0.3  # NIR
    assert cloud_score(s2).max() < 0.2
    bright = np.full((13, 16, 16), 0.6, dtype=np.float32)
    bright[11] = 0.3  # SWIR lower than green: NDSI ~0.33 (not snow)
    assert cloud_score(bright)[4:12, 4:12].min() > 0.9
