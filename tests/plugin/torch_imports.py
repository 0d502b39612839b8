"""Records which thread executes torch's modules; shared by the two GUI probes (gui_probe.py in a
fresh Python, desktop_probe.py inside the real QGIS desktop). Standard library only."""

from __future__ import annotations

import importlib.abc
import sys
import threading
import time
from typing import Any


class TorchImportRecorder(importlib.abc.MetaPathFinder):
    """Notes the thread that *executes* torch or one of its submodules (a first import).

    Looking a module up (``importlib.util.find_spec``, as the plugin's dependency check does)
    executes nothing and is not recorded: the real finder's loader is wrapped instead.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.imports: list[dict[str, Any]] = []

    def find_spec(self, fullname, path, target=None):
        if not (fullname == "torch" or fullname.startswith("torch.")):
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module
        imports, t0 = self.imports, self.t0

        def exec_module(module, _original=original, _name=fullname):
            t = threading.current_thread()
            imports.append({"module": _name, "thread": t.name, "main": t is threading.main_thread(),
                            "t": time.monotonic() - t0})
            return _original(module)

        spec.loader.exec_module = exec_module
        return spec


def install(t0: float) -> list[dict[str, Any]]:
    """Put a recorder first on ``sys.meta_path``; returns the list it fills."""
    recorder = TorchImportRecorder(t0)
    sys.meta_path.insert(0, recorder)
    return recorder.imports
