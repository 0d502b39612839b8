"""GLF-CR against docs/models/glf_cr.md: parameter counts, official keys, shapes, buffers, filter."""

import pytest
import torch

from cloudrm_engine.io.checkpoint import build_model, load_checkpoint
from cloudrm_engine.layers.dynamic_filter import dynamic_filter
from cloudrm_engine.layers.windows import relative_position_index, shifted_window_mask
from cloudrm_engine.models import count_parameters, create_model, model_card
from cloudrm_engine.models.glf_cr import DFG, GLFCR


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_docs():
    assert count_parameters("glf_cr") == 14_827_373 == model_card("glf_cr").parameters
    assert count_parameters("glf_cr", optical_bands=4) == 14_735_780


def test_per_part_counts_match_docs():
    with torch.device("meta"):
        m = GLFCR()
    assert n_params(DFG(192, 5)) == 730_944
    layer = m.RDBs[0].convs[0]
    stl = sum(n_params(getattr(layer, k)) for k in ("attn", "norm2", "norm2_SAR", "mlp", "mlp_SAR"))
    assert stl == 39_600
    assert n_params(layer.attn) == 20_688
    sfe = sum(n_params(getattr(m, k)) for k in ("SFENet1", "SFENet2", "SFENet1_SAR", "SFENet2_SAR"))
    assert sfe == 310_272
    assert n_params(m.GFF) == 138_432
    assert n_params(m.UPNet) == 228_941


def official_keys(blocks: int = 6, layers: int = 5) -> set[str]:
    """The official RDN_residual_CR state-dict keys, written out by hand (masks excluded)."""
    wb = ("weight", "bias")
    top = ("SFENet1", "SFENet2", "SFENet1_SAR", "SFENet2_SAR", "GFF.0", "GFF.1", "UPNet.0", "UPNet.2")
    keys = {f"{n}.{p}" for n in top for p in wb}
    for i in range(blocks):
        for c in range(layers):
            pre = f"RDBs.{i}.convs.{c}."
            mods = ["conv.0", "conv_SAR.0", "attn.qkv", "attn.qkv_SAR", "attn.attn_fuse_1x1conv", "attn.proj",
                    "attn.proj_SAR", "norm2", "norm2_SAR", "mlp.fc1", "mlp.fc2", "mlp_SAR.fc1", "mlp_SAR.fc2"]
            keys |= {pre + m + "." + p for m in mods for p in wb}
            keys |= {pre + "attn.relative_position_bias_table", pre + "attn.relative_position_index"}
        keys |= {f"RDBs.{i}.{m}.{p}" for m in ("LFF", "LFF_SAR") for p in wb}
        dfg = ("0.0", "1.stem.0", "1.stem.2", "2.stem.0", "2.stem.2", "3.0")
        keys |= {f"DF.{i}.fac_warp.{m}.{p}" for m in dfg for p in wb}
        keys |= {f"{g}.{i}.{p}" for g in ("sar_fuse_1x1conv", "opt_distribute_1x1conv") for p in wb}
    return keys


def test_state_dict_names_are_the_official_ones():
    with torch.device("meta"):
        m = GLFCR()
    assert set(m.state_dict()) == official_keys()


def test_official_checkpoint_layout_loads(tmp_path):
    """A file shaped like CR_net.pth (DataParallel prefix, 128-px masks) loads strictly."""
    torch.manual_seed(1)
    src = GLFCR()
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    for i in range(6):
        for c in (1, 3):  # shifted layers keep a (64, 64, 64) mask in the official file
            state[f"module.RDBs.{i}.convs.{c}.attn_mask"] = shifted_window_mask(64, 64, 8, 4)
    path = tmp_path / "CR_net.pth"
    torch.save({"network": state}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.model == "glf_cr" and len(ckpt.bands["optical"]) == 13
    loaded = build_model(ckpt)
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_four_band_official_checkpoint_is_detected(tmp_path):
    src = GLFCR(optical_bands=4)
    torch.save({"network": src.state_dict()}, tmp_path / "planet.pth")
    ckpt = load_checkpoint(tmp_path / "planet.pth")
    assert ckpt.config == {"optical_bands": 4}
    assert build_model(ckpt).optical_bands == 4


@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 48, 80), (1, 16, 32)])
def test_any_multiple_of_16(shape):
    b, h, w = shape
    torch.manual_seed(0)
    m = create_model("glf_cr").eval()
    with torch.inference_mode():
        y = m(torch.rand(b, 13, h, w), torch.rand(b, 2, h, w))
    assert y.shape == (b, 13, h, w)
    assert torch.isfinite(y).all()


def test_not_multiple_of_16_is_a_clear_error():
    with torch.device("meta"):
        m = GLFCR()
    with pytest.raises(ValueError, match="multiples of 16, got 40×64"):
        m(torch.rand(1, 13, 40, 64, device="meta"), torch.rand(1, 2, 40, 64, device="meta"))


def test_window_buffers():
    idx = relative_position_index(8)
    assert idx.shape == (64, 64) and idx.min() == 0 and idx.max() == 224
    mask = shifted_window_mask(64, 64, 8, 4)  # 128-px input: 64 windows of 64 tokens
    assert mask.shape == (64, 64, 64)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()
    assert (mask[-1] != 0).any()


def test_identity_residual_is_bit_exact():
    torch.manual_seed(0)
    m = create_model("glf_cr").eval()
    with torch.no_grad():
        m.UPNet[2].weight.zero_()
        m.UPNet[2].bias.zero_()
        x = torch.rand(1, 13, 32, 32)
        assert torch.equal(m(x, torch.rand(1, 2, 32, 32)), x)


def test_eval_is_deterministic():
    torch.manual_seed(0)
    m = create_model("glf_cr").eval()
    x, s = torch.rand(1, 13, 32, 32), torch.rand(1, 2, 32, 32)
    with torch.inference_mode():
        assert torch.equal(m(x, s), m(x, s))


def loop_reference(x: torch.Tensor, k: torch.Tensor, ks: int) -> torch.Tensor:
    """Direct per-pixel loop of the dynamic filter (replicate padding)."""
    b, c, h, w = x.shape
    pad = ks // 2
    out = torch.zeros_like(x)
    for bi in range(b):
        for ci in range(c):
            for y in range(h):
                for xx in range(w):
                    acc = 0.0
                    for ky in range(ks):
                        for kx in range(ks):
                            yy = min(max(y + ky - pad, 0), h - 1)
                            xq = min(max(xx + kx - pad, 0), w - 1)
                            acc += float(k[bi, ci * ks * ks + ky * ks + kx, y, xx]) * float(x[bi, ci, yy, xq])
                    out[bi, ci, y, xx] = acc
    return out


def test_dynamic_filter_equals_loop_reference():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    k = torch.randn(2, 3 * 25, 6, 7, dtype=torch.float64)
    assert (dynamic_filter(x, k, 5) - loop_reference(x, k, 5)).abs().max() < 1e-6


def test_dynamic_filter_centre_tap_and_replicate_border():
    x = torch.randn(1, 2, 5, 5)
    k = torch.zeros(1, 50, 5, 5)
    k[:, [12, 37]] = 1.0  # centre tap of each channel
    assert torch.equal(dynamic_filter(x, k), x)
    const = torch.full((1, 1, 4, 4), 3.0)
    avg = torch.full((1, 25, 4, 4), 1 / 25)
    torch.testing.assert_close(dynamic_filter(const, avg), const)
