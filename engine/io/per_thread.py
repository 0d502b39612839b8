"""One object per thread, for GDAL dataset handles (a handle must not be shared by threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerThread(Generic[T]):
    """``factory()`` made once per thread, on that thread's first :meth:`get`; :meth:`close`
    passes every object made to ``closer`` (from any thread, once all users are done)."""

    def __init__(self, factory: Callable[[], T], closer: Callable[[T], None]) -> None:
        self.factory, self.closer = factory, closer
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list[T] = []

    def get(self) -> T:
        """This thread's object."""
        if not hasattr(self._local, "obj"):
            self._local.obj = self.factory()
            with self._lock:
                self._made.append(self._local.obj)
        return self._local.obj

    def close(self) -> None:
        """Close every object made; a later :meth:`get` makes new ones."""
        with self._lock:
            made, self._made = self._made, []
            self._local = threading.local()
        for obj in made:
            self.closer(obj)
