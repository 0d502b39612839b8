"""The "Remove clouds…" dialog: widgets → :class:`RunParams` → a background :class:`RemoveCloudsTask`.

Two modes: *single date* (one optical + one SAR layer, a non-temporal model) and
*multi-temporal* (checked optical and SAR layers, one pair per date in list order, a temporal
model; the engine's ``predict_series``). Only raster layers are listed, each with its band
count. The checkpoint's metadata (bands, what it was trained on) is read with the engine's
``load_checkpoint`` and shown below the file widget; problems are shown inline, in red.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QRect, Qt
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QRadioButton,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from . import deps
from .tasks import RemoveCloudsTask, RunParams, push_message, start_task

ERROR_STYLE = "color: #b00020;"
INFO_STYLE = "color: #555555;"


def band_text(layer: QgsMapLayer | None) -> str:
    """'13 bands' for a raster layer, '' otherwise."""
    if not isinstance(layer, QgsRasterLayer):
        return ""
    n = layer.bandCount()
    return f"{n} band{'s' if n != 1 else ''}"


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


def cuda_devices() -> list[tuple[str, str]]:
    """[('cuda:0', 'cuda:0 – NVIDIA H100'), …]; empty without torch or CUDA."""
    if "torch" in deps.missing_dependencies():
        return []
    try:
        import torch

        return [(f"cuda:{i}", f"cuda:{i} – {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())]
    except Exception:
        return []


class RemoveCloudsDialog(QDialog):
    """Remove clouds from map layers. ``start()`` (the Run button) queues the task and hides the dialog."""

    def __init__(self, iface: Any = None, parent: QWidget | None = None, project: QgsProject | None = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.tasks: list[RemoveCloudsTask] = []
        self._auto_output = ""  # the output path we proposed (replaced when the optical layer changes)
        self._ckpt_cache: dict[tuple[str, float, str], Any] = {}
        self.setWindowTitle(self.tr("cloudrm – Remove clouds"))
        self.setMinimumWidth(640)
        self._build()
        self._connect()
        self.refresh_layers()
        self._mode_changed()
        self.guess_layers()

    # ---- construction --------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)

        mode_row = QHBoxLayout()
        self.mode_single = QRadioButton(self.tr("Single date"))
        self.mode_temporal = QRadioButton(self.tr("Multi-temporal"))
        self.mode_single.setChecked(True)
        self.mode_group = QButtonGroup(self)
        self.mode_group.addButton(self.mode_single, 0)
        self.mode_group.addButton(self.mode_temporal, 1)
        mode_row.addWidget(QLabel(self.tr("Mode:")))
        mode_row.addWidget(self.mode_single)
        mode_row.addWidget(self.mode_temporal)
        mode_row.addStretch(1)
        root.addLayout(mode_row)

        self.inputs = QStackedWidget()
        # single date
        single = QWidget()
        form = QFormLayout(single)
        form.setContentsMargins(0, 0, 0, 0)
        self.optical_combo = QgsMapLayerComboBox()
        self.optical_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.optical_bands = QLabel()
        self.sar_combo = QgsMapLayerComboBox()
        self.sar_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.sar_bands = QLabel()
        form.addRow(self.tr("Cloudy optical (Sentinel-2 L1C)"), self._with_label(self.optical_combo, self.optical_bands))
        form.addRow(self.tr("SAR (Sentinel-1 VV, VH in dB)"), self._with_label(self.sar_combo, self.sar_bands))
        self.inputs.addWidget(single)
        # multi-temporal
        temporal = QWidget()
        grid = QHBoxLayout(temporal)
        grid.setContentsMargins(0, 0, 0, 0)
        self.optical_list = QListWidget()
        self.sar_list = QListWidget()
        for title, lst in ((self.tr("Optical layers, one per date"), self.optical_list),
                           (self.tr("SAR layers, same dates and order"), self.sar_list)):
            box = QGroupBox(title)
            v = QVBoxLayout(box)
            lst.setMinimumHeight(110)
            v.addWidget(lst)
            grid.addWidget(box)
        page = QWidget()
        pv = QVBoxLayout(page)
        pv.setContentsMargins(0, 0, 0, 0)
        pv.addWidget(temporal)
        hint = QLabel(self.tr(
            "The engine sorts the dates by acquisition date (file metadata, or YYYYMMDD in the file name); "
            "the latest is the target. SAR layers pair with the optical ones by date order."
        ))
        hint.setWordWrap(True)
        hint.setStyleSheet(INFO_STYLE)
        pv.addWidget(hint)
        self.inputs.addWidget(page)
        root.addWidget(self.inputs)

        model_box = QGroupBox(self.tr("Model"))
        mform = QFormLayout(model_box)
        self.model_combo = QComboBox()
        self.checkpoint_widget = QgsFileWidget()
        self.checkpoint_widget.setStorageMode(QgsFileWidget.GetFile)
        self.checkpoint_widget.setFilter(self.tr("PyTorch checkpoint (*.pt *.pth)"))
        self.checkpoint_widget.lineEdit().setPlaceholderText(self.tr("empty = the model's bundled demo weights"))
        self.checkpoint_info = QLabel()
        self.checkpoint_info.setWordWrap(True)
        self.checkpoint_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.device_combo = QComboBox()
        self.device_combo.addItem(self.tr("auto (CUDA if available)"), "auto")
        self.device_combo.addItem("cpu", "cpu")
        for value, text in cuda_devices():
            self.device_combo.addItem(text, value)
        mform.addRow(self.tr("Model"), self.model_combo)
        mform.addRow(self.tr("Checkpoint"), self.checkpoint_widget)
        mform.addRow(self.checkpoint_info)  # full width: a wrapped label gets its height in a spanning row
        mform.addRow(self.tr("Device"), self.device_combo)
        root.addWidget(model_box)

        opts = QGroupBox(self.tr("Options"))
        oform = QFormLayout(opts)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(16, 4096)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setValue(256)
        self.tile_spin.setSuffix(" px")
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 2048)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setValue(32)
        self.overlap_spin.setSuffix(" px")
        self.keep_clear_check = QCheckBox(self.tr("Keep clear pixels (model output only under clouds)"))
        self.keep_clear_check.setChecked(True)
        self.mask_check = QCheckBox(self.tr("Add filled-pixels mask layer"))
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter(self.tr("GeoTIFF (*.tif *.tiff)"))
        oform.addRow(self.tr("Tile size"), self.tile_spin)
        oform.addRow(self.tr("Tile overlap"), self.overlap_spin)
        oform.addRow(self.keep_clear_check)
        oform.addRow(self.mask_check)
        oform.addRow(self.tr("Output GeoTIFF"), self.output_widget)
        root.addWidget(opts)

        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet(ERROR_STYLE)
        root.addWidget(self.message)

        self.buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.run_button = self.buttons.addButton(self.tr("Run"), QDialogButtonBox.AcceptRole)
        root.addWidget(self.buttons)

    @staticmethod
    def _with_label(widget: QWidget, label: QLabel) -> QWidget:
        box = QWidget()
        h = QHBoxLayout(box)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(widget, 1)
        label.setMinimumWidth(60)
        h.addWidget(label)
        return box

    def _connect(self) -> None:
        self.mode_group.buttonClicked.connect(lambda _b: self._mode_changed())
        self.optical_combo.layerChanged.connect(self._optical_changed)
        self.sar_combo.layerChanged.connect(lambda _l: self._update_band_labels())
        self.optical_list.itemChanged.connect(lambda _i: self._optical_changed(None))
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.checkpoint_widget.fileChanged.connect(lambda _p: self.update_checkpoint_info())
        self.keep_clear_check.toggled.connect(self.mask_check.setEnabled)
        self.buttons.rejected.connect(self.reject)
        self.run_button.clicked.connect(self.start)
        self.project.layersAdded.connect(self.refresh_layers)
        self.project.layersRemoved.connect(self.refresh_layers)
        self.project.layersAdded.connect(self.guess_layers)

    def disconnect_project(self) -> None:
        """Stop following the project's layers (call before deleting the dialog)."""
        for signal, slot in ((self.project.layersAdded, self.refresh_layers),
                             (self.project.layersRemoved, self.refresh_layers),
                             (self.project.layersAdded, self.guess_layers)):
            try:
                signal.disconnect(slot)
            except TypeError:
                pass

    # ---- state ---------------------------------------------------------------------------
    @property
    def temporal(self) -> bool:
        return self.mode_temporal.isChecked()

    def refresh_layers(self, *_args: Any) -> None:
        """Rebuild the multi-temporal lists (the combo boxes follow the project themselves)."""
        raster = [lyr for lyr in self.project.mapLayers().values() if isinstance(lyr, QgsRasterLayer)]
        raster.sort(key=lambda lyr: lyr.name())
        for lst in (self.optical_list, self.sar_list):
            checked = {i.data(Qt.UserRole) for i in self._items(lst) if i.checkState() == Qt.Checked}
            lst.blockSignals(True)
            lst.clear()
            for lyr in raster:
                item = QListWidgetItem(f"{lyr.name()}  ({band_text(lyr)})")
                item.setData(Qt.UserRole, lyr.id())
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if lyr.id() in checked else Qt.Unchecked)
                lst.addItem(item)
            lst.blockSignals(False)
        self._update_band_labels()

    def guess_layers(self, *_args: Any) -> None:
        """When both combos show the same layer, pick the optical and SAR layers by band count."""
        if self.optical_combo.currentLayer() is not self.sar_combo.currentLayer():
            return
        raster = [lyr for lyr in self.project.mapLayers().values() if isinstance(lyr, QgsRasterLayer)]
        want_opt, want_sar = self._expected_bands()
        want_sar = want_sar or 2
        opt = [lyr for lyr in raster if lyr.bandCount() == want_opt] or sorted(
            (lyr for lyr in raster if lyr.bandCount() > want_sar), key=lambda lyr: -lyr.bandCount())
        sar = [lyr for lyr in raster if lyr.bandCount() == want_sar and lyr not in opt[:1]]
        if opt:
            self.optical_combo.setLayer(opt[0])
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

    def _mode_changed(self) -> None:
        index = 1 if self.temporal else 0
        self.inputs.setCurrentIndex(index)
        for i in range(self.inputs.count()):  # the stack takes the height of the page shown only
            policy = QSizePolicy.Preferred if i == index else QSizePolicy.Ignored
            self.inputs.widget(i).setSizePolicy(QSizePolicy.Preferred, policy)
        self.inputs.adjustSize()
        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        models = deps.engine_module("models")
        for name in models.list_models(temporal=self.temporal):
            self.model_combo.addItem(f"{name} – {models.model_card(name).title}", name)
        if self.temporal:
            for name in self.baselines():
                self.model_combo.addItem(f"{name} – weight-free baseline (no SAR, no checkpoint)", name)
        idx = self.model_combo.findData(current)
        if idx < 0:
            idx = self.model_combo.findData("glf_cr")
        self.model_combo.setCurrentIndex(max(idx, 0))
        self.model_combo.blockSignals(False)
        if self.temporal and self.model_combo.count() == 0:
            self.model_combo.addItem(self.tr("(no multi-temporal model installed)"), None)
        self._model_changed()

    def baselines(self) -> list[str]:
        """Weight-free multi-temporal methods of the engine (least_cloudy, mosaicing); [] without torch."""
        if deps.missing_dependencies():
            return []
        try:
            temporal = deps.engine_module("inference.temporal")
        except Exception:
            return []
        cards = set(deps.engine_module("models").list_models())
        return [m for m in getattr(temporal, "METHODS", ()) if m not in cards]

    def is_baseline(self, name: str | None) -> bool:
        return bool(name) and self.temporal and name in self.baselines()

    def _model_changed(self) -> None:
        name = self.model_combo.currentData()
        baseline = self.is_baseline(name)
        if baseline:
            defaults = getattr(deps.engine_module("inference.temporal"), "BASELINE_DEFAULTS", {})
        elif name:
            defaults = deps.engine_module("models").model_card(name).defaults
        else:
            defaults = {}
        self.tile_spin.setValue(int(defaults.get("tile_size", 256)))
        self.overlap_spin.setValue(int(defaults.get("overlap", 32)))
        self.checkpoint_widget.setEnabled(not baseline)
        self.device_combo.setEnabled(not baseline)
        self.update_checkpoint_info()

    def _optical_changed(self, _layer: Any) -> None:
        self._update_band_labels()
        layers = self.checked_layers(self.optical_list) if self.temporal else [self.optical_combo.currentLayer()]
        path = local_path(layers[-1]) if layers else None
        current = self.output_widget.filePath()
        if path and (not current or current == self._auto_output):
            self._auto_output = str(Path(path).with_name(Path(path).stem + "_cloudfree.tif"))
            self.output_widget.setFilePath(self._auto_output)

    def _expected_bands(self) -> tuple[int | None, int | None]:
        ckpt = self._checkpoint
        if ckpt is None:
            return None, None
        return len(ckpt.bands.get("optical", [])), len(ckpt.bands.get("sar", []))

    def _update_band_labels(self) -> None:
        want_opt, want_sar = self._expected_bands()
        for combo, label, want in ((self.optical_combo, self.optical_bands, want_opt),
                                   (self.sar_combo, self.sar_bands, want_sar)):
            layer = combo.currentLayer()
            text = band_text(layer)
            ok = want is None or not isinstance(layer, QgsRasterLayer) or layer.bandCount() == want
            label.setText(text if ok else f"{text} (model: {want})")
            label.setStyleSheet("" if ok else ERROR_STYLE)

    # ---- checkpoint ----------------------------------------------------------------------
    _checkpoint: Any = None

    def checkpoint_path(self) -> str | None:
        """The checkpoint file chosen, or the model's bundled one (None if there is none)."""
        path = self.checkpoint_widget.filePath().strip()
        if path:
            return path
        name = self.model_combo.currentData()
        if not name:
            return None
        card = deps.engine_module("models").model_card(name)
        if not card.default_checkpoint:
            return None
        try:
            return str(deps.engine_module("api").default_checkpoint(card))
        except Exception:
            return None

    def update_checkpoint_info(self) -> None:
        """Read the checkpoint's metadata and show it (or what is wrong) under the file widget."""
        self._checkpoint = None
        name = self.model_combo.currentData()
        missing = deps.missing_dependencies()
        if missing:
            self._set_info(f"Python package(s) {', '.join(missing)} missing: {deps.INSTALL_HELP}", error=True)
            return
        if not name:
            self._set_info(self.tr("no model"), error=True)
            return
        if self.is_baseline(name):
            self._set_info(f"{name}: weight-free baseline on the cloud mask; no checkpoint, SAR layers are ignored",
                           error=False)
            return
        path = self.checkpoint_path()
        if path is None:
            self._set_info(f"model {name} has no bundled checkpoint (or it is missing): choose a checkpoint file",
                           error=True)
            self._update_band_labels()
            return
        try:
            ckpt = self._load_checkpoint(path, name)
        except Exception as exc:
            self._set_info(str(exc), error=True)
            self._update_band_labels()
            return
        if ckpt.model != name:
            self._set_info(f"{Path(path).name} holds model {ckpt.model!r}, not {name!r}", error=True)
            self._update_band_labels()
            return
        self._checkpoint = ckpt
        opt, sar = ckpt.bands.get("optical", []), ckpt.bands.get("sar", [])
        bundled = "" if self.checkpoint_widget.filePath().strip() else " (bundled)"
        trained = ckpt.trained_on if len(ckpt.trained_on) <= 140 else ckpt.trained_on[:139] + "…"
        self._set_info(
            f"{Path(path).name}{bundled}: {len(opt)} optical bands ({short_list(opt)}); SAR {', '.join(sar)}.\n"
            f"Trained on: {trained}",
            error=False,
        )
        self.checkpoint_info.setToolTip(ckpt.summary())
        self._update_band_labels()

    def _load_checkpoint(self, path: str, model: str) -> Any:
        p = Path(path)
        key = (str(p.resolve()), p.stat().st_mtime if p.is_file() else 0.0, model)
        if key not in self._ckpt_cache:
            self._ckpt_cache = {key: deps.engine_module("io.checkpoint").load_checkpoint(p, model=model)}
        return self._ckpt_cache[key]

    def _set_info(self, text: str, error: bool) -> None:
        label = self.checkpoint_info
        label.setText(text)
        label.setToolTip("")
        # a wrapped QLabel in a form layout does not grow by itself: reserve the lines it needs
        width = max(label.width(), self.minimumWidth() - 60)
        needed = label.fontMetrics().boundingRect(QRect(0, 0, width, 10000), Qt.TextWordWrap, text).height()
        label.setMinimumHeight(needed + 4)
        self.checkpoint_info.setStyleSheet(ERROR_STYLE if error else INFO_STYLE)

    # ---- run -----------------------------------------------------------------------------
    def parameters(self) -> RunParams:
        """The run as chosen in the widgets; ValueError says what is missing or wrong."""
        model = self.model_combo.currentData()
        if not model:
            raise ValueError("choose a model")
        if self.temporal:
            opt_layers = self.checked_layers(self.optical_list)
            sar_layers = self.checked_layers(self.sar_list)
            if len(opt_layers) < 2:
                raise ValueError("multi-temporal: check at least two optical layers (one per date)")
            if self.is_baseline(model) and not sar_layers:
                pass  # baselines use no SAR
            elif len(sar_layers) != len(opt_layers):
                raise ValueError(
                    f"multi-temporal: {len(opt_layers)} optical but {len(sar_layers)} SAR layers checked; "
                    "check one SAR layer per date"
                )
        else:
            opt_layers = [self.optical_combo.currentLayer()]
            sar_layers = [self.sar_combo.currentLayer()]
            if opt_layers[0] is None or sar_layers[0] is None:
                raise ValueError("choose an optical and a SAR layer")
            if opt_layers[0] is sar_layers[0]:
                raise ValueError("the optical and the SAR layer are the same layer")
        paths = []
        for role, layers in (("optical", opt_layers), ("SAR", sar_layers)):
            for lyr in layers:
                path = local_path(lyr)
                if path is None:
                    raise ValueError(
                        f"{role} layer '{lyr.name()}' is not a local raster file; "
                        "save it as a GeoTIFF first (Raster ▸ Conversion ▸ Translate)"
                    )
                paths.append(path)
        out = self.output_widget.filePath().strip()
        if not out:
            raise ValueError("choose an output GeoTIFF")
        if Path(out).suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"the output must be a GeoTIFF (.tif), got {out}")
        if any(Path(out).resolve() == Path(p).resolve() for p in paths):
            raise ValueError(f"the output {out} is one of the inputs: choose another file")
        if self.keep_clear_check.isChecked() and self._checkpoint is not None:
            n_opt = len(self._checkpoint.bands.get("optical", []))
            if n_opt != 13:
                raise ValueError(
                    f"keep clear pixels uses the Sentinel-2 L1C cloud detector (13 bands); model {model} "
                    f"works on {n_opt} bands: uncheck 'Keep clear pixels'"
                )
        if self.overlap_spin.value() >= self.tile_spin.value():
            raise ValueError("the tile overlap must be smaller than the tile size")
        n = len(opt_layers)
        return RunParams(
            optical=paths[:n],
            sar=paths[n:],
            output=out,
            model=model,
            checkpoint=(self.checkpoint_widget.filePath().strip() or None) if not self.is_baseline(model) else None,
            device=self.device_combo.currentData(),
            tile_size=self.tile_spin.value(),
            overlap=self.overlap_spin.value(),
            keep_clear=self.keep_clear_check.isChecked(),
            add_mask=self.mask_check.isChecked() and self.keep_clear_check.isChecked(),
            temporal=self.temporal,
            optical_names=[lyr.name() for lyr in opt_layers],
            sar_names=[lyr.name() for lyr in sar_layers],
        )

    def start(self) -> RemoveCloudsTask | None:
        """Validate, queue the background task, hide the dialog. Problems are shown in the dialog."""
        try:
            params = self.parameters()
        except ValueError as exc:
            self.message.setText(str(exc))
            return None
        needs_ckpt = not self.is_baseline(params.model)
        if needs_ckpt and self._checkpoint is None and "torch" not in deps.missing_dependencies():
            self.message.setText(self.checkpoint_info.text() or "no usable checkpoint")
            return None
        self.message.setText("")
        task = RemoveCloudsTask(params, self.iface, self.project, on_done=self._task_done)
        self.tasks.append(task)
        start_task(task)
        push_message(self.iface, Qgis.Info, f"{params.layer_name}: started (progress and cancel in the task bar)", 3)
        self.accept()
        return task

    def _task_done(self, outcome: Any) -> None:
        self.tasks = [t for t in self.tasks if not t.outcome.done]
