"""Typed errors. Messages name the file or layer and say what was expected."""

from __future__ import annotations


class CloudrmError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(CloudrmError):
    """An input raster or parameter is unusable (wrong bands, no overlap, missing file...)."""


class CheckpointError(CloudrmError):
    """A checkpoint is missing, unreadable or does not fit the chosen model."""


class DependencyError(CloudrmError):
    """A Python package the engine needs is not installed."""


class Canceled(CloudrmError):
    """The caller asked to stop; partial output has been removed."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (or SIGHUP) and unwinds like Ctrl+C.

    A ``KeyboardInterrupt`` so that ``except Exception`` handlers cannot swallow it and every
    ``finally`` (the temporary-output cleanup of ``atomic_output``) runs on the way out.
    """

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(f"terminated by {name}")
        self.signum = signum
        self.name = name
