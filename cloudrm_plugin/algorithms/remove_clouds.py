"""cloudrm:removeclouds — single-date SAR-optical cloud removal on a whole scene."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .. import deps
from ..layers import true_colour_post_processor
from .base import CloudrmAlgorithm, FeedbackProgress


class RemoveCloudsAlgorithm(CloudrmAlgorithm):
    """Remove clouds (SAR-optical): OPTICAL + SAR → cloud-free OUTPUT on the optical grid."""

    NAME = "removeclouds"
    OPTICAL = "OPTICAL"
    SAR = "SAR"
    MODEL = "MODEL"
    CHECKPOINT = "CHECKPOINT"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    MIXED_PRECISION = "MIXED_PRECISION"
    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        models = deps.engine_module("models").list_models(temporal=False)  # model cards only: no torch needed
        self.add(QgsProcessingParameterRasterLayer(self.OPTICAL, self.tr("Cloudy optical image (Sentinel-2 L1C; 4-band PlanetScope for align_cr)")))
        self.add(QgsProcessingParameterRasterLayer(self.SAR, self.tr("SAR image (Sentinel-1, VV/VH in dB)")))
        self.add(
            QgsProcessingParameterEnum(
                self.MODEL, self.tr("Model"), options=models,
                defaultValue="glf_cr" if "glf_cr" in models else models[0], usesStaticStrings=True,
            )
        )
        self.add(
            QgsProcessingParameterFile(
                self.CHECKPOINT, self.tr("Checkpoint (empty = bundled demo weights)"),
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
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, self.tr("Tiles per batch"), QgsProcessingParameterNumber.Integer,
                defaultValue=1, minValue=1, maxValue=256,
            ),
            advanced=True,
        )
        self.add(
            QgsProcessingParameterBoolean(self.MIXED_PRECISION, self.tr("Mixed precision (CUDA)"), defaultValue=False),
            advanced=True,
        )
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Cloud-free image")))

    def processAlgorithm(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        api = self.require_engine()
        optical, optical_name = self.raster_path(self.parameterAsRasterLayer(parameters, self.OPTICAL, context), self.OPTICAL)
        sar, sar_name = self.raster_path(self.parameterAsRasterLayer(parameters, self.SAR, context), self.SAR)
        model = self.parameterAsEnumString(parameters, self.MODEL, context)
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context) or None
        device = self.parameterAsString(parameters, self.DEVICE, context) or "auto"
        tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        batch_size = self.parameterAsInt(parameters, self.BATCH_SIZE, context)
        amp = self.parameterAsBoolean(parameters, self.MIXED_PRECISION, context)
        out = self.tif_output(parameters, self.OUTPUT, context)

        with self.engine_errors():
            result = api.predict_scene(
                optical, sar, out, model=model, checkpoint=checkpoint, device=device,
                tile_size=tile_size, overlap=overlap, batch_size=batch_size, amp=amp,
                progress=FeedbackProgress(feedback), optical_name=optical_name, sar_name=sar_name,
            )
        feedback.pushInfo(
            f"Wrote {result.output} in {result.seconds:.1f} s ({result.tiles} tiles on {result.device})"
        )
        if context.willLoadLayerOnCompletion(out):
            details = context.layerToLoadOnCompletionDetails(out)
            details.name = f"{optical_name} cloud-free ({model})"
            card = deps.engine_module("models").model_card(model)
            details.setPostProcessor(true_colour_post_processor(out, card.optical_bands, card.rgb_bands))
        return {self.OUTPUT: out}
