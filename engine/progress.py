"""One progress/cancel protocol for the CLI (tqdm), Processing feedback and QgsTask."""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    """What long-running engine calls report to and ask of their caller."""

    def update(self, done: int, total: int) -> None:
        """``done`` of ``total`` work units (tiles, steps) are finished."""

    def is_canceled(self) -> bool:
        """True when the caller wants the work stopped (checked between tiles)."""

    def info(self, message: str) -> None:
        """A line for the log."""

    def warning(self, message: str) -> None:
        """Something the user should know about (resampling, partial overlap...)."""


class NullProgress:
    """Reports nothing, never cancels; warnings go to stderr."""

    def update(self, done: int, total: int) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)


class TqdmProgress:
    """A tqdm bar on stderr, created at the first update; log lines are written above it."""

    def __init__(self, desc: str, unit: str = "tile") -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._desc, self._unit = desc, unit
        self._bar = None

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = self._tqdm(total=total, desc=self._desc, unit=self._unit, file=sys.stderr, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = done
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
