"""The installed plugin (engine bundled inside) under headless qgis_process, in a fresh profile."""

import subprocess

import rasterio

from tests.plugin.conftest import QGIS_PROCESS, qgis_env


def test_install_puts_the_engine_inside_the_plugin(qgis_profile):
    plugins = qgis_profile / "profiles" / "default" / "python" / "plugins"
    assert (plugins / "cloudrm_plugin" / "engine" / "models" / "glf_cr.py").is_file()
    assert not (plugins / "engine").exists()


def test_algorithm_is_listed(qgis_profile):
    r = subprocess.run([QGIS_PROCESS, "list"], env=qgis_env(qgis_profile), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    assert "cloudrm:removeclouds\tRemove clouds (SAR-optical)" in r.stdout


def test_headless_run_writes_a_georeferenced_result(qgis_profile, sample, tmp_path):
    out = tmp_path / "headless.tif"
    r = subprocess.run(
        [QGIS_PROCESS, "run", "cloudrm:removeclouds", "--", f"OPTICAL={sample[0]}", f"SAR={sample[1]}",
         "MODEL=glf_cr", f"OUTPUT={out}"],
        env=qgis_env(qgis_profile), capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"OUTPUT:\t{out}" in r.stdout
    with rasterio.open(sample[0]) as a, rasterio.open(out) as b:
        assert (a.crs, a.transform, a.width, a.height) == (b.crs, b.transform, b.width, b.height)
        assert b.count == 13 and b.descriptions[3] == "B4"
