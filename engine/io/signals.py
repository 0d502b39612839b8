"""SIGTERM (and SIGHUP) unwind like Ctrl+C, so temporary outputs are cleaned up.

``timeout``, batch schedulers and ``kill`` send SIGTERM, whose default action ends the
process at once: no ``finally`` runs and :func:`~.raster.atomic_output` cannot remove its
hidden ``.part.tif`` file. While :func:`terminate_as_interrupt` is active, those signals raise
:class:`~..errors.Terminated` (a ``KeyboardInterrupt``) in the main thread instead, so the
stack unwinds exactly as for Ctrl+C.

Only stdlib imports: the CLI installs this before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from ..errors import Terminated

#: Signals turned into :class:`Terminated` where the platform has them (no SIGHUP on Windows).
SIGNALS: tuple[str, ...] = ("SIGTERM", "SIGHUP")


@contextlib.contextmanager
def terminate_as_interrupt(signals: tuple[str, ...] = SIGNALS) -> Iterator[bool]:
    """While active, SIGTERM/SIGHUP raise :class:`Terminated` in the main thread.

    Yields True when the handlers were installed; False (a no-op) outside the main thread,
    where Python does not allow installing signal handlers (e.g. inside a QGIS task); there the
    host application decides what a signal does.

    The first signal raises; further ones while the stack unwinds are ignored, so a second
    ``kill`` cannot interrupt the cleanup half-way. The previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:  # already unwinding: let the cleanup finish
            return
        fired.append(signum)
        raise Terminated(signum, signal.Signals(signum).name)

    previous: dict[signal.Signals, Any] = {}
    try:
        for name in signals:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:  # e.g. SIGHUP under nohup: the user asked to ignore it
                continue
            previous[sig] = old
            signal.signal(sig, handler)
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
