"""scripts/bench reports what the GPU-throughput work is judged by, and the bf16 accuracy check
that decides a model card's CUDA precision measures the right thing (speed itself is never
asserted here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from cloudrm_engine.inference import precision_check
from cloudrm_engine.io.checkpoint import build_model, load_checkpoint
from tests.conftest import DEMO_CKPT, REPO, crop_sample


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demo_net():
    return build_model(load_checkpoint(DEMO_CKPT))


def test_fp32_check_reproduces_the_held_out_psnr_recorded_at_training(demo_net):
    recorded = load_checkpoint(DEMO_CKPT).training["held_out_after"]["model"]["psnr"]  # 32.4174 dB
    effect = precision_check.precision_effect(demo_net, "glf_cr", torch.device("cpu"))
    assert effect["psnr_db"]["fp32"] == pytest.approx(recorded, abs=2e-3)
    assert effect["tiles"] == 4 and effect["crop"] == 64  # 256 rows × columns 192–256, 64 px crops
    assert effect["delta_db"] == 0.0  # the CPU pipeline never autocasts: bf16 asked = fp32 run


def test_bf16_rounding_costs_glf_cr_far_less_than_the_005_db_rule(demo_net, monkeypatch):
    real = precision_check.model_forward

    def cpu_autocast(net, device, precision):
        if precision == "fp32":
            return real(net, device, precision)

        def forward(inputs):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(*inputs)

        return forward

    monkeypatch.setattr(precision_check, "model_forward", cpu_autocast)
    effect = precision_check.precision_effect(demo_net, "glf_cr", torch.device("cpu"))
    # measured 32.4174 → 32.4187 dB: bf16 really ran (the result moved) and cost < 0.05 dB
    assert effect["delta_db"] != 0.0 and abs(effect["delta_db"]) < 0.05


@pytest.mark.parametrize("model", ["align_cr", "ca_mtcr", "mpir4"])
def test_every_input_layout_gets_a_held_out_set(model):
    data = precision_check.sample_eval_set(model)
    bands = {"align_cr": 4, "ca_mtcr": 13, "mpir4": 3}[model]
    cloudy = data["cloudy"]
    assert cloudy.shape == ((4, 3, bands, 64, 64) if model == "ca_mtcr" else (4, bands, 64, 64))
    assert data["target"].shape == (4, bands, 64, 64) and float(cloudy.min()) >= 0 and float(cloudy.max()) <= 1.5
    assert ("days" in data) == (model == "ca_mtcr")


def test_bf16_check_names_the_weights_and_applies_the_rule(demo_net):
    bench = _bench_module()
    cpu = torch.device("cpu")
    faster = bench.bf16_check("glf_cr", demo_net, cpu, {"fp32_batchauto": 24.4, "bf16_batchauto": 21.0})
    assert faster["weights"] == "glf_cr_demo.pt" and faster["speedup_batch_auto"] == pytest.approx(1.162, abs=1e-3)
    assert faster["bf16_fair_default"]
    slower = bench.bf16_check("glf_cr", demo_net, cpu, {"fp32_batchauto": 56.0, "bf16_batchauto": 78.0})
    assert not slower["bf16_fair_default"]
    from cloudrm_engine.models import create_model

    torch.manual_seed(0)
    untrained = bench.bf16_check("mmcanet", create_model("mmcanet"), cpu, {"fp32_batchauto": 5.0})
    assert untrained["weights"] == "random" and untrained["speedup_batch_auto"] is None
    assert not untrained["bf16_fair_default"]  # not measured on CUDA: never a fair default


def test_bench_json_has_every_figure_the_issue_asks_for(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--models", "mmcanet", "--sizes", "128,256",
         "--device", "cpu", "--tile", "64", "--json", "--scenes", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=str(REPO),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    runs = doc["runs"]
    assert [(x["model"], x["size"]) for x in runs] == [("mmcanet", 128), ("mmcanet", 256)]
    for x in runs:
        assert x["forward_ms"]["fp32_batch1"] > 0 and x["forward_ms"]["bf16_batch1"] is None  # bf16: CUDA only
        assert x["batch"] == x["batch_auto"] == 1 and x["precision"] == "fp32"  # CPU defaults
        assert x["overhead_ratio"] == pytest.approx(x["pipeline_s"] / x["model_only_s"], abs=2e-3)
        st = x["stage_seconds"]
        assert st["setup"] + st["loop"] + st["finish"] <= x["pipeline_s"] and st["forward"] <= st["loop"]
        assert x["peak_rss_mb"] > 0 and x["peak_cuda_mb"] is None
        assert "bf16_check" not in x and "graph_check" not in x  # CUDA only
        # the pipeline without the network is cheaper than with it, per tile as in total
        assert 0 < x["floor_s"] < x["pipeline_s"]
        assert x["floor_ms_per_tile"] == pytest.approx(1000 * x["floor_s"] / x["tiles"], abs=0.01)
    assert x["tiles"] > runs[0]["tiles"]
    (key, growth), = doc["memory_growth_ratio"].items()
    assert key.startswith("mmcanet cpu")
    assert growth == pytest.approx(runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], abs=2e-3)


def test_graph_check_compares_with_the_eager_pass_and_leaves_the_card_as_it_was(tmp_path, demo_net):
    from cloudrm_engine.api import RunRequest
    from cloudrm_engine.models import model_card

    bench = _bench_module()
    opt, sar = crop_sample(tmp_path, 0, 0, 128)
    req = RunRequest(optical=[str(opt)], sar=[str(sar)], output=str(tmp_path / "run.tif"), model="glf_cr",
                     checkpoint=str(DEMO_CKPT), device="cpu", tile_size=64, overlap=16, keep_clear=False)
    card_before = dict(model_card("glf_cr").defaults)
    inputs = (torch.rand(1, 13, 64, 64), torch.rand(1, 2, 64, 64))
    res = {"model": "glf_cr", "batch": 1, "precision": "fp32", "tiles": 9}
    g = bench.graph_check(demo_net, req, inputs, torch.device("cpu"), res, tmp_path / "graphs.tif", 1)
    assert model_card("glf_cr").defaults == card_before
    # no CUDA: nothing is captured, the "graphed" call is the eager one, and that is never a fair default
    assert g["captured"] is False and g["notes"] == [] and g["max_abs_diff"] == 0.0
    assert not g["graphs_fair_default"]
    assert g["pipeline_s"] > 0 and (tmp_path / "graphs.tif").is_file()
    assert g["overhead_ratio"] == pytest.approx(g["pipeline_s"] / (g["graph_ms_per_tile"] / 1000 * 9), rel=2e-3)


def test_bench_io_prints_per_tile_milliseconds(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_io.py"), "--size", "512", "--repeat", "1",
                        "--scenes", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads(r.stdout)
    assert (row["model"], row["tiles"], row["tile"], row["overlap"]) == ("glf_cr", 9, 256, 32)
    assert row["read_ms_per_tile"] > 0 and row["blend_convert_ms_per_tile"] > 0
