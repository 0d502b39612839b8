"""The installed plugin (engine bundled inside) under headless qgis_process, in a fresh profile."""

import os
import shutil
import subprocess
import sys

import pytest
import rasterio

from tests.conftest import REPO

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


def qgis_env(config):
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config), QT_QPA_PLATFORM="offscreen")
    env.pop("QGIS_OPTS", None)  # Debian's wrapper adds --noversioncheck, which 3.22 rejects
    env.pop("PYTHONPATH", None)  # the plugin must find its dependencies by itself
    return env


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    config = tmp_path_factory.mktemp("qgis_config")
    subprocess.run([sys.executable, str(REPO / "scripts" / "plugin.py"), "install", "--config-path", str(config)],
                   check=True, capture_output=True)
    plugin = config / "profiles" / "default" / "python" / "plugins" / "cloudrm_plugin"
    assert (plugin / "engine" / "models" / "glf_cr.py").is_file()
    assert not (config / "profiles" / "default" / "python" / "plugins" / "engine").exists()
    r = subprocess.run([QGIS_PROCESS, "plugins", "enable", "cloudrm_plugin"], env=qgis_env(config),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return config


def test_algorithm_is_listed(profile):
    r = subprocess.run([QGIS_PROCESS, "list"], env=qgis_env(profile), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    assert "cloudrm:removeclouds\tRemove clouds (SAR-optical)" in r.stdout


def test_headless_run_writes_a_georeferenced_result(profile, sample, tmp_path):
    out = tmp_path / "headless.tif"
    r = subprocess.run(
        [QGIS_PROCESS, "run", "cloudrm:removeclouds", "--", f"OPTICAL={sample[0]}", f"SAR={sample[1]}",
         "MODEL=glf_cr", f"OUTPUT={out}"],
        env=qgis_env(profile), capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"OUTPUT:\t{out}" in r.stdout
    with rasterio.open(sample[0]) as a, rasterio.open(out) as b:
        assert (a.crs, a.transform, a.width, a.height) == (b.crs, b.transform, b.width, b.height)
        assert b.count == 13 and b.descriptions[3] == "B4"
