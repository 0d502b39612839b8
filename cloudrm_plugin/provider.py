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
        # The shipped graphical-modeler chains (resources/models/*.model3) appear in the toolbox too.
        from qgis.core import QgsProcessingModelAlgorithm

        from .paths import resources_dir

        for path in sorted((resources_dir() / "models").glob("*.model3")):
            model = QgsProcessingModelAlgorithm()
            if model.fromFile(str(path)):
                self.addAlgorithm(model)
