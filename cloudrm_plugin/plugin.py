"""Plugin object. ``initProcessing`` never touches ``iface``, so qgis_process can load it.

Nothing heavy happens here or when the dialog opens: torch is imported in a worker thread
(see :mod:`.dialog`), never on QGIS's GUI thread.
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication

from .i18n import install_translator, remove_translator
from .provider import CloudrmProvider


class CloudrmPlugin:
    MENU = "cloudrm"

    def __init__(self, iface: Any) -> None:
        self.iface = iface  # None under qgis_process
        self.provider: CloudrmProvider | None = None
        self.action: Any = None
        self.dialog: Any = None
        # before any widget or algorithm is created, so their strings are translated
        self.translator = install_translator()

    @staticmethod
    def tr(text: str) -> str:
        return QCoreApplication.translate("CloudrmPlugin", text)

    def initProcessing(self) -> None:  # noqa: N802
        report_version_conflicts(None)
        if self.provider is None:
            provider = CloudrmProvider()
            # addProvider deletes the object and returns False when the id is taken (a second
            # instance of the plugin); keep no dangling reference then.
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        from .paths import icon_path

        # Raster ▸ cloudrm ▸ Remove clouds… and a toolbar button: the dialog (background QgsTask)
        self.action = QAction(QIcon(str(icon_path())), self.tr("Remove clouds…"), self.iface.mainWindow())
        self.action.setObjectName("cloudrmRemoveClouds")
        self.action.setToolTip(self.tr("cloudrm: remove clouds from an optical layer with a SAR layer"))
        self.action.triggered.connect(self.show_dialog)
        self.iface.addPluginToRasterMenu(self.MENU, self.action)
        self.iface.addToolBarIcon(self.action)
        from . import deps

        deps.offer_guided_install(self.iface)  # message-bar "Install…" when torch & co. are missing
        report_version_conflicts(self.iface)

    def show_dialog(self) -> None:
        """Open (or raise) the Remove clouds dialog; it is created on first use and shows at once
        (PyTorch and the checkpoint load in the background)."""
        if self.dialog is None:
            from .dialog import RemoveCloudsDialog

            self.dialog = RemoveCloudsDialog(self.iface, self.iface.mainWindow())
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()

    def unload(self) -> None:
        if self.action is not None and self.iface is not None:
            self.iface.removePluginRasterMenu(self.MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.dialog is not None:
            self.dialog.cleanup()
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        remove_translator(self.translator)
        self.translator = None


_LOGGED: set[str] = set()
_SHOWN: set[str] = set()


def report_version_conflicts(iface: Any) -> list[str]:
    """At plugin load: a package cloudrm brings that QGIS already loaded from elsewhere is one
    clear line (QGIS log; with ``iface`` also the message bar), not an ImportError at run time.

    Each line is logged once and shown once per session (initProcessing and initGui both call
    this). Returns the conflict lines.
    """
    from qgis.core import Qgis, QgsMessageLog

    from . import deps

    lines = deps.version_conflicts()
    for line in lines:
        if line not in _LOGGED:
            _LOGGED.add(line)
            QgsMessageLog.logMessage(line, "cloudrm", Qgis.Critical)
        if iface is not None and line not in _SHOWN and iface.messageBar() is not None:
            _SHOWN.add(line)
            iface.messageBar().pushMessage("cloudrm", line, Qgis.Critical, 0)
    return lines
