"""Background cloud removal for the dialog: a QgsTask around the engine's api.

``run()`` works in a worker thread and touches no widget and no project: it calls
``api.predict_scene`` (or ``api.predict_series``), then optionally
``inference.composite.keep_clear``. ``finished()`` runs on the main thread: it loads the
result (true-colour style) and the filled-pixels mask, or reports the error / cancel on the
message bar. Nothing is ever raised into Qt.
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsProject, QgsTask

from . import deps
from .layers import load_result_layers, rgb_band_numbers

LOG_TAG = "cloudrm"


@dataclass
class RunParams:
    """Everything a run needs; built by the dialog from its widgets (paths, not layers).

    ``optical``/``sar`` hold one path each for a single date, or one per date (time order)
    for a multi-temporal model; ``optical_names``/``sar_names`` are the layer names for messages.
    """

    optical: list[str]
    sar: list[str]
    output: str
    model: str = "glf_cr"
    checkpoint: str | None = None
    device: str = "auto"
    tile_size: int = 256
    overlap: int = 32
    keep_clear: bool = True
    add_mask: bool = False
    temporal: bool = False
    optical_names: list[str] = field(default_factory=list)
    sar_names: list[str] = field(default_factory=list)
    feather_px: int = 8

    @property
    def mask_path(self) -> str | None:
        """``<output stem>_filled.tif`` beside the output when the mask is wanted."""
        if not (self.add_mask and self.keep_clear):
            return None
        out = Path(self.output)
        return str(out.with_name(out.stem + "_filled.tif"))

    def name_of(self, optical_path: str | os.PathLike[str]) -> str:
        """The layer name of one of the optical inputs (the file stem if unknown)."""
        for path, name in zip(self.optical, self.optical_names or [], strict=False):
            if Path(path).resolve() == Path(optical_path).resolve():
                return name
        return Path(optical_path).stem

    @property
    def layer_name(self) -> str:
        """Result layer name; multi-temporal runs are renamed after the target date when known."""
        base = self.name_of(self.optical[-1] if self.temporal else self.optical[0])
        return f"{base} cloud-free ({self.model})"


@dataclass
class TaskOutcome:
    """What happened, kept in plain Python (the QgsTask itself is deleted by the task manager)."""

    ok: bool = False
    canceled: bool = False
    error: str | None = None
    output: str | None = None
    mask: str | None = None
    layer_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    seconds: float = 0.0
    done: bool = False
    target: str | None = None
    """The optical raster the output is on (multi-temporal: the series' latest date)."""
    layer_name: str | None = None


class TaskProgress:
    """The engine's Progress protocol on top of a QgsTask, mapping ``done/total`` into [lo, hi] %.

    Called from the worker thread: ``setProgress`` and ``QgsMessageLog`` are thread-safe.
    """

    def __init__(self, task: QgsTask, outcome: TaskOutcome, lo: float = 0.0, hi: float = 100.0) -> None:
        self.task, self.outcome, self.lo, self.hi = task, outcome, lo, hi

    def span(self, lo: float, hi: float) -> TaskProgress:
        return TaskProgress(self.task, self.outcome, lo, hi)

    def update(self, done: int, total: int) -> None:
        self.task.setProgress(self.lo + (self.hi - self.lo) * done / max(total, 1))

    def is_canceled(self) -> bool:
        return self.task.isCanceled()

    def info(self, message: str) -> None:
        self.outcome.infos.append(message)
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Info)

    def warning(self, message: str) -> None:
        self.outcome.warnings.append(message)
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Warning)


def push_message(iface: Any, level: int, text: str, duration: int = 0) -> None:
    """A message-bar line (``pushMessage`` with a level = pushCritical/pushInfo...); log only without iface."""
    QgsMessageLog.logMessage(text, LOG_TAG, level)
    bar = iface.messageBar() if iface is not None else None
    if bar is not None:
        bar.pushMessage("cloudrm", text, level, duration)


# Python wrappers of running tasks: the task manager owns only the C++ side.
_RUNNING: set[RemoveCloudsTask] = set()


class RemoveCloudsTask(QgsTask):
    """Remove clouds in the background; results are added to ``project`` when done.

    Args:
        params: the run (paths, model, options).
        iface: QgisInterface for message-bar lines (None: the QGIS log only).
        project: where layers go (default: the current project).
        on_done: called on the main thread with the :class:`TaskOutcome` after ``finished``.
    """

    def __init__(
        self,
        params: RunParams,
        iface: Any = None,
        project: QgsProject | None = None,
        on_done: Callable[[TaskOutcome], None] | None = None,
    ) -> None:
        super().__init__(f"cloudrm: {params.layer_name}", QgsTask.CanCancel)
        self.params = params
        self.iface = iface
        self.project = project
        self.on_done = on_done
        self.outcome = TaskOutcome()

    # ---- worker thread ------------------------------------------------------------------
    def run(self) -> bool:
        t0 = time.time()
        try:
            self._work()
            return True
        except Exception as exc:
            errors = _errors_module()
            if errors is not None and isinstance(exc, errors.Canceled):
                self.outcome.canceled = True
            elif errors is not None and isinstance(exc, errors.CloudrmError):
                self.outcome.error = str(exc)
            else:
                self.outcome.error = f"{type(exc).__name__}: {exc}"
                QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            if self.isCanceled() and self.outcome.error is None:
                self.outcome.canceled = True
            return False
        finally:
            self.outcome.seconds = time.time() - t0

    def _work(self) -> None:
        p = self.params
        missing = deps.missing_dependencies()
        if missing:
            raise RuntimeError(f"Python package(s) {', '.join(missing)} missing.\n{deps.INSTALL_HELP}")
        api = deps.engine_module("api")
        progress = TaskProgress(self, self.outcome)
        out = Path(p.output)
        # the raw prediction goes to a hidden file beside the output, removed whatever happens
        predicted = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.prediction.tif") if p.keep_clear else out
        predict_span = progress.span(0.0, 90.0) if p.keep_clear else progress
        common = dict(
            model=p.model, checkpoint=p.checkpoint or None, device=p.device,
            tile_size=p.tile_size, overlap=p.overlap, progress=predict_span,
        )
        try:
            if p.temporal:
                predict_series = getattr(api, "predict_series", None)
                if predict_series is None:
                    raise RuntimeError(
                        "multi-temporal cloud removal is not available in this version of the cloudrm engine "
                        "(engine api has no predict_series); use the single-date mode"
                    )
                common.pop("model")
                res = predict_series(
                    p.optical, p.sar or None, predicted, method=p.model,
                    optical_names=p.optical_names or None, sar_names=p.sar_names or None, **common,
                )
                target = str(res.target)
            else:
                api.predict_scene(
                    p.optical[0], p.sar[0], predicted,
                    optical_name=(p.optical_names or [None])[0], sar_name=(p.sar_names or [None])[0], **common,
                )
                target = p.optical[0]
            self.outcome.target = target
            self.outcome.layer_name = f"{p.name_of(target)} cloud-free ({p.model})"
            if p.keep_clear:
                composite = deps.engine_module("inference.composite")
                res = composite.keep_clear(
                    target, predicted, out, feather_px=p.feather_px,
                    progress=progress.span(90.0, 100.0), mask_out=p.mask_path,
                )
                self.outcome.infos.append(
                    f"{res.cloudy_pixels} of {res.pixels} pixels cloudy ({100 * res.cloud_fraction:.1f} %), "
                    f"{res.filled_pixels} filled by the model"
                )
        finally:
            if predicted != out:
                predicted.unlink(missing_ok=True)
        self.outcome.output = str(out)
        self.outcome.mask = p.mask_path

    # ---- main thread --------------------------------------------------------------------
    def finished(self, result: bool) -> None:
        try:
            self._finish(result)
        except Exception as exc:
            self.outcome.ok = False
            self.outcome.error = f"could not load the result: {type(exc).__name__}: {exc}"
            push_message(self.iface, Qgis.Critical, self.outcome.error)
        finally:
            self.outcome.done = True
            _RUNNING.discard(self)
            if self.on_done is not None:
                try:
                    self.on_done(self.outcome)
                except Exception:
                    QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)

    def _finish(self, result: bool) -> None:
        p, o = self.params, self.outcome
        if not result:
            if o.canceled or (o.error is None and self.isCanceled()):
                o.canceled = True
                push_message(self.iface, Qgis.Info, f"{p.layer_name}: canceled, nothing written", 5)
            else:
                push_message(self.iface, Qgis.Critical, f"{p.layer_name}: {o.error or 'failed'}")
            return
        layers = load_result_layers(o.output, o.layer_name or p.layer_name, _rgb(p.model), o.mask, self.project)
        o.layer_ids = [lyr.id() for lyr in layers]
        o.ok = True
        for w in o.warnings:
            push_message(self.iface, Qgis.Warning, w, 10)
        push_message(self.iface, Qgis.Success, f"{o.layer_name or p.layer_name}: done in {o.seconds:.1f} s → {o.output}", 5)


def _rgb(model: str) -> list[int]:
    """1-based true-colour bands of a model's output; weight-free baselines output S2 L1C."""
    try:
        card = deps.engine_module("models").model_card(model)
        return rgb_band_numbers(card.output_bands or card.optical_bands, card.rgb_bands)
    except Exception:
        bands = deps.engine_module("data.bands")
        return rgb_band_numbers(bands.S2_BANDS, bands.S2_RGB)


def _errors_module() -> Any:
    try:
        return deps.engine_module("errors")
    except Exception:
        return None


def start_task(task: RemoveCloudsTask) -> RemoveCloudsTask:
    """Queue ``task`` in QGIS's task manager (progress bar in the status bar, cancel button)."""
    _RUNNING.add(task)
    QgsApplication.taskManager().addTask(task)
    return task
