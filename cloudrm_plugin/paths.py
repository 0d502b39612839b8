"""Locations of bundled resources: ``<plugin>/resources`` when installed, ``<repo>/resources`` in a checkout."""

from __future__ import annotations

from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    installed = PLUGIN_DIR / "resources"
    return installed if installed.is_dir() else PLUGIN_DIR.parent / "resources"


def icon_path() -> Path:
    return resources_dir() / "icons" / "cloudrm.svg"
