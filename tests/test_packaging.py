"""The plugin folder/zip layout that scripts/plugin.py produces."""

import configparser
import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_release_zip_layout(tmp_path):
    out = tmp_path / "cloudrm_plugin.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "plugin.py"), "zip", str(out)], check=True,
                   capture_output=True)
    names = zipfile.ZipFile(out).namelist()
    assert all(n.startswith("cloudrm_plugin/") for n in names)
    for must in ("cloudrm_plugin/__init__.py", "cloudrm_plugin/metadata.txt", "cloudrm_plugin/engine/__init__.py",
                 "cloudrm_plugin/engine/models/glf_cr.py", "cloudrm_plugin/engine/configs/models/glf_cr.yaml",
                 "cloudrm_plugin/resources/checkpoints/glf_cr_demo.pt", "cloudrm_plugin/resources/icons/cloudrm.svg",
                 "cloudrm_plugin/resources/sample/README.md", "cloudrm_plugin/help/algorithms.yaml",
                 "cloudrm_plugin/LICENSE", "cloudrm_plugin/help/user_guide.html", "cloudrm_plugin/helpwindow.py",
                 "cloudrm_plugin/i18n/cloudrm.ts", "cloudrm_plugin/i18n/__init__.py", "cloudrm_plugin/widgets.py"):
        assert must in names, must
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]
    assert "cloudrm_plugin/site_paths.txt" not in names
    meta = configparser.ConfigParser()
    meta.read_string(zipfile.ZipFile(out).read("cloudrm_plugin/metadata.txt").decode())
    assert meta["general"]["hasProcessingProvider"] == "yes"
    assert meta["general"]["qgisMinimumVersion"] == "3.22"
    licence = zipfile.ZipFile(out).read("cloudrm_plugin/LICENSE").decode()
    assert "SPDX-License-Identifier: GPL-2.0-or-later" in licence
    assert "GNU GENERAL PUBLIC LICENSE\n                       Version 2, June 1991" in licence
    assert "END OF TERMS AND CONDITIONS" in licence


def test_metadata_names_every_model_and_invents_no_urls():
    from cloudrm_engine import api

    meta = configparser.ConfigParser()
    meta.read_string((REPO / "metadata.txt").read_text(encoding="utf-8"))
    general = meta["general"]
    for name in api.method_names():  # every single-date and multi-temporal model and method
        assert name in general["about"], name
    assert "GPL-2.0-or-later" in general["about"]
    # no public home yet: the fields exist, empty (the plugin repository asks for them later)
    assert (general["homepage"], general["tracker"], general["repository"]) == ("", "", "")
    assert "http" not in (REPO / "metadata.txt").read_text(encoding="utf-8")


def test_translation_skeleton_is_current():
    """cloudrm_plugin/i18n/cloudrm.ts lists every translatable string (scripts/plugin.py ts)."""
    import importlib.util
    from xml.sax.saxutils import escape as xml_escape

    spec = importlib.util.spec_from_file_location("plugin_script", REPO / "scripts" / "plugin.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shipped = (REPO / "cloudrm_plugin" / "i18n" / "cloudrm.ts").read_text(encoding="utf-8")
    assert "<source>Run</source>" in shipped and "<name>RemoveCloudsDialog</name>" in shipped
    # the desktop strings (dialog, help, plugin, task, layers, widgets) are all in it
    desktop = ("dialog.py", "helpwindow.py", "plugin.py", "tasks.py", "layers.py", "widgets.py")
    missing = [
        (ctx, text) for ctx, texts in script.translatable_strings().items() for text, places in texts.items()
        if any(p.split(":")[0] in desktop for p in places)
        and f"<source>{xml_escape(text)}</source>" not in shipped
    ]
    assert not missing, f"run: python scripts/plugin.py ts ({len(missing)} new strings, e.g. {missing[:3]})"


# --- the zip as a user installs it (Plugins ▸ Install from ZIP = unzip into the profile) ----------

import os  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


@pytest.fixture(scope="module")
def zip_profile(tmp_path_factory):
    """A fresh QGIS profile with only the release zip unpacked and enabled (no site_paths.txt)."""
    tmp = tmp_path_factory.mktemp("zip_install")
    out = tmp / "dist" / "cloudrm_plugin.zip"
    r = subprocess.run([str(REPO / "scripts" / "package"), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = tmp / "config"
    plugins = config / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(out).extractall(plugins)
    ini = config / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ncloudrm_plugin=true\n", encoding="utf-8")
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config), QT_QPA_PLATFORM="offscreen")
    env.pop("QGIS_OPTS", None)
    env.pop("PYTHONPATH", None)  # QGIS's own Python only: no torch, no s2cloudless there
    return config, env


def test_package_script_output_has_the_model_chain_and_no_generator(tmp_path):
    out = tmp_path / "p.zip"
    subprocess.run([str(REPO / "scripts" / "package"), str(out)], check=True, capture_output=True)
    names = zipfile.ZipFile(out).namelist()
    assert "cloudrm_plugin/resources/models/cloudmask_then_remove_clouds.model3" in names
    assert "cloudrm_plugin/algorithms/cloudmask.py" in names and "cloudrm_plugin/engine/masks.py" in names
    assert not [n for n in names if n.startswith("cloudrm_plugin/resources/models/") and n.endswith(".py")]
    assert not [n for n in names if n.startswith("cloudrm_plugin/tests") or "/.pytest_cache/" in n]


def test_installed_zip_loads_in_a_fresh_profile(zip_profile):
    _, env = zip_profile
    r = subprocess.run([QGIS_PROCESS, "plugins"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "* cloudrm_plugin" in r.stdout  # '*' = enabled
    r = subprocess.run([QGIS_PROCESS, "list"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    assert "cloudrm:cloudmask\tCloud mask (Sentinel-2 L1C)" in r.stdout
    assert "cloudrm:removeclouds\tRemove clouds (SAR-optical)" in r.stdout


def test_installed_zip_without_dependencies_explains_what_to_install(zip_profile, tmp_path):
    config, env = zip_profile
    from tests.conftest import crop_sample

    opt, _ = crop_sample(tmp_path, 0, 0, 16)
    r = subprocess.run([QGIS_PROCESS, "run", "cloudrm:cloudmask", "--", f"INPUT={opt}", f"OUTPUT={tmp_path / 'm.tif'}"],
                       env=env, capture_output=True, text=True, timeout=300)
    text = r.stdout + r.stderr
    if "s2cloudless" not in text or r.returncode == 0:
        pytest.skip("QGIS's own Python has s2cloudless: nothing missing to report")
    assert r.returncode != 0
    assert "Method s2cloudless cannot run: cloudrm: Python package(s) s2cloudless missing" in text
    # the interpreter behind QGIS (qgis_process.bin embeds it), not the binary or a PATH shim
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert f"the Python that QGIS uses (/usr/bin/{py})" in text or f"/{py} -m pip" in text
    deps_dir = config / "profiles" / "default" / "python" / "cloudrm_deps"
    assert f"-m pip install --upgrade --target {deps_dir}/python" in text and "s2cloudless==1.7.3" in text
    assert not (tmp_path / "m.tif").exists()
