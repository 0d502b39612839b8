"""Missing dependencies: the plugin still loads, algorithms say what to install, guided install."""

import sys
from types import SimpleNamespace

import pytest
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException

from cloudrm_plugin import deps
from tests.conftest import crop_sample

CPU = "https://download.pytorch.org/whl/cpu"
CUDA = "https://download.pytorch.org/whl/cu126"


@pytest.fixture
def no_torch(monkeypatch):
    real = deps._importable
    monkeypatch.setattr(deps, "_importable", lambda name: name != "torch" and real(name))


def test_install_commands_cpu_and_cuda():
    base = ["/py", "-m", "pip", "install", "--upgrade", "--target", "/deps"]
    assert deps.install_commands(["torch"], "cpu", "/deps", "/py") == [[*base, "--index-url", CPU, "torch"]]
    assert deps.install_commands(["torch"], "cuda", "/deps", "/py") == [[*base, "--index-url", CUDA, "torch"]]
    import numpy

    cmds = deps.install_commands(["torch", "s2cloudless", "yaml"], "cuda", "/deps", "/py")
    assert cmds == [
        [*base, "--index-url", CUDA, "torch"],
        [*base, "s2cloudless==1.7.3", "pyyaml", f"numpy=={numpy.__version__}"],  # keep QGIS's numpy ABI
    ]
    with pytest.raises(ValueError, match="torch variant must be one of cpu, cuda, got 'rocm'"):
        deps.install_commands(["torch"], "rocm", "/deps", "/py")


def test_private_folder_and_sys_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDRM_DEPS_DIR", str(tmp_path))
    tag = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert deps.private_site_dir() == tmp_path / tag
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert str(tmp_path / tag) not in deps.extend_sys_path()  # not created yet: not added
    (tmp_path / tag).mkdir()
    assert str(tmp_path / tag) in deps.extend_sys_path() and sys.path[-1] == str(tmp_path / tag)


def test_guided_install_runs_pip_into_the_private_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    target = deps.guided_install(["torch"], "cuda", target=tmp_path / "site", run=run, log=lambda m: None)
    assert target == tmp_path / "site" and target.is_dir() and sys.path[-1] == str(target)
    assert calls == [[deps.python_executable(), "-m", "pip", "install", "--upgrade", "--target", str(target),
                      "--index-url", CUDA, "torch"]]

    def fail(cmd, **kw):
        return SimpleNamespace(returncode=1, stdout="Collecting torch\n", stderr="ERROR: No matching distribution")

    with pytest.raises(RuntimeError, match=r"pip failed \(exit 1\).*\n.*\nERROR: No matching distribution"):
        deps.guided_install(["torch"], "cpu", target=tmp_path / "site", run=fail, log=lambda m: None)


def test_help_names_the_package_and_both_torch_commands():
    text = deps.install_help(["torch"])
    assert "Python package(s) torch missing" in text
    assert "CPU:  " in text and f"--index-url {CPU} torch" in text
    assert "CUDA: " in text and f"--index-url {CUDA} torch" in text
    assert f"--target {deps.private_site_dir()}" in text
    assert "'Install…' button" in text


def test_algorithms_register_even_without_torch(no_torch, provider):
    assert deps.missing_dependencies() == ["torch"]
    reg = QgsApplication.processingRegistry()
    provider.refreshAlgorithms()  # loadAlgorithms again, now "without" torch
    assert reg.algorithmById("cloudrm:cloudmask") is not None
    assert reg.algorithmById("cloudrm:removeclouds") is not None


def test_cloudmask_check_names_torch_and_the_commands(no_torch, provider, tmp_path):
    alg = QgsApplication.processingRegistry().createAlgorithmById("cloudrm:cloudmask")
    src, _ = crop_sample(tmp_path, 0, 0, 16)
    ctx = QgsProcessingContext()
    params = {"INPUT": str(src), "METHOD": "cafr_rule", "OUTPUT": str(tmp_path / "m.tif")}
    ok, msg = alg.checkParameterValues(params, ctx)
    assert not ok
    assert msg.startswith("Method cafr_rule cannot run: cloudrm: Python package(s) torch missing")
    assert f"--index-url {CPU} torch" in msg and f"--index-url {CUDA} torch" in msg
    # s2cloudless does not need torch
    params = {"INPUT": str(src), "METHOD": "s2cloudless", "OUTPUT": str(tmp_path / "m.tif")}
    ok, msg = alg.checkParameterValues(params, ctx)
    assert ok, msg


def test_processing_run_without_torch_explains(no_torch, provider, tmp_path, feedback):
    import processing

    opt, sar = crop_sample(tmp_path, 0, 0, 16)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(
            "cloudrm:cloudmask", {"INPUT": str(opt), "METHOD": "cafr_rule", "OUTPUT": str(tmp_path / "m.tif")},
            feedback=feedback,
        )
    assert "torch missing" in str(err.value) and f"--index-url {CUDA} torch" in str(err.value)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(
            "cloudrm:removeclouds", {"OPTICAL": str(opt), "SAR": str(sar), "OUTPUT": str(tmp_path / "r.tif")},
            feedback=feedback,
        )
    text = str(err.value)
    assert "Python package(s) torch missing" in text
    assert f"torch --index-url {CPU}" in text and f"torch --index-url {CUDA}" in text
    assert not (tmp_path / "m.tif").exists() and not (tmp_path / "r.tif").exists()


def test_missing_s2cloudless_is_explained(monkeypatch, provider, tmp_path):
    real = deps._importable
    monkeypatch.setattr(deps, "_importable", lambda name: name != "s2cloudless" and real(name))
    alg = QgsApplication.processingRegistry().createAlgorithmById("cloudrm:cloudmask")
    src, _ = crop_sample(tmp_path, 0, 0, 16)
    ok, msg = alg.checkParameterValues({"INPUT": str(src), "OUTPUT": str(tmp_path / "m.tif")}, QgsProcessingContext())
    assert not ok and "Method s2cloudless cannot run" in msg and "s2cloudless==1.7.3" in msg
    assert "CUDA" not in msg  # no torch involved


@pytest.fixture
def fake_iface(qgis_app):
    from qgis.gui import QgsMessageBar

    bar = QgsMessageBar()
    yield SimpleNamespace(messageBar=lambda: bar, mainWindow=lambda: None)
    bar.clearWidgets()


def _press(monkeypatch, label):
    """Make QMessageBox.exec_ press the button called ``label`` instead of waiting for a user."""
    from qgis.PyQt.QtWidgets import QMessageBox

    def exec_(box):
        texts = {b.text(): b for b in box.buttons()}
        (texts.get(label) or box.button(QMessageBox.Cancel)).click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec_", exec_)


def test_guided_install_asks_first_then_installs_in_the_background(fake_iface, monkeypatch):
    from qgis.PyQt.QtWidgets import QPushButton

    calls = []
    monkeypatch.setattr(
        deps, "guided_install", lambda missing, variant, log=None: calls.append((missing, variant)) or "/deps"
    )
    bar = fake_iface.messageBar()
    assert deps.offer_guided_install(fake_iface, []) is False and bar.items() == []
    assert deps.offer_guided_install(fake_iface, ["torch"]) is True
    item = bar.items()[-1]
    assert "Python package(s) torch missing" in item.text()
    button = next(b for b in item.findChildren(QPushButton) if b.text() == "Install…")

    _press(monkeypatch, "Cancel")
    button.click()
    assert calls == [] and item in bar.items()  # asked, refused: nothing ran

    _press(monkeypatch, "Install (CUDA GPU)")
    button.click()
    manager = QgsApplication.taskManager()
    for _ in range(500):  # the pip task runs in QGIS's task manager
        QgsApplication.processEvents()
        if calls and manager.countActiveTasks() == 0 and any("Installed torch" in i.text() for i in bar.items()):
            break
        import time

        time.sleep(0.01)
    assert calls == [(["torch"], "cuda")]
    assert any(i.text() == "Installed torch into /deps. Restart QGIS." for i in bar.items())


def test_version_conflicts_are_shown_at_plugin_load(fake_iface, monkeypatch, provider, tmp_path):
    """A package cloudrm brings, already loaded from elsewhere: a message-bar line at load time,
    and the algorithms refuse to run with the same line (not an ImportError inside torch)."""
    import processing
    from qgis.core import QgsProcessingException

    from cloudrm_plugin import plugin

    line = "cloudrm needs sympy 1.14.0 (from /venv) but QGIS already loaded sympy 1.11.1 from /usr/lib: restart QGIS"
    monkeypatch.setattr(deps, "version_conflicts", lambda: [line])
    monkeypatch.setattr(plugin, "_SHOWN", set())
    assert plugin.report_version_conflicts(fake_iface) == [line]
    texts = [w.text() for w in fake_iface.messageBar().items()]
    assert texts == [line]
    plugin.report_version_conflicts(fake_iface)  # initProcessing and initGui both call it: shown once
    assert len(fake_iface.messageBar().items()) == 1
    opt, sar = crop_sample(tmp_path, 0, 0, 16)
    with pytest.raises(QgsProcessingException, match=r"QGIS already loaded sympy 1\.11\.1"):
        processing.run("cloudrm:removeclouds", {"OPTICAL": str(opt), "SAR": str(sar),
                                                "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()
