"""Widgets of the cloudrm algorithms in QGIS's Processing dialog (toolbox ▸ cloudrm ▸ …).

QGIS's default raster-layer widget starts on the *active* layer, so OPTICAL and SAR both open
on whatever is selected in the layer tree. :class:`SuitableRasterWidgetWrapper` opens each on a
layer with a band count the parameter wants (13-band optical, 2-band SAR), the active layer
first when it fits. :class:`DeviceWidgetWrapper` keeps DEVICE a free-text string (what
``qgis_process`` passes) but offers the devices torch sees, queried in a worker thread when the
dialog opens — never when the provider loads, never on the GUI thread — and lists them in
its tooltip.

Both only change the standard algorithm dialog: for the batch dialog and the graphical modeler
they return exactly the widget QGIS would build without them. An algorithm attaches them with
``param.setMetadata(...)`` and the dicts from :func:`raster_metadata` / :func:`device_metadata`
(a dotted class path: this module is imported only when a dialog builds its widgets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qgis.core import QgsProcessingParameterDefinition, QgsProject, QgsRasterLayer
from qgis.gui import QgsAbstractProcessingParameterWidgetWrapper, QgsProcessingGui
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import QComboBox, QDialog, QWidget

OPTICAL_BAND_COUNTS = (13, 4, 3)
"""Optical layers a cloudrm model takes, most wanted first: Sentinel-2 L1C, PlanetScope, RGB."""
SAR_BAND_COUNTS = (2,)
"""Sentinel-1 VV, VH."""


def _tr(text: str) -> str:
    return QCoreApplication.translate("cloudrm", text)


def raster_metadata(band_counts: Sequence[int]) -> dict[str, Any]:
    """Metadata for a raster-layer parameter whose dialog widget opens on a layer with one of
    ``band_counts`` bands (in order of preference)."""
    return {"widget_wrapper": {"class": f"{__name__}.SuitableRasterWidgetWrapper",
                               "band_counts": [int(n) for n in band_counts]}}


def device_metadata() -> dict[str, Any]:
    """Metadata for the DEVICE string parameter: an editable list of the devices torch sees."""
    return {"widget_wrapper": {"class": f"{__name__}.DeviceWidgetWrapper"}}


def suitable_layer(
    band_counts: Sequence[int], project: QgsProject | None = None, active: Any = None
) -> QgsRasterLayer | None:
    """The raster layer to propose: ``active`` if its band count is wanted, else the project's
    first layer (layer-tree order) with the most wanted band count; None if none fits."""
    project = project or QgsProject.instance()
    wanted = [int(n) for n in band_counts]
    if isinstance(active, QgsRasterLayer) and active.bandCount() in wanted:
        return active
    order = [node.layer() for node in project.layerTreeRoot().findLayers()]
    order += [lyr for lyr in project.mapLayers().values() if lyr not in order]
    rasters = [lyr for lyr in order if isinstance(lyr, QgsRasterLayer) and lyr.isValid()]
    for n in wanted:
        for lyr in rasters:
            if lyr.bandCount() == n:
                return lyr
    return None


def _dialog_type(dialog: Any) -> int:
    from processing.gui.wrappers import dialogTypes

    return int(dialogTypes.get(dialog.__class__.__name__, QgsProcessingGui.Standard))


def _default_wrapper(param: QgsProcessingParameterDefinition, dialog: Any) -> Any:
    """The wrapper Processing builds for ``param`` when no metadata asks for another
    (processing.gui.wrappers.WidgetWrapperFactory.create_wrapper, without the metadata branch)."""
    from qgis.gui import QgsGui

    registry = QgsGui.processingGuiRegistry()
    if dialog.__class__.__name__ == "ModelerParametersDialog":
        wrapper = registry.createModelerParameterWidget(dialog.model, dialog.childId, param, dialog.context)
    else:
        wrapper = registry.createParameterWidgetWrapper(param, _dialog_type(dialog))
    if wrapper is not None:
        wrapper.setDialog(dialog)
    return wrapper


def _container(widget: QWidget) -> QWidget:
    """``widget`` inside a plain container. sip invalidates the Python object that a Python
    ``createWidget`` returns to C++ (QGIS gets a fresh wrapper); a child of the returned widget
    keeps its Python object, so the wrapper can still talk to it."""
    from qgis.PyQt.QtWidgets import QHBoxLayout

    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(widget)
    return box


def _active_layer() -> Any:
    try:
        from qgis.utils import iface
    except ImportError:
        return None
    return iface.activeLayer() if iface is not None else None


class SuitableRasterWidgetWrapper(QgsAbstractProcessingParameterWidgetWrapper):
    """Standard dialog: QGIS's raster-layer combo box, opened on a layer with a wanted band count."""

    def __new__(cls, param: QgsProcessingParameterDefinition, dialog: Any, row: int = 0, col: int = 0,
                **kwargs: Any) -> Any:
        if _dialog_type(dialog) != QgsProcessingGui.Standard:
            return _default_wrapper(param, dialog)  # batch and modeler: QGIS's own widget
        return super().__new__(cls)

    def __init__(self, param: QgsProcessingParameterDefinition, dialog: Any, row: int = 0, col: int = 0,
                 band_counts: Sequence[int] = OPTICAL_BAND_COUNTS, **kwargs: Any) -> None:
        super().__init__(param, QgsProcessingGui.Standard)
        if isinstance(dialog, QDialog):
            self.setDialog(dialog)
        self.band_counts = [int(n) for n in band_counts]
        self.combo: Any = None

    def createWidget(self) -> QWidget:  # noqa: N802
        from qgis.gui import QgsProcessingMapLayerComboBox

        self.combo = QgsProcessingMapLayerComboBox(self.parameterDefinition())
        self.combo.setToolTip(self.parameterDefinition().toolTip())
        self.combo.valueChanged.connect(lambda: self.widgetValueHasChanged.emit(self))
        return _container(self.combo)

    def setWidgetValue(self, value: Any, context: Any) -> None:  # noqa: N802
        # no value (the parameter has no default): a suitable layer, not the selected one
        if value is None or value == "" or (hasattr(value, "isNull") and value.isNull()):
            layer = suitable_layer(self.band_counts, active=_active_layer())
            if layer is not None:
                self.combo.setLayer(layer)
                return
        self.combo.setValue(value, context)

    def widgetValue(self) -> Any:  # noqa: N802
        return self.combo.value()


_DEVICES: list[tuple[str, str]] | None = None
"""The devices torch sees, once queried (the query imports torch: at most once per session)."""
_CALLS: Any = None


def _background() -> Any:
    global _CALLS
    if _CALLS is None:
        from .tasks import BackgroundCalls

        _CALLS = BackgroundCalls("cloudrm-devices")
    return _CALLS


def query_devices(on_done: Any) -> None:
    """``on_done(devices)`` on the GUI thread with ``api.devices()``, computed in a worker thread
    (once; later calls get the cached list). Not called at provider load: only by widgets."""
    if _DEVICES is not None:
        on_done(_DEVICES)
        return

    def work() -> list[tuple[str, str]]:
        from . import deps

        return list(deps.api().devices())

    def done(result: Any, error: BaseException | None) -> None:
        global _DEVICES
        if error is None and result:
            _DEVICES = result
        on_done(_DEVICES or [("auto", "auto"), ("cpu", "cpu")])

    _background().call(work, done)


def device_help(devices: Sequence[tuple[str, str]]) -> str:
    """The DEVICE help line that names the devices torch sees."""
    return _tr("auto (CUDA when available, else CPU), cpu, or cuda:N. Devices torch sees here: {devices}").format(
        devices=", ".join(label for _, label in devices))


class DeviceWidgetWrapper(QgsAbstractProcessingParameterWidgetWrapper):
    """Standard dialog: an editable combo box (free text stays possible) listing auto, cpu and
    each CUDA device torch sees, filled in from a worker thread."""

    def __new__(cls, param: QgsProcessingParameterDefinition, dialog: Any, row: int = 0, col: int = 0,
                **kwargs: Any) -> Any:
        if _dialog_type(dialog) != QgsProcessingGui.Standard:
            return _default_wrapper(param, dialog)
        return super().__new__(cls)

    def __init__(self, param: QgsProcessingParameterDefinition, dialog: Any, row: int = 0, col: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(param, QgsProcessingGui.Standard)
        if isinstance(dialog, QDialog):
            self.setDialog(dialog)
        self.combo: Any = None
        self.devices: list[tuple[str, str]] = []

    def createWidget(self) -> QWidget:  # noqa: N802
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.addItem("auto", "auto")
        self.combo.addItem("cpu", "cpu")
        self.combo.setToolTip(_tr("auto (CUDA when available, else CPU), cpu, or cuda:N. Looking for CUDA devices…"))
        self.combo.currentTextChanged.connect(lambda _t: self.widgetValueHasChanged.emit(self))
        combo = self.combo

        def fill(devices: list[tuple[str, str]]) -> None:
            from qgis.PyQt import sip

            if sip.isdeleted(combo):  # the dialog was closed meanwhile
                return
            self.devices = list(devices)
            text = combo.currentText()
            for value, label in devices:
                if combo.findData(value) < 0:
                    combo.addItem(label, value)
            combo.setEditText(text)
            combo.setToolTip(device_help(devices))

        query_devices(fill)
        return _container(self.combo)

    def setWidgetValue(self, value: Any, context: Any) -> None:  # noqa: N802
        text = "auto" if value is None or (hasattr(value, "isNull") and value.isNull()) else str(value)
        idx = self.combo.findData(text)
        if idx >= 0:
            self.combo.setCurrentIndex(idx)
        else:
            self.combo.setEditText(text)

    def widgetValue(self) -> str:  # noqa: N802
        """The device string: an entry's value (``cuda:0`` for "cuda:0 – NVIDIA …"), else the text typed."""
        text = self.combo.currentText().strip()
        idx = self.combo.findText(text)
        if idx >= 0 and self.combo.itemData(idx):
            return str(self.combo.itemData(idx))
        return text or "auto"
