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
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from .. import deps
from ..layers import true_colour_post_processor
from .base import CloudrmAlgorithm, FeedbackProgress

METHODS = ["ca_mtcr", "least_cloudy", "mosaicing"]


class RemoveCloudsMultiTemporalAlgorithm(CloudrmAlgorithm):
    """OPTICAL_SERIES (+ SAR_SERIES) → cloud-free OUTPUT on the latest optical raster's grid."""

    NAME = "removecloudsmultitemporal"
    OPTICAL_SERIES = "OPTICAL_SERIES"
    SAR_SERIES = "SAR_SERIES"
    METHOD = "METHOD"
    CHECKPOINT = "CHECKPOINT"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    DATES = "DATES"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.add(
            QgsProcessingParameterMultipleLayers(
                self.OPTICAL_SERIES, self.tr("Optical time series (Sentinel-2 L1C, any order)"),
                layerType=QgsProcessing.TypeRaster,
            )
        )
        self.add(
            QgsProcessingParameterMultipleLayers(
                self.SAR_SERIES, self.tr("SAR time series (Sentinel-1 VV/VH in dB; CA-MTCR only)"),
                layerType=QgsProcessing.TypeRaster, optional=True,
            )
        )
        self.add(
            QgsProcessingParameterEnum(
                self.METHOD, self.tr("Method"), options=METHODS, defaultValue="least_cloudy", usesStaticStrings=True,
            )
        )
        self.add(
            QgsProcessingParameterFile(
                self.CHECKPOINT, self.tr("CA-MTCR checkpoint"),
                fileFilter="PyTorch checkpoint (*.pt *.pth)", optional=True,
            )
        )
        self.add(QgsProcessingParameterString(self.DEVICE, self.tr("Device"), defaultValue="auto"))
        self.add(
            QgsProcessingParameterNumber(
                self.TILE_SIZE, self.tr("Tile size (px)"), QgsProcessingParameterNumber.Integer,
                defaultValue=256, minValue=16, maxValue=4096,
            )
        )
        self.add(
            QgsProcessingParameterNumber(
                self.OVERLAP, self.tr("Tile overlap (px)"), QgsProcessingParameterNumber.Integer,
                defaultValue=32, minValue=0, maxValue=2048,
            )
        )
        self.add(
            QgsProcessingParameterString(self.DATES, self.tr("Acquisition dates (YYYY-MM-DD, comma-separated)"),
                                         optional=True),
            advanced=True,
        )
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Cloud-free image")))

    def _layers(self, parameters: dict[str, Any], key: str, context: QgsProcessingContext) -> tuple[list[str], list[str]]:
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
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context) or None
        device = self.parameterAsString(parameters, self.DEVICE, context) or "auto"
        tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        dates_text = (self.parameterAsString(parameters, self.DATES, context) or "").strip()
        dates = [d for d in re.split(r"[,;\s]+", dates_text) if d] or None
        out = self.tif_output(parameters, self.OUTPUT, context)

        with self.engine_errors():
            result = api.predict_series(
                optical, sar or None, out, method=method, checkpoint=checkpoint, device=device,
                tile_size=tile_size, overlap=overlap, dates=dates, progress=FeedbackProgress(feedback),
                optical_names=optical_names, sar_names=sar_names or None,
            )
        feedback.pushInfo(
            f"Wrote {result.output} in {result.seconds:.1f} s ({method}, target {result.target.name}, "
            f"{result.tiles} tiles on {result.device})"
        )
        if context.willLoadLayerOnCompletion(out):
            details = context.layerToLoadOnCompletionDetails(out)
            target_name = optical_names[optical.index(str(result.target))] if str(result.target) in optical else result.target.name
            details.name = f"{target_name} cloud-free ({method})"
            bands = deps.engine_module("data.bands")
            details.setPostProcessor(true_colour_post_processor(out, bands.S2_BANDS, bands.S2_RGB))
        return {self.OUTPUT: out}
