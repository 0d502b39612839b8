"""Align-CR through cloudrm:removeclouds: 3 m PlanetScope-like optical + 10 m SAR (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException
from rasterio.transform import Affine

from tests.conftest import S1_SAMPLE, S2_SAMPLE, make_checkpoint, write_geotiff

X0, Y0 = 712350.0, 1288830.0


@pytest.fixture(scope="module")
def planet_pair(tmp_path_factory):
    """64×64 px 4-band optical at 3 m (real S2 B2, B3, B4, B8 values) and 24×24 px SAR at 10 m.

    The SAR origin is 1.5 m / 2 m off the optical one, as in M3R-CR; both are real GeoTIFFs.
    """
    tmp = tmp_path_factory.mktemp("planet")
    with rasterio.open(S2_SAMPLE) as s2, rasterio.open(S1_SAMPLE) as s1:
        opt = s2.read([2, 3, 4, 8], window=((40, 104), (40, 104)))
        sar = s1.read(window=((60, 84), (60, 84)))
    optical = write_geotiff(tmp / "planet_3m.tif", opt, "EPSG:32631", Affine(3, 0, X0, 0, -3, Y0), nodata=0)
    sar_path = write_geotiff(tmp / "s1_10m.tif", sar, "EPSG:32631", Affine(10, 0, X0 - 1.5, 0, -10, Y0 + 2))
    return optical, sar_path


@pytest.fixture(scope="module")
def identity_align(tmp_path_factory):
    return make_checkpoint("align_cr", tmp_path_factory.mktemp("ac") / "align_identity.pt", zero="UPNet.2")


def test_align_cr_runs_on_a_3m_10m_pair_and_writes_on_the_optical_grid(
    provider, planet_pair, identity_align, tmp_path, feedback
):
    import processing

    optical, sar = planet_pair
    out = tmp_path / "align_out.tif"
    res = processing.run(
        "cloudrm:removeclouds",
        {"OPTICAL": str(optical), "SAR": str(sar), "MODEL": "align_cr", "CHECKPOINT": str(identity_align),
         "TILE_SIZE": 32, "OVERLAP": 0, "OUTPUT": str(out)},
        feedback=feedback,
    )
    assert res["OUTPUT"] == str(out)
    with rasterio.open(optical) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape, b.count, b.dtypes[0], b.nodata) == (
            a.crs, a.transform, a.shape, 4, "uint16", 0
        )
        assert b.descriptions == ("Blue", "Green", "Red", "NIR")
        # zeroed last conv: the network returns its input, so the whole chain is lossless
        np.testing.assert_array_equal(b.read(), a.read())
    assert any("nearest neighbour" in w for w in feedback.warnings)


def test_align_cr_sar_actually_reaches_the_model(provider, planet_pair, tmp_path):
    """With random weights the output depends on the SAR: a flat SAR changes the result."""
    from cloudrm_engine.api import predict_scene

    optical, sar = planet_pair
    ckpt = make_checkpoint("align_cr", tmp_path / "rand.pt", seed=1)
    with rasterio.open(sar) as ds:
        flat = write_geotiff(tmp_path / "flat.tif", np.full((2, ds.height, ds.width), -15, np.float32),
                             ds.crs.to_string(), ds.transform)
    outs = []
    for s, name in ((sar, "a.tif"), (flat, "b.tif")):
        predict_scene(optical, s, tmp_path / name, model="align_cr", checkpoint=ckpt, tile_size=64, overlap=0)
        with rasterio.open(tmp_path / name) as ds:
            outs.append(ds.read().astype(np.int32))
    assert np.abs(outs[0] - outs[1]).mean() > 0.5


def test_band_count_is_checked_against_the_model(provider, planet_pair, identity_align, tmp_path):
    import processing

    _, sar = planet_pair
    out = tmp_path / "never.tif"
    with pytest.raises(
        QgsProcessingException, match=r"has 13 bands; model align_cr .* expects 4 bands: Blue, Green, Red, NIR"
    ):
        processing.run(
            "cloudrm:removeclouds",
            {"OPTICAL": str(S2_SAMPLE), "SAR": str(sar), "MODEL": "align_cr", "CHECKPOINT": str(identity_align),
             "OUTPUT": str(out)},
        )
    assert not out.exists()
