"""The cloudrm Processing provider (id ``cloudrm``)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .paths import icon_path


class CloudrmProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "cloudrm"

    def name(self) -> str:
        return "cloudrm"

    def longName(self) -> str:  # noqa: N802
        return "cloudrm: SAR-optical cloud removal"

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]

    def loadAlgorithms(self) -> None:  # noqa: N802
        for cls in ALGORITHMS:
            self.addAlgorithm(cls())
