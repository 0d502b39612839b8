"""One progress/cancel protocol for the CLI (tqdm), Processing feedback and QgsTask."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Progress(Protocol):
    """What long-running engine calls report to and ask of their caller."""

    def update(self, done: float, total: int) -> None:
        """``done`` of ``total`` work units (tiles, steps) are finished; fractional inside a unit."""

    def is_canceled(self) -> bool:
        """True when the caller wants the work stopped (checked between tiles)."""

    def info(self, message: str) -> None:
        """A line for the log."""

    def warning(self, message: str) -> None:
        """Something the user should know about (resampling, partial overlap...)."""


class NullProgress:
    """Reports nothing, never cancels; warnings go to stderr."""

    def update(self, done: float, total: int) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)


class Quiet(NullProgress):
    """Reports nothing at all (for work whose messages were already given once)."""

    def warning(self, message: str) -> None:
        pass


class TqdmProgress:
    """A tqdm bar on stderr, created at the first update; log lines are written above it."""

    def __init__(self, desc: str, unit: str = "tile") -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._desc, self._unit = desc, unit
        self._bar: Any = None

    def update(self, done: float, total: int) -> None:
        if self._bar is None:
            self._bar = self._tqdm(total=total, desc=self._desc, unit=self._unit, file=sys.stderr, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = int(done)
        self._bar.refresh()

    def is_canceled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        self._tqdm.write(message, file=sys.stderr)

    def warning(self, message: str) -> None:
        self._tqdm.write(f"warning: {message}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Span:
    """Maps a stage's ``done/total`` onto ``[lo, hi]`` of a parent's 0..1 range (multi-stage runs).

    The parent sees ``update(lo + (hi - lo) * done / total, 1)``-style progress, scaled to the
    parent's own total of ``scale`` units (default 100, i.e. percent). Messages, warnings and
    cancellation pass through.
    """

    def __init__(self, parent: Progress, lo: float, hi: float, scale: int = 100) -> None:
        self.parent, self.lo, self.hi, self.scale = parent, lo, hi, scale

    def update(self, done: float, total: int) -> None:
        frac = self.lo + (self.hi - self.lo) * (done / total if total else 1.0)
        self.parent.update(frac * self.scale, self.scale)

    def is_canceled(self) -> bool:
        return self.parent.is_canceled()

    def info(self, message: str) -> None:
        self.parent.info(message)

    def warning(self, message: str) -> None:
        self.parent.warning(message)
