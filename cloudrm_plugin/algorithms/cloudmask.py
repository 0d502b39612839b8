"""cloudrm:cloudmask — cloud (and shadow) mask of a Sentinel-2 L1C scene."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .. import deps
from .base import CloudrmAlgorithm, FeedbackProgress


class CloudMaskAlgorithm(CloudrmAlgorithm):
    """Cloud mask: INPUT (S2 L1C, 13 bands) → uint8 OUTPUT (0 clear, 1 cloud, 2 shadow, 255 nodata)."""

    NAME = "cloudmask"
    INPUT = "INPUT"
    METHOD = "METHOD"
    SHADOWS = "SHADOWS"
    RESOLUTION = "RESOLUTION"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        api = deps.api()
        self.add(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Sentinel-2 L1C image (13 bands)")))
        self.add(
            QgsProcessingParameterEnum(
                self.METHOD, self.tr("Method"), options=list(api.MASK_METHODS), defaultValue=api.DEFAULT_MASK_METHOD,
                usesStaticStrings=True,
            )
        )
        self.add(QgsProcessingParameterBoolean(self.SHADOWS, self.tr("Mark cloud shadows"), defaultValue=True))
        self.add(
            QgsProcessingParameterNumber(
                self.RESOLUTION, self.tr("s2cloudless processing resolution (m; 0 = the image's own)"),
                QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0, maxValue=1000.0,
            ),
            advanced=True,
        )
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Cloud mask")))

    def _missing(self, method: str) -> list[str]:
        return deps.missing_dependencies(deps.METHOD_REQUIREMENTS[method])

    def checkParameterValues(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        method = self.parameterAsEnumString(parameters, self.METHOD, context) or deps.api().DEFAULT_MASK_METHOD
        missing = self._missing(method)
        if missing:
            return False, f"Method {method} cannot run: " + deps.install_help(missing)
        return True, ""

    def processAlgorithm(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        api = deps.api()
        method = self.parameterAsEnumString(parameters, self.METHOD, context) or api.DEFAULT_MASK_METHOD
        missing = self._missing(method)
        if missing:  # also when called without checkParameterValues (e.g. from a script)
            raise QgsProcessingException(f"Method {method} cannot run: " + deps.install_help(missing))
        source, name = self.raster_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), self.INPUT)
        resolution = self.parameterAsDouble(parameters, self.RESOLUTION, context) or None
        shadows = self.parameterAsBoolean(parameters, self.SHADOWS, context)
        out = self.tif_output(parameters, self.OUTPUT, context)
        with self.engine_errors():
            result = api.cloud_mask(
                source, out, method=method, progress=FeedbackProgress(feedback), name=name, resolution=resolution,
                shadows=shadows,
            )
        feedback.pushInfo(
            f"Wrote {result.output} in {result.seconds:.1f} s ({result.blocks} blocks, {method}): "
            f"cloud {100 * result.cloud_fraction:.1f} %, shadow {100 * result.shadow_fraction:.1f} % of valid pixels"
        )
        if context.willLoadLayerOnCompletion(out):
            context.layerToLoadOnCompletionDetails(out).name = f"{name} cloud mask ({method})"
        return {self.OUTPUT: out}
