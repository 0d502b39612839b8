"""Every registered model: parameter count equals its card, and it runs through the tiled
predictor (single-date) on a crop of the bundled real scene, writing the right bands."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from cloudrm_engine.api import predict_scene
from cloudrm_engine.models import count_parameters, list_models, model_card

from ..conftest import S1_SAMPLE, S2_SAMPLE, crop_sample, make_checkpoint

SINGLE = [m for m in list_models(temporal=False) if m != "align_cr"]  # align_cr: PlanetScope, see plugin tests


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_matches_the_card(name):
    assert count_parameters(name) == model_card(name).parameters


def test_every_issue_model_is_registered():
    assert set(list_models()) >= {
        "glf_cr", "align_cr", "cafr", "mmcanet", "mmcanet_l", "mpir1", "mpir2", "mpir3", "mpir4", "ca_mtcr"
    }
    assert list_models(temporal=True) == ["ca_mtcr"]


@pytest.mark.parametrize("name", SINGLE)
def test_runs_one_tile_on_cpu_and_writes_its_bands(name, tmp_path):
    card = model_card(name)
    opt, sar = crop_sample(tmp_path, 96, 64, 64)
    ckpt = make_checkpoint(name, tmp_path / f"{name}.pt")
    out = tmp_path / f"{name}.tif"
    res = predict_scene(opt, sar, out, model=name, checkpoint=ckpt, device="cpu", tile_size=64, overlap=0)
    assert res.tiles == 1
    want = list(card.output_bands or card.optical_bands)
    with rasterio.open(opt) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape, b.dtypes[0]) == (a.crs, a.transform, a.shape, a.dtypes[0])
        assert list(b.descriptions) == want
        y = b.read()
    assert y.shape[0] == len(want) and np.isfinite(y.astype(np.float64)).all()
    assert y.std() > 0  # a real image, not a constant


@pytest.mark.slow
@pytest.mark.parametrize("name", SINGLE)
def test_runs_on_the_whole_bundled_sample(name, tmp_path):
    ckpt = make_checkpoint(name, tmp_path / f"{name}.pt")
    out = tmp_path / f"{name}.tif"
    predict_scene(S2_SAMPLE, S1_SAMPLE, out, model=name, checkpoint=ckpt, device="cpu")
    with rasterio.open(S2_SAMPLE) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape) == (a.crs, a.transform, a.shape)
