#!/usr/bin/env python3
"""Build, install and package the QGIS plugin from the repository.

The installed plugin is one folder, ``cloudrm_plugin/``:

    cloudrm_plugin/            <- repo cloudrm_plugin/ (Python, help)
      metadata.txt             <- repo metadata.txt
      engine/                  <- repo engine/ (imported as cloudrm_plugin.engine;
                                  no top-level "engine" module lands on QGIS's sys.path)
      resources/               <- repo resources/ (icons, demo checkpoint, sample data,
                                  models/*.model3 graphical-modeler chains)
      site_paths.txt           <- install only: the venv site-packages to append to sys.path

Usage:
    python scripts/plugin.py build DEST            # assemble the folder at DEST/cloudrm_plugin
    python scripts/plugin.py install [--config-path DIR] [--site-packages DIR ...]
    python scripts/plugin.py zip OUT.zip           # the release zip (no site_paths.txt)

``install`` copies into ``<config>/profiles/default/python/plugins/``, where <config> is
``--config-path``, else $QGIS_CUSTOM_CONFIG_PATH, else ~/.local/share/QGIS/QGIS3.
Enabling the plugin is a separate step: ``qgis_process.bin plugins enable cloudrm_plugin``
(scripts/install-plugin does both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = "cloudrm_plugin"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", "*.part*", ".*.tmp")
RESOURCE_DIRS = ("icons", "checkpoints", "sample", "models")
RESOURCE_IGNORE = {"models": shutil.ignore_patterns("*.py", "__pycache__")}  # ship the .model3, not their generator


def build(dest_parent: Path) -> Path:
    """Assemble the plugin folder under ``dest_parent``; returns ``dest_parent/cloudrm_plugin``."""
    dest = dest_parent / NAME
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(REPO / NAME, dest, ignore=IGNORE)
    shutil.copytree(REPO / "engine", dest / "engine", ignore=IGNORE)
    for sub in RESOURCE_DIRS:
        src = REPO / "resources" / sub
        if src.is_dir():
            shutil.copytree(src, dest / "resources" / sub, ignore=RESOURCE_IGNORE.get(sub, IGNORE))
    shutil.copy2(REPO / "metadata.txt", dest / "metadata.txt")
    shutil.copy2(REPO / "README.md", dest / "README.md")
    return dest


def profile_plugins_dir(config_path: str | None) -> Path:
    base = config_path or os.environ.get("QGIS_CUSTOM_CONFIG_PATH")
    root = Path(base) if base else Path.home() / ".local" / "share" / "QGIS" / "QGIS3"
    return root / "profiles" / "default" / "python" / "plugins"


def install(config_path: str | None, site_packages: list[str]) -> Path:
    plugins = profile_plugins_dir(config_path)
    plugins.mkdir(parents=True, exist_ok=True)
    dest = build(plugins)
    paths = site_packages or [sysconfig.get_paths()["purelib"]]
    (dest / "site_paths.txt").write_text(
        "# Appended to QGIS's sys.path by the plugin (written by scripts/plugin.py install)\n"
        + "\n".join(str(Path(p).resolve()) for p in paths)
        + "\n",
        encoding="utf-8",
    )
    return dest


def make_zip(out: Path) -> Path:
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder.parent).as_posix())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("dest")
    i = sub.add_parser("install")
    i.add_argument("--config-path")
    i.add_argument("--site-packages", action="append", default=[])
    z = sub.add_parser("zip")
    z.add_argument("out")
    args = p.parse_args(argv)
    if args.cmd == "build":
        print(build(Path(args.dest)))
    elif args.cmd == "install":
        print(install(args.config_path, args.site_packages))
    else:
        print(make_zip(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
