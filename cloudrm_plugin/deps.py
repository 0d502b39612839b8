"""Where the engine and its dependencies come from, and what to tell the user when they are missing.

- The engine: ``cloudrm_plugin/engine`` in an installed plugin (scripts/plugin.py copies
  ``engine/`` there), else the ``cloudrm_engine`` package of a development install.
- Python packages (torch, rasterio, s2cloudless): the QGIS Python's own, plus folders listed
  in ``site_paths.txt`` beside this file (written by ``scripts/install-plugin`` to point at the
  project's virtual environment), plus the plugin-private folder that the guided install
  fills (:func:`private_site_dir`, outside the plugin folder so a plugin update keeps it).
  Those are *appended* to ``sys.path``, so QGIS's own packages (numpy, GDAL bindings) always win.
- Guided install: :func:`install_commands` builds the ``python -m pip install --target``
  command lines (CPU or CUDA torch), :func:`guided_install` runs them, and
  :func:`offer_guided_install` asks in the QGIS message bar first. Nothing here imports qgis
  at module level.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PLUGIN_DIR = Path(__file__).resolve().parent
SITE_PATHS_FILE = PLUGIN_DIR / "site_paths.txt"
REQUIRED = ("torch", "rasterio", "numpy", "yaml")
METHOD_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    # what each cloud-mask method (cloudrm:cloudmask METHOD) imports, beyond the plugin itself
    "s2cloudless": ("rasterio", "numpy", "yaml", "s2cloudless"),
    "cafr_rule": ("torch", "rasterio", "numpy", "yaml"),
}
TORCH_INDEX_URLS = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu126",  # CUDA 12.6 wheels: NVIDIA driver ≥ 560
}
PIP_NAMES = {  # import name -> pip requirement
    "torch": "torch",
    "rasterio": "rasterio",
    "numpy": "numpy<2",
    "yaml": "pyyaml",
    "s2cloudless": "s2cloudless==1.7.3",
}
DEPS_DIR_ENV = "CLOUDRM_DEPS_DIR"


def _importable(name: str) -> bool:
    """True when ``import name`` would find the package (tests monkeypatch this)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def python_executable() -> str:
    """The Python interpreter behind QGIS's embedded Python (for ``python -m pip``).

    Inside QGIS ``sys.executable`` is often the QGIS binary itself (qgis-bin.exe,
    qgis_process.bin), and ``sys.prefix`` may come from whatever ``python3`` is first on PATH.
    The standard library's location is reliable: ``<prefix>/lib/python3.X/os.py`` (Linux,
    macOS) or ``<prefix>\\Lib\\os.py`` (Windows, OSGeo4W ``apps\\Python3X``).
    """
    exe = Path(sys.executable or "")
    python_named = exe.name.lower().startswith("python") and exe.is_file()
    if python_named and sys.prefix != sys.base_prefix:  # a virtual environment's own python
        return str(exe)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(os.__file__).resolve().parent
    prefixes = [stdlib.parent.parent, stdlib.parent, Path(sys.base_prefix), Path(sys.exec_prefix)]
    for prefix in dict.fromkeys(prefixes):
        for cand in (prefix / "python.exe", prefix / "python3.exe", prefix / "bin" / f"python{ver}", prefix / "bin" / "python3"):
            if cand.is_file():
                return str(cand)
    if python_named:
        return str(exe)
    return shutil.which(f"python{ver}") or shutil.which("python3") or "python3"


def private_site_dir() -> Path:
    """Plugin-private package folder for the guided install, one per Python minor version.

    ``$CLOUDRM_DEPS_DIR`` if set; else ``<profile>/python/cloudrm_deps/python3.X`` beside the
    ``plugins`` folder of an installed plugin (a plugin update replaces the plugin folder, not
    this); else ``<checkout>/.cloudrm_deps/python3.X``.
    """
    tag = f"python{sys.version_info.major}.{sys.version_info.minor}"
    env = os.environ.get(DEPS_DIR_ENV)
    if env:
        return Path(env) / tag
    if PLUGIN_DIR.parent.name == "plugins":
        return PLUGIN_DIR.parent.parent / "cloudrm_deps" / tag
    return PLUGIN_DIR.parent / ".cloudrm_deps" / tag


def torch_variant_guess() -> str:
    """``cuda`` when an NVIDIA driver tool is on PATH, else ``cpu``."""
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def install_commands(
    missing: Iterable[str],
    variant: str = "cpu",
    target: str | os.PathLike[str] | None = None,
    python: str | None = None,
) -> list[list[str]]:
    """argv lists that install the ``missing`` import names into the private folder.

    torch comes from the PyTorch wheel index of ``variant`` (``cpu`` or ``cuda``), in a
    command of its own; everything else from PyPI in one more command, pinned to the running
    numpy's version so compiled wheels (opencv, lightgbm) fit the numpy QGIS already loads.
    """
    if variant not in TORCH_INDEX_URLS:
        raise ValueError(f"torch variant must be one of {', '.join(TORCH_INDEX_URLS)}, got {variant!r}")
    py = python or python_executable()
    tgt = str(target or private_site_dir())
    base = [py, "-m", "pip", "install", "--upgrade", "--target", tgt]
    names = list(dict.fromkeys(missing))
    cmds = []
    if "torch" in names:
        cmds.append([*base, "--index-url", TORCH_INDEX_URLS[variant], "torch"])
    rest = [PIP_NAMES.get(n, n) for n in names if n != "torch"]
    if rest:
        numpy_pin = _numpy_pin()
        if numpy_pin and "numpy<2" in rest:
            rest.remove("numpy<2")
        cmds.append([*base, *rest, *([numpy_pin] if numpy_pin else [])])
    return cmds


def _numpy_pin() -> str | None:
    try:
        import numpy
    except ImportError:
        return None
    return f"numpy=={numpy.__version__}"


def _quote(argv: Sequence[str]) -> str:
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


def install_help(missing: Sequence[str]) -> str:
    """What is missing, and the exact CPU and CUDA commands that install it (plugin-private)."""
    missing = list(missing)
    lines = [
        f"cloudrm: Python package(s) {', '.join(missing)} missing in the Python that QGIS uses "
        f"({python_executable()}).",
        "Install them into cloudrm's private package folder (the plugin finds them there; restart QGIS afterwards):",
    ]
    if "torch" in missing:
        lines.append("  CPU:  " + " && ".join(_quote(c) for c in install_commands(missing, "cpu")))
        lines.append("  CUDA: " + " && ".join(_quote(c) for c in install_commands(missing, "cuda")))
    else:
        lines.append("  " + " && ".join(_quote(c) for c in install_commands(missing, "cpu")))
    lines.append(
        "or, in QGIS, use the 'Install…' button cloudrm shows in the message bar (guided install), "
        "or run scripts/setup from the cloudrm repository (a .venv the plugin is pointed at)."
    )
    if "rasterio" in missing:
        lines.append(
            "rasterio: prefer the build that shares QGIS's GDAL: Debian/Ubuntu 'sudo apt install "
            "python3-rasterio', Windows the OSGeo4W package python3-rasterio, conda 'conda install rasterio'."
        )
    return "\n".join(lines)


INSTALL_HELP = (
    "cloudrm needs PyTorch and rasterio in the Python that QGIS uses.\n"
    "Linux (Debian/Ubuntu): sudo apt install python3-rasterio; then\n"
    "  CPU:  python3 -m pip install --user torch --index-url https://download.pytorch.org/whl/cpu\n"
    "  CUDA: python3 -m pip install --user torch --index-url https://download.pytorch.org/whl/cu126\n"
    "or let cloudrm install torch into its private folder: the 'Install…' button in QGIS's message\n"
    "bar, or the same commands with '--target <profile>/python/cloudrm_deps/python3.X' instead of\n"
    "'--user' (see the README, 'Dependencies'); or run scripts/setup from the cloudrm repository,\n"
    "which installs everything into .venv and points the plugin at it. Windows (OSGeo4W shell):\n"
    "install python3-rasterio with the OSGeo4W installer, then the same pip commands. Restart QGIS afterwards."
)


def extend_sys_path() -> list[str]:
    """Append the ``site_paths.txt`` folders, then the private folder, to ``sys.path``; returns those added."""
    candidates = []
    if SITE_PATHS_FILE.is_file():
        for line in SITE_PATHS_FILE.read_text(encoding="utf-8").splitlines():
            p = line.strip()
            if p and not p.startswith("#"):
                candidates.append(p)
    candidates.append(str(private_site_dir()))
    added = []
    for p in candidates:
        if Path(p).is_dir() and p not in sys.path:
            sys.path.append(p)
            added.append(p)
    if added:
        importlib.invalidate_caches()
    return added


def missing_dependencies(names: Sequence[str] = REQUIRED) -> list[str]:
    """Those of ``names`` (import names; default: what the engine needs) that cannot be imported."""
    return [name for name in names if not _importable(name)]


def guided_install(
    missing: Sequence[str],
    variant: str = "cpu",
    target: str | os.PathLike[str] | None = None,
    run: Callable[..., Any] = subprocess.run,
    log: Callable[[str], None] = print,
) -> Path:
    """Install ``missing`` into the private folder with pip, then put it on ``sys.path``.

    Runs :func:`install_commands` one after the other with ``run`` (subprocess.run; tests pass
    a recorder). Raises RuntimeError with pip's last output lines when a command fails.
    Returns the folder. A restart of QGIS is the safe way to use freshly installed torch.
    """
    tgt = Path(target or private_site_dir())
    tgt.mkdir(parents=True, exist_ok=True)
    for cmd in install_commands(missing, variant, tgt):
        log("running: " + _quote(cmd))
        r = run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = "\n".join(((r.stdout or "") + (r.stderr or "")).strip().splitlines()[-15:])
            if "No module named pip" in tail:
                tail += (f"\npip is not installed for {cmd[0]}: run '{cmd[0]} -m ensurepip --user', or on "
                         "Debian/Ubuntu 'sudo apt install python3-pip', then try again")
            raise RuntimeError(f"pip failed (exit {r.returncode}): {_quote(cmd)}\n{tail}")
    if str(tgt) not in sys.path:
        sys.path.append(str(tgt))
    importlib.invalidate_caches()
    return tgt


def offer_guided_install(iface: Any, missing: Sequence[str] | None = None) -> bool:
    """In QGIS: when packages are missing, a message-bar warning with an 'Install…' button.

    The button asks (CPU or CUDA torch, showing the exact commands) before anything runs;
    pip then runs in a background QgsTask and the result is reported in the message bar.
    Returns True when a message was shown. Call from ``initGui`` (needs ``iface``).
    """
    missing = list(missing if missing is not None else missing_dependencies())
    if not missing or iface is None:
        return False
    from qgis.core import Qgis, QgsApplication, QgsTask
    from qgis.PyQt.QtWidgets import QMessageBox, QPushButton

    bar = iface.messageBar()
    item = bar.createMessage("cloudrm", f"Python package(s) {', '.join(missing)} missing: cloudrm cannot run yet.")
    button = QPushButton("Install…")
    item.layout().addWidget(button)

    def ask() -> None:
        box = QMessageBox(iface.mainWindow())
        box.setWindowTitle("cloudrm: install Python packages")
        box.setIcon(QMessageBox.Question)
        box.setText(
            f"Install {', '.join(missing)} with pip into cloudrm's private folder?\n{private_site_dir()}\n\n"
            "This downloads several hundred MB (CUDA torch: about 2.5 GB). Restart QGIS afterwards."
        )
        box.setDetailedText(install_help(missing))
        cuda = box.addButton("Install (CUDA GPU)", QMessageBox.AcceptRole) if "torch" in missing else None
        cpu = box.addButton("Install (CPU)" if "torch" in missing else "Install", QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(cuda if cuda is not None and torch_variant_guess() == "cuda" else cpu)
        box.exec_()
        clicked = box.clickedButton()
        if clicked not in (cpu, cuda):
            return
        variant = "cuda" if clicked is cuda else "cpu"
        bar.popWidget(item)

        def work(task: Any) -> str:
            return str(guided_install(missing, variant, log=lambda m: None))

        def done(exc: Exception | None, result: Any = None) -> None:
            if exc is None:
                bar.pushMessage("cloudrm", f"Installed {', '.join(missing)} into {result}. Restart QGIS.", Qgis.Success, 0)
            else:
                bar.pushMessage("cloudrm", f"Install failed: {exc}", Qgis.Critical, 0)

        task = QgsTask.fromFunction("cloudrm: pip install " + " ".join(missing), work, on_finished=done)
        _TASKS.append(task)  # QgsTask.fromFunction tasks must outlive this closure
        QgsApplication.taskManager().addTask(task)

    button.clicked.connect(ask)
    bar.pushWidget(item, Qgis.Warning)
    _TASKS.append(button)
    return True


_TASKS: list[Any] = []


def engine() -> ModuleType:
    """The engine package (bundled copy first, then a development install)."""
    if (PLUGIN_DIR / "engine" / "__init__.py").is_file():
        return importlib.import_module(f"{__package__}.engine")
    return importlib.import_module("cloudrm_engine")


def engine_module(name: str) -> ModuleType:
    """``engine.<name>``, e.g. ``engine_module('api')``."""
    return importlib.import_module(f"{engine().__name__}.{name}")
