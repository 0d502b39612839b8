"""Shared plumbing of cloudrm algorithms: help, dependency check, feedback, errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .. import deps
from ..paths import icon_path

HELP_FILE = Path(__file__).resolve().parent.parent / "help" / "algorithms.yaml"


@cache
def help_texts() -> dict[str, Any]:
    return yaml.safe_load(HELP_FILE.read_text(encoding="utf-8"))


class FeedbackProgress:
    """The engine's Progress protocol on top of a QgsProcessingFeedback."""

    def __init__(self, feedback: QgsProcessingFeedback | None) -> None:
        self.feedback = feedback or QgsProcessingFeedback()

    def update(self, done: int, total: int) -> None:
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
        return deps.engine_module("api")

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
        errors = deps.engine_module("errors")
        try:
            yield
        except errors.Canceled as exc:
            raise QgsProcessingException(f"Canceled: {exc}") from exc
        except errors.CloudrmError as exc:
            raise QgsProcessingException(str(exc)) from exc
