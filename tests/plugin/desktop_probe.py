"""Runs inside the real QGIS desktop (``qgis.bin --code desktop_probe.py`` under Xvfb) with the
plugin installed in the profile: opens Raster ▸ cloudrm ▸ Remove clouds… through the plugin's
own action, measures how long the GUI thread stalls while the models load and on which threads
torch is imported, runs the dialog on the layers given, takes screenshots of the whole QGIS
window (dialog, run in progress, result), writes a JSON report, and quits QGIS.

Inputs come from the environment (``--code`` takes no arguments): PROBE_OPTICAL, PROBE_SAR,
PROBE_OUT (a folder), PROBE_SHOTS (a folder for the screenshots).
"""

import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

sys.path.insert(0, os.environ["PROBE_HELPERS"])  # tests/plugin: qgis --code runs this file by its text
import torch_imports

T0 = time.monotonic()
OUT = Path(os.environ["PROBE_OUT"])
SHOTS = Path(os.environ["PROBE_SHOTS"])
REPORT: dict = {"torch_at_start": "torch" in sys.modules, "plugins": sorted(plugins)}
IMPORTS = torch_imports.install(T0)




def shot(name: str) -> None:
    """The whole screen: QGIS's main window with whatever is open on it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    QApplication.primaryScreen().grabWindow(0).save(str(SHOTS / name))


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QgsApplication.processEvents()
        time.sleep(0.005)


def finish(code: int = 0) -> None:
    REPORT["torch_imports_total"] = len(IMPORTS)
    REPORT["torch_main_thread_imports"] = sorted({i["module"] for i in IMPORTS if i["main"]})
    REPORT["torch_threads"] = sorted({i["thread"] for i in IMPORTS})
    REPORT["first_torch_import_s"] = IMPORTS[0]["t"] if IMPORTS else None
    (OUT / "desktop_report.json").write_text(json.dumps(REPORT, indent=2))
    os._exit(code)  # QGIS's own exit would ask about the unsaved project


def main() -> None:
    try:
        screen = QApplication.primaryScreen().geometry()  # no window manager under Xvfb: place it
        iface.mainWindow().setGeometry(0, 0, screen.width(), screen.height())
        project = QgsProject.instance()
        opt = QgsRasterLayer(os.environ["PROBE_OPTICAL"], "S2 cloudy")
        sar = QgsRasterLayer(os.environ["PROBE_SAR"], "S1 VV VH")
        project.addMapLayers([opt, sar])
        iface.setActiveLayer(sar)
        iface.mapCanvas().setExtent(opt.extent())
        spin(1.0)
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.monotonic() - T0))
        timer.start()
        plugin = plugins["cloudrm_plugin"]
        REPORT["menu_action"] = plugin.action.text()
        t_click = time.monotonic() - T0
        plugin.action.trigger()  # Raster ▸ cloudrm ▸ Remove clouds…
        dialog = plugin.dialog
        REPORT["dialog_visible_after_click_s"] = time.monotonic() - T0 - t_click if dialog.isVisible() else None
        REPORT["shown_s"] = time.monotonic() - T0
        start = time.monotonic()
        while (dialog.loading or dialog.worker.pending) and time.monotonic() - start < 120:
            QgsApplication.processEvents()
            time.sleep(0.002)
        t_loaded = time.monotonic() - T0
        spin(0.3)
        window = [t for t in ticks if REPORT["shown_s"] <= t <= t_loaded]
        REPORT["load_duration_s"] = t_loaded - REPORT["shown_s"]
        REPORT["max_gui_stall_s"] = max((b - a for a, b in itertools.pairwise(window)), default=None)
        REPORT["ticks_while_loading"] = len(window)
        REPORT["run_enabled"] = dialog.run_button.isEnabled()
        REPORT["checkpoint_text"] = dialog.checkpoint_info.text()
        # a small CPU run of the real dialog
        idx = dialog.device_combo.findData("cpu")
        dialog.device_combo.setCurrentIndex(idx)
        dialog.tile_spin.setValue(int(os.environ.get("PROBE_TILE", "64")))
        dialog.overlap_spin.setValue(int(os.environ.get("PROBE_OVERLAP", "16")))
        dialog.mask_check.setChecked(True)
        out = OUT / "desktop_out.tif"
        for p in (out, out.with_name("desktop_out_filled.tif")):
            p.unlink(missing_ok=True)
        dialog.output_widget.setFilePath(str(out))
        spin(0.3)
        shot("desktop_dialog.png")
        task = dialog.start()
        REPORT["run_started"] = task is not None
        REPORT["run_message"] = dialog.message.text()
        if task is None:
            finish(1)
        outcome = task.outcome
        REPORT["run_parameters"] = {k: v for k, v in task.plan.parameters.items() if k != "FILLED_MASK"}
        REPORT["run_layers"] = {lyr.id(): lyr.source() for lyr in project.mapLayers().values()}
        shot_at = float(os.environ.get("PROBE_SHOT_AT", "30"))
        taken = False
        start = time.monotonic()
        while not outcome.done and time.monotonic() - start < 900:
            QgsApplication.processEvents()
            time.sleep(0.005)
            if not taken and outcome.progress and outcome.progress[-1] >= shot_at:
                spin(0.3)
                shot("desktop_run_in_progress.png")
                REPORT["progress_in_shot"] = outcome.progress[-1]
                taken = True
        REPORT["run_ok"] = outcome.ok
        REPORT["run_error"] = outcome.error
        REPORT["run_output"] = outcome.output
        REPORT["progress_updates"] = len(outcome.progress)
        REPORT["run_seconds"] = outcome.seconds
        REPORT["styled_inputs"] = outcome.styled_inputs
        spin(0.5)
        canvas = iface.mapCanvas()
        canvas.refreshAllLayers()
        spin(0.5)
        canvas.waitWhileRendering()
        spin(0.5)
        shot("desktop_result.png")
        finish(0)
    except Exception:
        REPORT["exception"] = traceback.format_exc()
        finish(2)


QTimer.singleShot(1500, main)
