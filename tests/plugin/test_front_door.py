"""One front door (issue 12): inside QGIS every model runs, the plugin uses only engine.api,
and the CLI and Processing give the same pixels for the same request."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import REPO, VENV_BIN, crop_sample, make_checkpoint
from tests.plugin.conftest import QGIS_PROCESS, qgis_env

SYSTEM_PYTHON = "/usr/bin/python3"  # QGIS's interpreter on Debian: its dist-packages come first


def test_plugin_imports_only_engine_api():
    """No plugin module reaches past engine/api.py (static: imports and dynamic module names)."""
    offenders = []
    for path in sorted((REPO / "cloudrm_plugin").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module or ''}"] + [f"{node.module or ''}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("engine_module", "import_module"):
                names = [ast.unparse(a) for a in node.args]
            for n in (x.strip("'\"") for x in names):
                if "engine" in n and not n.endswith("engine.api") and n != "cloudrm_engine.api":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {n}")
    assert offenders == []


def test_importing_api_imports_neither_torch_nor_rasterio():
    code = (
        "import sys\n"
        "import cloudrm_engine.api as api\n"
        "print(api.method_names(temporal=False), api.method_info('glf_cr').tile_size)\n"
        "print(sorted(m for m in ('torch', 'rasterio', 'torchvision') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]"
    assert "glf_cr" in r.stdout.splitlines()[0]


def test_plugin_folders_win_over_debian_sympy_in_qgis_python(tmp_path):
    """QGIS's /usr/bin/python3 has Debian's sympy 1.11 first on sys.path; torchvision needs a newer one."""
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    plugin = tmp_path / "cloudrm_plugin"
    subprocess.run([sys.executable, str(REPO / "scripts" / "plugin.py"), "build", str(tmp_path)], check=True,
                   capture_output=True)
    (plugin / "site_paths.txt").write_text(site + "\n", encoding="utf-8")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import importlib.util
        assert importlib.util.find_spec("sympy").origin.startswith("/usr/lib/python3/")  # Debian's 1.11 first
        from cloudrm_plugin import deps
        deps.extend_sys_path()
        import numpy, sympy, torchvision.ops  # once the plugin is loaded, torch's own requirements win
        print(json.dumps({{"sympy": sympy.__version__, "sympy_file": sympy.__file__, "numpy": numpy.__file__,
                           "ops": torchvision.ops.deform_conv2d.__module__,
                           "conflicts": deps.version_conflicts()}}))
    """)
    r = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["sympy_file"].startswith(site) and tuple(map(int, got["sympy"].split(".")[:2])) >= (1, 13)
    assert got["numpy"].startswith("/usr/lib/python3/dist-packages")  # QGIS's numpy stays QGIS's
    assert got["ops"] == "torchvision.ops.deform_conv"
    assert got["conflicts"] == []


def test_a_package_loaded_before_the_plugin_is_a_clear_message(tmp_path):
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    subprocess.run([sys.executable, str(REPO / "scripts" / "plugin.py"), "build", str(tmp_path)], check=True,
                   capture_output=True)
    (tmp_path / "cloudrm_plugin" / "site_paths.txt").write_text(site + "\n", encoding="utf-8")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import sympy  # stays loaded: Debian's 1.11
        from cloudrm_plugin import deps
        deps.extend_sys_path()
        print("\\n".join(deps.version_conflicts()))
    """)
    r = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if "sympy" in x.lower())
    assert "cloudrm needs sympy 1." in line and "QGIS already loaded sympy 1.11" in line


def _run_qgis(profile, alg, params, timeout=600):
    r = subprocess.run([QGIS_PROCESS, "run", alg, "--", *(f"{k}={v}" for k, v in params.items())],
                       env=qgis_env(profile), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


SINGLE = ["align_cr", "cafr", "glf_cr", "mmcanet", "mmcanet_l", "mpir1", "mpir2", "mpir3", "mpir4"]


def test_every_registered_model_is_covered():
    from cloudrm_engine.api import method_names

    assert method_names(temporal=False) == SINGLE
    assert method_names(temporal=True) == ["ca_mtcr", "least_cloudy", "mosaicing"]


@pytest.mark.parametrize("model", SINGLE)
def test_every_single_date_model_runs_inside_qgis_process(qgis_profile, tmp_path, model):
    """qgis_process runs QGIS's own interpreter (Debian sympy on its path): each model runs one tile."""
    if model == "align_cr":  # 4-band PlanetScope optical
        with rasterio.open(crop_sample(tmp_path, 0, 0, 32)[0]) as ds:
            a, crs, tr = ds.read()[[1, 2, 3, 7]], ds.crs, ds.transform
        from tests.conftest import write_geotiff

        opt = write_geotiff(tmp_path / "planet.tif", a, crs.to_string(), tr)
        sar = crop_sample(tmp_path, 0, 0, 32)[1]
    else:
        opt, sar = crop_sample(tmp_path, 100, 100, 32)
    ckpt = make_checkpoint(model, tmp_path / f"{model}.pt")
    out = tmp_path / f"{model}.tif"
    r = _run_qgis(qgis_profile, "cloudrm:removeclouds", {
        "OPTICAL": opt, "SAR": sar, "MODEL": model, "CHECKPOINT": ckpt, "DEVICE": "cpu", "TILE_SIZE": 32,
        "KEEP_CLEAR": "false", "OUTPUT": out})
    assert f"{model} on cpu" in r.stdout
    with rasterio.open(opt) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape) == (a.crs, a.transform, a.shape)
        assert b.tags()["CLOUDRM_MODEL"] == model


def test_ca_mtcr_runs_inside_qgis_process(qgis_profile, tmp_path):
    from tests.conftest import write_geotiff

    o, s = crop_sample(tmp_path, 64, 64, 32)
    with rasterio.open(o) as ds:
        base, crs, tr = ds.read(), ds.crs.to_string(), ds.transform
    opts = [write_geotiff(tmp_path / f"S2_2020010{k + 1}.tif", base, crs, tr) for k in range(3)]
    ckpt = make_checkpoint("ca_mtcr", tmp_path / "ca_mtcr.pt")
    out = tmp_path / "ca.tif"
    r = subprocess.run(
        [QGIS_PROCESS, "run", "cloudrm:removecloudsmultitemporal", "--",
         *[f"OPTICAL_SERIES={p}" for p in opts], *[f"SAR_SERIES={s}" for _ in opts], "METHOD=ca_mtcr",
         f"CHECKPOINT={ckpt}", "DEVICE=cpu", "KEEP_CLEAR=false", f"OUTPUT={out}"],
        env=qgis_env(qgis_profile), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ca_mtcr on cpu" in r.stdout
    with rasterio.open(out) as b:
        assert b.count == 13 and b.tags()["CLOUDRM_METHOD"] == "ca_mtcr"


def test_tile_defaults_come_from_the_model_card(provider, tmp_path, feedback):
    """TILE_SIZE/OVERLAP 0 = the card's defaults, in Processing as in the CLI; the log says which."""
    import processing

    opt, sar = crop_sample(tmp_path, 0, 0, 200)
    ckpt = make_checkpoint("mmcanet", tmp_path / "mmcanet.pt")
    processing.run("cloudrm:removeclouds", {
        "OPTICAL": str(opt), "SAR": str(sar), "MODEL": "mmcanet", "CHECKPOINT": str(ckpt), "DEVICE": "cpu",
        "KEEP_CLEAR": False, "OUTPUT": str(tmp_path / "o.tif")}, feedback=feedback)
    assert any(m.startswith("tiles: 200 px, overlap 64 px (model mmcanet defaults)") for m in feedback.infos), \
        feedback.infos


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pair")
    opt, sar = crop_sample(tmp, 96, 0, 96)
    return opt, sar, make_checkpoint("mpir4", tmp / "mpir4.pt", seed=3)


@pytest.mark.parametrize("keep_clear", [True, False])
def test_cli_and_processing_give_identical_pixels(provider, pair, tmp_path, keep_clear):
    """The same request from the CLI and from processing.run: the very same bytes in every band."""
    import processing

    opt, sar, ckpt = pair
    cli_out, alg_out = tmp_path / "cli.tif", tmp_path / "alg.tif"
    cli_mask, alg_mask = tmp_path / "cli_filled.tif", tmp_path / "alg_filled.tif"
    args = [str(VENV_BIN / "cloudrm"), "predict", "--optical", str(opt), "--sar", str(sar), "--model", "mpir4",
            "--checkpoint", str(ckpt), "--device", "cpu", "--tile-size", "64", "--out", str(cli_out),
            "--filled-mask", str(cli_mask), "--mask-method", "cafr_rule", "--mask-buffer", "30"]
    if not keep_clear:
        args.append("--no-keep-clear")
    import os

    import torch

    # the same machine and thread count: torch's thread count changes float reductions' order
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    processing.run("cloudrm:removeclouds", {
        "OPTICAL": str(opt), "SAR": str(sar), "MODEL": "mpir4", "CHECKPOINT": str(ckpt), "DEVICE": "cpu",
        "TILE_SIZE": 64, "KEEP_CLEAR": keep_clear, "MASK_METHOD": "cafr_rule", "MASK_BUFFER": 30,
        "FILLED_MASK": str(alg_mask), "OUTPUT": str(alg_out)})
    with rasterio.open(cli_out) as a, rasterio.open(alg_out) as b, rasterio.open(opt) as src:
        x, y, inp = a.read(), b.read(), src.read([4, 3, 2])
        assert (a.crs, a.transform, a.dtypes) == (b.crs, b.transform, b.dtypes)
    assert x.tobytes() == y.tobytes()
    with rasterio.open(cli_mask) as a, rasterio.open(alg_mask) as b:
        m1, m2 = a.read(1), b.read(1)
    assert m1.tobytes() == m2.tobytes()
    if keep_clear:  # the flags say exactly which pixels are the input's
        assert 0 < m1.mean() < 1
        np.testing.assert_array_equal(x[:, m1 == 0], inp[:, m1 == 0])
        assert (x[:, m1 == 1] != inp[:, m1 == 1]).any(axis=0).all()
    else:
        assert (m1 == 1).all()
