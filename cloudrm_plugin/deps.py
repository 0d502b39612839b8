"""Where the engine and its dependencies come from, and what to tell the user when they are missing.

- The engine: ``cloudrm_plugin/engine`` in an installed plugin (scripts/plugin.py copies
  ``engine/`` there), else the ``cloudrm_engine`` package of a development install.
- Python packages (torch, rasterio, s2cloudless): the QGIS Python's own, plus folders listed
  in ``site_paths.txt`` beside this file (written by ``scripts/install-plugin`` to point at the
  project's virtual environment), plus the plugin-private folder that the guided install
  fills (:func:`private_site_dir`, outside the plugin folder so a plugin update keeps it).
  Those are appended to ``sys.path``; the packages cloudrm brings there (torch, torchvision and
  their requirements such as sympy and mpmath) are found there first, whatever versions QGIS's
  Python has, while QGIS's numpy and GDAL bindings stay QGIS's (:func:`extend_sys_path`).
- Guided install: :func:`install_commands` builds the ``python -m pip install --target``
  command lines (CPU or CUDA torch), :func:`guided_install` runs them, and
  :func:`offer_guided_install` asks in the QGIS message bar first. Nothing here imports qgis
  at module level.
"""

from __future__ import annotations

import importlib
import importlib.abc
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
        names = ("python.exe", "python3.exe", f"bin/python{ver}", "bin/python3")
        for cand in (prefix / n for n in names):
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


PROTECTED = (
    "numpy", "osgeo", "qgis", "PyQt5", "PyQt6", "sip", "rasterio", "affine", "yaml",
    "setuptools", "pkg_resources", "_distutils_hack", "distutils", "pip",
)
"""Packages that always stay QGIS's own when QGIS's Python has them: its numpy (QGIS and GDAL
are built on it), the GDAL bindings and what shares their GDAL (rasterio), Qt, yaml, and the
packaging tools the interpreter itself loads at start-up."""

ROOTS = ("torch", "torchvision", "tqdm", "s2cloudless")
"""What the engine imports from the dependency folders; their requirements come along."""


def dependency_folders() -> list[str]:
    """The folders cloudrm brings packages from: ``site_paths.txt`` entries, then the private folder."""
    folders = []
    if SITE_PATHS_FILE.is_file():
        for line in SITE_PATHS_FILE.read_text(encoding="utf-8").splitlines():
            p = line.strip()
            if p and not p.startswith("#"):
                folders.append(p)
    folders.append(str(private_site_dir()))
    return [p for p in dict.fromkeys(folders) if Path(p).is_dir()]


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _top_level(dist: Any) -> set[str]:
    """Import names a distribution installs (top_level.txt, else the first part of its files)."""
    text = dist.read_text("top_level.txt")
    if text:
        return {n.strip() for n in text.splitlines() if n.strip()}
    names = set()
    for f in dist.files or []:
        first = f.parts[0] if f.parts else ""
        if not first or first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__", "bin"):
            continue
        names.add(first[:-3] if first.endswith(".py") else first.split(".")[0])
    return names


def brought_packages(folders: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """``{import name: (distribution, version, folder)}`` of what cloudrm brings: the distributions of
    :data:`ROOTS` found in ``folders`` and, transitively, their requirements found there."""
    from importlib import metadata

    dists: dict[str, Any] = {}
    for folder in folders:
        for d in metadata.distributions(path=[folder]):
            name = d.metadata["Name"]
            if name and _norm(name) not in dists:
                dists[_norm(name)] = (d, folder)
    todo = [_norm(r) for r in ROOTS]
    seen: set[str] = set()
    while todo:
        key = todo.pop()
        if key in seen or key not in dists:
            continue
        seen.add(key)
        d, _ = dists[key]
        for req in d.requires or []:
            if "extra ==" in req:
                continue
            req_name = req.split(";")[0].strip()
            for sep in "<>=!~[( ":
                req_name = req_name.split(sep)[0]
            todo.append(_norm(req_name))
    out: dict[str, tuple[str, str, str]] = {}
    for key in seen:
        d, folder = dists[key]
        for top in _top_level(d):
            if top and top not in PROTECTED:
                out[top] = (d.metadata["Name"], d.version, folder)
    return out


class _BroughtFirst(importlib.abc.MetaPathFinder):
    """Finds the packages cloudrm brings in its own folders before anywhere else on ``sys.path``.

    QGIS's interpreter has its own site-packages (on Debian: python3-sympy 1.11, mpmath 1.2)
    ahead of any folder a plugin can append, and torch fails to import with them. Only the
    top-level names of :func:`brought_packages` are redirected (submodules follow their parent
    package's ``__path__``); everything else, QGIS's numpy and GDAL bindings above all, resolves
    as before.
    """

    def __init__(self, packages: dict[str, tuple[str, str, str]]) -> None:
        self.packages = packages

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if "." in fullname or fullname not in self.packages:
            return None
        import importlib.machinery

        folder = self.packages[fullname][2]
        usual = importlib.machinery.PathFinder.find_spec(fullname, sys.path)
        if usual is not None and _inside(usual, folder):
            return usual  # already ours (e.g. OpenCV's loader putting its own folder first on sys.path)
        return importlib.machinery.PathFinder.find_spec(fullname, [folder])


def _inside(spec: Any, folder: str) -> bool:
    """True when a module spec's file (or package folder) lies under ``folder``."""
    where = spec.origin
    if where in (None, "namespace"):
        where = next(iter(spec.submodule_search_locations or []), "")
    try:
        return bool(where) and Path(where).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


_FINDER: _BroughtFirst | None = None


def extend_sys_path() -> list[str]:
    """Make the dependency folders usable; returns the folders added to ``sys.path``.

    The folders are appended to ``sys.path`` (so QGIS's own packages keep winning in general),
    and a finder placed first on ``sys.meta_path`` makes the packages cloudrm brings (torch and
    what it requires) come from them. See :func:`version_conflicts` for what is checked.
    """
    global _FINDER
    folders = dependency_folders()
    added = []
    for p in folders:
        if p not in sys.path:
            sys.path.append(p)
            added.append(p)
    if _FINDER is not None and _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    _FINDER = _BroughtFirst(brought_packages(folders)) if folders else None
    if _FINDER is not None and _FINDER.packages:
        sys.meta_path.insert(0, _FINDER)
    importlib.invalidate_caches()
    return added


def version_conflicts() -> list[str]:
    """One line per package that will not come from where cloudrm needs it.

    A package cloudrm brings that was imported from elsewhere before the plugin loaded (by QGIS
    or another plugin) stays that other copy for the whole session: say which versions clash.
    """
    from importlib import metadata

    lines = []
    packages = _FINDER.packages if _FINDER is not None else {}
    for name, (dist, version, folder) in sorted(packages.items()):
        mod = sys.modules.get(name)
        where = getattr(mod, "__file__", None) or ""
        if mod is None or not where or Path(where).resolve().is_relative_to(Path(folder).resolve()):
            continue
        try:
            other = metadata.version(dist)
        except metadata.PackageNotFoundError:
            other = getattr(mod, "__version__", "unknown")
        lines.append(
            f"cloudrm needs {dist} {version} (from {folder}) but QGIS already loaded {dist} {other} "
            f"from {Path(where).parent}: restart QGIS, and disable the plugin that imports {name} first"
        )
    return lines


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
                text = f"Installed {', '.join(missing)} into {result}. Restart QGIS."
                bar.pushMessage("cloudrm", text, Qgis.Success, 0)
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


def api() -> ModuleType:
    """``engine.api``, the only engine module the plugin uses (it imports neither torch nor rasterio).

    The bundled copy (``cloudrm_plugin/engine`` in an installed plugin) first, else the
    ``cloudrm_engine`` package of a development install.
    """
    bundled = (PLUGIN_DIR / "engine" / "__init__.py").is_file()
    return importlib.import_module(f"{__package__}.engine.api" if bundled else "cloudrm_engine.api")
