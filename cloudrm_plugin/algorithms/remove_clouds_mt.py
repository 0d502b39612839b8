"""cloudrm:removecloudsmultitemporal — cloud-free image of the latest date of a time series."""

from __future__ import annotations

import re
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterString,
)

from .. import deps
from .base import CloudrmAlgorithm, FeedbackProgress


class RemoveCloudsMultiTemporalAlgorithm(CloudrmAlgorithm):
    """OPTICAL_SERIES (+ SAR_SERIES) → cloud-free OUTPUT on the latest optical raster's grid."""

    NAME = "removecloudsmultitemporal"
    OPTICAL_SERIES = "OPTICAL_SERIES"
    SAR_SERIES = "SAR_SERIES"
    METHOD = "METHOD"
    DATES = "DATES"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.add(QgsProcessingParameterMultipleLayers(
            self.OPTICAL_SERIES, self.tr("Optical time series (Sentinel-2 L1C, any order)"),
            layerType=QgsProcessing.TypeRaster,
        ))
        self.add(QgsProcessingParameterMultipleLayers(
            self.SAR_SERIES, self.tr("SAR time series (Sentinel-1 VV/VH in dB; CA-MTCR only)"),
            layerType=QgsProcessing.TypeRaster, optional=True,
        ))
        self.add(QgsProcessingParameterEnum(
            self.METHOD, self.tr("Method"), options=deps.api().method_names(temporal=True),
            defaultValue="least_cloudy", usesStaticStrings=True,
        ))
        self.add(
            QgsProcessingParameterString(
                self.DATES, self.tr("Acquisition dates (YYYY-MM-DD, comma-separated)"), optional=True
            ),
            advanced=True,
        )
        self.add_run_parameters("CA-MTCR checkpoint")

    def _layers(
        self, parameters: dict[str, Any], key: str, context: QgsProcessingContext
    ) -> tuple[list[str], list[str]]:
        paths, names = [], []
        for layer in self.parameterAsLayerList(parameters, key, context) or []:
            p, n = self.raster_path(layer, key)
            paths.append(p)
            names.append(n)
        return paths, names

    def processAlgorithm(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        api = self.require_engine()
        optical, optical_names = self._layers(parameters, self.OPTICAL_SERIES, context)
        sar, sar_names = self._layers(parameters, self.SAR_SERIES, context)
        if not optical:
            raise QgsProcessingException(f"{self.OPTICAL_SERIES}: no raster layers given")
        method = self.parameterAsEnumString(parameters, self.METHOD, context)
        dates_text = (self.parameterAsString(parameters, self.DATES, context) or "").strip()
        request = api.RunRequest(
            optical=optical, sar=sar, model=method, dates=[d for d in re.split(r"[,;\s]+", dates_text) if d] or None,
            optical_names=optical_names, sar_names=sar_names or None, **self.run_options(parameters, context),
        )
        with self.engine_errors():
            result = api.run(request, FeedbackProgress(feedback))
        target = str(result.target)
        target_name = optical_names[optical.index(target)] if target in optical else result.target.name
        self.style_outputs(context, result, f"{target_name} cloud-free ({method})")
        return self.report(result, feedback)
