"""Background work for the desktop GUI: nothing heavy ever runs on QGIS's GUI thread.

- :class:`BackgroundCalls`: one worker thread for short jobs that import torch or read files
  (checkpoint metadata, the device list). The dialog shows itself at once and fills in what
  these return ("loading models…" until then).
- :class:`AlgorithmTask`: a run from the dialog. It runs the *Processing algorithm* — the same
  ``cloudrm:removeclouds`` / ``cloudrm:removecloudsmultitemporal`` that the toolbox, the
  graphical modeler and ``qgis_process`` run — so the same settings give the same file from
  every front end. As QGIS's own algorithm runner does, ``prepare`` and ``postProcess`` run on
  the GUI thread and ``runPrepared`` in the task's worker thread. The algorithm's feedback
  becomes the task's progress (the engine reports progress inside a tile and checks for cancel
  between the model's blocks); cancel in the task bar cancels the feedback.

A canceled run ends *canceled*, not failed: ``run()`` returns True (QGIS 3.22 has no third
final state; False would make QGIS announce "Task failed"), the task's description gets
" – canceled" and the message bar says "canceled, nothing written".
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsTask,
)
from qgis.PyQt.QtCore import QCoreApplication, QObject, Qt, pyqtSignal

from .layers import Ranges, clear_pixel_ranges, layers_with_file, load_result_layers, style_true_colour

LOG_TAG = "cloudrm"


def _tr(text: str) -> str:
    return QCoreApplication.translate("cloudrm", text)


def push_message(iface: Any, level: int, text: str, duration: int = 0, title: str = "cloudrm") -> None:
    """A message-bar line (and the same line in the cloudrm log); only the log without ``iface``."""
    QgsMessageLog.logMessage(text, LOG_TAG, level)
    bar = iface.messageBar() if iface is not None else None
    if bar is not None:
        bar.pushMessage(title, text, level, duration)


# ---- short background calls (checkpoint metadata, devices) ----------------------------------


class _Relay(QObject):
    """Lives on the GUI thread; a signal emitted from the worker thread is queued to it."""

    done = pyqtSignal(int, object, object)  # call id, result, exception


class BackgroundCalls(QObject):
    """Runs plain callables one after the other in a worker thread; each result (or exception)
    comes back to ``on_done(result, error)`` on the GUI thread, in order.

    One thread, so two requests never import torch at the same time. It is a daemon Python
    thread, not a QThread: it can never be destroyed while running (which would abort QGIS),
    and it does not keep QGIS from quitting. :meth:`shutdown` drops pending callbacks and lets
    the thread end after the call in progress.
    """

    idle = pyqtSignal()
    """Emitted on the GUI thread when the last pending call has been delivered."""

    def __init__(self, name: str = "cloudrm-worker", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._callbacks: dict[int, Callable[[Any, BaseException | None], None]] = {}
        self._queue: queue.Queue[tuple[int, Callable[[], Any]] | None] = queue.Queue()
        self._relay = _Relay(self)
        self._relay.done.connect(self._deliver, Qt.QueuedConnection)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:  # worker thread
        relay = self._relay
        while True:
            job = self._queue.get()
            if job is None:
                return
            call_id, fn = job
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed back to the GUI thread, never lost
                result, error = None, exc
            try:
                relay.done.emit(call_id, result, error)
            except RuntimeError:  # the owner is gone: nobody to tell
                return

    def call(self, fn: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]) -> int:
        """Queue ``fn()``; returns the call's id."""
        call_id = next(self._ids)
        self._callbacks[call_id] = on_done
        self._queue.put((call_id, fn))
        return call_id

    @property
    def pending(self) -> int:
        """Calls queued or running whose result has not been delivered yet."""
        return len(self._callbacks)

    @property
    def thread_name(self) -> str:
        return self._thread.name

    def _deliver(self, call_id: int, result: Any, error: BaseException | None) -> None:
        callback = self._callbacks.pop(call_id, None)
        if callback is not None:
            try:
                callback(result, error)
            except Exception:  # a slot must not raise into Qt
                QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
        if not self._callbacks:
            self.idle.emit()

    def shutdown(self, wait_s: float = 0.0) -> None:
        """Drop pending callbacks; the thread ends after the call in progress (waits up to ``wait_s``)."""
        self._callbacks.clear()
        self._queue.put(None)
        if wait_s > 0:
            self._thread.join(wait_s)


# ---- a run from the dialog ------------------------------------------------------------------


@dataclass
class RunPlan:
    """What the dialog asks for: an algorithm with its parameters, and what to show afterwards.

    ``parameters`` are the algorithm's own (layer ids for layers, paths for outputs), exactly
    what ``qgis_process run <algorithm_id>`` would get. The rest is for the GUI.
    """

    algorithm_id: str
    parameters: dict[str, Any]
    layer_name: str
    """Base name of the result layer (made unique in the project unless it replaces a layer)."""
    optical: list[str]
    """Optical input file(s); for a series the target is found in the output's tags."""
    input_rgb: list[int]
    """1-based true-colour bands of the optical input."""
    output_rgb: list[int]
    """1-based true-colour bands of the result."""
    show_mask: bool = False
    """Add the filled-pixels mask (``parameters['FILLED_MASK']``) as a layer."""
    stats_mask: str | None = None
    """A temporary filled-pixels mask asked for only to know the clear pixels; deleted afterwards."""
    style_input: bool = True
    """Give the optical input layer(s) the result's stretch (true colour), for comparison."""
    optical_layer_ids: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return str(self.parameters["OUTPUT"])

    @property
    def filled_mask(self) -> str | None:
        value = self.parameters.get("FILLED_MASK")
        return str(value) if value else None


@dataclass
class TaskOutcome:
    """What happened, in plain Python (QGIS's task manager deletes the QgsTask itself)."""

    ok: bool = False
    canceled: bool = False
    error: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    mask: str | None = None
    target: str | None = None
    """The optical file the output is on (a series: its latest date)."""
    ranges: Ranges | None = None
    """The true-colour stretch given to the result (and the input): its clear pixels' 2–98 %."""
    layer_ids: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    """Ids of layers that already showed the output and were updated in place."""
    styled_inputs: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)
    seconds: float = 0.0
    canceled_at: float | None = None
    """time.monotonic() when cancel was asked for; with ``ended_at`` the cancel latency."""
    ended_at: float | None = None
    done: bool = False


class _Feedback(QgsProcessingFeedback):
    """Processing feedback that keeps what the algorithm says (and logs it under cloudrm)."""

    def __init__(self, outcome: TaskOutcome) -> None:
        super().__init__()
        self.outcome = outcome

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.outcome.infos.append(info)
        QgsMessageLog.logMessage(info, LOG_TAG, Qgis.Info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.outcome.warnings.append(warning)
        QgsMessageLog.logMessage(warning, LOG_TAG, Qgis.Warning)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        QgsMessageLog.logMessage(error, LOG_TAG, Qgis.Warning)


_RUNNING: set[AlgorithmTask] = set()
"""Python wrappers of queued tasks: the task manager owns only the C++ side."""


def create_algorithm(algorithm_id: str) -> QgsProcessingAlgorithm:
    """A fresh instance of a cloudrm algorithm: from the Processing registry (the registered
    provider), else straight from the plugin's algorithm classes (a provider not registered)."""
    alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    if alg is not None:
        return alg
    from .algorithms import ALGORITHMS

    name = algorithm_id.split(":", 1)[-1]
    for cls in ALGORITHMS:
        if name == cls.NAME:
            return cls().create()
    raise ValueError(f"no Processing algorithm {algorithm_id}")


class AlgorithmTask(QgsTask):
    """Run a :class:`RunPlan` in QGIS's task manager; load and style the result when done.

    Args:
        plan: the algorithm, its parameters and what to show.
        iface: QgisInterface for message-bar lines (None: the QGIS log only).
        project: where the layers are (default: the current project).
        on_done: called on the GUI thread with the :class:`TaskOutcome` at the very end.
    """

    def __init__(
        self,
        plan: RunPlan,
        iface: Any = None,
        project: QgsProject | None = None,
        on_done: Callable[[TaskOutcome], None] | None = None,
    ) -> None:
        super().__init__(f"cloudrm: {plan.layer_name}", QgsTask.CanCancel)
        self.plan = plan
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.on_done = on_done
        self.outcome = TaskOutcome()
        self.feedback = _Feedback(self.outcome)
        # the engine's progress (fractions of a tile) reaches the task bar from the worker thread
        self.feedback.progressChanged.connect(self._progress, Qt.DirectConnection)
        self.context = QgsProcessingContext()
        self.context.setProject(self.project)
        self.algorithm = create_algorithm(plan.algorithm_id)
        self._t0 = 0.0
        if not self.algorithm.prepare(plan.parameters, self.context, self.feedback):
            self.outcome.error = _tr("the algorithm could not be prepared")

    # ---- any thread ---------------------------------------------------------------------
    def cancel(self) -> None:
        """The task bar's cancel: the engine sees it at its next check (between model blocks)."""
        if self.outcome.canceled_at is None:
            self.outcome.canceled_at = time.monotonic()
        self.feedback.cancel()
        super().cancel()

    def _progress(self, percent: float) -> None:
        self.outcome.progress.append(percent)
        self.setProgress(percent)
        if self.isCanceled() and not self.feedback.isCanceled():
            self.feedback.cancel()

    # ---- worker thread ------------------------------------------------------------------
    def run(self) -> bool:
        self._t0 = time.monotonic()
        try:
            return self._run()
        finally:
            self.outcome.seconds = time.monotonic() - self._t0
            self.outcome.ended_at = time.monotonic()

    def _run(self) -> bool:
        o, plan = self.outcome, self.plan
        if o.error is not None:
            return False
        if self.isCanceled():
            o.canceled = True
            return True
        try:
            o.results = dict(self.algorithm.runPrepared(plan.parameters, self.context, self.feedback) or {})
        except QgsProcessingException as exc:
            message = _exception_text(exc)
            if self.feedback.isCanceled() or self.isCanceled() or message.startswith("Canceled"):
                o.canceled = True
                return True  # canceled is not failed (see the module docstring)
            o.error = message
            return False
        except Exception as exc:  # a bug: keep the traceback in the log
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            o.error = f"{type(exc).__name__}: {exc}"
            return False
        o.output = str(o.results.get("OUTPUT") or plan.output)
        o.target = self._target(o.output)
        mask = plan.filled_mask or plan.stats_mask
        try:  # the shared stretch: the input's clear pixels (reading pixels: worker thread)
            o.ranges = clear_pixel_ranges(
                o.target, plan.input_rgb, mask if mask and Path(mask).is_file() else None
            )
        except Exception as exc:  # the result stands; it gets its own stretch
            o.warnings.append(_tr("could not compute the input's statistics: {error}").format(error=exc))
        return True

    def _target(self, output: str) -> str:
        """The optical file the output is on: the only one, or the series' latest (output tag)."""
        if len(self.plan.optical) == 1:
            return self.plan.optical[0]
        try:
            from osgeo import gdal

            tagged = (gdal.Open(output).GetMetadata() or {}).get("CLOUDRM_TARGET", "")
        except Exception:  # fall back to the last date given
            tagged = ""
        for path in self.plan.optical:
            if tagged and (Path(tagged).name == Path(path).name or tagged == path):
                return path
        return self.plan.optical[-1]

    # ---- GUI thread ---------------------------------------------------------------------
    def finished(self, result: bool) -> None:
        try:
            self._finish(result)
        except Exception as exc:  # never raise into Qt
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            self.outcome.ok = False
            self.outcome.error = _tr("could not show the result: {error}").format(error=f"{type(exc).__name__}: {exc}")
            push_message(self.iface, Qgis.Critical, f"{self.plan.layer_name}: {self.outcome.error}")
        finally:
            if self.plan.stats_mask:
                Path(self.plan.stats_mask).unlink(missing_ok=True)
            self.outcome.done = True
            _RUNNING.discard(self)
            if self.on_done is not None:
                try:
                    self.on_done(self.outcome)
                except Exception:
                    QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)

    def _finish(self, result: bool) -> None:
        plan, o = self.plan, self.outcome
        if o.canceled:
            # before the task manager announces the end: QGIS shows the description then
            self.setDescription(f"cloudrm: {plan.layer_name} – " + _tr("canceled"))
            push_message(self.iface, Qgis.Info, f"{plan.layer_name}: " + _tr("canceled, nothing written"), 5)
            return
        if not result:
            push_message(self.iface, Qgis.Critical, f"{plan.layer_name}: {o.error or _tr('failed')}")
            return
        try:
            self.algorithm.postProcess(self.context, self.feedback)
        except QgsProcessingException as exc:
            o.warnings.append(_exception_text(exc))
        assert o.output is not None
        o.mask = plan.filled_mask if plan.show_mask and plan.filled_mask and Path(plan.filled_mask).is_file() else None
        before = set(self.project.mapLayers())
        inputs = layers_with_file(self.project, o.target) if o.target else []
        layers = load_result_layers(o.output, plan.layer_name, plan.output_rgb, o.mask, self.project, o.ranges,
                                    above=inputs[0] if inputs else None)
        o.layer_ids = [lyr.id() for lyr in layers]
        o.replaced = [i for i in o.layer_ids if i in before]
        if plan.style_input and o.ranges is not None:
            for layer in inputs:
                if layer.bandCount() >= max(plan.input_rgb):
                    style_true_colour(layer, plan.input_rgb, o.ranges)
                    o.styled_inputs.append(layer.id())
        o.ok = True
        for w in o.warnings:
            push_message(self.iface, Qgis.Warning, w, 10)
        push_message(
            self.iface, Qgis.Success,
            _tr("{name}: done in {seconds:.1f} s → {path}").format(
                name=layers[0].name(), seconds=o.seconds, path=o.output),
            5,
        )


def _exception_text(exc: BaseException) -> str:
    """The message of a (sip-wrapped) QgsProcessingException."""
    return str(exc.args[0]) if exc.args else str(exc)


def temporary_mask_path() -> str:
    """A fresh path for a filled-pixels mask wanted only for statistics (deleted after the run)."""
    from qgis.core import QgsProcessingUtils

    return os.path.join(QgsProcessingUtils.tempFolder(), f"cloudrm_filled_{uuid.uuid4().hex[:12]}.tif")


def start_task(task: AlgorithmTask) -> AlgorithmTask:
    """Queue ``task`` in QGIS's task manager (progress bar and cancel button in the status bar)."""
    _RUNNING.add(task)
    QgsApplication.taskManager().addTask(task)
    return task
