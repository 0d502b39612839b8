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
                 "cloudrm_plugin/resources/sample/README.md", "cloudrm_plugin/help/algorithms.yaml"):
        assert must in names, must
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]
    assert "cloudrm_plugin/site_paths.txt" not in names
    meta = configparser.ConfigParser()
    meta.read_string(zipfile.ZipFile(out).read("cloudrm_plugin/metadata.txt").decode())
    assert meta["general"]["hasProcessingProvider"] == "yes"
    assert meta["general"]["qgisMinimumVersion"] == "3.22"
