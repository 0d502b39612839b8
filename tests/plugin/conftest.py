"""Real QGIS (pytest-qgis 2.1.0): the cloudrm provider registered like QGIS does it, and a
temporary QGIS profile with the plugin installed for the headless ``qgis_process`` tests."""

import os
import shutil
import subprocess
import sys

import pytest
from qgis.core import QgsProcessingFeedback

from tests.conftest import REPO

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


def qgis_env(config):
    """Environment for ``qgis_process.bin`` on the profile folder ``config``."""
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config), QT_QPA_PLATFORM="offscreen")
    env.pop("QGIS_OPTS", None)  # Debian's wrapper adds --noversioncheck, which 3.22 rejects
    env.pop("PYTHONPATH", None)  # the plugin must find its dependencies by itself
    return env


@pytest.fixture(scope="session")
def qgis_profile(tmp_path_factory):
    """A fresh QGIS config folder with the plugin installed as scripts/setup does it, and enabled."""
    config = tmp_path_factory.mktemp("qgis_config")
    subprocess.run([sys.executable, str(REPO / "scripts" / "plugin.py"), "install", "--config-path", str(config)],
                   check=True, capture_output=True)
    r = subprocess.run([QGIS_PROCESS, "plugins", "enable", "cloudrm_plugin"], env=qgis_env(config),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return config


@pytest.fixture(scope="session")
def provider(qgis_app, qgis_processing):
    from cloudrm_plugin.plugin import CloudrmPlugin

    plugin = CloudrmPlugin(None)  # iface is None, as under qgis_process
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm reports."""

    def __init__(self):
        super().__init__()
        self.errors, self.infos, self.warnings, self.progress = [], [], [], []
        self.progressChanged.connect(self.progress.append)

    def reportError(self, error, fatalError=False):
        self.errors.append(error)

    def pushInfo(self, info):
        self.infos.append(info)

    def pushWarning(self, warning):
        self.warnings.append(warning)


@pytest.fixture
def feedback():
    return RecordingFeedback()
