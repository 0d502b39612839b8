"""The shipped graphical-modeler chain resources/models/cloudmask_then_remove_clouds.model3."""

import subprocess

import numpy as np
import rasterio

from tests.conftest import REPO, crop_sample
from tests.plugin.conftest import QGIS_PROCESS, qgis_env

MODEL = REPO / "resources" / "models" / "cloudmask_then_remove_clouds.model3"


def test_model_file_loads_with_its_inputs_children_and_outputs(provider):
    from qgis.core import QgsProcessingModelAlgorithm

    m = QgsProcessingModelAlgorithm()
    assert m.fromFile(str(MODEL))
    assert (m.name(), m.group()) == ("Cloud mask, then remove clouds", "cloudrm")
    assert sorted(m.childAlgorithms()) == ["cloudmask", "removeclouds"]
    assert m.childAlgorithm("cloudmask").algorithmId() == "cloudrm:cloudmask"
    assert m.childAlgorithm("removeclouds").algorithmId() == "cloudrm:removeclouds"
    assert [d.childId for d in m.childAlgorithm("removeclouds").dependencies()] == ["cloudmask"]
    names = {p.name() for p in m.parameterDefinitions()}
    assert names == {"optical", "sar", "mask_method", "checkpoint", "cloudmask:mask", "removeclouds:cloudfree"}
    assert m.parameterDefinition("mask_method").defaultValue() == "s2cloudless"
    ok, errors = m.validate()
    assert ok, errors


def _check_outputs(opt, mask, free, method):
    from cloudrm_engine.inference.composite import grow

    with rasterio.open(opt) as a, rasterio.open(mask) as m, rasterio.open(free) as f:
        grid = (a.crs, a.transform, a.width, a.height)
        assert (m.crs, m.transform, m.width, m.height) == grid == (f.crs, f.transform, f.width, f.height)
        masked = m.read(1)
        assert set(np.unique(masked)) == {0, 1, 2}  # clear, cloud, shadow
        assert m.tags()["CLOUDRM_MASK_METHOD"] == method
        assert f.count == 13 and f.dtypes[0] == "uint16" and f.tags()["CLOUDRM_MODEL"] == "glf_cr"
        assert f.tags()["CLOUDRM_KEEP_CLEAR"] == "mask=raster mask.tif, buffer_m=60, feather_px=8"
        x, y = a.read(), f.read()
    # the second step used the first step's mask: outside it (grown by 60 m = 6 px) the input is kept
    clear = ~grow(masked > 0, 6)
    assert clear.any() and (~clear).any()
    np.testing.assert_array_equal(y[:, clear], x[:, clear])
    assert (y[:, ~clear] != x[:, ~clear]).any()


def test_model_runs_in_process(provider, tmp_path, feedback):
    import processing
    from qgis.core import QgsProcessingModelAlgorithm

    m = QgsProcessingModelAlgorithm()
    assert m.fromFile(str(MODEL))
    opt, sar = crop_sample(tmp_path, 96, 0, 64)
    mask, free = tmp_path / "mask.tif", tmp_path / "cloudfree.tif"
    res = processing.run(m, {"optical": str(opt), "sar": str(sar), "mask_method": "cafr_rule",
                             "cloudmask:mask": str(mask), "removeclouds:cloudfree": str(free)}, feedback=feedback)
    assert (res["cloudmask:mask"], res["removeclouds:cloudfree"]) == (str(mask), str(free))
    _check_outputs(opt, mask, free, "cafr_rule")


def test_qgis_process_runs_the_model_file(qgis_profile, tmp_path):
    opt, sar = crop_sample(tmp_path, 96, 0, 64)
    mask, free = tmp_path / "mask.tif", tmp_path / "cloudfree.tif"
    r = subprocess.run(
        [QGIS_PROCESS, "run", str(MODEL), "--", f"optical={opt}", f"sar={sar}",  # default method: s2cloudless
         f"cloudmask:mask={mask}", f"removeclouds:cloudfree={free}"],
        env=dict(qgis_env(qgis_profile), OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Executed 2 algorithms" in r.stdout
    assert f"cloudmask:mask:\t{mask}" in r.stdout and f"removeclouds:cloudfree:\t{free}" in r.stdout
    _check_outputs(opt, mask, free, "s2cloudless")


def test_the_chain_is_listed_in_the_toolbox_under_cloudrm(provider):
    names = {a.displayName(): a for a in provider.algorithms()}
    chain = names.get("Cloud mask, then remove clouds")
    assert chain is not None, sorted(names)
    assert chain.group() == "cloudrm"
    assert chain.id().startswith("cloudrm:")
    assert {p.name() for p in chain.parameterDefinitions()} >= {"optical", "sar", "mask_method"}
