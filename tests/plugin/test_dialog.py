"""The desktop dialog, driven through its real widgets (pytest-qgis, offscreen).

Layers and band counts, models with and without weights, validation before Run, keep-clear per
input, tooltips, remembered settings, help, translations; then runs through the Processing
algorithm in a QgsTask: the result styled like the input (before/after differ only where the
model filled), overwrite questions and layers replaced in place, errors kept in the dialog.
Screenshots go to ``out/screenshots/``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAbstractSpinBox, QCheckBox, QComboBox, QListWidget, QRadioButton

from tests.conftest import write_geotiff
from tests.plugin import gui_support
from tests.plugin.gui_support import (
    SHOTS,
    answer_next_question,
    close_dialog,
    distinct_colours,
    messages,
    open_dialog,
    render,
    select,
    settle,
    side_by_side,
    wait_until,
)

# the fixtures this module uses (pytest finds fixtures by name in the module)
settings_profile = gui_support.settings_profile
scene = gui_support.scene
dialog = gui_support.dialog


def api():
    from cloudrm_plugin import deps

    return deps.api()


def run_dialog(dlg, timeout: float = 600.0):
    """Press Run (the dialog's own start) and wait for the task's end; returns the outcome."""
    task = dlg.start()
    assert task is not None, dlg.message.text()
    outcome = task.outcome
    wait_until(lambda: outcome.done, timeout=timeout)
    return task, outcome


def small_tiles(dlg) -> None:
    """Quick CPU runs on the 64 px crops: 32 px tiles, 8 px overlap."""
    select(dlg.device_combo, "cpu")
    dlg.tile_spin.setValue(32)
    dlg.overlap_spin.setValue(8)


# ---- what the dialog offers --------------------------------------------------------------
def test_dialog_lists_raster_layers_with_band_counts_and_marks_models_without_weights(dialog, scene):
    for combo in (dialog.optical_combo, dialog.sar_combo):
        names = sorted(combo.itemText(i) for i in range(combo.count()))
        assert names == ["S1 VV VH", "S2 cloudy"]  # no vector layer
    # preselected by band count (13 = the checkpoint's optical bands, 2 = SAR)
    assert dialog.optical_combo.currentLayer() is scene["s2"] and dialog.sar_combo.currentLayer() is scene["s1"]
    assert (dialog.optical_bands.text(), dialog.sar_bands.text()) == ("13 bands", "2 bands")
    models = [dialog.model_combo.itemData(i) for i in range(dialog.model_combo.count())]
    assert models == api().method_names(temporal=False) and dialog.model_combo.currentData() == "glf_cr"
    for i, name in enumerate(models):
        text = dialog.model_combo.itemText(i)
        info = api().method_info(name)
        assert text.startswith(f"{name} – {info.title}")
        assert text.endswith("· no bundled weights") == info.needs_checkpoint, text
        assert text.endswith("· bundled weights") == info.bundled_weights, text
    assert api().method_info("glf_cr").bundled_weights and api().method_info("cafr").needs_checkpoint
    # the checkpoint field says, per model, what it needs
    placeholder = dialog.checkpoint_widget.lineEdit().placeholderText
    assert placeholder() == "empty = the bundled weights (glf_cr_demo.pt)"
    info = dialog.checkpoint_info.text()
    assert "glf_cr_demo.pt (bundled): 13 optical bands (B1, B2, B3 … B12); SAR VV, VH." in info
    assert "Trained on: DEMO ONLY" in info
    select(dialog.model_combo, "cafr")
    assert placeholder() == "required: cafr ships no weights – choose a .pt/.pth file"
    select(dialog.model_combo, "glf_cr")
    devices = [dialog.device_combo.itemData(i) for i in range(dialog.device_combo.count())]
    assert devices[:2] == ["auto", "cpu"] and all(d.startswith("cuda:") for d in devices[2:])
    # 0 = the model's default tiling, said so in the spin boxes
    assert (dialog.tile_spin.value(), dialog.overlap_spin.value()) == (0, 0)
    assert (dialog.tile_spin.text(), dialog.overlap_spin.text()) == ("model default (256 px)", "model default (32 px)")
    assert dialog.keep_clear_check.isChecked() and dialog.mask_check.isEnabled()
    assert dialog.output_widget.filePath() == str(scene["opt"].with_name("cloudy_s2_cloudfree_glf_cr.tif"))
    assert dialog.run_button.isEnabled() and not dialog.message.isVisible()
    dialog.mask_check.setChecked(True)
    settle()
    png = SHOTS / "dialog_single_date.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(png))
    assert png.stat().st_size > 2000 and distinct_colours(png) > 5


def test_multitemporal_opens_on_a_method_that_runs_and_leaves_no_gap(dialog, scene):
    def gap() -> int:  # from the bottom of the inputs shown to the top of the Model box
        page = dialog.single_page if not dialog.temporal else dialog.temporal_page
        return dialog.model_combo.parentWidget().geometry().top() - page.geometry().bottom()

    settle()
    single_gap, single_height = gap(), dialog.sizeHint().height()
    dialog.mode_temporal.click()
    settle()
    assert dialog.temporal_page.isVisible() and not dialog.single_page.isVisible()
    assert dialog.model_combo.currentData() == "least_cloudy"  # runs without weights
    assert "weight-free" in dialog.checkpoint_info.text() and "b00020" not in dialog.checkpoint_info.styleSheet()
    assert not dialog.checkpoint_widget.isEnabled()
    assert dialog.checkpoint_widget.lineEdit().placeholderText() == "not used: least_cloudy needs no weights"
    methods = [dialog.model_combo.itemData(i) for i in range(dialog.model_combo.count())]
    assert methods == api().method_names(temporal=True)
    assert dialog.model_combo.itemText(methods.index("ca_mtcr")).endswith("· no bundled weights")
    for lst in (dialog.optical_list, dialog.sar_list):
        texts = sorted(lst.item(i).text() for i in range(lst.count()))
        assert texts == ["S1 VV VH  (2 bands)", "S2 cloudy  (13 bands)"]
        assert all(lst.item(i).flags() & Qt.ItemIsUserCheckable for i in range(lst.count()))
    # a layer added later shows up in the lists
    extra = QgsRasterLayer(str(scene["opt"]), "S2 second date")
    QgsProject.instance().addMapLayer(extra)
    listed = [dialog.optical_list.item(i).text() for i in range(dialog.optical_list.count())]
    assert "S2 second date  (13 bands)" in listed
    for i in range(dialog.optical_list.count()):
        if "S2" in dialog.optical_list.item(i).text():
            dialog.optical_list.item(i).setCheckState(Qt.Checked)
    assert [lyr.name() for lyr in dialog.checked_layers(dialog.optical_list)] == ["S2 cloudy", "S2 second date"]
    assert dialog.run_button.isEnabled(), dialog.message.text()
    select(dialog.model_combo, "ca_mtcr")  # needs SAR per date and a checkpoint: said in full
    assert not dialog.run_button.isEnabled()
    text = dialog.message.text()
    assert "ca_mtcr ships no weights: choose a checkpoint file (.pt/.pth) trained for ca_mtcr" in text
    assert "ca_mtcr needs one SAR layer per date: 2 optical but 0 SAR layers checked" in text
    select(dialog.model_combo, "least_cloudy")
    settle()
    png = SHOTS / "dialog_multi_temporal.png"
    assert dialog.grab().save(str(png))
    assert distinct_colours(png) > 5
    dialog.mode_single.click()
    settle()
    assert dialog.single_page.isVisible() and dialog.model_combo.currentData() == "glf_cr"
    assert gap() == single_gap and gap() < 20  # no blank gap after switching back
    assert dialog.sizeHint().height() == single_height


# ---- validation before Run ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d, s: d.output_widget.setFilePath(str(s["tmp"] / "out.png")),
         "the output must be a GeoTIFF (.tif), got"),
        (lambda d, s: d.output_widget.setFilePath(str(s["opt"])), "is one of the inputs: choose another file"),
        (lambda d, s: d.output_widget.setFilePath(str(s["tmp"] / "no" / "x.tif")), "does not exist"),
        (lambda d, s: d.sar_combo.setLayer(s["s2"]), "the optical and the SAR layer are the same layer ('S2 cloudy')"),
        (lambda d, s: d.optical_combo.setLayer(s["s1"]),
         "optical layer 'S1 VV VH' has 2 band(s); glf_cr expects 13 (B1, B2, B3 … B12)"),
        (lambda d, s: (d.tile_spin.setValue(64), d.overlap_spin.setValue(64)),
         "the tile overlap (64 px) must be smaller than the tile size (64 px)"),
    ],
)
def test_run_stays_disabled_while_anything_is_wrong_and_says_why_in_full(dialog, scene, change, expected):
    assert dialog.run_button.isEnabled()
    change(dialog, scene)
    settle(0.01)
    assert not dialog.run_button.isEnabled()
    assert expected in dialog.message.text() and dialog.message.isVisible()
    assert dialog.message.wordWrap() and "b00020" in dialog.message.styleSheet()
    assert dialog.start() is None and not dialog.tasks and dialog.isVisible()  # nothing closes


def test_band_count_warning_blocks_run_and_stale_messages_clear(dialog, scene):
    dialog.optical_combo.setLayer(scene["s1"])
    assert dialog.optical_bands.text() == "2 bands (model: 13)" and "b00020" in dialog.optical_bands.styleSheet()
    assert not dialog.run_button.isEnabled()
    dialog.optical_combo.setLayer(scene["s2"])
    assert dialog.optical_bands.text() == "13 bands" and dialog.run_button.isEnabled()
    assert dialog.message.text() == ""
    select(dialog.model_combo, "cafr")  # no weights: a red error …
    assert "cafr ships no weights" in dialog.checkpoint_info.text() and not dialog.run_button.isEnabled()
    select(dialog.model_combo, "glf_cr")  # … that is gone once the choice changes back
    assert "cafr" not in dialog.checkpoint_info.text() + dialog.message.text()
    assert "b00020" not in dialog.checkpoint_info.styleSheet() and dialog.run_button.isEnabled()


def test_checkpoint_is_read_in_the_background_and_errors_are_shown_inline_in_full(dialog, scene):
    bad = scene["tmp"] / "notes.pt"
    bad.write_text("not a checkpoint")
    dialog.checkpoint_widget.setFilePath(str(bad))
    assert dialog.loading and "loading models…" in dialog.checkpoint_info.text()
    assert not dialog.run_button.isEnabled()
    wait_until(lambda: not dialog.loading)
    with pytest.raises(api().CheckpointError) as err:
        api().checkpoint_info(str(bad), "glf_cr")
    assert dialog.checkpoint_info.text() == str(err.value)  # the engine's message, whole
    assert "notes.pt is not a readable weights-only PyTorch checkpoint" in dialog.checkpoint_info.text()
    assert "b00020" in dialog.checkpoint_info.styleSheet() and not dialog.run_button.isEnabled()
    assert dialog.start() is None
    dialog.checkpoint_widget.setFilePath("")
    assert "13 optical bands" in dialog.checkpoint_info.text() and dialog.run_button.isEnabled()


def test_keep_clear_follows_the_optical_input_and_a_mask_layer(dialog, scene):
    with rasterio.open(scene["opt"]) as src:
        rgb = src.read([4, 3, 2])
        crs, transform = src.crs.to_string(), src.transform
    rgb_path = write_geotiff(scene["tmp"] / "rgb.tif", rgb, crs, transform, descriptions=["B4", "B3", "B2"])
    mask_path = write_geotiff(scene["tmp"] / "mask.tif", (rgb[:1] > 3000).astype("uint8"), crs, transform)
    rgb_layer, mask_layer = QgsRasterLayer(str(rgb_path), "S2 RGB"), QgsRasterLayer(str(mask_path), "my mask")
    QgsProject.instance().addMapLayers([rgb_layer, mask_layer])
    select(dialog.model_combo, "mmcanet")  # an RGB model: takes the 13-band L1C …
    assert dialog.keep_clear_check.isEnabled() and not dialog.keep_note.isVisible()
    dialog.optical_combo.setLayer(rgb_layer)  # … or a 3-band raster, where keep clear has no mask
    assert dialog.optical_bands.text() == "3 bands"
    assert not dialog.keep_clear_check.isEnabled() and dialog.keep_note.isVisible()
    assert "its cloud mask needs the 13-band Sentinel-2 L1C image and 'S2 RGB' has 3 band(s)" in dialog.keep_note.text()
    assert dialog.plan().parameters["KEEP_CLEAR"] is False and "FILLED_MASK" not in dialog.plan().parameters
    dialog.mask_layer_combo.setLayer(mask_layer)  # a mask of one's own makes it possible again
    assert dialog.keep_clear_check.isEnabled() and not dialog.keep_note.isVisible()
    assert not dialog.mask_method_combo.isEnabled()  # the method is not used with a mask layer
    params = dialog.plan().parameters
    assert params["KEEP_CLEAR"] is True and params["MASK"] == mask_layer.id()
    dialog.mask_layer_combo.setCurrentIndex(0)  # the user picks "none" again
    assert dialog.mask_layer_combo.currentText() == "none: computed from the optical image"
    assert dialog.mask_layer_combo.currentLayer() is None
    assert not dialog.keep_clear_check.isEnabled() and dialog.keep_note.isVisible()  # the 3-band image again


def test_without_torch_the_dialog_says_what_to_install_and_loads_nothing(qgis_iface, scene, monkeypatch):
    from cloudrm_plugin import deps

    monkeypatch.setattr(deps, "missing_dependencies", lambda names=deps.REQUIRED: ["torch"])
    dlg = open_dialog(qgis_iface, show=False)
    try:
        calls = []
        monkeypatch.setattr(dlg.worker, "call", lambda fn, on_done: calls.append(fn))
        dlg.show()
        settle(0.2)
        assert not calls  # nothing to load without torch
        assert not dlg.run_button.isEnabled() and not dlg.loading
        text = dlg.message.text()
        assert "Python package(s) torch missing in the Python that QGIS uses." in text
        assert "download.pytorch.org/whl/cpu" in text  # the install commands, in full
        assert "cloudrm cannot run yet" in dlg.checkpoint_info.text()
    finally:
        close_dialog(dlg)


def test_every_option_has_a_tooltip(dialog):
    swept = dialog.findChildren((QComboBox, QAbstractSpinBox, QCheckBox, QRadioButton, QgsFileWidget, QListWidget))
    assert len(swept) >= 18
    missing = [f"{type(w).__name__} {w.objectName() or w.accessibleName()}" for w in swept if not w.toolTip().strip()]
    assert not missing
    for button in (dialog.run_button, *dialog.buttons.buttons()):
        assert button.toolTip().strip(), button.text()


# ---- settings, help, translations ----------------------------------------------------------
def test_choices_are_remembered_across_sessions(qgis_iface, scene, settings_profile):
    first = open_dialog(qgis_iface)
    try:
        select(first.device_combo, "cpu")
        first.tile_spin.setValue(128)
        first.overlap_spin.setValue(16)
        first.keep_clear_check.setChecked(False)
        select(first.mask_method_combo, "cafr_rule")
        first.style_input_check.setChecked(False)
        folder = scene["tmp"] / "results"
        folder.mkdir()
        first.output_widget.setFilePath(str(folder / "mine.tif"))
        first.mode_temporal.click()
        select(first.model_combo, "mosaicing")
        first.mode_single.click()
        select(first.model_combo, "cafr")
        first.reject()  # Close keeps the choices
    finally:
        close_dialog(first)
    ini = Path(QgsSettings().fileName())
    assert ini.parent == settings_profile and "cloudrm" in ini.read_text()
    second = open_dialog(qgis_iface)
    try:
        assert second.model_combo.currentData() == "cafr"
        assert second.device_combo.currentData() == "cpu"
        assert (second.tile_spin.value(), second.overlap_spin.value()) == (128, 16)
        assert not second.keep_clear_check.isChecked() and not second.style_input_check.isChecked()
        assert second.mask_method_combo.currentData() == "cafr_rule"
        assert Path(second.output_widget.filePath()).parent == folder  # the output folder
        second.mode_temporal.click()
        assert second.model_combo.currentData() == "mosaicing"
    finally:
        close_dialog(second)


def test_help_button_shows_the_user_guide_and_algorithm_help_shipped_in_the_plugin(dialog, monkeypatch):
    from qgis.PyQt.QtGui import QDesktopServices

    from cloudrm_plugin import helpwindow

    assert helpwindow.USER_GUIDE.is_file() and helpwindow.USER_GUIDE.parent.parent.name == "cloudrm_plugin"
    dialog.buttons.button(dialog.buttons.Help).click()
    settle()
    window = dialog.help_window
    assert window.isVisible()
    text = window.browser.toPlainText()
    for must in ("The dialog: Raster ▸ cloudrm ▸ Remove clouds…", "Comparing before and after",
                 "Remove clouds (SAR-optical) (cloudrm:removeclouds)", "Remove clouds (multi-temporal)",
                 "Cloud mask (Sentinel-2 L1C)", "OPTICAL", "KEEP_CLEAR", "GNU General Public License"):
        assert must in text, must
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    window.browser_button.click()
    assert opened and Path(opened[0]).read_text(encoding="utf-8").count("cloudrm:removeclouds") >= 1
    window.close()


@pytest.mark.skipif(shutil.which("lrelease") is None, reason="Qt's lrelease is not installed")
def test_a_translation_is_loaded_for_the_qgis_locale(qgis_iface, scene, tmp_path):
    from cloudrm_plugin import i18n

    skeleton = (Path(i18n.__file__).parent / "cloudrm.ts").read_text(encoding="utf-8")
    assert "<name>RemoveCloudsDialog</name>" in skeleton and "<source>Run</source>" in skeleton
    ts = tmp_path / "cloudrm_de.ts"
    ts.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE TS>\n<TS version="2.1" language="de">\n'
        "<context><name>RemoveCloudsDialog</name>\n"
        "<message><source>Run</source><translation>Ausführen</translation></message>\n"
        "<message><source>Keep clear pixels</source><translation>Klare Pixel behalten</translation></message>\n"
        "</context>\n</TS>\n", encoding="utf-8")
    subprocess.run(["lrelease", str(ts)], check=True, capture_output=True)
    assert i18n.install_translator("fr", folder=tmp_path) is None  # no .qm for fr: English stays
    translator = i18n.install_translator("de_AT", folder=tmp_path)  # falls back to the language
    assert translator is not None
    try:
        dlg = open_dialog(qgis_iface, show=False)
        try:
            assert dlg.run_button.text() == "Ausführen"
        finally:
            close_dialog(dlg)
    finally:
        i18n.remove_translator(translator)
    dlg = open_dialog(qgis_iface, show=False)
    try:
        assert dlg.run_button.text() == "Run"
    finally:
        close_dialog(dlg)


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


# ---- runs ----------------------------------------------------------------------------------
def clear_stretch(image: Path, rgb: list[int], filled: np.ndarray) -> list[tuple[float, float]]:
    """2–98 % of each RGB band over the clear (kept) pixels, computed independently."""
    with rasterio.open(image) as src:
        bands = src.read(rgb).astype("float64")
    keep = filled == 0
    return [tuple(np.percentile(b[keep], [2, 98])) for b in bands]


def ranges_of(layer) -> list[tuple[float, float]]:
    r = layer.renderer()
    return [(ce.minimumValue(), ce.maximumValue())
            for ce in (r.redContrastEnhancement(), r.greenContrastEnhancement(), r.blueContrastEnhancement())]


def test_run_from_the_dialog_styles_result_and_input_alike(dialog, scene, qgis_iface):
    small_tiles(dialog)
    dialog.mask_check.setChecked(True)
    out = scene["tmp"] / "result.tif"
    dialog.output_widget.setFilePath(str(out))
    before = set(QgsProject.instance().mapLayers())
    task, outcome = run_dialog(dialog)
    assert outcome.ok, outcome.error
    assert not dialog.isVisible()  # Run closed it; QGIS stayed usable meanwhile
    assert task.plan.algorithm_id == "cloudrm:removeclouds"
    assert outcome.progress and max(outcome.progress) == pytest.approx(100)
    assert any("done in" in m for m in messages(qgis_iface, Qgis.Success))
    assert set(QgsProject.instance().mapLayers()) - before == set(outcome.layer_ids)
    result, mask = (QgsProject.instance().mapLayer(i) for i in outcome.layer_ids)
    assert result.name() == "S2 cloudy cloud-free (glf_cr)" and result.bandCount() == 13
    assert mask.name() == "S2 cloudy cloud-free (glf_cr): filled pixels"
    order = [node.layerId() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    # the mask right above the result, the result right above its input (toggle it to compare)
    assert order.index(mask.id()) + 1 == order.index(result.id()) == order.index(scene["s2"].id()) - 1
    assert isinstance(mask.renderer(), QgsPalettedRasterRenderer)
    with rasterio.open(scene["opt"]) as a, rasterio.open(out) as b, rasterio.open(outcome.mask) as mk:
        x, y, filled = a.read(), b.read(), mk.read(1)
        assert (b.crs, b.transform, b.dtypes[0]) == (a.crs, a.transform, "uint16")
    assert 0 < filled.mean() < 1
    assert np.array_equal(y[:, filled == 0], x[:, filled == 0])  # keep clear: bit for bit
    # the result's stretch is the input's, on its clear pixels, and the input got the same
    r = result.renderer()
    assert isinstance(r, QgsMultiBandColorRenderer) and (r.redBand(), r.greenBand(), r.blueBand()) == (4, 3, 2)
    expected = clear_stretch(scene["opt"], [4, 3, 2], filled)
    assert np.allclose(ranges_of(result), expected)
    assert outcome.styled_inputs == [scene["s2"].id()]
    assert np.allclose(ranges_of(scene["s2"]), expected)
    i = scene["s2"].renderer()
    assert (i.redBand(), i.greenBand(), i.blueBand()) == (4, 3, 2)
    # so a before/after comparison shows only what changed: kept pixels render identically
    h, w = filled.shape
    before_img = render([scene["s2"]], w, h, result.extent())
    after_img = render([result], w, h, result.extent())
    same = np.array([[before_img.pixel(c, rw) == after_img.pixel(c, rw) for c in range(w)] for rw in range(h)])
    assert same[filled == 0].all()
    assert not same[filled == 1].all()
    size = 300
    side_by_side(
        [("input (styled alike)", render([scene["s2"]], size)),
         ("cloud-free (keep clear)", render([result], size)),
         ("+ filled-pixels mask", render([mask, result], size))],
        SHOTS / "before_after.png",
    )
    assert distinct_colours(SHOTS / "before_after.png") > 20
    leftovers = [p.name for p in scene["tmp"].iterdir() if ".part" in p.name or ".prediction" in p.name]
    assert not leftovers


def test_rerun_asks_before_overwriting_and_replaces_the_layer_in_place(dialog, scene):
    small_tiles(dialog)
    dialog.keep_clear_check.setChecked(False)  # the model's pixels everywhere: faster, and they change
    out = scene["tmp"] / "again.tif"
    dialog.output_widget.setFilePath(str(out))
    _, first = run_dialog(dialog)
    assert first.ok, first.error
    layer_id = first.layer_ids[0]
    count = len(QgsProject.instance().mapLayers())
    # same output again: asked; Replace updates the loaded layer in place
    dialog.show()
    dialog.tile_spin.setValue(48)  # another tiling: other pixels in the same file
    seen: list[str] = []
    answer_next_question("Replace", seen)
    _, second = run_dialog(dialog)
    assert second.ok, second.error
    assert seen and "is shown as layer 'S2 cloudy cloud-free (glf_cr)'" in seen[0]
    assert second.layer_ids == [layer_id] and second.replaced == [layer_id]
    assert len(QgsProject.instance().mapLayers()) == count
    layer = QgsProject.instance().mapLayer(layer_id)
    assert layer.name() == "S2 cloudy cloud-free (glf_cr)" and layer.isValid()
    # the layer reads the new file (a fresh GDAL handle)
    with rasterio.open(out) as src:
        value = float(src.read(4)[10, 10])
    ext = layer.extent()
    point = QgsPointXY(ext.xMinimum() + 10.5 * layer.rasterUnitsPerPixelX(),
                       ext.yMaximum() - 10.5 * layer.rasterUnitsPerPixelY())
    sampled, ok = layer.dataProvider().sample(point, 4)
    assert ok and sampled == value
    # again, and take the proposed new name: a second layer, with a unique name
    dialog.show()
    answer_next_question("Write again_2.tif")
    _, third = run_dialog(dialog)
    assert third.ok, third.error
    assert third.output == str(out.with_name("again_2.tif")) and dialog.output_widget.filePath() == third.output
    new = QgsProject.instance().mapLayer(third.layer_ids[0])
    assert new.id() != layer_id and new.name() == "S2 cloudy cloud-free (glf_cr) (2)"
    # Cancel in the question: nothing starts, the dialog stays open
    dialog.show()
    answer_next_question("Cancel")
    assert dialog.start() is None and dialog.isVisible()


def test_multitemporal_baseline_through_the_dialog(dialog, scene, tmp_path):
    """Two dates (dates in the file names, target = the later): least_cloudy, keep clear, mask."""
    from tests.conftest import crop_sample

    with rasterio.open(scene["opt"]) as ds:
        profile, cloudy = ds.profile, ds.read()
    crop_sample(tmp_path, 64, 160, 64, tag="clear")  # a cloud-free window of the sample…
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
    assert dialog.model_combo.currentData() == "least_cloudy" and not dialog.checkpoint_widget.isEnabled()
    dialog.mask_check.setChecked(True)
    out = tmp_path / "series.tif"
    dialog.output_widget.setFilePath(str(out))
    task, outcome = run_dialog(dialog)
    assert outcome.ok, outcome.error
    assert task.plan.algorithm_id == "cloudrm:removecloudsmultitemporal"
    assert task.plan.parameters["OPTICAL_SERIES"] == [lyr.id() for lyr in layers]
    assert "SAR_SERIES" not in task.plan.parameters
    assert outcome.target == str(late)
    result = QgsProject.instance().mapLayer(outcome.layer_ids[0])
    assert result.name() == "S2 2020-02-01 cloud-free (least_cloudy)"
    with rasterio.open(out) as b, rasterio.open(outcome.mask) as mk:
        y, filled = b.read(), mk.read(1)
    assert 0 < filled.mean() < 0.8
    assert np.array_equal(y[:, filled == 0], cloudy[:, filled == 0])  # the target's clear pixels, exactly
    deep = filled.astype(bool)  # inside the clouds the earlier, clear date shows through
    assert np.abs(y[:, deep].astype(int) - clear[:, deep].astype(int)).mean() < np.abs(
        cloudy[:, deep].astype(int) - clear[:, deep].astype(int)).mean() / 2
    assert outcome.styled_inputs == [layers[1].id()]  # the target, styled like the result
    assert np.allclose(ranges_of(layers[1]), ranges_of(result))
    mask = QgsProject.instance().mapLayer(outcome.layer_ids[1])
    layers[0].setRenderer(result.renderer().clone())
    side_by_side(
        [("2020-01-01 (clear)", render([layers[0]], 240)), ("2020-02-01 (target)", render([layers[1]], 240)),
         ("least_cloudy, keep clear", render([result], 240)), ("+ filled pixels", render([mask, result], 240))],
        SHOTS / "result_multitemporal.png",
    )
    assert distinct_colours(SHOTS / "result_multitemporal.png") > 20


def test_a_failed_run_keeps_its_error_in_the_dialog_in_full(qgis_iface, scene, monkeypatch):
    from qgis.gui import QgsMessageBar

    bar = QgsMessageBar()  # a real message bar: the failure offers to reopen the dialog
    monkeypatch.setattr(type(qgis_iface), "messageBar", lambda self: bar, raising=False)
    from rasterio.transform import Affine

    with rasterio.open(scene["sar"]) as src:  # SAR 100 km away from the optical image: no overlap
        data, crs, far = src.read(), src.crs.to_string(), Affine.translation(100000, 0) * src.transform
    far_path = write_geotiff(scene["tmp"] / "far_s1.tif", data, crs, far)
    far_layer = QgsRasterLayer(str(far_path), "S1 elsewhere")
    QgsProject.instance().addMapLayer(far_layer)
    dlg = open_dialog(qgis_iface)
    try:
        small_tiles(dlg)
        dlg.sar_combo.setLayer(far_layer)
        dlg.output_widget.setFilePath(str(scene["tmp"] / "never.tif"))
        _, outcome = run_dialog(dlg)
        assert not outcome.ok and outcome.error and not outcome.canceled
        assert "S1 elsewhere" in outcome.error
        assert dlg.message.text() == f"The last run failed: {outcome.error}"  # whole, not cut
        reopen = [b for b in bar.findChildren(type(dlg.run_button)) if b.text() == "Open the dialog"]
        assert reopen
        reopen[0].click()
        assert dlg.isVisible() and dlg.message.isVisible()
        assert dlg.sar_combo.currentLayer() is far_layer  # the same choices
        dlg.sar_combo.setLayer(scene["s1"])  # changing the choice clears the old error
        assert "The last run failed" not in dlg.message.text()
        assert not (scene["tmp"] / "never.tif").exists()
    finally:
        close_dialog(dlg)
