"""Run in a fresh Python (torch not yet imported): open the Remove clouds dialog as QGIS does and
report, as JSON on stdout, when it was shown, on which threads torch was imported, how long the
GUI thread stalled while the models loaded, and (with --run) a small run through the dialog.

Usage: python tests/plugin/gui_probe.py OPTICAL.tif SAR.tif OUT_DIR [--run] [--plugins DIR]

``--plugins DIR`` imports the plugin installed in DIR (a QGIS profile's python/plugins) instead
of the repository's; run with QGIS's own Python (/usr/bin/python3) that is QGIS desktop's
environment: QGIS's numpy and GDAL first, torch from the folders the plugin appends.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = sys.argv[sys.argv.index("--plugins") + 1] if "--plugins" in sys.argv else str(REPO)
sys.path.insert(0, PLUGINS)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch_imports  # noqa: E402  (this script's folder is on sys.path)

T0 = time.monotonic()
IMPORTS = torch_imports.install(T0)




def main() -> int:
    optical, sar, out_dir = sys.argv[1:4]
    run = "--run" in sys.argv
    if os.environ.get("PROBE_DUMP"):
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["PROBE_DUMP"]), exit=True)
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QEvent, QObject, QTimer

    app = QgsApplication([], True)
    app.initQgis()
    from qgis.PyQt.QtCore import QSettings

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, out_dir)  # remembered choices stay here
    report: dict = {"torch_before_app": "torch" in sys.modules}

    import cloudrm_plugin

    plugin = cloudrm_plugin.classFactory(None)  # as QGIS loads a plugin (appends its package folders)
    plugin.initProcessing()  # what qgis_process and QGIS do at start-up
    report["plugin_dir"] = str(Path(cloudrm_plugin.__file__).parent)
    import numpy

    report["numpy"] = numpy.__version__
    report["torch_after_provider"] = "torch" in sys.modules
    report["provider"] = plugin.provider is not None

    project = QgsProject.instance()
    project.addMapLayers([QgsRasterLayer(optical, "S2 cloudy"), QgsRasterLayer(sar, "S1 VV VH")])

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.monotonic() - T0))
    timer.start()

    shown: dict = {}

    class ShowWatcher(QObject):
        def eventFilter(self, obj, event):
            if event.type() in (QEvent.Show, QEvent.Paint, QEvent.Expose) and "t" not in shown:
                shown["t"] = time.monotonic() - T0
                shown["event"] = int(event.type())
            return False

    from cloudrm_plugin.dialog import RemoveCloudsDialog

    t_open = time.monotonic() - T0
    dialog = RemoveCloudsDialog(None)
    watcher = ShowWatcher()
    dialog.installEventFilter(watcher)
    dialog.show()
    t_show_returned = time.monotonic() - T0
    start = time.monotonic()
    while (dialog.loading or dialog.worker.pending) and time.monotonic() - start < 120:
        app.processEvents()
        time.sleep(0.002)
    t_loaded = time.monotonic() - T0
    for _ in range(20):
        app.processEvents()
        time.sleep(0.005)
    window = [t for t in ticks if t_show_returned <= t <= t_loaded + 0.05]
    gaps = [b - a for a, b in itertools.pairwise(window)]
    report.update({
        "open_s": t_open,
        "shown_s": shown.get("t"),
        "show_returned_s": t_show_returned,
        "loaded_s": t_loaded,
        "load_duration_s": t_loaded - t_show_returned,
        "max_gui_stall_s": max(gaps) if gaps else None,
        "ticks_while_loading": len(window),
        "checkpoint_text": dialog.checkpoint_info.text(),
        "run_enabled": dialog.run_button.isEnabled(),
        "devices": [dialog.device_combo.itemData(i) for i in range(dialog.device_combo.count())],
        "loader_thread": dialog.worker.thread_name,
    })
    if run:
        dialog.tile_spin.setValue(32)
        dialog.overlap_spin.setValue(8)
        idx = dialog.device_combo.findData("cpu")
        dialog.device_combo.setCurrentIndex(idx)
        out = Path(out_dir) / "probe_out.tif"
        out.unlink(missing_ok=True)  # an existing output would be asked about
        dialog.output_widget.setFilePath(str(out))
        task = dialog.start()
        report["run_started"] = task is not None
        report["run_message"] = dialog.message.text()
        if task is not None:
            outcome = task.outcome
            start = time.monotonic()
            while not outcome.done and time.monotonic() - start < 300:
                app.processEvents()
                time.sleep(0.005)
            report["run_ok"] = outcome.ok
            report["run_error"] = outcome.error
            report["run_output"] = outcome.output
            report["run_parameters"] = {k: v for k, v in task.plan.parameters.items() if k != "FILLED_MASK"}
            report["run_layers"] = {lyr.id(): lyr.source() for lyr in project.mapLayers().values()}
    report["torch_imports"] = IMPORTS
    report["torch_main_thread_imports"] = [r["module"] for r in IMPORTS if r["main"]]
    report["first_torch_import_s"] = IMPORTS[0]["t"] if IMPORTS else None
    dialog.cleanup()
    print("JSON:" + json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: the report is out, and QGIS teardown order is not under test


if __name__ == "__main__":
    sys.exit(main())
