"""CUDA cases (marked gpu; skipped where torch sees no CUDA device)."""

import numpy as np
import pytest
import rasterio
import torch

from cloudrm_engine.api import predict_scene
from cloudrm_engine.inference.cuda_graph import GraphedForward
from cloudrm_engine.inference.device import resolve_device
from cloudrm_engine.inference.predictor import model_forward
from cloudrm_engine.models import create_model, list_models, model_card
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


def _graph_inputs(name: str, b: int, seed: int) -> tuple[torch.Tensor, ...]:
    card = model_card(name)
    t = max(64, card.size_multiple)
    g = torch.Generator().manual_seed(seed)
    lead = (3,) if card.temporal else ()
    xs = [torch.rand(b, *lead, len(card.optical_bands), t, t, generator=g),
          torch.rand(b, *lead, len(card.sar_bands), t, t, generator=g)]
    if card.temporal:
        xs.append(torch.tensor([[-20.0, -10.0, 0.0]] * b))
    return tuple(x.cuda() for x in xs)


@pytest.mark.parametrize("name", list_models())
def test_cuda_graph_replays_equal_eager_passes(name):
    """Every network can be captured, and replays on new inputs give the eager result (1e-4, fp32)."""
    torch.manual_seed(0)
    net = create_model(name).cuda().eval()
    dev = torch.device("cuda:0")
    eager = model_forward(net, dev, "fp32")
    notes: list[str] = []
    graphed = model_forward(net, dev, "fp32", graphs=True, note=notes.append)
    assert isinstance(graphed, GraphedForward)
    with torch.inference_mode():
        for seed in range(4):
            xs = _graph_inputs(name, 2, seed)
            got = graphed(xs).clone()
            assert (got - eager(xs)).abs().max().item() < 1e-4, (name, seed)
        last = _graph_inputs(name, 1, 9)  # a partial batch replays in the graph's first row
        got = graphed(last).clone()
        assert got.shape[0] == 1 and (got - eager(last)).abs().max().item() < 1e-4, name
    assert graphed.replays == 3, notes  # calls 3, 4 and the partial batch
    assert notes == ["CUDA graph captured for batches of 2 tiles; later full batches replay it"]


def test_scene_with_cuda_graphs_equals_the_eager_scene(tmp_path, monkeypatch):
    opt, sar = crop_sample(tmp_path, 0, 0, 256)
    outs = {}
    for graphs in (False, True):
        monkeypatch.setitem(model_card("glf_cr").defaults, "cuda_graphs", graphs)
        outs[graphs] = tmp_path / f"graphs_{graphs}.tif"
        res = predict_scene(opt, sar, outs[graphs], checkpoint=DEMO_CKPT, device="cuda:0", tile_size=64,
                            overlap=16, batch_size=4)
        assert any("CUDA graph captured" in line for line in res.infos) is graphs, res.infos
    with rasterio.open(outs[False]) as a, rasterio.open(outs[True]) as b:
        diff = np.abs(a.read().astype(np.int32) - b.read().astype(np.int32))
        assert a.transform == b.transform
    assert diff.max() <= 1, diff.max()  # DN: the same kernels on the same data
