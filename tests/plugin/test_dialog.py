"""The GUI path: Remove clouds dialog → QgsTask → layers on the map (pytest-qgis, offscreen).

Screenshots (dialog in both modes, result on a map render) are written to ``out/screenshots/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

from tests.conftest import DEMO_CKPT, REPO, crop_sample

SHOTS = REPO / "out" / "screenshots"


# ---- helpers ---------------------------------------------------------------------------
def wait_until(predicate, timeout: float = 180.0) -> int:
    """Run the Qt event loop until ``predicate()``; returns the loop iterations (responsiveness)."""
    t0, spins = time.time(), 0
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s")
        QgsApplication.processEvents()
        time.sleep(0.005)
        spins += 1
    return spins


def distinct_colours(png: Path) -> int:
    img = QImage(str(png))
    assert not img.isNull() and img.width() > 50 and img.height() > 50, png
    step = max(1, min(img.width(), img.height()) // 40)
    return len({img.pixel(x, y) for x in range(0, img.width(), step) for y in range(0, img.height(), step)})


def render(layers: list[QgsRasterLayer], size: int = 320) -> QImage:
    ms = QgsMapSettings()
    ms.setLayers(layers)  # first = on top
    ms.setDestinationCrs(layers[-1].crs())
    ms.setExtent(layers[-1].extent())
    ms.setOutputSize(QSize(size, size))
    ms.setBackgroundColor(QColor("white"))
    job = QgsMapRendererSequentialJob(ms)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def side_by_side(panels: list[tuple[str, QImage]], path: Path) -> Path:
    w = sum(img.width() for _, img in panels) + 10 * (len(panels) + 1)
    h = max(img.height() for _, img in panels) + 40
    canvas = QImage(w, h, QImage.Format_ARGB32)
    canvas.fill(QColor("white"))
    p = QPainter(canvas)
    font = QFont()
    font.setPixelSize(14)
    p.setFont(font)
    x = 10
    for title, img in panels:
        p.drawText(x, 22, title)
        p.drawImage(x, 30, img)
        x += img.width() + 10
    p.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    assert canvas.save(str(path))
    return path


@pytest.fixture
def scene(qgis_iface, qgis_new_project, tmp_path):
    """A project with the cropped sample S2 (13 bands), S1 (2 bands) and a vector layer."""
    opt, sar = crop_sample(tmp_path, 0, 64, 64, tag="cloudy")
    project = QgsProject.instance()
    s2 = QgsRasterLayer(str(opt), "S2 cloudy")
    s1 = QgsRasterLayer(str(sar), "S1 VV VH")
    pts = QgsVectorLayer("Point?crs=EPSG:32631", "field points", "memory")
    assert s2.isValid() and s1.isValid() and pts.isValid()
    project.addMapLayers([s2, s1, pts])
    yield {"s2": s2, "s1": s1, "vector": pts, "opt": opt, "sar": sar, "tmp": tmp_path}
    project.removeAllMapLayers()


@pytest.fixture
def dialog(qgis_iface, scene):
    from cloudrm_plugin.dialog import RemoveCloudsDialog

    dlg = RemoveCloudsDialog(qgis_iface)
    yield dlg
    dlg.disconnect_project()
    dlg.close()
    sip.delete(dlg)  # now, not at some later garbage collection (the layers are removed next)


def messages(iface, level) -> list[str]:
    return iface.messageBar().get_messages(level)


# ---- the dialog ------------------------------------------------------------------------
def test_dialog_lists_exactly_the_raster_layers_with_band_counts(dialog, scene):
    dialog.show()
    for combo in (dialog.optical_combo, dialog.sar_combo):
        names = sorted(combo.itemText(i) for i in range(combo.count()))
        assert names == ["S1 VV VH", "S2 cloudy"]
    # preselected by band count (13 = the checkpoint's optical bands, 2 = SAR)
    assert dialog.optical_combo.currentLayer() is scene["s2"] and dialog.sar_combo.currentLayer() is scene["s1"]
    dialog.optical_combo.setLayer(scene["s2"])
    dialog.sar_combo.setLayer(scene["s1"])
    assert dialog.optical_bands.text() == "13 bands"
    assert dialog.sar_bands.text() == "2 bands"
    # the wrong way round: the label says what the model expects
    dialog.optical_combo.setLayer(scene["s1"])
    assert dialog.optical_bands.text() == "2 bands (model: 13)"
    dialog.optical_combo.setLayer(scene["s2"])
    # model list: non-temporal cards only; checkpoint metadata read from the bundled file
    models = [dialog.model_combo.itemData(i) for i in range(dialog.model_combo.count())]
    from cloudrm_engine.models import list_models

    assert models == list_models(temporal=False) and "glf_cr" in models
    info = dialog.checkpoint_info.text()
    assert "glf_cr_demo.pt (bundled): 13 optical bands (B1, B2, B3 … B12); SAR VV, VH." in info
    assert "Trained on: DEMO ONLY" in info
    devices = [dialog.device_combo.itemData(i) for i in range(dialog.device_combo.count())]
    assert devices[:2] == ["auto", "cpu"] and all(d.startswith("cuda:") for d in devices[2:])
    assert (dialog.tile_spin.value(), dialog.overlap_spin.value()) == (256, 32)
    assert dialog.keep_clear_check.isChecked() and dialog.mask_check.isEnabled()
    dialog.keep_clear_check.setChecked(False)
    assert not dialog.mask_check.isEnabled()
    dialog.keep_clear_check.setChecked(True)
    # output proposed beside the optical file
    assert dialog.output_widget.filePath() == str(scene["opt"].with_name("cloudy_s2_cloudfree.tif"))
    dialog.mask_check.setChecked(True)
    QgsApplication.processEvents()
    png = SHOTS / "dialog_single_date.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(png))
    assert png.stat().st_size > 2000 and distinct_colours(png) > 5


def test_multitemporal_lists_are_checkable_rasters_only(dialog, scene):
    dialog.show()
    dialog.mode_temporal.click()
    assert dialog.inputs.currentIndex() == 1
    for lst in (dialog.optical_list, dialog.sar_list):
        texts = sorted(lst.item(i).text() for i in range(lst.count()))
        assert texts == ["S1 VV VH  (2 bands)", "S2 cloudy  (13 bands)"]
        assert all(lst.item(i).flags() & Qt.ItemIsUserCheckable for i in range(lst.count()))
    from cloudrm_engine.models import list_models

    models = [dialog.model_combo.itemData(i) for i in range(dialog.model_combo.count())]
    assert models == list_models(temporal=True) + ["least_cloudy", "mosaicing"]
    # a layer added later shows up in the lists
    extra = QgsRasterLayer(str(scene["opt"]), "S2 second date")
    QgsProject.instance().addMapLayer(extra)
    assert "S2 second date  (13 bands)" in [dialog.optical_list.item(i).text() for i in range(dialog.optical_list.count())]
    for i in range(dialog.optical_list.count()):
        if "S2" in dialog.optical_list.item(i).text():
            dialog.optical_list.item(i).setCheckState(Qt.Checked)
    sar_item = [dialog.sar_list.item(i) for i in range(dialog.sar_list.count()) if "S1" in dialog.sar_list.item(i).text()]
    sar_item[0].setCheckState(Qt.Checked)
    assert [lyr.name() for lyr in dialog.checked_layers(dialog.optical_list)] == ["S2 cloudy", "S2 second date"]
    dialog.model_combo.setCurrentIndex(dialog.model_combo.findData("ca_mtcr"))
    with pytest.raises(ValueError, match="2 optical but 1 SAR layers checked"):
        dialog.parameters()
    QgsApplication.processEvents()
    png = SHOTS / "dialog_multi_temporal.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(png))
    assert distinct_colours(png) > 5
    dialog.mode_single.click()
    assert dialog.inputs.currentIndex() == 0 and dialog.model_combo.currentData() == "glf_cr"


def test_checkpoint_errors_are_shown_inline(dialog, scene):
    bad = scene["tmp"] / "notes.pt"
    bad.write_text("not a checkpoint")
    dialog.checkpoint_widget.setFilePath(str(bad))
    text = dialog.checkpoint_info.text()
    assert "is not a readable weights-only PyTorch checkpoint" in text and "notes.pt" in text
    assert "b00020" in dialog.checkpoint_info.styleSheet()
    dialog.output_widget.setFilePath(str(scene["tmp"] / "x.tif"))
    assert dialog.start() is None and "not a readable" in dialog.message.text()
    dialog.checkpoint_widget.setFilePath("")
    assert "13 optical bands" in dialog.checkpoint_info.text()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d, s: d.output_widget.setFilePath(str(s["tmp"] / "out.png")), "must be a GeoTIFF"),
        (lambda d, s: d.output_widget.setFilePath(str(s["opt"])), "is one of the inputs"),
        (lambda d, s: d.sar_combo.setLayer(s["s2"]), "the same layer"),
        (lambda d, s: d.overlap_spin.setValue(300), "overlap must be smaller"),
    ],
)
def test_bad_choices_are_refused_in_the_dialog(dialog, scene, change, expected):
    dialog.optical_combo.setLayer(scene["s2"])
    dialog.sar_combo.setLayer(scene["s1"])
    change(dialog, scene)
    assert dialog.start() is None
    assert expected in dialog.message.text()
    assert not dialog.tasks


def test_plugin_adds_menu_entry_and_toolbar_button(qgis_app, qgis_iface):
    from cloudrm_plugin.plugin import CloudrmPlugin

    calls = []

    class Iface:
        def mainWindow(self):
            return qgis_iface.mainWindow()

        def __getattr__(self, name):
            return lambda *args: calls.append((name, *args))

    plugin = CloudrmPlugin(Iface())
    # The session's provider fixture already holds the id "cloudrm": this instance must not
    # take it over or remove it (provider registration is tested in test_remove_clouds.py).
    session_provider = QgsApplication.processingRegistry().providerById("cloudrm")
    plugin.initGui()
    try:
        assert plugin.action.text() == "Remove clouds…"
        assert ("addPluginToRasterMenu", "cloudrm", plugin.action) in calls
        assert ("addToolBarIcon", plugin.action) in calls
        if session_provider is None:
            assert QgsApplication.processingRegistry().providerById("cloudrm") is plugin.provider
        else:
            assert plugin.provider is None  # the duplicate was refused, no dangling reference
    finally:
        action = plugin.action
        plugin.unload()
    assert ("removePluginRasterMenu", "cloudrm", action) in calls and ("removeToolBarIcon", action) in calls
    assert plugin.action is None and plugin.provider is None


# ---- the task ----------------------------------------------------------------------------
def test_task_runs_in_background_and_adds_styled_layers(dialog, scene, qgis_iface):
    out = scene["tmp"] / "result.tif"
    dialog.optical_combo.setLayer(scene["s2"])
    dialog.sar_combo.setLayer(scene["s1"])
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    dialog.tile_spin.setValue(32)
    dialog.overlap_spin.setValue(0)
    dialog.mask_check.setChecked(True)
    dialog.output_widget.setFilePath(str(out))
    before = set(QgsProject.instance().mapLayers())
    task = dialog.start()
    assert task is not None and not dialog.isVisible()
    progress = []
    task.progressChanged.connect(progress.append)
    outcome = task.outcome
    spins = wait_until(lambda: outcome.done)
    assert outcome.ok, outcome.error
    assert spins > 10  # the event loop kept running while the model worked
    assert progress and max(progress) == 100
    assert any("glf_cr on cpu" in m for m in outcome.infos)
    assert any("Remove clouds" not in m and "done in" in m for m in messages(qgis_iface, Qgis.Success))

    added = [QgsProject.instance().mapLayer(i) for i in outcome.layer_ids]
    assert set(QgsProject.instance().mapLayers()) - before == set(outcome.layer_ids)
    result, mask = added
    assert result.name() == "S2 cloudy cloud-free (glf_cr)" and result.bandCount() == 13
    assert mask.name() == "S2 cloudy cloud-free (glf_cr): filled pixels"
    r = result.renderer()
    assert isinstance(r, QgsMultiBandColorRenderer)
    assert (r.redBand(), r.greenBand(), r.blueBand()) == (4, 3, 2)
    order = [node.layerId() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(mask.id()) < order.index(result.id())  # the mask is drawn above the result
    m = mask.renderer()
    assert isinstance(m, QgsPalettedRasterRenderer)
    colours = {c.value: c.color for c in m.classes()}
    assert colours[0].alpha() == 0 and 0 < colours[1].alpha() < 255

    # keep clear: every pixel the mask calls "kept" is bit-identical to the input
    with rasterio.open(scene["opt"]) as a, rasterio.open(out) as b, rasterio.open(outcome.mask) as mk:
        x, y, filled = a.read(), b.read(), mk.read(1)
        assert (b.crs, b.transform, b.dtypes[0]) == (a.crs, a.transform, "uint16")
    assert set(np.unique(filled)) <= {0, 1}
    assert 0 < filled.mean() < 1
    assert np.array_equal(y[:, filled == 0], x[:, filled == 0])
    assert (y[:, filled == 1] != x[:, filled == 1]).any(axis=0).all()
    assert not [p.name for p in scene["tmp"].iterdir() if ".prediction" in p.name or ".part" in p.name]

    size = 300
    scene["s2"].setRenderer(result.renderer().clone())  # the same stretch, so kept pixels look the same
    side_by_side(
        [
            ("input (S2, same stretch)", render([scene["s2"]], size)),
            ("cloud-free (keep clear)", render([result], size)),
            ("+ filled-pixels mask", render([mask, result], size)),
        ],
        SHOTS / "result_map.png",
    )
    assert distinct_colours(SHOTS / "result_map.png") > 20


def test_multitemporal_baseline_through_the_dialog(dialog, scene, tmp_path):
    """Two dates (dates in the file names, target = the later): least_cloudy, keep clear, mask."""
    with rasterio.open(scene["opt"]) as ds:
        profile, cloudy = ds.profile, ds.read()
    _, _ = crop_sample(tmp_path, 96, 160, 64, tag="clear")  # a cloud-free window of the sample…
    with rasterio.open(tmp_path / "clear_s2.tif") as ds:
        clear = ds.read()
    early, late = tmp_path / "S2_20200101.tif", tmp_path / "S2_20200201.tif"
    for path, data in ((early, clear), (late, cloudy)):  # …pasted on the target's grid as an earlier date
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    layers = [QgsRasterLayer(str(early), "S2 2020-01-01"), QgsRasterLayer(str(late), "S2 2020-02-01")]
    QgsProject.instance().addMapLayers(layers)
    dialog.mode_temporal.click()
    for i in range(dialog.optical_list.count()):
        item = dialog.optical_list.item(i)
        item.setCheckState(Qt.Checked if item.text().startswith("S2 2020") else Qt.Unchecked)
    dialog.model_combo.setCurrentIndex(dialog.model_combo.findData("least_cloudy"))
    assert not dialog.checkpoint_widget.isEnabled() and "weight-free baseline" in dialog.checkpoint_info.text()
    from cloudrm_engine.inference.temporal import BASELINE_DEFAULTS

    assert (dialog.tile_spin.value(), dialog.overlap_spin.value()) == (
        BASELINE_DEFAULTS["tile_size"], BASELINE_DEFAULTS["overlap"])
    dialog.mask_check.setChecked(True)
    out = tmp_path / "series.tif"
    dialog.output_widget.setFilePath(str(out))
    task = dialog.start()
    assert task is not None, dialog.message.text()
    assert task.params.optical == [str(early), str(late)] and task.params.sar == []
    outcome = task.outcome
    wait_until(lambda: outcome.done)
    assert outcome.ok, outcome.error
    assert outcome.target == str(late)
    result = QgsProject.instance().mapLayer(outcome.layer_ids[0])
    assert result.name() == "S2 2020-02-01 cloud-free (least_cloudy)"
    with rasterio.open(out) as b, rasterio.open(outcome.mask) as mk:
        y, filled = b.read(), mk.read(1)
    assert 0.2 < filled.mean() < 0.8
    assert np.array_equal(y[:, filled == 0], cloudy[:, filled == 0])  # the target's clear pixels, exactly
    # deep inside the clouds the earlier, clear date shows through
    deep = filled.astype(bool)
    assert np.abs(y[:, deep].astype(int) - clear[:, deep].astype(int)).mean() < np.abs(
        cloudy[:, deep].astype(int) - clear[:, deep].astype(int)).mean() / 2
    mask = QgsProject.instance().mapLayer(outcome.layer_ids[1])
    for lyr in layers:
        lyr.setRenderer(result.renderer().clone())
    side_by_side(
        [("2020-01-01 (clear)", render([layers[0]], 240)), ("2020-02-01 (target)", render([layers[1]], 240)),
         ("least_cloudy, keep clear", render([result], 240)), ("+ filled pixels", render([mask, result], 240))],
        SHOTS / "result_multitemporal.png",
    )
    assert distinct_colours(SHOTS / "result_multitemporal.png") > 20


def test_cancel_stops_within_a_tile_and_writes_nothing(scene, qgis_iface):
    from cloudrm_plugin.tasks import RemoveCloudsTask, RunParams, start_task

    out = scene["tmp"] / "canceled.tif"
    params = RunParams(
        optical=[str(scene["opt"])], sar=[str(scene["sar"])], output=str(out), checkpoint=str(DEMO_CKPT),
        device="cpu", tile_size=16, overlap=0, keep_clear=True, add_mask=True,
    )
    task = RemoveCloudsTask(params, qgis_iface)
    seen = []

    def on_progress(p: float) -> None:
        seen.append(p)
        if p > 0:
            task.cancel()

    task.progressChanged.connect(on_progress)
    outcome = task.outcome
    start_task(task)
    wait_until(lambda: outcome.done)
    assert outcome.canceled and not outcome.ok and outcome.error is None
    assert 0 < max(seen) < 90  # stopped during prediction (16 tiles = 0–90 %), keep-clear never ran
    assert not out.exists() and not Path(params.mask_path).exists()
    assert not [p.name for p in scene["tmp"].iterdir() if p.name.startswith((".canceled", "canceled"))]
    assert any("canceled, nothing written" in m for m in messages(qgis_iface, Qgis.Info))


def test_cancel_is_honoured_at_the_next_tile(scene, qgis_iface):
    """Synchronous run(): cancel during tile 1's progress report → exactly one tile was computed."""
    from cloudrm_plugin.tasks import RemoveCloudsTask, RunParams

    out = scene["tmp"] / "sync.tif"
    params = RunParams(
        optical=[str(scene["opt"])], sar=[str(scene["sar"])], output=str(out), checkpoint=str(DEMO_CKPT),
        device="cpu", tile_size=16, overlap=0, keep_clear=False,
    )
    task = RemoveCloudsTask(params, qgis_iface)
    seen = []

    def on_progress(p: float) -> None:  # same thread: a direct call from setProgress
        seen.append(p)
        if p > 0:
            task.cancel()

    task.progressChanged.connect(on_progress)
    assert task.run() is False
    assert seen == [100 / 16]  # tile 1 of 16 finished, tile 2 never started (or reported)
    assert task.outcome.canceled and task.outcome.error is None
    assert not out.exists() and not list(scene["tmp"].glob(".sync*"))


def test_engine_errors_reach_the_message_bar(scene, qgis_iface):
    from cloudrm_plugin.tasks import RemoveCloudsTask, RunParams

    out = scene["tmp"] / "never.tif"
    params = RunParams(  # SAR given as optical: wrong band count
        optical=[str(scene["sar"])], sar=[str(scene["sar"])], output=str(out), device="cpu",
        optical_names=["S1 VV VH"], sar_names=["S1 VV VH"],
    )
    task = RemoveCloudsTask(params, qgis_iface)
    assert task.run() is False  # synchronously: no exception escapes run()
    task.finished(False)
    assert task.outcome.done and not task.outcome.ok
    critical = messages(qgis_iface, Qgis.Critical)
    assert any("'S1 VV VH'" in m and "has 2 bands" in m and "expects 13" in m for m in critical)
    assert not out.exists()


def test_multitemporal_run_without_engine_support_says_so(scene, qgis_iface, monkeypatch):
    from cloudrm_plugin import deps
    from cloudrm_plugin.tasks import RemoveCloudsTask, RunParams

    api = deps.engine_module("api")
    monkeypatch.delattr(api, "predict_series", raising=False)
    params = RunParams(
        optical=[str(scene["opt"])] * 2, sar=[str(scene["sar"])] * 2, output=str(scene["tmp"] / "ts.tif"),
        temporal=True, model="glf_cr",
    )
    task = RemoveCloudsTask(params, qgis_iface)
    assert task.run() is False
    task.finished(False)
    assert "engine api has no predict_series" in task.outcome.error
    assert any("use the single-date mode" in m for m in messages(qgis_iface, Qgis.Critical))
