"""cloudrm:cloudmask — cloud (and shadow) mask of a Sentinel-2 L1C scene."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .. import deps
from .base import CloudrmAlgorithm, FeedbackProgress

# Kept here (not read from engine.masks) so the algorithm registers even when the engine's
# dependencies are missing; a test checks both lists agree.
METHODS = ("s2cloudless", "cafr_rule")


class CloudMaskAlgorithm(CloudrmAlgorithm):
    """Cloud mask: INPUT (S2 L1C, 13 bands) → uint8 OUTPUT (0 clear, 1 cloud, 2 shadow, 255 nodata)."""

    NAME = "cloudmask"
    INPUT = "INPUT"
    METHOD = "METHOD"
    RESOLUTION = "RESOLUTION"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Sentinel-2 L1C image (13 bands)")))
        self.add(
            QgsProcessingParameterEnum(
                self.METHOD, self.tr("Method"), options=list(METHODS), defaultValue=METHODS[0], usesStaticStrings=True
            )
        )
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
        method = self.parameterAsEnumString(parameters, self.METHOD, context) or METHODS[0]
        missing = self._missing(method)
        if missing:
            return False, f"Method {method} cannot run: " + deps.install_help(missing)
        return True, ""

    def processAlgorithm(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        method = self.parameterAsEnumString(parameters, self.METHOD, context) or METHODS[0]
        missing = self._missing(method)
        if missing:  # also when called without checkParameterValues (e.g. from a script)
            raise QgsProcessingException(f"Method {method} cannot run: " + deps.install_help(missing))
        masks = deps.engine_module("masks")
        source, name = self.raster_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), self.INPUT)
        resolution = self.parameterAsDouble(parameters, self.RESOLUTION, context) or None
        out = self.tif_output(parameters, self.OUTPUT, context)
        with self.engine_errors():
            result = masks.cloud_mask_scene(
                source, out, method=method, progress=FeedbackProgress(feedback), name=name, resolution=resolution
            )
        feedback.pushInfo(
            f"Wrote {result.output} in {result.seconds:.1f} s ({result.blocks} blocks, {method}): "
            f"cloud {100 * result.cloud_fraction:.1f} %, shadow {100 * result.shadow_fraction:.1f} % of valid pixels"
        )
        if context.willLoadLayerOnCompletion(out):
            context.layerToLoadOnCompletionDetails(out).name = f"{name} cloud mask ({method})"
        return {self.OUTPUT: out}
