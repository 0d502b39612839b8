"""cloudrm:removeclouds inside QGIS: registration, a real run on the sample, bad input."""

import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProcessingException, QgsProject, QgsRasterLayer
from rasterio.transform import Affine

from tests.conftest import crop_sample, write_geotiff

PARAMS = ["OPTICAL", "SAR", "MODEL", "CHECKPOINT", "DEVICE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "PRECISION",
          "KEEP_CLEAR", "MASK_METHOD", "MASK_BUFFER", "MASK", "FILLED_MASK", "OUTPUT"]


def test_provider_and_algorithm_register(provider):
    reg = QgsApplication.processingRegistry()
    assert reg.providerById("cloudrm") is provider
    alg = reg.algorithmById("cloudrm:removeclouds")
    assert alg is not None and alg.displayName() == "Remove clouds (SAR-optical)"
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert list(params) == PARAMS
    model = params["MODEL"]
    assert model.usesStaticStrings() and "glf_cr" in model.options() and model.defaultValue() == "glf_cr"
    assert params["CHECKPOINT"].flags() & params["CHECKPOINT"].FlagOptional
    assert params["DEVICE"].defaultValue() == "auto"
    assert (params["TILE_SIZE"].defaultValue(), params["OVERLAP"].defaultValue()) == (0, 0)  # the model's
    assert params["KEEP_CLEAR"].defaultValue() is True and params["MASK_BUFFER"].defaultValue() == 60
    assert params["MASK_METHOD"].options() == ["s2cloudless", "cafr_rule"]
    assert params["PRECISION"].options() == ["auto", "fp32", "bf16", "fp16"]
    for name in PARAMS[2:-1]:  # everything but the inputs and the output has a default or is optional
        p = params[name]
        assert p.defaultValue() is not None or p.flags() & p.FlagOptional, name
    assert all(p.help() for p in params.values())
    assert params["BATCH_SIZE"].flags() & params["BATCH_SIZE"].FlagAdvanced


def test_run_on_the_real_sample(provider, sample, tmp_path, feedback):
    import processing

    out = tmp_path / "cloudfree.tif"
    res = processing.run(
        "cloudrm:removeclouds",
        {"OPTICAL": str(sample[0]), "SAR": str(sample[1]), "MODEL": "glf_cr", "OUTPUT": str(out)},
        feedback=feedback,
    )
    assert res["OUTPUT"] == str(out)
    with rasterio.open(sample[0]) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.width, b.height, b.count, b.dtypes[0]) == (
            a.crs, a.transform, a.width, a.height, 13, "uint16")
        x, y = a.read().astype(np.int32), b.read().astype(np.int32)
    assert np.abs(y - x).mean() > 0 and y.max() <= 10000  # the demo model changed the image
    assert feedback.progress and max(feedback.progress) == 100
    assert any("glf_cr on cpu" in m for m in feedback.infos)
    layer = QgsRasterLayer(str(out), "result")
    ref = QgsRasterLayer(str(sample[0]), "input")
    assert layer.isValid() and layer.bandCount() == 13
    assert layer.crs().authid() == "EPSG:32631" and layer.extent() == ref.extent()


def test_non_overlapping_sar_names_the_layers_and_writes_nothing(provider, tmp_path, feedback):
    import processing

    opt, sar = crop_sample(tmp_path, 0, 0, 32)
    with rasterio.open(sar) as ds:
        far = write_geotiff(tmp_path / "far.tif", ds.read(), "EPSG:32631", Affine(10, 0, 1e5, 0, -10, 5e6))
    opt_layer = QgsRasterLayer(str(opt), "Sentinel-2 cloudy")
    sar_layer = QgsRasterLayer(str(far), "Sentinel-1 elsewhere")
    QgsProject.instance().addMapLayers([opt_layer, sar_layer])
    out = tmp_path / "out.tif"
    try:
        with pytest.raises(QgsProcessingException) as err:
            processing.run("cloudrm:removeclouds",
                           {"OPTICAL": opt_layer.id(), "SAR": sar_layer.id(), "OUTPUT": str(out)},
                           feedback=feedback)
    finally:
        QgsProject.instance().removeAllMapLayers()
    text = str(err.value)
    assert "'Sentinel-1 elsewhere'" in text and "'Sentinel-2 cloudy'" in text and "does not overlap" in text
    assert not out.exists()
    # nothing of ours (output or .part temp); QGIS itself may leave input .aux.xml sidecars
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


def test_wrong_band_count_through_processing(provider, tmp_path, feedback):
    import processing

    _, sar = crop_sample(tmp_path, 0, 0, 32)
    rgb = write_geotiff(tmp_path / "rgb.tif", np.ones((3, 32, 32), np.uint16))
    with pytest.raises(QgsProcessingException, match=r"'rgb' .* has 3 bands; model glf_cr .* expects 13"):
        processing.run(
            "cloudrm:removeclouds", {"OPTICAL": str(rgb), "SAR": str(sar), "OUTPUT": str(tmp_path / "o.tif")},
            feedback=feedback,
        )


def test_result_loads_as_a_true_colour_layer(provider, tmp_path, identity_checkpoint):
    import processing
    from qgis.core import QgsMultiBandColorRenderer

    opt, sar = crop_sample(tmp_path, 0, 0, 32)
    out = tmp_path / "loaded.tif"
    try:
        processing.runAndLoadResults("cloudrm:removeclouds", {
            "OPTICAL": str(opt), "SAR": str(sar), "CHECKPOINT": str(identity_checkpoint), "OUTPUT": str(out)})
        layers = QgsProject.instance().mapLayersByName("crop_s2 cloud-free (glf_cr)")
        assert len(layers) == 1 and layers[0].isValid()
        r = layers[0].renderer()
        assert isinstance(r, QgsMultiBandColorRenderer)
        assert (r.redBand(), r.greenBand(), r.blueBand()) == (4, 3, 2)
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_cancel_through_feedback_leaves_no_output(provider, tmp_path, feedback, identity_checkpoint):
    import processing

    opt, sar = crop_sample(tmp_path, 0, 0, 32)
    out = tmp_path / "canceled.tif"
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="Canceled"):
        processing.run("cloudrm:removeclouds", {"OPTICAL": str(opt), "SAR": str(sar),
                       "CHECKPOINT": str(identity_checkpoint), "OUTPUT": str(out)}, feedback=feedback)
    assert not [p.name for p in tmp_path.iterdir() if "canceled" in p.name]


@pytest.mark.parametrize("model", ["cafr", "mmcanet", "mmcanet_l", "mpir1", "mpir2", "mpir3", "mpir4"])
def test_every_single_date_model_runs_through_the_algorithm(provider, model, tmp_path, feedback):
    """Each registered single-date model on a 32 px crop of the bundled scene (untrained weights)."""
    import processing

    from tests.conftest import make_checkpoint

    opt, sar = crop_sample(tmp_path, 100, 100, 32)
    ckpt = make_checkpoint(model, tmp_path / f"{model}.pt")
    out = tmp_path / f"{model}.tif"
    processing.run(
        "cloudrm:removeclouds",
        {"OPTICAL": str(opt), "SAR": str(sar), "MODEL": model, "CHECKPOINT": str(ckpt),
         "TILE_SIZE": 32, "OVERLAP": 0, "OUTPUT": str(out)},
        feedback=feedback,
    )
    rgb = model.startswith(("mmcanet", "mpir"))
    with rasterio.open(opt) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape) == (a.crs, a.transform, a.shape)
        assert b.count == (3 if rgb else 13)
        assert b.descriptions[:3] == (("B4", "B3", "B2") if rgb else ("B1", "B2", "B3"))
