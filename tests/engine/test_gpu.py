"""CUDA cases (marked gpu; skipped where torch sees no CUDA device)."""

import numpy as np
import pytest
import rasterio
import torch

from cloudrm_engine.api import predict_scene
from cloudrm_engine.inference.device import resolve_device
from cloudrm_engine.models import create_model
from tests.conftest import DEMO_CKPT, crop_sample

pytestmark = pytest.mark.gpu


def test_auto_picks_cuda():
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_cuda_matches_cpu_forward():
    torch.manual_seed(0)
    m = create_model("glf_cr").eval()
    x, s = torch.rand(1, 13, 64, 64), torch.rand(1, 2, 64, 64)
    with torch.inference_mode():
        cpu = m(x, s)
        gpu = m.cuda()(x.cuda(), s.cuda()).cpu()
    assert (cpu - gpu).abs().max() < 1e-3


@pytest.mark.parametrize("amp", [False, True])
def test_scene_on_cuda_agrees_with_cpu(tmp_path, amp):
    opt, sar = crop_sample(tmp_path, 64, 64, 128)
    outs = {}
    for dev in ("cpu", "cuda:0"):
        outs[dev] = tmp_path / f"{dev.replace(':', '')}.tif"
        predict_scene(opt, sar, outs[dev], checkpoint=DEMO_CKPT, device=dev, tile_size=64, overlap=32,
                      batch_size=4, amp=amp and dev != "cpu")
    with rasterio.open(outs["cpu"]) as a, rasterio.open(outs["cuda:0"]) as b:
        diff = np.abs(a.read().astype(np.int32) - b.read().astype(np.int32))
    assert diff.mean() < (20 if amp else 1), diff.mean()  # DN; bf16 autocast costs ~2-3 significant digits


def test_bf16_on_cuda_costs_the_demo_checkpoint_less_than_005_db():
    from cloudrm_engine.inference.precision_check import precision_effect
    from cloudrm_engine.io.checkpoint import build_model, load_checkpoint

    ckpt = load_checkpoint(DEMO_CKPT)
    effect = precision_effect(build_model(ckpt).cuda(), "glf_cr", torch.device("cuda:0"))
    recorded = ckpt.training["held_out_after"]["model"]["psnr"]  # 32.4174 dB, fp32 on the CPU
    assert effect["psnr_db"]["fp32"] == pytest.approx(recorded, abs=0.01)
    assert abs(effect["delta_db"]) < 0.05, effect  # the rule for bf16 as a card's cuda_precision
