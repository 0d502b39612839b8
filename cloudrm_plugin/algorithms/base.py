"""Shared plumbing of cloudrm algorithms: help, dependency check, feedback, errors, and the
run parameters both remove-clouds algorithms declare (one declaration, one reading)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .. import deps, widgets
from ..layers import style_filled_mask, true_colour_post_processor
from ..paths import icon_path

HELP_FILE = Path(__file__).resolve().parent.parent / "help" / "algorithms.yaml"


@cache
def help_texts() -> dict[str, Any]:
    return yaml.safe_load(HELP_FILE.read_text(encoding="utf-8"))


class FeedbackProgress:
    """The engine's Progress protocol on top of a QgsProcessingFeedback."""

    def __init__(self, feedback: QgsProcessingFeedback | None) -> None:
        self.feedback = feedback or QgsProcessingFeedback()

    def update(self, done: float, total: int) -> None:
        self.feedback.setProgress(100.0 * done / max(total, 1))

    def is_canceled(self) -> bool:
        return self.feedback.isCanceled()

    def info(self, message: str) -> None:
        self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        self.feedback.pushWarning(message)


class CloudrmAlgorithm(QgsProcessingAlgorithm):
    """Base class: name-keyed help from help/algorithms.yaml, icon, group, helpers."""

    NAME = ""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("cloudrm", text)

    def createInstance(self) -> QgsProcessingAlgorithm:  # noqa: N802
        return self.__class__()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802
        return self.tr(help_texts()[self.NAME]["display_name"])

    def group(self) -> str:
        return self.tr("Cloud removal")

    def groupId(self) -> str:  # noqa: N802
        return "cloudremoval"

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def shortHelpString(self) -> str:  # noqa: N802
        h = help_texts()[self.NAME]
        rows = "".join(f"<li><b>{k}</b>: {v}</li>" for k, v in h["parameters"].items())
        return f"<p>{h['short_help']}</p><ul>{rows}</ul>"

    def param_help(self, key: str) -> str:
        return help_texts()[self.NAME]["parameters"][key]

    def add(self, param: Any, advanced: bool = False) -> None:
        """addParameter with its help text (and the Advanced flag)."""
        param.setHelp(self.param_help(param.name()))
        if advanced:
            param.setFlags(param.flags() | param.FlagAdvanced)
        self.addParameter(param)

    def require_engine(self) -> Any:
        """The engine's api module, or a QgsProcessingException saying what to install."""
        missing = deps.missing_dependencies()
        if missing:
            raise QgsProcessingException(
                f"cloudrm cannot run: Python package(s) {', '.join(missing)} missing in QGIS's Python.\n"
                + deps.INSTALL_HELP
            )
        conflicts = deps.version_conflicts()
        if conflicts:  # torch would fail to import, or misbehave, with these copies
            raise QgsProcessingException("\n".join(conflicts))
        return deps.api()

    def raster_path(self, layer: QgsRasterLayer | None, key: str) -> tuple[str, str]:
        """(file path, layer name) of a raster parameter; clear error if it is not a local file."""
        if layer is None:
            raise QgsProcessingException(f"{key}: no raster layer given")
        source = layer.source()
        if layer.providerType() != "gdal" or not Path(source).is_file():
            raise QgsProcessingException(
                f"{key} layer '{layer.name()}' is not a local raster file (source: {source}); "
                "save it as a GeoTIFF first (Raster ▸ Conversion ▸ Translate)"
            )
        return source, layer.name()

    def tif_output(self, parameters: dict[str, Any], key: str, context: QgsProcessingContext) -> str:
        """The raster destination ``key``; a clear error unless it is a GeoTIFF."""
        out = self.parameterAsOutputLayer(parameters, key, context)
        if Path(out).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"{key} must be a GeoTIFF (.tif), got {out}")
        return out

    @staticmethod
    @contextlib.contextmanager
    def engine_errors() -> Iterator[None]:
        """Engine errors (bad input, cancel) become QgsProcessingExceptions with their message."""
        api = deps.api()
        try:
            yield
        except api.Canceled as exc:
            raise QgsProcessingException(f"Canceled: {exc}") from exc
        except api.CloudrmError as exc:
            raise QgsProcessingException(str(exc)) from exc

    # ---- the run parameters of both remove-clouds algorithms --------------------------------
    CHECKPOINT = "CHECKPOINT"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    PRECISION = "PRECISION"
    KEEP_CLEAR = "KEEP_CLEAR"
    MASK_METHOD = "MASK_METHOD"
    MASK_BUFFER = "MASK_BUFFER"
    MASK = "MASK"
    FILLED_MASK = "FILLED_MASK"
    OUTPUT = "OUTPUT"

    def add_run_parameters(self, checkpoint_label: str) -> None:
        """CHECKPOINT … FILLED_MASK, OUTPUT: the options of an :class:`engine.api.RunRequest`."""
        api = deps.api()
        self.add(QgsProcessingParameterFile(
            self.CHECKPOINT, self.tr(checkpoint_label), fileFilter="PyTorch checkpoint (*.pt *.pth)", optional=True,
        ))
        device = QgsProcessingParameterString(self.DEVICE, self.tr("Device"), defaultValue="auto")
        device.setMetadata(widgets.device_metadata())  # free text; the dialog lists the devices torch sees
        self.add(device)
        self.add(QgsProcessingParameterNumber(
            self.TILE_SIZE, self.tr("Tile size (px; 0 = the model's default)"), QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0, maxValue=4096,
        ))
        self.add(QgsProcessingParameterNumber(
            self.OVERLAP, self.tr("Tile overlap (px; 0 = the model's default)"), QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0, maxValue=2048,
        ))
        self.add(QgsProcessingParameterNumber(
            self.BATCH_SIZE, self.tr("Tiles per batch (0 = automatic)"), QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0, maxValue=256,
        ), advanced=True)
        self.add(QgsProcessingParameterEnum(
            self.PRECISION, self.tr("Precision"), options=list(api.PRECISIONS), defaultValue="auto",
            usesStaticStrings=True,
        ), advanced=True)
        self.add(QgsProcessingParameterBoolean(
            self.KEEP_CLEAR, self.tr("Keep clear pixels (model output only under clouds and shadows)"),
            defaultValue=True,
        ))
        self.add(QgsProcessingParameterEnum(
            self.MASK_METHOD, self.tr("Cloud/shadow mask for keep-clear"), options=list(api.MASK_METHODS),
            defaultValue=api.DEFAULT_MASK_METHOD, usesStaticStrings=True,
        ))
        self.add(QgsProcessingParameterNumber(
            self.MASK_BUFFER, self.tr("Mask buffer (m)"), QgsProcessingParameterNumber.Double,
            defaultValue=api.DEFAULT_MASK_BUFFER_M, minValue=0.0, maxValue=10000.0,
        ))
        self.add(QgsProcessingParameterRasterLayer(
            self.MASK, self.tr("Mask raster (non-zero = replace; instead of the mask method)"), optional=True,
        ))
        self.add(QgsProcessingParameterRasterDestination(
            self.FILLED_MASK, self.tr("Filled-pixels mask"), optional=True, createByDefault=False,
        ))
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Cloud-free image")))

    def run_options(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        """The :class:`engine.api.RunRequest` fields of the run parameters (layers as file paths)."""
        mask_layer = self.parameterAsRasterLayer(parameters, self.MASK, context)
        filled = None
        if parameters.get(self.FILLED_MASK) not in (None, ""):
            filled = self.tif_output(parameters, self.FILLED_MASK, context) or None
        return {
            "checkpoint": self.parameterAsFile(parameters, self.CHECKPOINT, context) or None,
            "device": self.parameterAsString(parameters, self.DEVICE, context) or "auto",
            "tile_size": self.parameterAsInt(parameters, self.TILE_SIZE, context),
            "overlap": self.parameterAsInt(parameters, self.OVERLAP, context),
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "precision": self.parameterAsEnumString(parameters, self.PRECISION, context) or "auto",
            "keep_clear": self.parameterAsBoolean(parameters, self.KEEP_CLEAR, context),
            "mask_method": self.parameterAsEnumString(parameters, self.MASK_METHOD, context)
            or deps.api().DEFAULT_MASK_METHOD,
            "mask_buffer_m": self.parameterAsDouble(parameters, self.MASK_BUFFER, context),
            "mask": self.raster_path(mask_layer, self.MASK)[0] if mask_layer is not None else None,
            "filled_mask": filled,
            "output": self.tif_output(parameters, self.OUTPUT, context),
        }

    def report(self, result: Any, feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Log what the run did; the algorithm's result dict (OUTPUT, and FILLED_MASK when written)."""
        kept = "" if result.filled_fraction is None else f", {100 * result.filled_fraction:.1f} % of the pixels filled"
        skipped = f", {result.skipped_tiles} clear tiles skipped" if result.skipped_tiles else ""
        feedback.pushInfo(
            f"Wrote {result.output} in {result.seconds:.1f} s ({result.model}, {result.tiles} tiles of "
            f"{result.tile_size} px on {result.device}, batch {result.batch_size}, {result.precision}{skipped}{kept})"
        )
        out = {self.OUTPUT: str(result.output)}
        if result.filled_mask is not None:
            out[self.FILLED_MASK] = str(result.filled_mask)
        return out

    def style_outputs(self, context: QgsProcessingContext, result: Any, name: str) -> None:
        """Name the loaded result layers and style them (true colour; the filled mask as flags)."""
        info = deps.api().method_info(result.model)
        out = str(result.output)
        if context.willLoadLayerOnCompletion(out):
            details = context.layerToLoadOnCompletionDetails(out)
            details.name = name
            details.setPostProcessor(true_colour_post_processor(out, info.output_bands, info.rgb_bands))
        mask = str(result.filled_mask) if result.filled_mask is not None else None
        if mask is not None and context.willLoadLayerOnCompletion(mask):
            details = context.layerToLoadOnCompletionDetails(mask)
            details.name = f"{name}: filled pixels"
            _KEEP[mask] = _FilledMask()
            details.setPostProcessor(_KEEP[mask])


class _FilledMask(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded filled-pixels mask (0 transparent, 1 coloured)."""

    def postProcessLayer(  # noqa: N802
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer):
            style_filled_mask(layer)


# Processing keeps only a raw pointer to post-processors: hold a Python reference per output.
_KEEP: dict[str, QgsProcessingLayerPostProcessorInterface] = {}
