"""cloudrm:removecloudsmultitemporal: registration, in-process runs, qgis_process on a real 3-date series.

The series: one 48 px crop of the real S2/S1 sample (clear there), three dates that differ by
−200/−100/0 DN, each with synthetic cloud blocks (all bands 8000) in known places:

    target (t2): A rows 8:24 × cols 8:40, E rows 30:44 × cols 30:44
    t1:          B rows 8:24 × cols 24:40, E
    t0:          C rows 30:44 × cols 4:20, E

The S2 cloud mask spreads 3 px around a block, so the checked windows keep 4 px away.
"""

import subprocess

import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProcessingException

from tests.conftest import crop_sample, make_checkpoint, write_geotiff
from tests.plugin.conftest import QGIS_PROCESS, qgis_env

PARAMS = ["OPTICAL_SERIES", "SAR_SERIES", "METHOD", "DATES", "CHECKPOINT", "DEVICE", "TILE_SIZE", "OVERLAP",
          "BATCH_SIZE", "PRECISION", "KEEP_CLEAR", "MASK_METHOD", "MASK_BUFFER", "MASK", "FILLED_MASK", "OUTPUT"]
DATES = ["2023-01-01", "2023-01-11", "2023-01-21"]

CLEAR = (slice(0, 3), slice(0, 48))  # clear everywhere → target (least_cloudy), t1 (median)
A_LEFT = (slice(12, 20), slice(12, 20))  # cloudy in target only → t1; median (t0 + t1) / 2
A_RIGHT = (slice(12, 20), slice(28, 36))  # cloudy in target and t1 → t0
C_IN = (slice(34, 40), slice(8, 16))  # cloudy in t0 only → target; median (t1 + t2) / 2
E_IN = (slice(34, 40), slice(34, 40))  # cloudy everywhere → the target


def _cloud(a, ys, xs):
    a = a.copy()
    a[:, ys, xs] = 8000
    return a


def build_series(tmp_path, named_by_date=True, size=48):
    """Write the 3 dates (optical + SAR); returns (optical paths in date order, SAR paths, arrays)."""
    opt, sar = crop_sample(tmp_path, 64, 136, size, tag="base")
    with rasterio.open(opt) as ds:
        base, crs, tr = ds.read().astype(np.int32), ds.crs.to_string(), ds.transform
    with rasterio.open(sar) as ds:
        s1 = ds.read()
    e = (slice(30, 44), slice(30, 44))
    t0 = _cloud(_cloud(np.clip(base - 200, 0, None), slice(30, 44), slice(4, 20)), *e)
    t1 = _cloud(_cloud(np.clip(base - 100, 0, None), slice(8, 24), slice(24, 40)), *e)
    t2 = _cloud(_cloud(base, slice(8, 24), slice(8, 40)), *e)
    opts, sars = [], []
    for k, a in enumerate((t0, t1, t2)):
        stem = DATES[k].replace("-", "") if named_by_date else "abc"[k]
        opts.append(write_geotiff(tmp_path / f"S2_{stem}.tif", a.astype(np.uint16), crs, tr))
        sars.append(write_geotiff(tmp_path / f"S1_{stem}.tif", (s1 - k).astype(np.float32), crs, tr))
    return opts, sars, (t0, t1, t2)


def check_least_cloudy(y, arrays):
    t0, t1, t2 = arrays
    for win, want in ((CLEAR, t2), (A_LEFT, t1), (A_RIGHT, t0), (C_IN, t2), (E_IN, t2)):
        np.testing.assert_array_equal(y[(slice(None), *win)], want[(slice(None), *win)])


def check_median(y, arrays):
    t0, t1, t2 = arrays
    for win, want in ((CLEAR, t1), (A_LEFT, np.rint((t0 + t1) / 2)), (A_RIGHT, t0),
                      (C_IN, np.rint((t1 + t2) / 2)), (E_IN, t2)):
        np.testing.assert_array_equal(y[(slice(None), *win)], want[(slice(None), *win)])


def test_algorithm_registers(provider):
    alg = QgsApplication.processingRegistry().algorithmById("cloudrm:removecloudsmultitemporal")
    assert alg is not None and alg.displayName() == "Remove clouds (multi-temporal)"
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert list(params) == PARAMS
    method = params["METHOD"]
    assert method.usesStaticStrings() and method.options() == ["ca_mtcr", "least_cloudy", "mosaicing"]
    assert method.defaultValue() == "least_cloudy"
    assert params["SAR_SERIES"].flags() & params["SAR_SERIES"].FlagOptional
    assert not params["OPTICAL_SERIES"].flags() & params["OPTICAL_SERIES"].FlagOptional
    assert params["DATES"].flags() & params["DATES"].FlagAdvanced
    assert (params["TILE_SIZE"].defaultValue(), params["OVERLAP"].defaultValue()) == (0, 0)  # the method's
    assert params["KEEP_CLEAR"].defaultValue() is True
    assert all(p.help() for p in params.values())


def test_processing_run_with_explicit_dates(provider, tmp_path, feedback):
    import processing

    opts, _, arrays = build_series(tmp_path, named_by_date=False)
    out = tmp_path / "median.tif"
    # given newest first; DATES in the same order as the layers
    res = processing.run(
        "cloudrm:removecloudsmultitemporal",
        {"OPTICAL_SERIES": [str(p) for p in opts[::-1]], "METHOD": "mosaicing",
         "DATES": ", ".join(DATES[::-1]), "TILE_SIZE": 32, "OVERLAP": 8, "KEEP_CLEAR": False, "OUTPUT": str(out)},
        feedback=feedback,
    )
    assert res["OUTPUT"] == str(out)
    with rasterio.open(opts[2]) as t, rasterio.open(out) as o:
        assert (o.crs, o.transform, o.width, o.height, o.dtypes[0]) == (t.crs, t.transform, 48, 48, "uint16")
        assert o.tags()["CLOUDRM_DATES"] == ";".join(DATES)
        check_median(o.read().astype(np.int64), arrays)
    assert any("series target: 2023-01-21 (date from parameter)" in m for m in feedback.infos)
    assert feedback.progress and max(feedback.progress) == 100


def test_processing_errors_name_the_problem(provider, tmp_path, feedback):
    import processing

    opts, sars, _ = build_series(tmp_path)
    out = tmp_path / "bad.tif"
    with pytest.raises(QgsProcessingException, match=r"2 SAR raster\(s\) for 3 optical raster\(s\)"):
        processing.run("cloudrm:removecloudsmultitemporal",
                       {"OPTICAL_SERIES": [str(p) for p in opts], "SAR_SERIES": [str(p) for p in sars[:2]],
                        "OUTPUT": str(out)}, feedback=feedback)
    with pytest.raises(QgsProcessingException, match="method ca_mtcr needs one SAR raster"):
        processing.run("cloudrm:removecloudsmultitemporal",
                       {"OPTICAL_SERIES": [str(p) for p in opts], "METHOD": "ca_mtcr", "OUTPUT": str(out)},
                       feedback=feedback)
    assert not out.exists()


def test_qgis_process_least_cloudy_on_a_real_series(qgis_profile, tmp_path):
    opts, sars, arrays = build_series(tmp_path)
    out = tmp_path / "headless.tif"
    order = [1, 2, 0]  # not in date order: the algorithm sorts by the dates in the file names
    args = [f"OPTICAL_SERIES={opts[k]}" for k in order] + [f"SAR_SERIES={sars[k]}" for k in order]
    r = subprocess.run(
        [QGIS_PROCESS, "run", "cloudrm:removecloudsmultitemporal", "--", *args, "METHOD=least_cloudy",
         "TILE_SIZE=32", "OVERLAP=8", "KEEP_CLEAR=false", f"OUTPUT={out}"],
        env=qgis_env(qgis_profile), capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"OUTPUT:\t{out}" in r.stdout
    assert "series target: 2023-01-21 (date from file name) 'S2_20230121'" in r.stdout
    assert "least_cloudy does not use SAR" in r.stdout
    with rasterio.open(opts[2]) as t, rasterio.open(out) as o:
        assert (o.crs, o.transform, o.width, o.height, o.count, o.dtypes[0]) == (
            t.crs, t.transform, t.width, t.height, 13, "uint16")
        assert o.descriptions[3] == "B4" and o.tags()["CLOUDRM_TARGET"] == "S2_20230121.tif"
        check_least_cloudy(o.read().astype(np.int64), arrays)


def _ca_mtcr_available():
    from cloudrm_engine.models import create_model, list_models

    if "ca_mtcr" not in list_models():
        return False
    try:
        create_model("ca_mtcr")
    except Exception:
        return False
    return True


def test_processing_run_ca_mtcr_untrained(provider, tmp_path, feedback):
    if not _ca_mtcr_available():
        pytest.skip("ca_mtcr is not registered yet")
    import processing

    opts, sars, _ = build_series(tmp_path, size=32)
    ckpt = make_checkpoint("ca_mtcr", tmp_path / "ca_mtcr_untrained.pt")
    out = tmp_path / "ca.tif"
    processing.run(
        "cloudrm:removecloudsmultitemporal",
        {"OPTICAL_SERIES": [str(p) for p in opts], "SAR_SERIES": [str(p) for p in sars], "METHOD": "ca_mtcr",
         "CHECKPOINT": str(ckpt), "DEVICE": "cpu", "TILE_SIZE": 32, "OUTPUT": str(out)},
        feedback=feedback,
    )
    with rasterio.open(opts[2]) as t, rasterio.open(out) as o:
        assert (o.crs, o.transform, o.width, o.height, o.count, o.dtypes[0]) == (
            t.crs, t.transform, 32, 32, 13, "uint16")
        y = o.read()
    assert 0 < y.max() <= 10000  # sigmoid output × 10000
    assert any("ca_mtcr on cpu" in m and "days [-20, -10, 0]" in m for m in feedback.infos)


def test_runs_as_a_step_of_a_graphical_model(provider, tmp_path):
    """The algorithm inside a QgsProcessingModelAlgorithm (what the graphical modeler builds)."""
    import processing
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterMultipleLayers,
    )

    opts, _, arrays = build_series(tmp_path)
    model = QgsProcessingModelAlgorithm("series chain", "cloudrm tests")
    model.addModelParameter(
        QgsProcessingParameterMultipleLayers("series", "series", QgsProcessing.TypeRaster),
        QgsProcessingModelParameter("series"),
    )
    child = QgsProcessingModelChildAlgorithm("cloudrm:removecloudsmultitemporal")
    child.setChildId("mt")
    child.addParameterSources("OPTICAL_SERIES", [QgsProcessingModelChildParameterSource.fromModelParameter("series")])
    # the modeler's dialog fills every mandatory parameter with its default; do the same
    for key, value in (("METHOD", "least_cloudy"), ("DEVICE", "auto"), ("TILE_SIZE", 32), ("OVERLAP", 16),
                       ("BATCH_SIZE", 0), ("PRECISION", "auto"), ("KEEP_CLEAR", False),
                       ("MASK_METHOD", "s2cloudless"), ("MASK_BUFFER", 60)):
        child.addParameterSources(key, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    output = QgsProcessingModelOutput("cloudfree")
    output.setChildId("mt")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"cloudfree": output})
    model.addChildAlgorithm(child)
    ok, problems = model.validate()
    assert ok, problems
    out = tmp_path / "chain.tif"
    res = processing.run(model, {"series": [str(p) for p in reversed(opts)], "mt:cloudfree": str(out)})
    assert res["mt:cloudfree"] == str(out)
    with rasterio.open(out) as y, rasterio.open(opts[-1]) as target:
        assert (y.crs, y.transform, y.shape) == (target.crs, target.transform, target.shape)
        check_least_cloudy(y.read().astype(np.int32), arrays)
