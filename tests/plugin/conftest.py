"""Real QGIS (pytest-qgis 2.1.0): the cloudrm provider registered like QGIS does it."""

import pytest
from qgis.core import QgsProcessingFeedback


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

    def reportError(self, error, fatalError=False):  # noqa: N802
        self.errors.append(error)

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(info)

    def pushWarning(self, warning):  # noqa: N802
        self.warnings.append(warning)


@pytest.fixture
def feedback():
    return RecordingFeedback()
