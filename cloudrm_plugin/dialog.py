"""The "Remove clouds…" dialog: map layers and options → the cloudrm Processing algorithm in a QgsTask.

What a user can trust here:

- **No freeze.** The dialog shows at once: model lists and defaults come from the engine's
  ``api`` (plain Python). Importing torch, reading checkpoints and listing CUDA devices happen
  in a worker thread (:class:`tasks.BackgroundCalls`) after the dialog is shown; until the
  checkpoint is read the dialog says "loading models…" and Run waits.
- **One code path.** Run builds the parameters of ``cloudrm:removeclouds`` or
  ``cloudrm:removecloudsmultitemporal`` and runs that algorithm (:class:`tasks.AlgorithmTask`),
  so the dialog writes the same file as the toolbox or ``qgis_process`` with the same settings.
- **Validation before Run.** Every change re-checks everything (:meth:`problems`); Run stays
  disabled while anything is wrong and the reasons stay in the dialog, in full. Nothing stale:
  the messages are recomputed from the current choice each time.
- **Comparable styling.** The result is stretched with the optical input's statistics on clear
  pixels, and the input can be given the same stretch, so unchanged pixels look the same.
- **Housekeeping.** An existing output file is not overwritten without asking (or a new name is
  proposed); a layer already showing it is updated in place; new layers get unique names.
- **Remembered.** Model, device, tile size, keep-clear, output folder … persist in QgsSettings.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProcessingContext,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QRect, Qt, QTimer
from qgis.PyQt.QtGui import QBrush, QColor
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import deps
from .layers import layers_with_file, rgb_band_numbers, same_file
from .tasks import (
    AlgorithmTask,
    BackgroundCalls,
    RunPlan,
    TaskOutcome,
    create_algorithm,
    start_task,
    temporary_mask_path,
)

ERROR_STYLE = "color: #b00020;"
INFO_STYLE = "color: #555555;"
NO_WEIGHTS_COLOUR = QColor("#8a5a00")

SETTINGS_PREFIX = "cloudrm/dialog/"
SINGLE_ALGORITHM = "cloudrm:removeclouds"
TEMPORAL_ALGORITHM = "cloudrm:removecloudsmultitemporal"
DEFAULT_MODEL = "glf_cr"
DEFAULT_TEMPORAL_METHOD = "least_cloudy"
"""Multi-temporal opens on a method that runs without weights (ca_mtcr ships none)."""


def band_count(layer: QgsMapLayer | None) -> int | None:
    return layer.bandCount() if isinstance(layer, QgsRasterLayer) else None


def local_path(layer: QgsMapLayer | None) -> str | None:
    """The GeoTIFF/GDAL file behind ``layer``, or None when it is not a local file."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return None
    src = layer.source()
    return src if Path(src).is_file() else None


def short_list(names: list[str], keep: int = 6) -> str:
    """'B1, B2, B3' or, for long lists, 'B1, B2, B3 … B12'."""
    if len(names) <= keep:
        return ", ".join(names)
    return ", ".join(names[:3]) + " … " + names[-1]


def next_free_path(path: str | Path) -> str:
    """``name_2.tif``, ``name_3.tif``, … : the first that does not exist beside ``path``."""
    p = Path(path)
    n = 2
    while (cand := p.with_name(f"{p.stem}_{n}{p.suffix}")).exists():
        n += 1
    return str(cand)


class RemoveCloudsDialog(QDialog):
    """Remove clouds from map layers. Run (:meth:`start`) queues the task and hides the dialog."""

    def __init__(self, iface: Any = None, parent: QWidget | None = None, project: QgsProject | None = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.api = deps.api()  # model lists and defaults: no torch, no rasterio
        self.tasks: list[AlgorithmTask] = []
        self.last_outcome: TaskOutcome | None = None
        self._auto_output = ""  # the output path we proposed (follows the inputs until edited)
        self._ckpt: dict[tuple[str, str, float], tuple[bool, Any]] = {}  # key → (ok, info dict | message)
        self._ckpt_wanted: set[tuple[str, str, float]] = set()
        self._devices_loaded = False
        self._wanted_device = "auto"
        self._loading_started = False
        self._run_error = ""  # the last failed run's message, until the choice changes
        self._missing = deps.missing_dependencies()
        self.worker = BackgroundCalls("cloudrm-dialog-loader", self)
        self.setWindowTitle(self.tr("cloudrm – Remove clouds"))
        self.setMinimumWidth(680)
        self._building = True
        self._saved_models: dict[bool, str] = {False: DEFAULT_MODEL, True: DEFAULT_TEMPORAL_METHOD}
        self.output_dir = ""
        self._build()
        self._restore_settings()
        self._connect()
        self.refresh_layers()
        self.guess_layers()
        self._building = False
        self._model_changed()

    # ---- construction --------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)

        mode_row = QHBoxLayout()
        self.mode_single = QRadioButton(self.tr("Single date"))
        self.mode_single.setToolTip(self.tr("One optical and one SAR layer of the same date, a single-date model."))
        self.mode_temporal = QRadioButton(self.tr("Multi-temporal"))
        self.mode_temporal.setToolTip(self.tr(
            "Several dates of the same area: a cloud-free image of the latest date, from a temporal model "
            "or a weight-free composite of the other dates."))
        self.mode_single.setChecked(True)
        self.mode_group = QButtonGroup(self)
        self.mode_group.addButton(self.mode_single, 0)
        self.mode_group.addButton(self.mode_temporal, 1)
        mode_row.addWidget(QLabel(self.tr("Mode:")))
        mode_row.addWidget(self.mode_single)
        mode_row.addWidget(self.mode_temporal)
        mode_row.addStretch(1)
        root.addLayout(mode_row)

        # single date; hidden pages take no room (no gap after switching modes)
        self.single_page = QWidget()
        form = QFormLayout(self.single_page)
        form.setContentsMargins(0, 0, 0, 0)
        self.optical_combo = QgsMapLayerComboBox()
        self.optical_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.optical_combo.setToolTip(self.tr(
            "The cloudy optical image, a local raster file: Sentinel-2 L1C with 13 bands "
            "(DN = reflectance × 10000) for most models, PlanetScope 4 bands for align_cr, "
            "B4, B3, B2 for the RGB models."))
        self.optical_bands = QLabel()
        self.sar_combo = QgsMapLayerComboBox()
        self.sar_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.sar_combo.setToolTip(self.tr(
            "Sentinel-1 of the same date: 2 bands VV, VH, σ0 in dB. Another grid is resampled onto the optical one."))
        self.sar_bands = QLabel()
        form.addRow(self.tr("Cloudy optical"), self._with_label(self.optical_combo, self.optical_bands))
        form.addRow(self.tr("SAR (VV, VH in dB)"), self._with_label(self.sar_combo, self.sar_bands))
        root.addWidget(self.single_page)

        # multi-temporal
        self.temporal_page = QWidget()
        pv = QVBoxLayout(self.temporal_page)
        pv.setContentsMargins(0, 0, 0, 0)
        lists = QHBoxLayout()
        self.optical_list = QListWidget()
        self.optical_list.setToolTip(self.tr(
            "Check one optical layer per date (Sentinel-2 L1C, 13 bands). The latest date is the target."))
        self.sar_list = QListWidget()
        self.sar_list.setToolTip(self.tr(
            "ca_mtcr only: check one SAR layer per date, in the same date order. The baselines use no SAR."))
        for title, lst in ((self.tr("Optical layers, one per date"), self.optical_list),
                           (self.tr("SAR layers, same dates (ca_mtcr)"), self.sar_list)):
            box = QGroupBox(title)
            v = QVBoxLayout(box)
            lst.setMinimumHeight(110)
            v.addWidget(lst)
            lists.addWidget(box)
        pv.addLayout(lists)
        hint = QLabel(self.tr(
            "The dates are sorted by acquisition date (file metadata, or YYYYMMDD in the file name); "
            "the latest is the target. SAR layers pair with the optical ones by date order."))
        hint.setWordWrap(True)
        hint.setStyleSheet(INFO_STYLE)
        pv.addWidget(hint)
        root.addWidget(self.temporal_page)

        model_box = QGroupBox(self.tr("Model"))
        mform = QFormLayout(model_box)
        self.model_combo = QComboBox()
        # long model titles must not widen the dialog: the full text is in the drop-down and tooltip
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(40)
        self.model_combo.setToolTip(self.tr(
            "The network (or, multi-temporal, the weight-free method). Models marked 'no bundled weights' "
            "need a checkpoint file."))
        self.checkpoint_widget = QgsFileWidget()
        self.checkpoint_widget.setStorageMode(QgsFileWidget.GetFile)
        self.checkpoint_widget.setFilter(self.tr("PyTorch checkpoint (*.pt *.pth)"))
        self.checkpoint_widget.setToolTip(self.tr(
            "Weights file (.pt/.pth) for the chosen model: a cloudrm checkpoint or an official file. "
            "Empty: the model's bundled weights, when it has any."))
        self.checkpoint_info = QLabel()
        self.checkpoint_info.setWordWrap(True)
        self.checkpoint_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.device_combo = QComboBox()
        self.device_combo.addItem(self.tr("auto (CUDA if available, else CPU)"), "auto")
        self.device_combo.addItem("cpu", "cpu")
        self.device_combo.setToolTip(self.tr("Where the model runs. CUDA GPUs are listed once PyTorch has loaded."))
        mform.addRow(self.tr("Model"), self.model_combo)
        mform.addRow(self.tr("Checkpoint"), self.checkpoint_widget)
        mform.addRow(self.checkpoint_info)  # full width: a wrapped label gets its height in a spanning row
        mform.addRow(self.tr("Device"), self.device_combo)
        root.addWidget(model_box)

        keep_box = QGroupBox(self.tr("Keep clear pixels"))
        kform = QFormLayout(keep_box)
        self.keep_clear_check = QCheckBox(
            self.tr("Keep clear pixels (the model's output only under clouds and shadows)"))
        self.keep_clear_check.setChecked(True)
        self.keep_clear_check.setToolTip(self.tr(
            "Outside the grown cloud/shadow mask the output is the input, bit for bit; inside it the model's "
            "prediction, feathered over 8 px. Needs the 13-band Sentinel-2 L1C input for its own cloud mask, "
            "or a mask layer."))
        self.mask_method_combo = QComboBox()
        for m in self.api.MASK_METHODS:
            self.mask_method_combo.addItem(m, m)
        self.mask_method_combo.setToolTip(self.tr(
            "How keep-clear finds clouds and shadows: s2cloudless (Sentinel Hub's classifier) or cafr_rule "
            "(the DSen2-CR rule-based score); both add the same shadow test."))
        self.mask_buffer_spin = QDoubleSpinBox()
        self.mask_buffer_spin.setRange(0.0, 5000.0)
        self.mask_buffer_spin.setDecimals(0)
        self.mask_buffer_spin.setSingleStep(10.0)
        self.mask_buffer_spin.setSuffix(" m")
        self.mask_buffer_spin.setValue(float(self.api.DEFAULT_MASK_BUFFER_M))
        self.mask_buffer_spin.setToolTip(self.tr(
            "Clouds and shadows are grown by this margin before deciding what is clear: haze rims and soft "
            "shadow edges are not clear pixels."))
        self.mask_layer_combo = QgsMapLayerComboBox()
        self.mask_layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.mask_layer_combo.setAllowEmptyLayer(True, self.tr("none: computed from the optical image"))
        self.mask_layer_combo.setCurrentIndex(0)  # the "none" entry (setLayer(None) would show a blank)
        self.mask_layer_combo.setToolTip(self.tr(
            "Optional: your own mask raster on the optical grid (non-zero = replace with the model's value). "
            "Empty: the mask is computed from the optical image with the method above."))
        self.mask_check = QCheckBox(self.tr("Add the filled-pixels mask as a layer"))
        self.mask_check.setToolTip(self.tr(
            "Also write <output>_filled.tif (1 = pixel filled by the model, 0 = input kept) and show it above "
            "the result in semi-transparent magenta."))
        self.keep_note = QLabel()
        self.keep_note.setWordWrap(True)
        self.keep_note.setStyleSheet(INFO_STYLE)
        mask_row = QWidget()
        mh = QHBoxLayout(mask_row)
        mh.setContentsMargins(0, 0, 0, 0)
        mh.addWidget(self.mask_method_combo, 1)
        mh.addWidget(QLabel(self.tr("grown by")))
        mh.addWidget(self.mask_buffer_spin)
        kform.addRow(self.keep_clear_check)
        kform.addRow(self.tr("Cloud mask"), mask_row)
        kform.addRow(self.tr("Mask layer"), self.mask_layer_combo)
        kform.addRow(self.mask_check)
        kform.addRow(self.keep_note)
        root.addWidget(keep_box)

        out_box = QGroupBox(self.tr("Output"))
        oform = QFormLayout(out_box)
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter(self.tr("GeoTIFF (*.tif *.tiff)"))
        self.output_widget.setToolTip(self.tr(
            "The cloud-free GeoTIFF, on the optical grid with its data type. If it exists you are asked "
            "before it is replaced."))
        self.style_input_check = QCheckBox(self.tr("Style the optical input the same way (true colour, same stretch)"))
        self.style_input_check.setChecked(True)
        self.style_input_check.setToolTip(self.tr(
            "Give the optical layer the result's true-colour stretch (computed from the input's clear pixels), "
            "so toggling the two layers shows only what changed."))
        oform.addRow(self.tr("Output GeoTIFF"), self.output_widget)
        oform.addRow(self.style_input_check)
        root.addWidget(out_box)

        adv = QgsCollapsibleGroupBox(self.tr("Advanced"))
        adv.setCollapsed(True)
        aform = QFormLayout(adv)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip(self.tr(
            "Tile edge in pixels (0 = the model's default), rounded down to the model's multiple. Larger tiles "
            "need more memory (about 1 GB per 256 px tile of GLF-CR on the CPU)."))
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 2048)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setSuffix(" px")
        self.overlap_spin.setToolTip(self.tr(
            "Overlap between neighbouring tiles in pixels (0 = the model's default), blended without seams."))
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 256)
        self.batch_spin.setSpecialValueText(self.tr("automatic"))
        self.batch_spin.setToolTip(self.tr("Tiles per forward pass (0 = automatic). More is faster on a large GPU."))
        self.precision_combo = QComboBox()
        for p in self.api.PRECISIONS:
            self.precision_combo.addItem(p, p)
        self.precision_combo.setToolTip(self.tr(
            "auto: float32 on the CPU; on CUDA the model's measured choice. bf16/fp16: faster on a GPU, "
            "slightly different numbers."))
        aform.addRow(self.tr("Tile size"), self.tile_spin)
        aform.addRow(self.tr("Tile overlap"), self.overlap_spin)
        aform.addRow(self.tr("Tiles per batch"), self.batch_spin)
        aform.addRow(self.tr("Precision"), self.precision_combo)
        root.addWidget(adv)
        self.advanced_box = adv
        # spare height goes here, never between the rows (no blank gap after switching modes)
        root.addStretch(1)

        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.message.setStyleSheet(ERROR_STYLE)
        root.addWidget(self.message)

        self.buttons = QDialogButtonBox(QDialogButtonBox.Close | QDialogButtonBox.Help)
        self.run_button = self.buttons.addButton(self.tr("Run"), QDialogButtonBox.AcceptRole)
        self.buttons.button(QDialogButtonBox.Help).setToolTip(self.tr("The user guide and the algorithms' help"))
        self.buttons.button(QDialogButtonBox.Close).setToolTip(self.tr("Close; the choices are kept"))
        root.addWidget(self.buttons)

    @staticmethod
    def _with_label(widget: QWidget, label: QLabel) -> QWidget:
        box = QWidget()
        h = QHBoxLayout(box)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(widget, 1)
        label.setMinimumWidth(70)
        h.addWidget(label)
        return box

    def _connect(self) -> None:
        self.mode_group.buttonClicked.connect(lambda _b: self._mode_changed())
        self.optical_combo.layerChanged.connect(lambda _l: self._inputs_changed())
        self.sar_combo.layerChanged.connect(lambda _l: self._inputs_changed())
        self.optical_list.itemChanged.connect(lambda _i: self._inputs_changed())
        self.sar_list.itemChanged.connect(lambda _i: self._inputs_changed())
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.checkpoint_widget.fileChanged.connect(lambda _p: self._checkpoint_changed())
        # currentIndexChanged too: choosing the "none" entry does not always emit layerChanged
        self.mask_layer_combo.layerChanged.connect(lambda _l: self.refresh_state())
        self.mask_layer_combo.currentIndexChanged.connect(lambda _i: self.refresh_state())
        for w in (self.keep_clear_check, self.mask_check, self.style_input_check):
            w.toggled.connect(lambda _b: self.refresh_state())
        for s in (self.tile_spin, self.overlap_spin):
            s.valueChanged.connect(lambda _v: self.refresh_state())
        self.output_widget.fileChanged.connect(lambda _p: self.refresh_state())
        self.buttons.rejected.connect(self.reject)
        self.buttons.helpRequested.connect(self.show_help)
        self.run_button.clicked.connect(self.start)
        self.project.layersAdded.connect(self._layers_added)
        self.project.layersRemoved.connect(self.refresh_layers)

    def cleanup(self) -> None:
        """Stop following the project and stop the worker thread (call before deleting the dialog)."""
        for signal, slot in ((self.project.layersAdded, self._layers_added),
                             (self.project.layersRemoved, self.refresh_layers)):
            with contextlib.suppress(TypeError):  # not connected
                signal.disconnect(slot)
        self.worker.shutdown()

    disconnect_project = cleanup  # the name plugin.unload() used before

    # ---- settings ------------------------------------------------------------------------
    @staticmethod
    def settings() -> QgsSettings:
        """The user's QGIS settings (the active profile's QGIS3.ini)."""
        return QgsSettings()

    def _restore_settings(self) -> None:
        s = self.settings()

        def get(key: str, default: Any, typ: type) -> Any:
            try:
                return s.value(SETTINGS_PREFIX + key, default, type=typ)
            except TypeError:
                return default

        self.mode_temporal.setChecked(get("mode", "single", str) == "temporal")
        self.mode_single.setChecked(not self.mode_temporal.isChecked())
        self._saved_models = {False: get("model", DEFAULT_MODEL, str),
                              True: get("temporal_method", DEFAULT_TEMPORAL_METHOD, str)}
        self._wanted_device = get("device", "auto", str) or "auto"
        self._select_device(self._wanted_device)
        self.tile_spin.setValue(get("tile_size", 0, int))
        self.overlap_spin.setValue(get("overlap", 0, int))
        self.batch_spin.setValue(get("batch_size", 0, int))
        idx = self.precision_combo.findData(get("precision", "auto", str))
        self.precision_combo.setCurrentIndex(max(idx, 0))
        self.keep_clear_check.setChecked(get("keep_clear", True, bool))
        idx = self.mask_method_combo.findData(get("mask_method", self.api.DEFAULT_MASK_METHOD, str))
        self.mask_method_combo.setCurrentIndex(max(idx, 0))
        self.mask_buffer_spin.setValue(get("mask_buffer", float(self.api.DEFAULT_MASK_BUFFER_M), float))
        self.mask_check.setChecked(get("add_mask", False, bool))
        self.style_input_check.setChecked(get("style_input", True, bool))
        self.output_dir = get("output_dir", "", str)
        self._show_page()
        self._fill_models()

    def save_settings(self) -> None:
        """Remember the current choices (called when a run starts)."""
        s = self.settings()
        if self.model_combo.currentData():
            self._saved_models[self.temporal] = self.model_combo.currentData()
        values = {
            "mode": "temporal" if self.temporal else "single",
            "model": self._saved_models[False],
            "temporal_method": self._saved_models[True],
            "device": self.device_combo.currentData() or "auto",
            "tile_size": self.tile_spin.value(),
            "overlap": self.overlap_spin.value(),
            "batch_size": self.batch_spin.value(),
            "precision": self.precision_combo.currentData(),
            "keep_clear": self.keep_clear_check.isChecked(),
            "mask_method": self.mask_method_combo.currentData(),
            "mask_buffer": self.mask_buffer_spin.value(),
            "add_mask": self.mask_check.isChecked(),
            "style_input": self.style_input_check.isChecked(),
        }
        out = self.output_widget.filePath().strip()
        if out:
            self.output_dir = str(Path(out).parent)
            values["output_dir"] = self.output_dir
        for key, value in values.items():
            s.setValue(SETTINGS_PREFIX + key, value)
        s.sync()

    # ---- background loading (torch, checkpoints, devices) --------------------------------
    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        if not self._loading_started:
            self._loading_started = True
            self.adjustSize()
            # after this event has been handled: the dialog is on screen before any heavy work starts
            QTimer.singleShot(0, self._start_loading)

    def _start_loading(self) -> None:
        if self._missing:
            self.refresh_state()
            return
        if not self._devices_loaded:
            self.worker.call(self.api.devices, self._devices_done)
        self._request_checkpoint()
        self.refresh_state()

    @property
    def loading(self) -> bool:
        """True while what Run needs (the checkpoint's metadata) is still being read."""
        key = self._ckpt_key()
        return key is not None and key not in self._ckpt and not self._missing

    def _devices_done(self, result: Any, error: BaseException | None) -> None:
        self._devices_loaded = True
        if error is not None or not result:
            return
        self.device_combo.blockSignals(True)
        self.device_combo.clear()
        for value, label in result:
            text = self.tr("auto (CUDA if available, else CPU)") if value == "auto" else label
            self.device_combo.addItem(text, value)
        self.device_combo.blockSignals(False)
        self.device_combo.setToolTip(self.tr("Where the model runs. Devices PyTorch sees: {devices}").format(
            devices=", ".join(v for v, _ in result)))
        self._select_device(self._wanted_device)

    def _select_device(self, value: str) -> None:
        idx = self.device_combo.findData(value)
        if idx >= 0:
            self.device_combo.setCurrentIndex(idx)

    def _ckpt_key(self) -> tuple[str, str, float] | None:
        """(model, checkpoint path, mtime) of what must be read, or None (nothing to read)."""
        name = self.model_combo.currentData()
        if not name or name not in self.api.method_names():
            return None
        info = self.api.method_info(name)
        if info.baseline:
            return None
        path = self.checkpoint_widget.filePath().strip()
        if not path and not info.bundled_weights:
            return None  # nothing to read: the message says a checkpoint is needed
        p = Path(path) if path else self.api.bundled_checkpoint(name)
        try:
            mtime = p.stat().st_mtime if p is not None else 0.0
        except OSError:
            mtime = -1.0
        return name, path, mtime

    def _request_checkpoint(self) -> None:
        key = self._ckpt_key()
        if key is None or key in self._ckpt or key in self._ckpt_wanted or not self._loading_started or self._missing:
            return
        self._ckpt_wanted.add(key)
        name, path = key[0], key[1]
        api = self.api

        def read() -> Any:  # worker thread: imports torch, reads the file
            return api.checkpoint_info(path or None, name)

        def done(result: Any, error: BaseException | None) -> None:
            self._ckpt_wanted.discard(key)
            if error is None:
                self._ckpt[key] = (True, result)
            elif isinstance(error, api.CloudrmError):
                self._ckpt[key] = (False, str(error))
            else:
                self._ckpt[key] = (False, f"{Path(path).name if path else name}: {type(error).__name__}: {error}")
            self.refresh_state()

        self.worker.call(read, done)

    def checkpoint_state(self) -> tuple[str, str]:
        """('ok' | 'error' | 'loading' | 'none', text) for the current model and checkpoint."""
        name = self.model_combo.currentData()
        if not name:
            return "error", self.tr("no model")
        info = self.api.method_info(name)
        if info.baseline:
            return "none", self.tr("{name}: weight-free ({title}); no checkpoint, SAR layers are not used").format(
                name=name, title=info.title)
        path = self.checkpoint_widget.filePath().strip()
        if not path and not info.bundled_weights:
            return "error", self.tr(
                "{name} ships no weights: choose a checkpoint file (.pt/.pth) trained for {name} "
                "(see the README, 'Training').").format(name=name)
        if path and not Path(path).is_file():
            return "error", self.tr("checkpoint file not found: {path}").format(path=path)
        if self._missing:
            return "error", self.tr("Python package(s) {names} missing: cloudrm cannot run yet.").format(
                names=", ".join(self._missing))
        key = self._ckpt_key()
        if key is None or key not in self._ckpt:
            return "loading", self.tr("loading models… (PyTorch and the checkpoint load in the background)")
        ok, value = self._ckpt[key]
        if not ok:
            return "error", str(value)
        opt, sar = value["optical_bands"], value["sar_bands"]
        trained = value["trained_on"] if len(value["trained_on"]) <= 140 else value["trained_on"][:139] + "…"
        bundled = self.tr(" (bundled)") if value["bundled"] else ""
        return "ok", self.tr("{file}{bundled}: {n} optical bands ({bands}); SAR {sar}.\nTrained on: {trained}").format(
            file=Path(value["path"]).name, bundled=bundled, n=len(opt), bands=short_list(opt), sar=", ".join(sar),
            trained=trained)

    def checkpoint_bands(self) -> tuple[list[str], list[str]]:
        """(optical, SAR) band names the run expects: the checkpoint's when read, else the model card's."""
        name = self.model_combo.currentData()
        key = self._ckpt_key()
        if key is not None and key in self._ckpt and self._ckpt[key][0]:
            value = self._ckpt[key][1]
            return list(value["optical_bands"]), list(value["sar_bands"])
        info = self.api.method_info(name)
        return list(info.optical_bands), list(info.sar_bands)

    # ---- state ---------------------------------------------------------------------------
    @property
    def temporal(self) -> bool:
        return self.mode_temporal.isChecked()

    def _layers_added(self, *_args: Any) -> None:
        self.refresh_layers()
        self.guess_layers()

    def refresh_layers(self, *_args: Any) -> None:
        """Rebuild the multi-temporal lists (the combo boxes follow the project themselves)."""
        raster = [lyr for lyr in self.project.mapLayers().values() if isinstance(lyr, QgsRasterLayer)]
        raster.sort(key=lambda lyr: lyr.name())
        for lst in (self.optical_list, self.sar_list):
            checked = {i.data(Qt.UserRole) for i in self._items(lst) if i.checkState() == Qt.Checked}
            lst.blockSignals(True)
            lst.clear()
            for lyr in raster:
                n = lyr.bandCount()
                item = QListWidgetItem(self.tr("{name}  ({n} bands)").format(name=lyr.name(), n=n) if n != 1
                                       else self.tr("{name}  (1 band)").format(name=lyr.name()))
                item.setData(Qt.UserRole, lyr.id())
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if lyr.id() in checked else Qt.Unchecked)
                lst.addItem(item)
            lst.blockSignals(False)
        self.refresh_state()

    def acceptable_optical_counts(self) -> set[int]:
        """Band counts the chosen model accepts: its own, and 13 when it picks its bands from an L1C raster."""
        if not self.model_combo.currentData():
            return set()
        opt, _ = self.checkpoint_bands()
        counts = {len(opt)}
        if set(opt) <= set(self.api.S2_BANDS):
            counts.add(len(self.api.S2_BANDS))
        return counts

    def guess_layers(self, *_args: Any) -> None:
        """Pick an optical and a SAR layer with fitting band counts when the current ones do not fit
        (the active layer first, then the project's order)."""
        if self.temporal:
            return
        raster = [lyr for lyr in self.project.mapLayers().values() if isinstance(lyr, QgsRasterLayer)]
        active = self.iface.activeLayer() if self.iface is not None and hasattr(self.iface, "activeLayer") else None
        if isinstance(active, QgsRasterLayer):
            raster.sort(key=lambda lyr: lyr is not active)
        want_opt = self.acceptable_optical_counts()
        _, sar_bands = self.checkpoint_bands()
        want_sar = len(sar_bands) or 2
        if band_count(self.optical_combo.currentLayer()) not in want_opt:
            preferred = sorted((lyr for lyr in raster if lyr.bandCount() in want_opt),
                               key=lambda lyr: -lyr.bandCount() if lyr is not active else -1000)
            if preferred:
                self.optical_combo.setLayer(preferred[0])
        opt_layer = self.optical_combo.currentLayer()
        sar_layer = self.sar_combo.currentLayer()
        if band_count(sar_layer) != want_sar or sar_layer is opt_layer:
            sar = [lyr for lyr in raster if lyr.bandCount() == want_sar and lyr is not opt_layer]
            if sar:
                self.sar_combo.setLayer(sar[0])

    @staticmethod
    def _items(lst: QListWidget) -> list[QListWidgetItem]:
        return [lst.item(i) for i in range(lst.count())]

    def checked_layers(self, lst: QListWidget) -> list[QgsRasterLayer]:
        """Checked layers of a multi-temporal list, in list order."""
        out = []
        for item in self._items(lst):
            if item.checkState() == Qt.Checked:
                lyr = self.project.mapLayer(item.data(Qt.UserRole))
                if isinstance(lyr, QgsRasterLayer):
                    out.append(lyr)
        return out

    def _show_page(self) -> None:
        self.single_page.setVisible(not self.temporal)
        self.temporal_page.setVisible(self.temporal)
        # shrink back: a hidden page takes no room, so no blank gap is left behind
        layout = self.layout()
        if layout is not None:
            layout.activate()
        self.adjustSize()

    def _fill_models(self) -> None:
        """The model list of the current mode: weights marked, the remembered choice selected."""
        current = self.model_combo.currentData()
        if current is not None and current in self.api.method_names(temporal=self.temporal):
            wanted = current
        else:
            wanted = self._saved_models.get(self.temporal)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for name in self.api.method_names(temporal=self.temporal):
            info = self.api.method_info(name)
            if info.baseline:
                text = self.tr("{name} – {title} (weight-free: no SAR, no checkpoint)").format(
                    name=name, title=info.title)
            elif info.needs_checkpoint:
                text = self.tr("{name} – {title} · no bundled weights").format(name=name, title=info.title)
            else:
                text = self.tr("{name} – {title} · bundled weights").format(name=name, title=info.title)
            self.model_combo.addItem(text, name)
            idx = self.model_combo.count() - 1
            self.model_combo.setItemData(idx, info.summary, Qt.ToolTipRole)
            if info.needs_checkpoint:
                self.model_combo.setItemData(idx, QBrush(NO_WEIGHTS_COLOUR), Qt.ForegroundRole)
        default = DEFAULT_TEMPORAL_METHOD if self.temporal else DEFAULT_MODEL
        idx = self.model_combo.findData(wanted)
        if idx < 0:
            idx = self.model_combo.findData(default)
        self.model_combo.setCurrentIndex(max(idx, 0))
        self.model_combo.blockSignals(False)

    def _mode_changed(self) -> None:
        # remember the other mode's choice so switching back restores it
        if self.model_combo.currentData():
            self._saved_models[not self.temporal] = self.model_combo.currentData()
        self._run_error = ""
        self._show_page()
        self._fill_models()
        self._model_changed()

    def _model_changed(self) -> None:
        if self._building:
            return
        name = self.model_combo.currentData()
        info = self.api.method_info(name) if name else None
        self._run_error = ""
        baseline = bool(info and info.baseline)
        self.checkpoint_widget.setEnabled(not baseline)
        self.device_combo.setEnabled(not baseline)
        edit = self.checkpoint_widget.lineEdit()
        if info is None:
            edit.setPlaceholderText("")
        elif baseline:
            edit.setPlaceholderText(self.tr("not used: {name} needs no weights").format(name=name))
        elif info.bundled_weights:
            bundled = self.api.bundled_checkpoint(name)
            edit.setPlaceholderText(self.tr("empty = the bundled weights ({file})").format(
                file=bundled.name if bundled else name))
        else:
            edit.setPlaceholderText(self.tr("required: {name} ships no weights – choose a .pt/.pth file").format(
                name=name))
        if info is not None:
            self.tile_spin.setSpecialValueText(self.tr("model default ({n} px)").format(n=info.tile_size))
            self.overlap_spin.setSpecialValueText(self.tr("model default ({n} px)").format(n=info.overlap))
        self._request_checkpoint()
        self.guess_layers()
        self._propose_output()
        self.refresh_state()

    def _checkpoint_changed(self) -> None:
        self._run_error = ""
        self._request_checkpoint()
        self.guess_layers()
        self.refresh_state()

    def _inputs_changed(self) -> None:
        self._run_error = ""
        self._propose_output()
        self.refresh_state()

    def optical_layers(self) -> list[QgsRasterLayer]:
        if self.temporal:
            return self.checked_layers(self.optical_list)
        layer = self.optical_combo.currentLayer()
        return [layer] if isinstance(layer, QgsRasterLayer) else []

    def sar_layers(self) -> list[QgsRasterLayer]:
        if self.temporal:
            return self.checked_layers(self.sar_list)
        layer = self.sar_combo.currentLayer()
        return [layer] if isinstance(layer, QgsRasterLayer) else []

    def _propose_output(self) -> None:
        """``<folder>/<optical name>_cloudfree_<model>.tif`` while the output has not been edited;
        the folder is the remembered output folder, else the optical file's."""
        layers = self.optical_layers()
        path = local_path(layers[-1]) if layers else None
        current = self.output_widget.filePath().strip()
        if not path or (current and current != self._auto_output):
            return
        folder = Path(self.output_dir) if self.output_dir and Path(self.output_dir).is_dir() else Path(path).parent
        model = self.model_combo.currentData() or "cloudfree"
        self._auto_output = str(folder / f"{Path(path).stem}_cloudfree_{model}.tif")
        self.output_widget.setFilePath(self._auto_output)

    # ---- validation ----------------------------------------------------------------------
    def keep_clear_possible(self) -> tuple[bool, str]:
        """(possible, why not): keep-clear needs the 13-band L1C input (its own cloud mask) or a mask layer."""
        if self.mask_layer_combo.currentLayer() is not None:
            return True, ""
        layers = self.optical_layers()
        n_l1c = len(self.api.S2_BANDS)
        odd = [lyr for lyr in layers if lyr.bandCount() != n_l1c]
        if layers and not odd:
            return True, ""
        if not layers:
            return True, ""
        return False, self.tr(
            "Keep clear is off: its cloud mask needs the {n}-band Sentinel-2 L1C image and '{layer}' has "
            "{count} band(s). Choose a mask layer to keep the clear pixels of this image.").format(
                n=n_l1c, layer=odd[0].name(), count=odd[0].bandCount())

    def problems(self) -> list[str]:
        """Everything that stops a run, as full sentences (empty: Run may start)."""
        out: list[str] = []
        if self._missing:
            out.append(self.tr("Python package(s) {names} missing in the Python that QGIS uses.").format(
                names=", ".join(self._missing)) + "\n" + deps.INSTALL_HELP)
            return out
        name = self.model_combo.currentData()
        if not name:
            return [self.tr("choose a model")]
        info = self.api.method_info(name)
        state, text = self.checkpoint_state()
        if state == "error":
            out.append(text)
        opt_bands, sar_bands = self.checkpoint_bands()
        want_opt = self.acceptable_optical_counts()
        want_text = self.tr(" or ").join(str(n) for n in sorted(want_opt))
        opt_layers, sar_layers = self.optical_layers(), self.sar_layers()
        if self.temporal:
            if len(opt_layers) < 2:
                out.append(self.tr("check at least two optical layers (one per date)"))
            if info.needs_sar and len(sar_layers) != len(opt_layers):
                out.append(self.tr(
                    "{method} needs one SAR layer per date: {n_opt} optical but {n_sar} SAR layers checked").format(
                        method=name, n_opt=len(opt_layers), n_sar=len(sar_layers)))
        else:
            if not opt_layers or not sar_layers:
                out.append(self.tr("choose an optical and a SAR layer"))
            elif opt_layers[0] is sar_layers[0]:
                out.append(self.tr("the optical and the SAR layer are the same layer ('{name}')").format(
                    name=opt_layers[0].name()))
        for lyr in opt_layers:
            if lyr.bandCount() not in want_opt:
                out.append(self.tr(
                    "optical layer '{layer}' has {n} band(s); {model} expects {want} ({bands})").format(
                        layer=lyr.name(), n=lyr.bandCount(), model=name, want=want_text, bands=short_list(opt_bands)))
        if info.needs_sar:
            for lyr in sar_layers:
                if lyr.bandCount() != len(sar_bands):
                    out.append(self.tr(
                        "SAR layer '{layer}' has {n} band(s); {model} expects {want} ({bands})").format(
                            layer=lyr.name(), n=lyr.bandCount(), model=name, want=len(sar_bands),
                            bands=", ".join(sar_bands)))
        inputs = opt_layers + (sar_layers if info.needs_sar else [])
        mask_layer = self.mask_layer_combo.currentLayer()
        if mask_layer is not None and self.keep_clear_check.isChecked():
            inputs.append(mask_layer)
        for lyr in inputs:
            if local_path(lyr) is None:
                out.append(self.tr(
                    "layer '{layer}' is not a local raster file; save it as a GeoTIFF first "
                    "(Raster ▸ Conversion ▸ Translate)").format(layer=lyr.name()))
        out_path = self.output_widget.filePath().strip()
        if not out_path:
            out.append(self.tr("choose an output GeoTIFF"))
        elif Path(out_path).suffix.lower() not in tuple(self.api.OUTPUT_SUFFIXES):
            out.append(self.tr("the output must be a GeoTIFF (.tif), got {path}").format(path=out_path))
        elif any(same_file(out_path, p) for p in (local_path(lyr) for lyr in inputs) if p):
            out.append(self.tr("the output {path} is one of the inputs: choose another file").format(path=out_path))
        elif not Path(out_path).parent.is_dir():
            out.append(self.tr("the output folder {folder} does not exist").format(folder=Path(out_path).parent))
        tile = self.tile_spin.value() or info.tile_size
        overlap = self.overlap_spin.value() or info.overlap
        if overlap >= tile:
            out.append(self.tr("the tile overlap ({overlap} px) must be smaller than the tile size ({tile} px)").format(
                overlap=overlap, tile=tile))
        return out

    def refresh_state(self) -> None:
        """Recompute every message from the current choice; Run only when nothing is wrong."""
        if self._building:
            return
        state, text = self.checkpoint_state()
        self._set_info(text, error=state == "error")
        want_opt = self.acceptable_optical_counts() if self.model_combo.currentData() else set()
        _, sar_bands = self.checkpoint_bands() if self.model_combo.currentData() else ([], [])
        for combo, label, want in ((self.optical_combo, self.optical_bands, want_opt),
                                   (self.sar_combo, self.sar_bands, {len(sar_bands)})):
            n = band_count(combo.currentLayer())
            text_n = "" if n is None else (self.tr("1 band") if n == 1 else self.tr("{n} bands").format(n=n))
            ok = n is None or n in want
            label.setText(text_n if ok else self.tr("{bands} (model: {want})").format(
                bands=text_n, want=self.tr(" or ").join(str(w) for w in sorted(want))))
            label.setStyleSheet("" if ok else ERROR_STYLE)
        possible, why = self.keep_clear_possible()
        self.keep_clear_check.setEnabled(possible)
        keep = possible and self.keep_clear_check.isChecked()
        for w in (self.mask_method_combo, self.mask_buffer_spin, self.mask_check):
            w.setEnabled(keep)
        self.mask_method_combo.setEnabled(keep and self.mask_layer_combo.currentLayer() is None)
        self.keep_note.setText(why)
        self.keep_note.setVisible(bool(why))
        problems = self.problems()
        messages = list(problems)
        if self._run_error and not problems:
            messages.append(self._run_error)
        self.message.setText("\n".join(f"• {p}" if len(messages) > 1 else p for p in messages))
        self.message.setVisible(bool(messages))
        loading = self.loading
        self.run_button.setEnabled(not problems and not loading)
        self.run_button.setToolTip(
            problems[0] if problems else self.tr("loading models…") if loading
            else self.tr("Run in the background (progress and cancel in QGIS's task bar)"))

    def _set_info(self, text: str, error: bool) -> None:
        label = self.checkpoint_info
        label.setText(text)
        # a wrapped QLabel in a form layout does not grow by itself: reserve the lines it needs
        width = max(label.width(), self.minimumWidth() - 60)
        needed = label.fontMetrics().boundingRect(QRect(0, 0, width, 10000), Qt.TextWordWrap, text).height()
        label.setMinimumHeight(needed + 4)
        label.setStyleSheet(ERROR_STYLE if error else INFO_STYLE)

    # ---- run -----------------------------------------------------------------------------
    def plan(self) -> RunPlan:
        """The algorithm and its parameters for the current choice (call when :meth:`problems` is empty)."""
        name = self.model_combo.currentData()
        info = self.api.method_info(name)
        opt_layers, sar_layers = self.optical_layers(), self.sar_layers()
        possible, _ = self.keep_clear_possible()
        keep = possible and self.keep_clear_check.isChecked()
        out = self.output_widget.filePath().strip()
        want_mask = keep and self.mask_check.isChecked()
        filled = str(Path(out).with_name(Path(out).stem + "_filled.tif")) if want_mask else None
        stats_mask = temporary_mask_path() if keep and filled is None else None
        params: dict[str, Any] = {}
        if self.temporal:
            params["OPTICAL_SERIES"] = [lyr.id() for lyr in opt_layers]
            if info.needs_sar and sar_layers:
                params["SAR_SERIES"] = [lyr.id() for lyr in sar_layers]
            params["METHOD"] = name
        else:
            params["OPTICAL"] = opt_layers[0].id()
            params["SAR"] = sar_layers[0].id()
            params["MODEL"] = name
        checkpoint = self.checkpoint_widget.filePath().strip()
        if checkpoint and not info.baseline:
            params["CHECKPOINT"] = checkpoint
        params.update({
            "DEVICE": self.device_combo.currentData() or "auto",
            "TILE_SIZE": self.tile_spin.value(),
            "OVERLAP": self.overlap_spin.value(),
            "BATCH_SIZE": self.batch_spin.value(),
            "PRECISION": self.precision_combo.currentData(),
            "KEEP_CLEAR": keep,
            "MASK_METHOD": self.mask_method_combo.currentData(),
            "MASK_BUFFER": self.mask_buffer_spin.value(),
        })
        mask_layer = self.mask_layer_combo.currentLayer()
        if keep and mask_layer is not None:
            params["MASK"] = mask_layer.id()
        if filled or stats_mask:
            params["FILLED_MASK"] = filled or stats_mask
        params["OUTPUT"] = out
        target = opt_layers[-1]
        n_l1c = len(self.api.S2_BANDS)
        if target.bandCount() == len(info.optical_bands):
            input_rgb = rgb_band_numbers(info.optical_bands, info.rgb_bands)
        elif target.bandCount() == n_l1c:
            input_rgb = rgb_band_numbers(self.api.S2_BANDS, self.api.S2_RGB)
        else:
            input_rgb = [1, 2, 3]
        return RunPlan(
            algorithm_id=TEMPORAL_ALGORITHM if self.temporal else SINGLE_ALGORITHM,
            parameters=params,
            layer_name=self.tr("{name} cloud-free ({model})").format(name=target.name(), model=name),
            optical=[local_path(lyr) or lyr.source() for lyr in opt_layers],
            input_rgb=input_rgb,
            output_rgb=rgb_band_numbers(info.output_bands, info.rgb_bands),
            show_mask=filled is not None,
            stats_mask=stats_mask,
            style_input=self.style_input_check.isChecked(),
            optical_layer_ids=[lyr.id() for lyr in opt_layers],
        )

    def confirm_overwrite(self, path: str) -> str | None:
        """Ask before an existing output is replaced: the path to write, or None (the user canceled).

        Offers Replace (a layer showing the file is updated in place), a new free name, or Cancel.
        """
        if not Path(path).exists():
            return path
        loaded = layers_with_file(self.project, path)
        fresh = next_free_path(path)
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Question)
        box.setWindowTitle(self.tr("cloudrm: output exists"))
        if loaded:
            box.setText(self.tr("{path} exists and is shown as layer '{layer}'.\nReplace the file (the layer is "
                                "updated in place), or write {fresh}?").format(
                                    path=path, layer=loaded[0].name(), fresh=Path(fresh).name))
        else:
            box.setText(self.tr("{path} exists.\nReplace it, or write {fresh}?").format(path=path,
                                                                                      fresh=Path(fresh).name))
        replace = box.addButton(self.tr("Replace"), QMessageBox.DestructiveRole)
        rename = box.addButton(self.tr("Write {name}").format(name=Path(fresh).name), QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(rename)
        box.setObjectName("cloudrmOverwriteQuestion")
        box.exec_()
        clicked = box.clickedButton()
        if clicked is replace:
            return path
        if clicked is rename:
            self.output_widget.setFilePath(fresh)
            if self._auto_output == path:
                self._auto_output = fresh
            return fresh
        return None

    def start(self) -> AlgorithmTask | None:
        """Check, ask about an existing output, queue the algorithm's task, hide the dialog.

        Returns the task, or None when nothing started (the reason is shown in the dialog).
        """
        self.refresh_state()
        if not self.run_button.isEnabled():
            return None
        out = self.output_widget.filePath().strip()
        if self.confirm_overwrite(out) is None:
            return None
        plan = self.plan()
        # the algorithm's own checks, on the GUI thread as Processing's dialog does them
        context = QgsProcessingContext()
        context.setProject(self.project)
        ok, message = create_algorithm(plan.algorithm_id).checkParameterValues(plan.parameters, context)
        if not ok:
            self._run_error = message
            self.refresh_state()
            return None
        task = AlgorithmTask(plan, self.iface, self.project, on_done=self._task_done)
        self.tasks.append(task)
        start_task(task)
        if self.iface is not None:
            self.iface.messageBar().pushMessage(
                "cloudrm",
                self.tr("{name}: started (progress and cancel in the task bar)").format(name=plan.layer_name),
                Qgis.Info, 3)
        self.accept()
        return task

    def done(self, result: int) -> None:
        """Run and Close both end here: the choices are remembered either way."""
        try:
            self.save_settings()
        finally:
            super().done(result)

    def _task_done(self, outcome: TaskOutcome) -> None:
        self.last_outcome = outcome
        self.tasks = [t for t in self.tasks if not t.outcome.done]
        if outcome.error and not outcome.canceled:
            # the error stays here, in full, for when the dialog is opened again
            self._run_error = self.tr("The last run failed: {error}").format(error=outcome.error)
            self.refresh_state()
            self._offer_reopen(outcome.error)

    def _offer_reopen(self, error: str) -> None:
        """A message-bar button that brings the dialog back with the full error and the same choices."""
        if self.iface is None or not hasattr(self.iface, "messageBar"):
            return
        bar = self.iface.messageBar()
        if not hasattr(bar, "createMessage"):
            return
        item = bar.createMessage("cloudrm", self.tr("The run failed (details in the dialog)."))
        button = QPushButton(self.tr("Open the dialog"))
        button.clicked.connect(self._reopen)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Critical, 0)

    def _reopen(self) -> None:
        self.show()
        self.raise_()
        self.activateWindow()

    def show_help(self) -> None:
        """The user guide and the algorithms' help, shipped in the plugin (no network)."""
        from .helpwindow import HelpWindow

        if getattr(self, "help_window", None) is None:
            self.help_window = HelpWindow(self)
        self.help_window.show()
        self.help_window.raise_()
