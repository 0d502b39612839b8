"""The networks' fast paths (issue 11) against plain reference code written out here.

Every fast path must give the plain definition's result within 1e-4 (fp32), at two sizes and
batch 1 and 2, with shifted windows and masks, and with the CPU chunk/band sizes forced
small so that the chunked code runs too. The references below are the straightforward
formulations (roll + partition, explicit logits, unfolded filter, torchvision's DCN, the
grouped-conv KBA); speed is measured by scripts/bench_layers.py, never here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from cloudrm_engine.io.checkpoint import build_model, load_checkpoint
from cloudrm_engine.layers import deform, dynamic_filter, kbnet, windows
from cloudrm_engine.layers.windows import (
    cached_shift_mask,
    from_windows,
    shifted_window_mask,
    to_windows,
    window_chunk,
    window_partition,
    window_reverse,
)
from cloudrm_engine.models import create_model
from cloudrm_engine.models.cafr import RepoOrderWindowAttention
from cloudrm_engine.models.glf_cr import DFG, DenseSTLLayer, DualWindowAttention
from tests.conftest import DEMO_CKPT, S1_SAMPLE, S2_SAMPLE

TOL = 1e-4


def assert_equal(got: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    assert got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    assert diff <= tol, f"max |Δ| {diff:.2e} > {tol:.0e}"


# --------------------------------------------------------------------------- references


def ref_window_attention(
    attn: DualWindowAttention, x: torch.Tensor, x_sar: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAR-guided window attention written out: logits + bias (+ mask), sigmoid gate from the
    1×1 conv, softmax, values, projections. CAFR order: mask the optical logits after the gate."""
    n_win, n, c = x.shape
    heads = attn.heads

    def logits_and_values(qkv: torch.nn.Linear, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = qkv(t).reshape(n_win, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        return (q * attn.scale) @ k.transpose(-2, -1), v

    def masked(t: torch.Tensor) -> torch.Tensor:
        assert mask is not None
        return (t.view(-1, mask.shape[0], heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)

    a, v = logits_and_values(attn.qkv, x)
    a_sar, v_sar = logits_and_values(attn.qkv_SAR, x_sar)
    table = attn.relative_position_bias_table
    bias = table[attn.relative_position_index.view(-1)].view(n, n, heads).permute(2, 0, 1)
    a, a_sar = a + bias, a_sar + bias
    repo_order = attn.mask_after_gate
    if mask is not None and not repo_order:
        a, a_sar = masked(a), masked(a_sar)
    d = a_sar - a
    a = a + d * torch.sigmoid(attn.attn_fuse_1x1conv(d))
    if mask is not None and repo_order:
        a = masked(a)
    y = (a.softmax(-1) @ v).transpose(1, 2).reshape(n_win, n, c)
    y_sar = (a_sar.softmax(-1) @ v_sar).transpose(1, 2).reshape(n_win, n, c)
    return attn.proj(y), attn.proj_SAR(y_sar)


def cut(t: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """(B, H, W, C) → windows after a roll by −shift."""
    return window_partition(torch.roll(t, (-shift, -shift), dims=(1, 2)), window)


def paste(t: torch.Tensor, window: int, h: int, w: int, shift: int) -> torch.Tensor:
    return torch.roll(window_reverse(t, window, h, w), (shift, shift), dims=(1, 2))


def ref_dense_layer(
    layer: DenseSTLLayer, x: torch.Tensor, x_sar: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLF-CR dense layer on raster tokens: conv, roll, partition, attention, reverse, roll back,
    residual, MLP, concat."""
    _, _, h, w = x.shape
    m, shift = layer.window, layer.shift if mask is not None else 0
    a = layer.conv(x).permute(0, 2, 3, 1)
    a_sar = layer.conv_SAR(x_sar).permute(0, 2, 3, 1)
    y, y_sar = ref_window_attention(layer.attn, cut(a, m, shift), cut(a_sar, m, shift), mask if shift else None)
    u = a + paste(y, m, h, w, shift)
    u = u + layer.mlp(layer.norm2(u))
    u_sar = a_sar + paste(y_sar, m, h, w, shift)
    u_sar = u_sar + layer.mlp_SAR(layer.norm2_SAR(u_sar))
    return torch.cat((x, u.permute(0, 3, 1, 2)), 1), torch.cat((x_sar, u_sar.permute(0, 3, 1, 2)), 1)


def ref_dual_stl(
    stl: Any, x: torch.Tensor, x_sar: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Align-CR's pre-norm dual Swin layer on raster tokens."""
    _, _, h, w = x.shape
    m, shift = stl.window, stl.shift if mask is not None else 0
    t, t_sar = x.permute(0, 2, 3, 1), x_sar.permute(0, 2, 3, 1)
    y, y_sar = ref_window_attention(
        stl.attn, cut(stl.norm1(t), m, shift), cut(stl.norm1_SAR(t_sar), m, shift), mask if shift else None
    )
    t = t + paste(y, m, h, w, shift)
    t = t + stl.mlp(stl.norm2(t))
    t_sar = t_sar + paste(y_sar, m, h, w, shift)
    t_sar = t_sar + stl.mlp_SAR(stl.norm2_SAR(t_sar))
    return t.permute(0, 3, 1, 2), t_sar.permute(0, 3, 1, 2)


def ref_dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-pixel filter as unfold × kernels, summed over taps (replicate padding)."""
    b, c, h, w = x.shape
    p = k // 2
    cols = F.unfold(F.pad(x, (p, p, p, p), mode="replicate"), k).view(b, c, k * k, h, w)
    return (cols * kernels.view(b, c, k * k, h, w)).sum(2)


def ref_fuse(model: Any, i: int, x: torch.Tensor, x_sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SLFC block i with the full kernel map and the unfolded filter."""
    sar_f = ref_dynamic_filter(x_sar, model.DF[i](x, x_sar), model.filter_size)
    d1 = sar_f - x
    opt = x + d1 * torch.sigmoid(model.sar_fuse_1x1conv[i](d1))
    d2 = opt - sar_f
    return opt, x_sar + d2 * torch.sigmoid(model.opt_distribute_1x1conv[i](d2))


def ref_glf_forward(model: Any, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
    """GLF-CR / CAFR forward from the reference layers (NCHW throughout)."""
    h, w = optical.shape[-2:]
    m = model.window
    mask = shifted_window_mask(h // 2, w // 2, m, m // 2) if min(h, w) // 2 > m else None
    skip = model.SFENet1(F.pixel_unshuffle(optical, 2))
    x = model.SFENet2(skip)
    x_sar = model.SFENet2_SAR(model.SFENet1_SAR(F.pixel_unshuffle(sar, 2)))
    outs = []
    for i, block in enumerate(model.RDBs):
        d, d_sar = x, x_sar
        for layer in block.convs:
            d, d_sar = ref_dense_layer(layer, d, d_sar, mask)
        x, x_sar = ref_fuse(model, i, block.LFF(d) + x, block.LFF_SAR(d_sar) + x_sar)
        outs.append(x)
    return model.UPNet(model.GFF(torch.cat(outs, 1)) + skip) + optical


def ref_align_forward(model: Any, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
    """Align-CR forward from the reference layers; the alignment runs with autograd on, which
    makes every DCN take torchvision's op (its training path)."""
    h, w = optical.shape[-2:]
    m = model.window
    masks = [
        shifted_window_mask(h // 2, w // 2, m, block.shift) if block.shift and min(h, w) // 2 > m else None
        for block in model.RDBs
    ]
    skip = F.relu(model.SFE_conv(F.pixel_unshuffle(optical, 2)))
    x = model.SFE_module(skip)
    x_sar = model.SFE_module_SAR(F.relu(model.SFE_conv_SAR(F.pixel_unshuffle(sar, 2))))
    outs = []
    for i, block in enumerate(model.RDBs):
        with torch.enable_grad():
            x_sar = model.SFAlign[i](x_sar, x).detach()
        d, d_sar = x, x_sar
        for layer in block.convs:
            d, d_sar = layer(d, d_sar)
        o, o_sar = ref_dual_stl(block.SwinTransformerBlock, block.LFF(d), block.LFF_SAR(d_sar), masks[i])
        x, x_sar = ref_fuse(model, i, o + x, o_sar + x_sar)
        outs.append(x)
    return model.UPNet(model.GFF(torch.cat(outs, 1)) + skip) + optical


# --------------------------------------------------------------------------- window helpers


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_to_and_from_windows_equal_roll_and_partition(shift, channels_last):
    x = torch.randn(2, 5, 16, 24)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref = cut(x.permute(0, 2, 3, 1), 8, shift)
    got = to_windows(x, 8, shift)
    assert torch.equal(got, ref)
    back = from_windows(got, 8, 16, 24, shift)
    assert torch.equal(back, x)
    assert back.is_contiguous(memory_format=torch.channels_last)


def test_cached_mask_equals_definition_and_is_not_an_inference_tensor():
    cached_shift_mask.cache_clear()
    with torch.inference_mode():
        m = cached_shift_mask(24, 16, 8, 4, torch.device("cpu"), torch.float32)
    assert torch.equal(m, shifted_window_mask(24, 16, 8, 4))
    assert not m.is_inference()  # a later training step may use it
    assert cached_shift_mask(24, 16, 8, 4, torch.device("cpu"), torch.float32) is m


def test_window_chunk_lines_up_with_the_mask():
    cpu, meta = torch.device("cpu"), torch.device("meta")
    budget = windows.CPU_CHUNK_BYTES
    assert window_chunk(18, 9, budget // 8, meta) == 18  # accelerators: one pass
    assert window_chunk(18, 9, budget // 8, cpu) == 3  # largest divisor of nW that fits
    assert window_chunk(18, 9, budget // 20, cpu) == 18
    assert window_chunk(40, 4, budget // 9, cpu) == 8  # whole images
    assert window_chunk(49, 49, budget * 2, cpu) == 1


# --------------------------------------------------------------------------- attention


def attention(cls: type[DualWindowAttention], seed: int = 0) -> DualWindowAttention:
    """Random attention with a bias table and gate large enough to matter (init: std 0.02)."""
    torch.manual_seed(seed)
    attn = cls(48, 8, 8)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0.0, 1.0)
        attn.attn_fuse_1x1conv.weight.normal_(0.0, 0.5)
    return attn.eval()


@pytest.mark.parametrize("cls", [DualWindowAttention, RepoOrderWindowAttention])
@pytest.mark.parametrize(("hs", "ws"), [(16, 16), (24, 24), (16, 24)])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("chunk_windows", [1, 2, 1000])
def test_window_attention_equals_reference(monkeypatch, cls, hs, ws, batch, chunk_windows):
    attn = attention(cls)
    monkeypatch.setattr(windows, "CPU_CHUNK_BYTES", chunk_windows * 4 * 8 * 64 * 64 * 4)
    g = torch.Generator().manual_seed(1)
    x = window_partition(torch.randn(batch, hs, ws, 48, generator=g), 8)
    s = window_partition(torch.randn(batch, hs, ws, 48, generator=g), 8)
    for mask in (None, shifted_window_mask(hs, ws, 8, 4)):
        with torch.no_grad():
            got, ref = attn(x, s, mask), ref_window_attention(attn, x, s, mask)
        assert_equal(got[0], ref[0])
        assert_equal(got[1], ref[1])


@pytest.mark.parametrize("cls", [DualWindowAttention, RepoOrderWindowAttention])
def test_window_attention_gradients_equal_reference(monkeypatch, cls):
    """The in-place fast path is also the training path: same gradients."""
    monkeypatch.setattr(windows, "CPU_CHUNK_BYTES", 2 * 4 * 8 * 64 * 64 * 4)
    mask = shifted_window_mask(16, 16, 8, 4)
    grads = []
    for fn in (lambda a, x, s: a(x, s, mask), lambda a, x, s: ref_window_attention(a, x, s, mask)):
        attn = attention(cls).train()
        g = torch.Generator().manual_seed(2)
        x = window_partition(torch.randn(2, 16, 16, 48, generator=g), 8).requires_grad_()
        s = window_partition(torch.randn(2, 16, 16, 48, generator=g), 8).requires_grad_()
        y, y_sar = fn(attn, x, s)
        (y * torch.randn(y.shape, generator=g) + y_sar * torch.randn(y.shape, generator=g)).sum().backward()
        grads.append([x.grad, s.grad] + [p.grad for p in attn.parameters()])
    for got, ref in zip(*grads, strict=True):
        assert_equal(got, ref)


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("batch", [1, 2])
def test_dense_layer_equals_reference(shift, batch):
    torch.manual_seed(0)
    layer = DenseSTLLayer(96, 48, 8, 8, shift, 2.0, 0.0).eval()
    with torch.no_grad():
        layer.attn.relative_position_bias_table.normal_(0.0, 1.0)
    g = torch.Generator().manual_seed(3)
    x, s = torch.randn(batch, 96, 24, 16, generator=g), torch.randn(batch, 96, 24, 16, generator=g)
    mask = shifted_window_mask(24, 16, 8, 4)
    with torch.no_grad():
        for inputs in ((x, s), (x.contiguous(memory_format=torch.channels_last), s)):
            got = layer(*inputs, mask)
            ref = ref_dense_layer(layer, x, s, mask)
            assert_equal(got[0], ref[0])
            assert_equal(got[1], ref[1])


# --------------------------------------------------------------------------- dynamic filter


@pytest.mark.parametrize(("h", "w"), [(12, 20), (16, 16)])
@pytest.mark.parametrize("batch", [1, 2])
def test_dynamic_filter_equals_unfolded_reference(h, w, batch):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(batch, 6, h, w, generator=g)
    k = torch.randn(batch, 6 * 25, h, w, generator=g)
    assert_equal(dynamic_filter.dynamic_filter(x, k, 5), ref_dynamic_filter(x, k, 5))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert_equal(dynamic_filter.dynamic_filter(x_cl, k, 5), ref_dynamic_filter(x, k, 5))


@pytest.mark.parametrize(("h", "w"), [(12, 20), (16, 16)])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("chunk_channels", [1, 5, 1000])
def test_dfg_filter_equals_full_kernels_then_filter(monkeypatch, h, w, batch, chunk_channels):
    monkeypatch.setattr(dynamic_filter, "CPU_CHUNK_BYTES", chunk_channels * batch * 25 * h * w * 4)
    torch.manual_seed(0)
    dfg = DFG(32, 5).eval()  # 16 channels → 400 kernel channels
    g = torch.Generator().manual_seed(5)
    o, s = torch.randn(batch, 16, h, w, generator=g), torch.randn(batch, 16, h, w, generator=g)
    with torch.no_grad():
        ref = ref_dynamic_filter(s, dfg(o, s), 5)
        assert_equal(dfg.filter(s, o, s), ref)
        cl = [t.contiguous(memory_format=torch.channels_last) for t in (s, o)]
        got = dfg.filter(cl[0], cl[1], cl[0])
        assert_equal(got, ref)
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_dfg_filter_gradients_equal_reference(monkeypatch):
    monkeypatch.setattr(dynamic_filter, "CPU_CHUNK_BYTES", 5 * 25 * 12 * 12 * 4)
    grads = []
    for fast in (True, False):
        torch.manual_seed(0)
        dfg = DFG(32, 5)
        g = torch.Generator().manual_seed(6)
        o = torch.randn(1, 16, 12, 12, generator=g).requires_grad_()
        s = torch.randn(1, 16, 12, 12, generator=g).requires_grad_()
        y = dfg.filter(s, o, s) if fast else ref_dynamic_filter(s, dfg(o, s), 5)
        (y * torch.randn(y.shape, generator=g)).sum().backward()
        grads.append([o.grad, s.grad] + [p.grad for p in dfg.parameters()])
    for got, ref in zip(*grads, strict=True):
        assert_equal(got, ref)


# --------------------------------------------------------------------------- KBA, DCN


@pytest.mark.parametrize(("c", "h", "w"), [(32, 12, 10), (64, 16, 16)])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("band_rows", [1, 3, 1000])
def test_kba_unfolded_equals_grouped_conv_kba(monkeypatch, c, h, w, batch, band_rows):
    monkeypatch.setattr(kbnet, "KBA_CPU_BAND_BYTES", band_rows * batch * c * 32 * w * 4)
    g = torch.Generator().manual_seed(7)
    u, att = torch.randn(batch, c, h, w, generator=g), torch.randn(batch, 32, h, w, generator=g)
    weight = torch.randn(32, c * 4 * 9, generator=g) * 0.1
    bias = torch.randn(32, c, generator=g) * 0.1
    assert_equal(kbnet.kba_unfolded(u, att, weight, bias, 3, 4), kbnet.kba(u, att, weight, bias, 3, 4))


@pytest.mark.parametrize(("h", "w"), [(9, 13), (16, 16)])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("band_rows", [1, 4, 1000])
def test_sampled_deform_conv_equals_torchvision(monkeypatch, h, w, batch, band_rows):
    monkeypatch.setattr(deform, "DEFORM_CPU_BAND_BYTES", band_rows * batch * 32 * 9 * w * 4)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(batch, 32, h, w, generator=g)
    offset = torch.randn(batch, 2 * 4 * 9, h, w, generator=g) * 3  # many samples cross the border
    offset[:, :4] = 40.0  # and some land far outside (zero)
    mask = torch.rand(batch, 4 * 9, h, w, generator=g)
    weight = torch.randn(24, 32, 3, 3, generator=g) * 0.1
    bias = torch.randn(24, generator=g)
    for b in (bias, None):
        ref = deform_conv2d(x, offset, weight, b, padding=1, mask=mask)
        assert_equal(deform.sampled_deform_conv2d(x, offset, mask, weight, b, 1), ref)


# --------------------------------------------------------------------------- whole models


def model_inputs(bands: int, size: int, batch: int, seed: int, temporal: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = (batch, temporal) if temporal else (batch,)
    return torch.rand(*lead, bands, size, size, generator=g) * 0.6, torch.rand(*lead, 2, size, size, generator=g)


@pytest.fixture(scope="module")
def glf() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("glf_cr").eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 0.5)
    return m


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("repo_gate_order", [False, True])
def test_glf_cr_and_cafr_equal_reference(glf, size, batch, repo_gate_order):
    m = create_model("cafr", repo_gate_order=True).eval() if repo_gate_order else glf
    if repo_gate_order:
        m.load_state_dict(glf.state_dict())
    x, s = model_inputs(13, size, batch, seed=size + batch)
    with torch.no_grad():
        ref = ref_glf_forward(m, x, s)
        got = m(x, s)
        assert_equal(got, ref)
        assert got.is_contiguous()  # channels-last inside, NCHW out
        m.channels_last = False
        try:
            assert_equal(m(x, s), ref)
        finally:
            m.channels_last = True


def test_glf_cr_with_trained_weights_on_real_data_equals_reference():
    """The demo checkpoint on two 64-px crops of the real SEN12MS-CR sample (card scaling)."""
    model = build_model(load_checkpoint(DEMO_CKPT))
    with rasterio.open(S2_SAMPLE) as src:
        opt = np.clip(src.read().astype(np.float32), 0, 10000) / 10000
    with rasterio.open(S1_SAMPLE) as src:
        sar = src.read().astype(np.float32)
    sar = np.stack([np.clip((sar[0] + 25.0) / 25.0, 0, 1), np.clip((sar[1] + 32.5) / 32.5, 0, 1)])
    crops = [(64, 64), (160, 96)]
    x = torch.from_numpy(np.stack([opt[:, y : y + 64, c : c + 64] for y, c in crops]))
    s = torch.from_numpy(np.stack([sar[:, y : y + 64, c : c + 64] for y, c in crops]))
    with torch.no_grad():
        got, ref = model(x, s), ref_glf_forward(model, x, s)
    assert (got - x).abs().mean() > 1e-3  # the model does change the image
    assert_equal(got, ref)


@pytest.fixture(scope="module")
def align() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("align_cr").eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "conv_offset" in name:  # zero at init: give the DCNs real, fractional offsets
                p.normal_(0.0, 0.02)
            elif name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 0.5)
    return m


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("batch", [1, 2])
def test_align_cr_equals_reference(align, size, batch):
    x, s = model_inputs(4, size, batch, seed=10 + size + batch)
    with torch.no_grad():
        got, ref = align(x, s), ref_align_forward(align, x, s)
    assert_equal(got, ref)
    assert got.is_contiguous()


@pytest.mark.parametrize(
    ("name", "size", "batch"),
    # MPIR's own code is unchanged; one case shows its stages pick the same path.
    [("mmcanet", 32, 1), ("mmcanet", 32, 2), ("mmcanet", 64, 1), ("mmcanet", 64, 2), ("mpir1", 32, 2)],
)
def test_mmcanet_family_inference_path_equals_training_path(name, size, batch):
    """No-grad CPU inference takes :func:`kba_unfolded`; with autograd on, every MFF block
    runs the grouped-conv :func:`kba` (the code before issue 11)."""
    torch.manual_seed(0)
    m = create_model(name).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1 and p.numel() > 1 and torch.all(p == 1e-2):
                p.fill_(0.5)  # the 1e-2 branch scales would hide the KBA branch
    x, s = model_inputs(3, size, batch, seed=20 + size + batch)
    with torch.no_grad():
        got = m(x, s)
    with torch.enable_grad():
        ref = m(x, s).detach()
    assert_equal(got, ref)


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("batch", [1, 2])
def test_ca_mtcr_channels_last_equals_nchw(size, batch):
    torch.manual_seed(0)
    m = create_model("ca_mtcr").eval()
    x, s = model_inputs(13, size, batch, seed=30 + size + batch, temporal=2)
    days = torch.tensor([[-12.0, 0.0]] * batch)
    with torch.no_grad():
        got = m(x, s, days)
        m.channels_last = False
        ref = m(x, s, days)
    assert_equal(got, ref)
    assert got.is_contiguous()


@pytest.mark.parametrize(("name", "bands"), [("glf_cr", 13), ("cafr", 13), ("mmcanet", 3)])
def test_accelerator_branches_keep_shapes(name, bands):
    """On a non-CPU device (meta here) the attention and the filter run in one chunk and KBA
    takes the grouped conv; shapes must come out right."""
    with torch.device("meta"):
        m = create_model(name).eval()
        with torch.no_grad():
            y = m(torch.rand(2, bands, 64, 48), torch.rand(2, 2, 64, 48))
    assert y.shape == (2, bands, 64, 48) and y.device.type == "meta"


@pytest.mark.parametrize(("name", "bands"), [("glf_cr", 13), ("mmcanet", 3)])
def test_bfloat16_autocast_runs_and_stays_close(name, bands):
    """Under autocast the fast paths mix 16-bit products with float32 bias/accumulators (the
    logits stay float32 as in the plain definition); the result stays near the fp32 one."""
    torch.manual_seed(0)
    m = create_model(name).eval()
    x, s = model_inputs(bands, 32, 1, seed=40)
    with torch.no_grad():
        ref = m(x, s)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(x, s)
    assert torch.isfinite(got).all()
    assert (got.float() - ref).abs().max() < 2e-2
