"""cloudrm:removeclouds — single-date SAR-optical cloud removal on a whole scene."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterRasterLayer,
)

from .. import deps, widgets
from .base import CloudrmAlgorithm, FeedbackProgress


class RemoveCloudsAlgorithm(CloudrmAlgorithm):
    """Remove clouds (SAR-optical): OPTICAL + SAR → cloud-free OUTPUT on the optical grid."""

    NAME = "removeclouds"
    OPTICAL = "OPTICAL"
    SAR = "SAR"
    MODEL = "MODEL"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        models = deps.api().method_names(temporal=False)  # model cards only: no torch needed
        optical = QgsProcessingParameterRasterLayer(
            self.OPTICAL, self.tr("Cloudy optical image (Sentinel-2 L1C; 4-band PlanetScope for align_cr)")
        )
        optical.setMetadata(widgets.raster_metadata(widgets.OPTICAL_BAND_COUNTS))  # opens on a 13/4/3-band layer
        self.add(optical)
        sar = QgsProcessingParameterRasterLayer(self.SAR, self.tr("SAR image (Sentinel-1, VV/VH in dB)"))
        sar.setMetadata(widgets.raster_metadata(widgets.SAR_BAND_COUNTS))  # opens on a 2-band layer
        self.add(sar)
        self.add(QgsProcessingParameterEnum(
            self.MODEL, self.tr("Model"), options=models,
            defaultValue="glf_cr" if "glf_cr" in models else models[0], usesStaticStrings=True,
        ))
        self.add_run_parameters("Checkpoint (empty = the model's bundled weights, if it has any)")

    def processAlgorithm(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        api = self.require_engine()
        optical, optical_name = self.raster_path(
            self.parameterAsRasterLayer(parameters, self.OPTICAL, context), self.OPTICAL
        )
        sar, sar_name = self.raster_path(self.parameterAsRasterLayer(parameters, self.SAR, context), self.SAR)
        model = self.parameterAsEnumString(parameters, self.MODEL, context)
        request = api.RunRequest(
            optical=[optical], sar=[sar], model=model, optical_names=[optical_name], sar_names=[sar_name],
            **self.run_options(parameters, context),
        )
        with self.engine_errors():
            result = api.run(request, FeedbackProgress(feedback))
        self.style_outputs(context, result, f"{optical_name} cloud-free ({model})")
        return self.report(result, feedback)
