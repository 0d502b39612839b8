"""cloudrm:cloudmask and engine/masks.py: grid, values, block independence, nodata, cancel, deps."""

import sys

import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProcessingException, QgsRasterLayer

from tests.conftest import S2_SAMPLE, RecordingProgress, crop_sample, write_geotiff

PARAMS = ["INPUT", "METHOD", "SHADOWS", "RESOLUTION", "OUTPUT"]


def _crop(tmp_path, size=64, y=96, x=0):  # clouds, shadows and clear ground
    return crop_sample(tmp_path, y, x, size)[0]


# --- engine -------------------------------------------------------------------------------


def test_engine_methods_match_the_algorithm(provider):
    from cloudrm_engine.api import MASK_METHODS
    from cloudrm_engine.masks import METHODS

    alg = QgsApplication.processingRegistry().algorithmById("cloudrm:cloudmask")
    options = alg.parameterDefinition("METHOD").options()
    assert options == list(METHODS) == list(MASK_METHODS) == ["s2cloudless", "cafr_rule"]


def test_s2cloudless_disk_sizes_follow_the_package_recommendations():
    from cloudrm_engine.masks import s2cloudless_disks

    assert s2cloudless_disks(10) == (22, 11)  # s2cloudless: "10 m: average_over=22, dilation_size=11"
    assert s2cloudless_disks(60) == (4, 2)  # "60 m: average_over=4, dilation_size=2"
    assert s2cloudless_disks(20) == (11, 6)


@pytest.mark.parametrize("method", ["s2cloudless", "cafr_rule"])
def test_mask_does_not_depend_on_the_block_size(tmp_path, method):
    from cloudrm_engine.masks import cloud_mask_scene

    src = _crop(tmp_path, 96)
    whole = cloud_mask_scene(src, tmp_path / "whole.tif", method)
    tiled = cloud_mask_scene(src, tmp_path / "tiled.tif", method, block_size=40)
    assert (whole.blocks, tiled.blocks) == (1, 9)
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "tiled.tif") as b:
        ma, mb = a.read(1), b.read(1)
        with rasterio.open(src) as s:
            assert (a.crs, a.transform, a.width, a.height) == (s.crs, s.transform, s.width, s.height)
        assert a.dtypes[0] == "uint8" and a.nodata == 255 and a.count == 1
        assert a.colormap(1)[1] == (255, 255, 255, 255)
        assert a.tags()["CLOUDRM_MASK_METHOD"] == method
    np.testing.assert_array_equal(ma, mb)
    assert whole.cloud_fraction == tiled.cloud_fraction
    assert 0.05 < whole.cloud_fraction < 0.95  # the crop is partly cloudy
    assert set(np.unique(ma)) == {0, 1, 2}  # both methods mark shadows (the rule's test)


def test_s2cloudless_equals_the_package_on_one_block(tmp_path):
    from s2cloudless import S2PixelCloudDetector

    from cloudrm_engine.masks import cloud_mask_scene

    src = _crop(tmp_path, 64)
    cloud_mask_scene(src, tmp_path / "m.tif", "s2cloudless", shadows=False)
    cloud_mask_scene(src, tmp_path / "ms.tif", "s2cloudless")
    with rasterio.open(src) as s, rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "ms.tif") as ms:
        data = (s.read().astype(np.float32) / 10000).transpose(1, 2, 0)[None]
        ours, with_shadow = m.read(1), ms.read(1)
    detector = S2PixelCloudDetector(threshold=0.4, all_bands=True, average_over=22, dilation_size=11)
    ref = detector.get_cloud_masks(data)[0]
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(with_shadow == 1, ref == 1)  # shadows only where there is no cloud
    assert (with_shadow == 2).sum() > 0


def test_s2cloudless_at_60_m_classifies_6x6_means(tmp_path):
    from s2cloudless import S2PixelCloudDetector

    from cloudrm_engine.masks import cloud_mask_scene

    src = _crop(tmp_path, 96)
    prog = RecordingProgress()
    cloud_mask_scene(src, tmp_path / "m60.tif", "s2cloudless", resolution=60, progress=prog, shadows=False)
    cloud_mask_scene(src, tmp_path / "m60_tiled.tif", "s2cloudless", resolution=60, block_size=40,  # → 36 px
                     shadows=False)
    assert any("pixel 60 m (6×6 means) → average over 4 px, dilation 2 px" in m for m in prog.infos)
    with (
        rasterio.open(src) as s,
        rasterio.open(tmp_path / "m60.tif") as m,
        rasterio.open(tmp_path / "m60_tiled.tif") as t,
    ):
        dn = s.read().astype(np.float64)
        ours, tiled = m.read(1), t.read(1)
    coarse = dn.reshape(13, 16, 6, 16, 6).mean(axis=(2, 4))
    data = (coarse.astype(np.float32) / 10000).transpose(1, 2, 0)[None]
    ref = S2PixelCloudDetector(threshold=0.4, all_bands=True, average_over=4, dilation_size=2).get_cloud_masks(data)[0]
    np.testing.assert_array_equal(ours, np.repeat(np.repeat(ref, 6, 0), 6, 1))
    np.testing.assert_array_equal(ours, tiled)


def test_cafr_rule_equals_the_rule_of_data_cloudmask(tmp_path):
    from cloudrm_engine.data import cloudmask
    from cloudrm_engine.masks import cloud_mask_scene

    src = _crop(tmp_path, 64)
    cloud_mask_scene(src, tmp_path / "c.tif", "cafr_rule", shadows=False)
    cloud_mask_scene(src, tmp_path / "cs.tif", "cafr_rule")
    with rasterio.open(src) as s:
        dn = s.read().astype(np.float32)
    with rasterio.open(tmp_path / "c.tif") as a, rasterio.open(tmp_path / "cs.tif") as b:
        clouds, with_shadow = a.read(1), b.read(1)
    ref = cloudmask.cloud_mask(dn / 10000.0)
    np.testing.assert_array_equal(clouds, ref.astype(np.uint8))
    np.testing.assert_array_equal(with_shadow == 1, ref)  # shadows never overwrite clouds
    if hasattr(cloudmask, "shadow_mask"):  # one block: scene thresholds == the patch's thresholds
        np.testing.assert_array_equal(with_shadow == 2, cloudmask.shadow_mask(dn) & ~ref)
    assert (with_shadow == 2).sum() > 0


def test_known_values_bright_cloud_and_dark_ground(tmp_path):
    from cloudrm_engine.masks import cloud_mask_scene

    # TOA spectra (DN, bands B1 … B8, B8A, B9, B10, B11, B12) of vegetation and of a thick cloud
    ground = [1200, 900, 800, 500, 900, 2200, 2700, 2800, 3000, 1000, 30, 1700, 800]
    cloud = [5500, 5600, 5600, 5700, 5800, 6000, 6100, 6100, 6100, 3500, 300, 3200, 2200]
    a = np.empty((13, 32, 128), np.uint16)
    a[:, :, :64] = np.array(ground)[:, None, None]
    a[:, :, 64:] = np.array(cloud)[:, None, None]  # right half: cloud
    src = write_geotiff(tmp_path / "synthetic.tif", a)
    for method in ("s2cloudless", "cafr_rule"):
        cloud_mask_scene(src, tmp_path / f"{method}.tif", method, shadows=False)
        with rasterio.open(tmp_path / f"{method}.tif") as m:
            mask = m.read(1)
        assert (mask[:, 70:] == 1).all(), method  # inside the bright half
        assert (mask[:, :16] == 0).all(), method  # beyond s2cloudless's 22 + 11 px disks


def test_nodata_pixels_are_255_and_not_counted(tmp_path):
    from cloudrm_engine.masks import cloud_mask_scene

    with rasterio.open(_crop(tmp_path, 64)) as s:
        a, crs, t = s.read(), s.crs.to_string(), s.transform
    a[:, :16, :] = 0  # a strip outside the swath
    src = write_geotiff(tmp_path / "nd.tif", a, crs, t, nodata=0)
    for method in ("s2cloudless", "cafr_rule"):
        r = cloud_mask_scene(src, tmp_path / f"nd_{method}.tif", method, block_size=24)
        with rasterio.open(tmp_path / f"nd_{method}.tif") as m:
            mask = m.read(1)
        assert (mask[:16] == 255).all() and (mask[16:] != 255).all(), method
        assert r.cloud_fraction == pytest.approx((mask == 1).sum() / (48 * 64))


def test_nodata_does_not_spread_shadows(tmp_path):
    from cloudrm_engine.masks import cloud_mask_scene

    a = np.full((13, 32, 32), 1500, np.uint16)  # uniform ground: CSI == its minimum, no shadow anywhere
    a[:, :8] = 0  # an L of no data, darker than any shadow: at its inner corner a 5×5
    a[:, :, :8] = 0  # median would see 16 of 25 "shadow" votes if no-data could vote
    src = write_geotiff(tmp_path / "flat.tif", a, nodata=0)
    r = cloud_mask_scene(src, tmp_path / "flat_mask.tif", "cafr_rule")
    with rasterio.open(tmp_path / "flat_mask.tif") as m:
        mask = m.read(1)
    assert (mask[:8] == 255).all() and (mask[:, :8] == 255).all()
    assert (mask[8:, 8:] == 0).all() and r.shadow_fraction == 0


def test_cancel_leaves_no_file(tmp_path):
    from cloudrm_engine.errors import Canceled
    from cloudrm_engine.masks import cloud_mask_scene

    src = _crop(tmp_path, 64)
    out = tmp_path / "out" / "mask.tif"
    prog = RecordingProgress(cancel_after=20)  # during the mask pass (after 16 statistics blocks)
    with pytest.raises(Canceled):
        cloud_mask_scene(src, out, "cafr_rule", progress=prog, block_size=16)
    assert prog.updates[-1][1] == 2 * 16  # statistics pass + mask pass, 16 blocks each
    assert not out.exists() and not out.parent.exists()  # the folder the run created is gone too


def test_wrong_band_count_and_unknown_method(tmp_path):
    from cloudrm_engine.errors import InputError
    from cloudrm_engine.masks import cloud_mask_scene

    rgb = write_geotiff(tmp_path / "rgb.tif", np.ones((3, 16, 16), np.uint16))
    with pytest.raises(InputError, match=r"'rgb.tif' \(16×16 px, 3 bands.*has 3 bands; cloud masks need the 13"):
        cloud_mask_scene(rgb, tmp_path / "o.tif", "cafr_rule")
    with pytest.raises(InputError, match="unknown cloud mask method 'fmask'; choose one of s2cloudless, cafr_rule"):
        cloud_mask_scene(S2_SAMPLE, tmp_path / "o.tif", "fmask")
    assert not (tmp_path / "o.tif").exists()


def test_missing_s2cloudless_is_a_dependency_error_with_the_command(tmp_path, monkeypatch):
    from cloudrm_engine.errors import DependencyError
    from cloudrm_engine.masks import cloud_mask_scene

    monkeypatch.setitem(sys.modules, "s2cloudless", None)  # import raises ImportError
    with pytest.raises(
        DependencyError, match=r"needs the Python package s2cloudless .*pip install s2cloudless==1\.7\.3"
    ):
        cloud_mask_scene(_crop(tmp_path, 16), tmp_path / "o.tif", "s2cloudless")
    assert not (tmp_path / "o.tif").exists()


# --- QGIS -----------------------------------------------------------------------------------


def test_algorithm_registers_with_its_parameters(provider):
    alg = QgsApplication.processingRegistry().algorithmById("cloudrm:cloudmask")
    assert alg is not None and alg.displayName() == "Cloud mask (Sentinel-2 L1C)"
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert list(params) == PARAMS
    method = params["METHOD"]
    assert method.usesStaticStrings() and method.options() == ["s2cloudless", "cafr_rule"]
    assert method.defaultValue() == "s2cloudless"
    res = params["RESOLUTION"]
    assert res.defaultValue() == 0 and res.flags() & res.FlagAdvanced
    assert params["SHADOWS"].defaultValue() is True
    assert all(p.help() for p in params.values())
    assert "255 where" in alg.shortHelpString()


@pytest.mark.parametrize("method", ["s2cloudless", "cafr_rule"])
def test_run_through_processing(provider, tmp_path, feedback, method):
    import processing

    src = _crop(tmp_path, 64)
    out = tmp_path / f"mask_{method}.tif"
    res = processing.run("cloudrm:cloudmask", {"INPUT": str(src), "METHOD": method, "OUTPUT": str(out)},
                         feedback=feedback)
    assert res["OUTPUT"] == str(out)
    assert feedback.progress and max(feedback.progress) == 100
    assert any(f"blocks, {method}): cloud" in m for m in feedback.infos)
    layer, ref = QgsRasterLayer(str(out), "mask"), QgsRasterLayer(str(src), "in")
    assert layer.isValid() and layer.bandCount() == 1 and layer.extent() == ref.extent()
    assert layer.crs() == ref.crs() and (layer.width(), layer.height()) == (64, 64)


def test_resolution_parameter_reaches_s2cloudless(provider, tmp_path, feedback):
    import processing

    src = _crop(tmp_path, 64)
    out = tmp_path / "mask60.tif"
    processing.run("cloudrm:cloudmask", {"INPUT": str(src), "RESOLUTION": 60, "SHADOWS": False, "OUTPUT": str(out)},
                   feedback=feedback)
    assert any("pixel 60 m (6×6 means)" in m for m in feedback.infos)
    with rasterio.open(out) as m:
        mask = m.read(1)
    blocks = mask[:60].reshape(10, 6, 64)[:, :, :60].reshape(10, 6, 10, 6)
    assert (blocks == mask[:60:6, :60:6][:, None, :, None]).all()  # clouds come in 6×6 blocks


def test_processing_rejects_a_three_band_image(provider, tmp_path, feedback):
    import processing

    rgb = write_geotiff(tmp_path / "rgb.tif", np.ones((3, 16, 16), np.uint16))
    with pytest.raises(QgsProcessingException, match="has 3 bands; cloud masks need the 13 L1C bands"):
        processing.run(
            "cloudrm:cloudmask", {"INPUT": str(rgb), "METHOD": "cafr_rule", "OUTPUT": str(tmp_path / "o.tif")},
            feedback=feedback,
        )


def test_canceled_feedback_writes_nothing(provider, tmp_path, feedback):
    import processing

    src = _crop(tmp_path, 32)
    out = tmp_path / "canceled.tif"
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="Canceled: canceled; no output written"):
        processing.run("cloudrm:cloudmask", {"INPUT": str(src), "METHOD": "cafr_rule", "OUTPUT": str(out)},
                       feedback=feedback)
    assert not out.exists() and not list(tmp_path.glob(".canceled*"))
