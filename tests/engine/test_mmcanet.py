"""MMCANet, MMCANet_l and MPIR1-4 against docs/models/mmcanet.md."""

import pytest
import torch
import torch.nn.functional as F

from cloudrm_engine.layers.aspp import ASPP
from cloudrm_engine.layers.kbnet import MFFBlock, kba
from cloudrm_engine.models import count_parameters, create_model, model_card
from cloudrm_engine.models.mmcanet import CrossAttention, MMCANet
from cloudrm_engine.models.mpir import MPIR, ORSNetStage, downscale, upscale

MODELS = ["mmcanet", "mmcanet_l", "mpir1", "mpir2", "mpir3", "mpir4"]
DOC_PARAMS = {
    "mmcanet": 22_241_383,
    "mmcanet_l": 22_759_719,
    "mpir1": 66_730_037,
    "mpir2": 46_480_935,
    "mpir3": 66_729_045,
    "mpir4": 44_484_686,
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs(
    size: int | tuple[int, int] = 64, batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=g), torch.rand(batch, 2, h, w, generator=g)


def build(name: str, seed: int = 0, **config: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **config).eval()


# --- parameter counts ------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts_match_docs(name):
    assert count_parameters(name) == DOC_PARAMS[name] == model_card(name).parameters


def test_wide_variant_count_matches_docs():
    assert count_parameters("mmcanet", width=64) == 74_540_743


def test_part_counts_match_docs():
    with torch.device("meta"):
        assert n_params(MFFBlock(32)) == 48_096
        assert n_params(MFFBlock(64)) == 109_888
        assert n_params(MFFBlock(256)) == 781_696
        assert n_params(MFFBlock(32, dw_kernel=5)) == 51_008
        assert n_params(CrossAttention(64)) == 24_962
        assert n_params(CrossAttention(256)) == 394_754
        assert n_params(ASPP(768, 256)) == 5_768_448
        m = MMCANet()
    assert n_params(m.encoder) == 7_848_832
    assert n_params(m.encoder_sar) == 7_848_544
    rest = sum(n_params(getattr(m, k)) for k in ("fuse", "decoder2", "up2", "skip", "decoder1", "end"))
    assert rest == 355_843


def test_cards_are_rgb_with_vv_vh():
    for name in MODELS:
        card = model_card(name)
        assert card.optical_bands == ("B4", "B3", "B2") == card.rgb_bands
        assert card.sar_bands == ("VV", "VH")
        assert card.default_checkpoint is None
    assert [model_card(n).size_multiple for n in MODELS] == [8, 8, 32, 32, 32, 16]


# --- KBA ----------------------------------------------------------------------------------------

def naive_kba(u, att, weight, bias, k=3, gc=4):
    """Literal reading: build each pixel's kernel Σ_s att_s W_s and apply it to the unfolded patch."""
    b, c, h, w = u.shape
    g = c // gc
    patches = F.unfold(u, k, padding=k // 2).view(b, g, gc * k * k, h * w)  # (B, g, gc·k², N)
    a = att.flatten(2).transpose(1, 2)  # (B, N, nset)
    kernels = (a @ weight).view(b, h * w, g, gc, gc * k * k)  # per-pixel (out, in·k²) per group
    out = torch.einsum("bngoj,bgjn->bgon", kernels, patches).reshape(b, c, h * w)
    return (out + (a @ bias).transpose(1, 2)).view(b, c, h, w)


def test_kba_with_one_hot_coefficients_is_the_grouped_conv_of_that_basis():
    torch.manual_seed(0)
    c, gc, nset = 16, 4, 5
    u = torch.randn(2, c, 7, 9)
    weight = torch.randn(nset, c * gc * 9)
    bias = torch.randn(nset, c)
    for s in (0, 3):
        att = torch.zeros(2, nset, 7, 9)
        att[:, s] = 1.0
        ref = F.conv2d(u, weight[s].view(c, gc, 3, 3), bias[s], padding=1, groups=c // gc)
        for chunk in (None, 2):
            got = kba(u, att, weight, bias, 3, gc, chunk)
            assert torch.allclose(got, ref, atol=1e-5), (s, chunk)


def test_kba_matches_per_pixel_kernel_reading():
    torch.manual_seed(1)
    c, gc, nset = 8, 4, 6
    u = torch.randn(1, c, 5, 6)
    att = torch.randn(1, nset, 5, 6)
    weight, bias = torch.randn(nset, c * gc * 9), torch.randn(nset, c)
    ref = naive_kba(u, att, weight, bias)
    assert torch.allclose(kba(u, att, weight, bias, 3, gc), ref, atol=1e-4)
    assert torch.allclose(kba(u, att, weight, bias, 3, gc, chunk=4), ref, atol=1e-4)


def test_mff_block_inference_chunking_equals_training_path():
    torch.manual_seed(0)
    block = MFFBlock(32).eval()
    with torch.no_grad():
        block.ga1.fill_(1.0)  # make the KBA branch matter
        block.beta.fill_(1.0)
    x = torch.randn(1, 32, 12, 10)
    with torch.no_grad():
        chunked = block(x)
    full = block(x).detach()
    assert torch.allclose(chunked, full, atol=1e-5)
    assert not torch.allclose(full, x, atol=1e-3)


def test_mff_base_init_bound():
    block = MFFBlock(32)
    bound = (1.0 / (32 * 32 * 4 * 9)) ** 0.5
    assert block.w.abs().max() <= bound and block.w.abs().max() > 0.9 * bound
    assert block.b.abs().max() <= bound
    assert torch.equal(block.beta, torch.full((32,), 1e-2))


# --- cross attention ----------------------------------------------------------------------------

def naive_cross_attention(xa: CrossAttention, x_opt, x_sar):
    """The documented equations on explicit c×N matrices for one sample."""
    def mats(q, k, v, x):
        f = lambda conv: conv(x)[0].reshape(x.shape[1], -1)  # noqa: E731
        return f(q), f(k), f(v)

    q, k, v = mats(xa.q, xa.k, xa.v, x_opt)
    qs, ks, vs = mats(xa.q_sar, xa.k_sar, xa.v_sar, x_sar)
    p = torch.softmax(xa.tau * (q / q.norm(dim=1, keepdim=True)) @ (k / k.norm(dim=1, keepdim=True)).T, 1)
    ps = torch.softmax(
        xa.tau_sar * (qs / qs.norm(dim=1, keepdim=True)) @ (ks / ks.norm(dim=1, keepdim=True)).T, 1
    )
    fused = p * ps
    return ((fused @ v) * (fused @ vs)).view_as(x_opt[0])


def test_cross_attention_equals_naive_reference():
    torch.manual_seed(0)
    xa = CrossAttention(8)
    with torch.no_grad():
        xa.tau.fill_(2.5)
    a, b = torch.randn(1, 8, 5, 4), torch.randn(1, 8, 5, 4)
    assert torch.allclose(xa(a, b)[0], naive_cross_attention(xa, a, b), atol=1e-5)


@pytest.mark.parametrize("size", [16, 64])
def test_cross_attention_maps_do_not_grow_with_tile_size(size):
    torch.manual_seed(0)
    xa = CrossAttention(64)
    a, b = torch.randn(1, 64, size, size), torch.randn(1, 64, size, size)
    p_opt, p_sar = xa.attention_maps(a, b)
    assert p_opt.shape == p_sar.shape == (1, 64, 64)  # C×C, not N×N
    assert torch.allclose(p_opt.sum(-1), torch.ones(1, 64), atol=1e-5)
    assert torch.allclose(p_sar.sum(-1), torch.ones(1, 64), atol=1e-5)
    fused = p_opt * p_sar
    assert fused.min() >= 0 and fused.max() <= 1
    assert xa(a, b).shape == (1, 64, size, size)


def test_cross_attention_runs_on_a_256_px_map():
    # A quadratic (N×N) reading would need 65,536² floats (17 GB) here.
    torch.manual_seed(0)
    xa = CrossAttention(8)
    with torch.no_grad():
        out = xa(torch.randn(1, 8, 256, 256), torch.randn(1, 8, 256, 256))
    assert out.shape == (1, 8, 256, 256) and torch.isfinite(out).all()


def test_cross_attention_is_pixel_permutation_equivariant():
    torch.manual_seed(0)
    xa = CrossAttention(8)
    a, b = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    perm = torch.randperm(36)
    pa = a.flatten(2)[..., perm].view_as(a)
    pb = b.flatten(2)[..., perm].view_as(b)
    assert torch.allclose(xa(pa, pb).flatten(2), xa(a, b).flatten(2)[..., perm], atol=1e-5)


# --- ASPP ---------------------------------------------------------------------------------------

def test_aspp_branches_and_pooling():
    torch.manual_seed(0)
    aspp = ASPP(64, 32)
    x = torch.randn(1, 64, 16, 16)
    assert aspp(x).shape == (1, 32, 16, 16)
    assert aspp.num_branches == 4 and ASPP(64, 32, conv1x1_branch=True).num_branches == 5
    pooled = aspp.pooled(x)
    assert torch.equal(pooled, pooled[..., :1, :1].expand_as(pooled))
    assert [b[0].dilation for b in aspp.branches] == [(6, 6), (12, 12), (18, 18)]
    gn = ASPP(64, 32, group_norm=True)
    assert n_params(gn) == n_params(aspp) + 4 * 2 * 32  # GroupNorm affine after 3 atrous + projection
    assert gn(x).shape == (1, 32, 16, 16)


# --- whole models ---------------------------------------------------------------------------------

STAGE_SIZES = {"mpir1": [16, 32, 64], "mpir2": [16, 32, 64], "mpir3": [16, 32, 64], "mpir4": [32, 64]}


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes_stages_and_determinism(name):
    model = build(name)
    opt, sar = inputs(64)
    with torch.no_grad():
        out = model(opt, sar)
        again = model(opt, sar)
        stages = model.forward_stages(opt, sar)
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    assert torch.equal(out, again)
    assert torch.equal(stages[-1], out)
    sizes = [s.shape[-1] for s in stages]
    assert sizes == STAGE_SIZES.get(name, [64])
    targets = model.stage_targets(opt)
    assert [t.shape[-1] for t in targets] == sizes
    assert not torch.allclose(out, opt, atol=1e-4)  # the residual branch is live


def test_same_seed_same_weights_and_batch_independence():
    a, b = build("mmcanet", seed=3), build("mmcanet", seed=3)
    opt, sar = inputs(32, batch=2)
    with torch.no_grad():
        both = a(opt, sar)
        one = b(opt[1:], sar[1:])
    assert torch.allclose(both[1:], one, atol=1e-5)


def test_mmcanet_residual_identity_any_size():
    model = build("mmcanet")
    with torch.no_grad():
        model.end.weight.zero_()
        model.end.bias.zero_()
        for size in (64, (60, 44)):
            opt, sar = inputs(size)
            assert torch.equal(model(opt, sar), opt)


def zero_stage_ends(model: MPIR) -> None:
    with torch.no_grad():
        for stage in model.stages:
            if isinstance(stage, ORSNetStage):
                stage.tail.weight.zero_()
            else:
                stage.end.weight.zero_()
                stage.end.bias.zero_()


@pytest.mark.parametrize("name", ["mpir2", "mpir4"])
def test_mpir_residual_identity_every_stage_returns_its_base(name):
    model = build(name)
    zero_stage_ends(model)
    opt, sar = inputs(64)
    with torch.no_grad():
        stages = model.forward_stages(opt, sar)
    s = model.n_stages
    expected = downscale(opt, 2 ** (s - 1))
    for i, got in enumerate(stages):
        if i:
            expected = upscale(expected, 2)
        assert torch.equal(got, expected), i


def test_non_multiple_sizes_are_padded_and_cropped():
    opt, sar = inputs((40, 56))
    with torch.no_grad():
        assert build("mpir4")(opt, sar).shape == (1, 3, 40, 56)
    with pytest.raises(ValueError, match="multiples of 16, got 40×56"):
        build("mpir4").forward_stages(opt, sar)


def test_band_mismatch_is_reported():
    _opt, sar = inputs(16)
    with pytest.raises(ValueError, match="built for 3 optical \\+ 2 SAR bands, got 4 \\+ 2"):
        MMCANet(enc_blocks=(1, 1, 1, 1), dec_blocks=(1, 1))(torch.rand(1, 4, 16, 16), sar)


def test_mpir_skip_connections_carry_information():
    """Zeroing MPIR4's K_{1→2} changes the final output (the skip is wired)."""
    model = build("mpir4", enc_blocks=(1, 1, 1, 1), dec_blocks=(1, 1))
    opt, sar = inputs(32)
    with torch.no_grad():
        before = model(opt, sar)
        model.skips["1_2"].weight.zero_()
        model.skips["1_2"].bias.zero_()
        after = model(opt, sar)
    assert list(model.skips) == ["1_2"]
    assert not torch.allclose(before, after, atol=1e-6)


def test_grad_checkpoint_gives_the_same_gradients():
    opt, sar = inputs(32)
    grads = []
    for ck in (False, True):
        torch.manual_seed(0)
        model = MMCANet(enc_blocks=(1, 1, 1, 1), dec_blocks=(1, 1), grad_checkpoint=ck).train()
        model(opt, sar).square().mean().backward()
        grads.append(model.encoder.stages[0][0].w.grad.clone())
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_zeroed_end_passes_the_rgb_bands_through_the_predictor(tmp_path):
    """Tiled predictor on a real 13-band crop: B4, B3, B2 are picked and returned unchanged."""
    import numpy as np
    import rasterio

    from cloudrm_engine.api import predict_scene

    from ..conftest import crop_sample, make_checkpoint

    opt, sar = crop_sample(tmp_path, 96, 64, 64)
    ckpt = make_checkpoint("mmcanet", tmp_path / "id.pt", zero="end")
    out = tmp_path / "out.tif"
    predict_scene(opt, sar, out, model="mmcanet", checkpoint=ckpt, device="cpu", tile_size=64, overlap=0)
    with rasterio.open(opt) as a, rasterio.open(out) as b:
        rgb = np.clip(a.read([4, 3, 2]).astype(np.float64), 0, 10000)
        y = b.read().astype(np.float64)
        assert list(b.descriptions) == ["B4", "B3", "B2"]
    assert y.shape == (3, 64, 64)
    assert np.abs(y - rgb).max() <= 1.0  # DN rounding only


@pytest.mark.parametrize(
    ("config", "params"),
    [
        # −cross attention 419,716; ASPP input 768 → 512 (−256·256·28); fuse input −64 (−64·64)
        ({"cross_attention": False}, 22_241_383 - 419_716 - 1_835_008 - 4_096),
        # ASPP 5,768,448 → 1×1 conv 768 → 256 (196,864)
        ({"aspp": False}, 22_241_383 - 5_768_448 + 196_864),
        # −SAR encoder, intro +2 inputs, −cross attention, ASPP input 256, fuse/skip inputs shrink
        ({"sar_stream": False}, 22_241_383 - 7_848_544 + 576 - 419_716 - 3_670_016 - 8_192 - 1_024),
    ],
)
def test_ablations_of_paper_table_v(config, params):
    assert count_parameters("mmcanet", **config) == params
    torch.manual_seed(0)
    model = MMCANet(enc_blocks=(1, 1, 1, 1), dec_blocks=(1, 1), **config).eval()
    opt, sar = inputs(32)
    with torch.no_grad():
        assert model(opt, sar).shape == (1, 3, 32, 32)


def test_kba_recompute_gives_the_same_gradients():
    x = torch.randn(1, 32, 10, 12)
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        block = MFFBlock(32)
        block.recompute_kba = recompute
        with torch.no_grad():
            block.ga1.fill_(1.0)
            block.beta.fill_(1.0)
        block(x).square().sum().backward()
        grads.append((block.w.grad.clone(), block.conv211.weight.grad.clone()))
    assert grads[0][0].abs().sum() > 0
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
