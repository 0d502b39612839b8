"""Where the engine and its dependencies come from, and what to tell the user when they are missing.

- The engine: ``cloudrm_plugin/engine`` in an installed plugin (scripts/plugin.py copies
  ``engine/`` there), else the ``cloudrm_engine`` package of a development install.
- Python packages (torch, rasterio): the QGIS Python's own, plus folders listed in
  ``site_paths.txt`` beside this file (written by ``scripts/install-plugin`` to point at the
  project's virtual environment). Those are *appended* to ``sys.path``, so QGIS's own
  packages (numpy, GDAL bindings) always win.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PLUGIN_DIR = Path(__file__).resolve().parent
SITE_PATHS_FILE = PLUGIN_DIR / "site_paths.txt"
REQUIRED = ("torch", "rasterio", "numpy", "yaml")

INSTALL_HELP = (
    "cloudrm needs PyTorch and rasterio in the Python that QGIS uses.\n"
    "Linux (Debian/Ubuntu): sudo apt install python3-rasterio; then\n"
    "  CPU:  python3 -m pip install --user torch --index-url https://download.pytorch.org/whl/cpu\n"
    "  CUDA: python3 -m pip install --user torch --index-url https://download.pytorch.org/whl/cu126\n"
    "or run scripts/setup from the cloudrm repository, which installs everything into .venv and\n"
    "points the plugin at it. Windows (OSGeo4W shell): install python3-rasterio with the OSGeo4W\n"
    "installer, then the same pip commands. Restart QGIS afterwards."
)


def extend_sys_path() -> list[str]:
    """Append the folders listed in ``site_paths.txt`` to ``sys.path``; returns those added."""
    added = []
    if SITE_PATHS_FILE.is_file():
        for line in SITE_PATHS_FILE.read_text(encoding="utf-8").splitlines():
            p = line.strip()
            if p and not p.startswith("#") and Path(p).is_dir() and p not in sys.path:
                sys.path.append(p)
                added.append(p)
    return added


def missing_dependencies() -> list[str]:
    """Names of required packages that cannot be imported."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def engine() -> ModuleType:
    """The engine package (bundled copy first, then a development install)."""
    if (PLUGIN_DIR / "engine" / "__init__.py").is_file():
        return importlib.import_module(f"{__package__}.engine")
    return importlib.import_module("cloudrm_engine")


def engine_module(name: str) -> ModuleType:
    """``engine.<name>``, e.g. ``engine_module('api')``."""
    return importlib.import_module(f"{engine().__name__}.{name}")
