"""Shared helpers and fixtures of the desktop (dialog, task, Processing dialog) tests.

Test modules import the fixtures they use from here. Every dialog test runs on a temporary
QGIS settings file (:func:`settings_profile`), so remembered choices never leak between tests
or into the user's profile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QSettings, QSize, QTimer
from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter
from qgis.PyQt.QtWidgets import QApplication, QMessageBox

from tests.conftest import REPO, crop_sample

SHOTS = REPO / "out" / "screenshots"


def wait_until(predicate: Callable[[], bool], timeout: float = 180.0) -> int:
    """Run the Qt event loop until ``predicate()``; returns the loop iterations (responsiveness)."""
    t0, spins = time.time(), 0
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s")
        QgsApplication.processEvents()
        time.sleep(0.005)
        spins += 1
    return spins


def settle(seconds: float = 0.05) -> None:
    """Let queued events (layout requests, queued signals) run."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        QgsApplication.processEvents()
        time.sleep(0.005)


def distinct_colours(png: Path) -> int:
    img = QImage(str(png))
    assert not img.isNull() and img.width() > 50 and img.height() > 50, png
    step = max(1, min(img.width(), img.height()) // 40)
    return len({img.pixel(x, y) for x in range(0, img.width(), step) for y in range(0, img.height(), step)})


def render(layers: list[QgsRasterLayer], width: int, height: int | None = None,
           extent: QgsRectangle | None = None) -> QImage:
    """A map image of ``layers`` (first = on top) over ``extent`` (default: the last layer's)."""
    ms = QgsMapSettings()
    ms.setLayers(layers)
    ms.setDestinationCrs(layers[-1].crs())
    ms.setExtent(extent or layers[-1].extent())
    ms.setOutputSize(QSize(width, height or width))
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


def answer_next_question(button_text: str, seen: list[str] | None = None, timeout_ms: int = 10000) -> None:
    """Click the button labelled ``button_text`` in the next modal message box (e.g. the overwrite
    question), as a user would; its text is appended to ``seen``."""
    deadline = time.time() + timeout_ms / 1000

    def poll() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            if seen is not None:
                seen.append(box.text())
            for button in box.buttons():
                if button.text() == button_text:
                    button.click()
                    return
            raise AssertionError(f"no button {button_text!r} in {[b.text() for b in box.buttons()]}")
        if time.time() < deadline:
            QTimer.singleShot(20, poll)

    QTimer.singleShot(20, poll)


def messages(iface, level) -> list[str]:
    return iface.messageBar().get_messages(level)


@pytest.fixture
def settings_profile(tmp_path_factory):
    """QgsSettings() read and write a fresh settings file for the test (a temporary profile)."""
    folder = tmp_path_factory.mktemp("profile")
    previous = str(Path(QgsSettings().fileName()).parent)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(folder))
    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(folder))
    assert Path(QgsSettings().fileName()).parent == folder
    yield folder
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, previous)
    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, previous)


@pytest.fixture
def scene(qgis_iface, qgis_new_project, provider, settings_profile, tmp_path):
    """A project with a cropped sample S2 (13 bands), S1 (2 bands) and a vector layer."""
    opt, sar = crop_sample(tmp_path, 96, 96, 64, tag="cloudy")  # partly cloudy: about half is filled
    project = QgsProject.instance()
    s2 = QgsRasterLayer(str(opt), "S2 cloudy")
    s1 = QgsRasterLayer(str(sar), "S1 VV VH")
    pts = QgsVectorLayer("Point?crs=EPSG:32631", "field points", "memory")
    assert s2.isValid() and s1.isValid() and pts.isValid()
    project.addMapLayers([s2, s1, pts])
    yield {"s2": s2, "s1": s1, "vector": pts, "opt": opt, "sar": sar, "tmp": tmp_path}
    project.removeAllMapLayers()


def open_dialog(iface, show: bool = True):
    """A Remove clouds dialog, shown and done loading (checkpoint metadata, devices)."""
    from cloudrm_plugin.dialog import RemoveCloudsDialog

    dlg = RemoveCloudsDialog(iface)
    if show:
        dlg.show()
        wait_until(lambda: not dlg.loading and not dlg.worker.pending, timeout=120)
        settle()
    return dlg


def close_dialog(dlg) -> None:
    dlg.cleanup()
    dlg.close()
    sip.delete(dlg)  # now, not at some later garbage collection (the layers are removed next)


@pytest.fixture
def dialog(qgis_iface, scene):
    dlg = open_dialog(qgis_iface)
    yield dlg
    close_dialog(dlg)


def select(combo, data) -> None:
    """Choose the entry whose data is ``data`` in a combo box, as a user click would."""
    idx = combo.findData(data)
    assert idx >= 0, (data, [combo.itemData(i) for i in range(combo.count())])
    combo.setCurrentIndex(idx)
    settle(0.01)
