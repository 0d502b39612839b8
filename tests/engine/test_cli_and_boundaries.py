"""The cloudrm CLI as a user runs it, and the engine's independence from QGIS."""

import json
import subprocess
import sys
from pathlib import Path

import rasterio

from tests.conftest import REPO, VENV_BIN, crop_sample

CLOUDRM = str(VENV_BIN / "cloudrm")


def run(*args, **kw):
    return subprocess.run([CLOUDRM, *map(str, args)], capture_output=True, text=True, timeout=600, **kw)


def test_models_json():
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    models = json.loads(r.stdout)
    glf = next(m for m in models if m["name"] == "glf_cr")
    assert glf["parameters"] == 14_827_373 and isinstance(glf["parameters"], int)
    assert glf["sar_bands"] == ["VV", "VH"] and len(glf["optical_bands"]) == 13
    text = run("models").stdout
    assert "glf_cr" in text and "14,827,373" in text


def test_predict_writes_on_the_optical_grid(tmp_path, identity_checkpoint):
    opt, sar = crop_sample(tmp_path, 0, 0, 48)
    out = tmp_path / "o.tif"
    r = run("predict", "--optical", opt, "--sar", sar, "--model", "glf_cr", "--checkpoint",
            identity_checkpoint, "--device", "cpu", "--tile-size", "32", "--overlap", "16", "--out", out,
            "--no-keep-clear")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "4 tiles" in r.stdout
    assert "4/4" in r.stderr  # tqdm progress bar, in tiles
    assert "tiles: 32 px, overlap 16 px (requested)" in r.stderr
    with rasterio.open(opt) as a, rasterio.open(out) as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)


def test_errors_exit_2_with_a_message(tmp_path):
    r = run("predict", "--optical", tmp_path / "a.tif", "--sar", tmp_path / "b.tif", "--out", tmp_path / "c.tif")
    assert r.returncode == 2
    assert "error: optical raster 'a.tif': file not found" in r.stderr
    r = run("predict", "--optical", "x", "--sar", "y", "--model", "nonexistent", "--out", "z")
    assert r.returncode == 2 and "argument --model: invalid choice: 'nonexistent'" in r.stderr
    assert "'glf_cr'" in r.stderr.split("choose from")[1]


def test_engine_never_imports_qgis():
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "engine").rglob("*.py")
        if any(line.strip().startswith(("import qgis", "from qgis")) for line in p.read_text().splitlines())
    ]
    assert offenders == []
    code = (
        "import sys; sys.modules['qgis'] = None\n"  # any 'import qgis' now raises
        "import cloudrm_engine.api, cloudrm_engine.cli, cloudrm_engine.train.loop\n"
        "from cloudrm_engine.models import list_models; print(list_models())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_listing_models_needs_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from cloudrm_engine.models import list_models, model_card\n"
        "print('glf_cr' in list_models(), model_card('glf_cr').size_multiple)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "True 16" in r.stdout, r.stderr


def test_packaged_names_cover_every_engine_package():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    engine = REPO / "engine"
    found = {
        "cloudrm_engine" + ("." + ".".join(p.parent.relative_to(engine).parts) if p.parent != engine else "")
        for p in engine.rglob("__init__.py")
    }
    assert found == listed
    assert not Path(REPO / "engine" / "__init__.py").read_text().count("import torch")


def test_predict_runs_an_rgb_model_and_says_which_bands_it_wrote(tmp_path):
    from tests.conftest import crop_sample, make_checkpoint

    opt, sar = crop_sample(tmp_path, 0, 0, 32)
    ckpt = make_checkpoint("mpir4", tmp_path / "mpir4.pt")
    out = tmp_path / "rgb.tif"
    r = run("predict", "--optical", opt, "--sar", sar, "--model", "mpir4", "--checkpoint", ckpt,
            "--tile-size", "32", "--overlap", "0", "--out", out)
    assert r.returncode == 0, r.stderr
    with rasterio.open(out) as ds:
        assert ds.count == 3 and ds.descriptions == ("B4", "B3", "B2")
