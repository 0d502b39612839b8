"""Plugin object. ``initProcessing`` never touches ``iface``, so qgis_process can load it."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import CloudrmProvider


class CloudrmPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface  # None under qgis_process
        self.provider: CloudrmProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802
        if self.provider is None:
            self.provider = CloudrmProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
