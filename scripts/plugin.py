#!/usr/bin/env python3
"""Build, install and package the QGIS plugin from the repository.

The installed plugin is one folder, ``cloudrm_plugin/``:

    cloudrm_plugin/            <- repo cloudrm_plugin/ (Python, help/ user guide and algorithm
                                  help, i18n/ translation skeleton and any cloudrm_<lang>.ts)
      metadata.txt             <- repo metadata.txt
      LICENSE                  <- repo LICENSE (GPL-2.0-or-later, required by the QGIS plugin repository)
      i18n/cloudrm_<lang>.qm   <- compiled from i18n/cloudrm_<lang>.ts with Qt's lrelease, when it is installed
      engine/                  <- repo engine/ (imported as cloudrm_plugin.engine;
                                  no top-level "engine" module lands on QGIS's sys.path)
      docs/                    <- repo docs/ (model and data notes the model cards point at)
      resources/               <- repo resources/ (icons, demo checkpoint, sample data,
                                  models/*.model3 graphical-modeler chains)
      site_paths.txt           <- install only: the venv site-packages to append to sys.path

Usage:
    python scripts/plugin.py build DEST            # assemble the folder at DEST/cloudrm_plugin
    python scripts/plugin.py install [--config-path DIR] [--site-packages DIR ...]
    python scripts/plugin.py zip OUT.zip           # the release zip (no site_paths.txt)
    python scripts/plugin.py ts                    # regenerate cloudrm_plugin/i18n/cloudrm.ts

``install`` copies into ``<config>/profiles/default/python/plugins/``, where <config> is
``--config-path``, else $QGIS_CUSTOM_CONFIG_PATH, else ~/.local/share/QGIS/QGIS3.
Enabling the plugin is a separate step: ``qgis_process.bin plugins enable cloudrm_plugin``
(scripts/install-plugin does both).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

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
    shutil.copytree(REPO / "docs", dest / "docs", ignore=IGNORE)  # what the model cards' `docs:` point at
    shutil.copy2(REPO / "LICENSE", dest / "LICENSE")
    compile_translations(dest / "i18n")
    return dest


def compile_translations(folder: Path) -> list[Path]:
    """``cloudrm_<lang>.ts`` → ``cloudrm_<lang>.qm`` with Qt's lrelease (skipped without it).

    The skeleton ``cloudrm.ts`` has no language and is not compiled.
    """
    lrelease = shutil.which("lrelease") or shutil.which("lrelease-qt5")
    out = []
    for ts in sorted(folder.glob("cloudrm_*.ts")):
        if lrelease is None:
            print(f"lrelease not found: {ts.name} not compiled (apt install qttools5-dev-tools)", file=sys.stderr)
            continue
        subprocess.run([lrelease, "-silent", str(ts), "-qm", str(ts.with_suffix(".qm"))], check=True)
        out.append(ts.with_suffix(".qm"))
    return out


# ---- the translation skeleton ----------------------------------------------------------------

TS_FILE = REPO / NAME / "i18n" / "cloudrm.ts"
TRANSLATE_FUNCTIONS = {"_tr": "cloudrm"}
"""Module-level helpers that call QCoreApplication.translate with a fixed context."""


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _tr_contexts(trees: dict[Path, ast.Module]) -> dict[str, str]:
    """Class name → translation context, for classes whose ``tr`` calls translate("<context>", …)
    (and their subclasses); other classes use their own name, as PyQt's QObject.tr does."""
    fixed: dict[str, str] = {}
    bases: dict[str, list[str]] = {}
    for tree in trees.values():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            bases[cls.name] = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases]
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "tr":
                    for call in (c for c in ast.walk(fn) if isinstance(c, ast.Call)):
                        if getattr(call.func, "attr", "") == "translate" and call.args and _literal(call.args[0]):
                            fixed[cls.name] = _literal(call.args[0]) or cls.name

    def context(name: str, seen: frozenset[str] = frozenset()) -> str | None:
        if name in fixed:
            return fixed[name]
        for base in bases.get(name, []):
            if base not in seen and (found := context(base, seen | {name})):
                return found
        return None

    return {name: context(name) or name for name in bases}


def translatable_strings(package: Path = REPO / NAME) -> dict[str, dict[str, list[str]]]:
    """{context: {source text: ["file:line", …]}} of every ``self.tr("…")``, ``_tr("…")`` and
    ``QCoreApplication.translate("context", "…")`` with literal text in the plugin's Python."""
    trees = {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(package.rglob("*.py"))
             if "engine" not in p.relative_to(package).parts}
    contexts = _tr_contexts(trees)
    found: dict[str, dict[str, list[str]]] = {}

    def add(ctx: str, text: str, path: Path, line: int) -> None:
        found.setdefault(ctx, {}).setdefault(text, []).append(f"{path.relative_to(package).as_posix()}:{line}")

    for path, tree in trees.items():
        for cls in [None, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
            body = tree.body if cls is None else cls.body
            nodes = [n for stmt in body if not isinstance(stmt, ast.ClassDef) for n in ast.walk(stmt)]
            for call in (n for n in nodes if isinstance(n, ast.Call)):
                func = call.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if name == "tr" and call.args and _literal(call.args[0]) and cls is not None:
                    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
                        add(contexts.get(cls.name, cls.name), _literal(call.args[0]) or "", path, call.lineno)
                elif name in TRANSLATE_FUNCTIONS and call.args and _literal(call.args[0]):
                    add(TRANSLATE_FUNCTIONS[name], _literal(call.args[0]) or "", path, call.lineno)
                elif name in ("translate", "tr") and len(call.args) >= 2 and _literal(call.args[0]) \
                        and _literal(call.args[1]):
                    add(_literal(call.args[0]) or "", _literal(call.args[1]) or "", path, call.lineno)
    return found


def write_ts(path: Path = TS_FILE) -> Path:
    """The translation skeleton: every translatable string, no translations (Qt Linguist format)."""
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<!DOCTYPE TS>", '<TS version="2.1">']
    for ctx, texts in sorted(translatable_strings().items()):
        lines += ["<context>", f"    <name>{escape(ctx)}</name>"]
        for text, places in texts.items():
            lines.append("    <message>")
            for file in dict.fromkeys(place.rsplit(":", 1)[0] for place in places):
                # no line numbers: the skeleton changes only when the strings do
                lines.append(f'        <location filename="../{escape(file)}"/>')
            lines += [f"        <source>{escape(text)}</source>",
                      '        <translation type="unfinished"></translation>', "    </message>"]
        lines.append("</context>")
    lines.append("</TS>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
    sub.add_parser("ts", help="regenerate the translation skeleton cloudrm_plugin/i18n/cloudrm.ts")
    args = p.parse_args(argv)
    if args.cmd == "ts":
        print(write_ts())
    elif args.cmd == "build":
        print(build(Path(args.dest)))
    elif args.cmd == "install":
        print(install(args.config_path, args.site_packages))
    else:
        print(make_zip(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
