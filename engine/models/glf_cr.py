"""GLF-CR: SAR-enhanced cloud removal with global-local fusion.

Paper: Xu et al., "GLF-CR: SAR-Enhanced Cloud Removal with Global-Local Fusion",
ISPRS J. P&RS 192 (2022) 268-278. Described in docs/models/glf_cr.md (data flow, sizes,
parameter counts, our choices and the official training settings). Official code:
github.com/xufangchn/GLF-CR (no licence: read for layer names and shapes only, nothing
copied).

Parameter names follow the official ``RDN_residual_CR`` so its released ``CR_net.pth``
(state dict under ``network``) loads after :func:`remap_official_state_dict`. Unlike the
official model, attention masks are built per forward for the actual input size, so any
H, W that are multiples of 16 work, and no compiled extension is needed.

Parameters: 14,827,373 for 13 optical bands, 14,735,780 for 4 (per part: docs/models/glf_cr.md, "Parameter counts").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.common import DropPath, Mlp
from ..layers.dynamic_filter import dynamic_filter_from_features
from ..layers.windows import (
    cached_shift_mask,
    from_windows,
    relative_position_index,
    to_windows,
    window_chunk,
)
from ._registry import register_model

LEAKY_SLOPE = 0.1  # LeakyReLU slope of the dynamic filter generator


class DualWindowAttention(nn.Module):
    """SAR-guided window attention over two token streams.

    The optical logits move towards the SAR logits by a learned, per-pair sigmoid gate
    (code: sigmoid; paper: "softmax"; we follow the code, on which the released weights
    depend). Both streams share one relative-position bias table. docs/models/glf_cr.md,
    "SAR-guided window attention", gives the steps.

    Speed (issue 11; results equal to the plain definition, see tests/engine/test_fast_paths.py):
    bias and shifted-window mask are added in place, the 1×1 gate conv over the heads runs
    as a batched heads×heads matrix product (a 1×1 conv over 8 channels is slow in oneDNN),
    the gate update is one fused multiply-add, the weighted sum of values is computed
    transposed (:func:`_weighted_values`), and on the CPU the n²-sized chain runs on
    cache-sized groups of windows (:func:`window_chunk`). The optical stream's softmax input
    is built from both streams' logits, so it cannot go through
    ``scaled_dot_product_attention``; the SAR stream could, but only by computing its logits
    twice, and that was slower on the CPU.
    """

    relative_position_index: torch.Tensor
    mask_after_gate = False
    """False: GLF-CR order (mask both streams, then gate). True: the CAFR repository's order
    (gate on unmasked logits, then mask the optical stream only), see ``models/cafr.py``."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window = window
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # Persistent so the official checkpoint's keys map 1:1 (docs/models/glf_cr.md, "Checkpoint compatibility").
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.qkv_SAR = nn.Linear(dim, dim * 3)
        self.attn_fuse_1x1conv = nn.Conv2d(heads, heads, kernel_size=1)
        self.proj = nn.Linear(dim, dim)
        self.proj_SAR = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _logits(self, qkv: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unbiased logits (B·nW, heads, M², M²) and values (B·nW, heads, M², C/heads)."""
        q, k, v = self._heads(qkv, x)
        return (q * self.scale) @ k.transpose(-2, -1), v

    def _heads(self, qkv: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v, each (B·nW, heads, M², C/heads), contiguous (one copy for all three)."""
        n_win, n, c = x.shape
        qkv_heads = qkv(x).view(n_win, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv_heads.contiguous().unbind(0)
        return q, k, v

    def position_bias(self) -> torch.Tensor:
        """Relative-position bias per head, (heads, M², M²)."""
        n = self.window * self.window
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(
        self, x: torch.Tensor, x_sar: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend within windows.

        Args:
            x, x_sar: window tokens, (B·nW, M², C) each, images one after the other.
            mask: additive shifted-window mask (nW, M², M²) or None.

        Returns:
            Optical and SAR outputs, (B·nW, M², C) each.
        """
        n_win, n, c = x.shape
        q, k, v = self._heads(self.qkv, x)
        q_sar, k_sar, v_sar = self._heads(self.qkv_SAR, x_sar)
        q, q_sar = q * self.scale, q_sar * self.scale
        bias = self.position_bias().unsqueeze(0)  # (1, heads, n, n)
        # The mask (nW, 1, n, n) is added chunk by chunk after the bias, as in the definition;
        # summing bias and mask first would build an nW·heads·n² tensor per call.
        mask = None if mask is None else mask.unsqueeze(1)
        per_image = 1 if mask is None else mask.shape[0]
        step = window_chunk(n_win, per_image, 4 * self.heads * n * n * x.element_size(), x.device)
        outs, outs_sar = [], []
        for w0 in range(0, n_win, step):
            w1 = min(n_win, w0 + step)
            y, y_sar = self._attend_chunk(
                q[w0:w1], k[w0:w1], v[w0:w1], q_sar[w0:w1], k_sar[w0:w1], v_sar[w0:w1],
                bias, None if mask is None else _mask_rows(mask, w0, w1),
            )
            outs.append(y)
            outs_sar.append(y_sar)
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        y_sar = outs_sar[0] if len(outs_sar) == 1 else torch.cat(outs_sar)
        y = y.transpose(1, 2).reshape(n_win, n, c)
        y_sar = y_sar.transpose(1, 2).reshape(n_win, n, c)
        return self.proj(y), self.proj_SAR(y_sar)

    def _attend_chunk(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        q_sar: torch.Tensor, k_sar: torch.Tensor, v_sar: torch.Tensor,
        bias: torch.Tensor, mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of m windows: q/k/v (m, heads, n, d) per stream, q already scaled.

        ``bias`` (1, heads, n, n) goes to both streams' logits; ``mask`` (r, 1, n, n), r
        dividing m or m dividing r, goes to both before the gate (GLF-CR) or to the optical
        logits after it (:attr:`mask_after_gate`). Returns the per-head outputs
        (m, heads, n, d) of both streams.
        """
        m, heads, n, _ = q.shape
        # Under autocast the products come out in 16 bits; the plain definition's
        # "logits + bias" promoted them to the bias's float32, so the in-place chain below
        # starts from the same promoted dtype (a no-op in float32).
        dtype = torch.promote_types(q.dtype, bias.dtype)
        logits = (q @ k.transpose(-2, -1)).to(dtype)  # (m, heads, n, n)
        logits_sar = (q_sar @ k_sar.transpose(-2, -1)).to(dtype)
        logits += bias
        logits_sar += bias
        if mask is not None and not self.mask_after_gate:
            _add_per_window(logits, mask)
            _add_per_window(logits_sar, mask)
        diff = logits_sar - logits
        # The 1×1 conv over heads as a batched (heads × heads) product, bias broadcast.
        gate_w = self.attn_fuse_1x1conv.weight.view(heads, heads).expand(m, heads, heads)
        gate = torch.bmm(gate_w, diff.view(m, heads, n * n))
        if self.attn_fuse_1x1conv.bias is not None:
            gate = gate.add_(self.attn_fuse_1x1conv.bias.view(heads, 1))
        logits.addcmul_(diff, torch.sigmoid_(gate).view(m, heads, n, n))
        if mask is not None and self.mask_after_gate:
            _add_per_window(logits, mask)
        return _weighted_values(logits.softmax(dim=-1), v), _weighted_values(logits_sar.softmax(dim=-1), v_sar)


def _weighted_values(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``p @ v`` for attention weights p (m, heads, n, n) and values v (m, heads, n, d).

    Computed as (vᵀ pᵀ)ᵀ (a transposed view, no copy): with d = 6 the direct product is a
    GEMM with a 6-wide output, which MKL ran 3.6× slower than the transposed one.
    """
    return (v.transpose(-2, -1) @ p.transpose(-2, -1)).transpose(-2, -1)


def _mask_rows(t: torch.Tensor, w0: int, w1: int) -> torch.Tensor:
    """Rows of a per-window additive tensor (r, …, n, n) for windows w0..w1 of the batch.

    r = 1 (one tensor for all windows) or nW; with r = nW the chunk either lies inside one
    image (its rows are a slice) or covers whole images (all rows, broadcast by the caller).
    """
    r = t.shape[0]
    if r == 1 or w1 - w0 >= r:
        return t
    return t[w0 % r : w0 % r + (w1 - w0)]


def _add_per_window(logits: torch.Tensor, t: torch.Tensor) -> None:
    """In place: logits (m, heads, n, n) += t (r, 1, n, n), t repeating every r windows."""
    m, heads, n, _ = logits.shape
    r = t.shape[0]
    logits.view(m // r, r, heads, n, n).add_(t)


class DenseSTLLayer(nn.Module):
    """One dense layer of an SGCI block: 3×3 conv + ReLU per stream, then a dual Swin layer.

    Returns the input concatenated with the 48 new channels, per stream (docs/models/glf_cr.md, "SGCI block").
    Only the pre-MLP LayerNorm exists (the official pre-attention norm is commented out).
    The residual and the MLP are per token, so they run in window order and the tokens go
    back to raster order once, with the shift undone in the same gather.
    """

    def __init__(
        self, in_channels: int, growth: int, window: int, heads: int, shift: int,
        mlp_ratio: float, drop_path: float,
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, 3, padding=1), nn.ReLU())
        self.conv_SAR = nn.Sequential(nn.Conv2d(in_channels, growth, 3, padding=1), nn.ReLU())
        self.attn = DualWindowAttention(growth, window, heads)
        self.drop_path = DropPath(drop_path)
        self.drop_path_SAR = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(growth)
        self.norm2_SAR = nn.LayerNorm(growth)
        hidden = int(growth * mlp_ratio)
        self.mlp = Mlp(growth, hidden)
        self.mlp_SAR = Mlp(growth, hidden)

    def forward(
        self, x: torch.Tensor, x_sar: torch.Tensor, shift_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Cin, h, w) ×2 → (B, Cin + G, h, w) ×2. ``shift_mask`` None disables shifting."""
        b, _, h, w = x.shape
        shift = self.shift if shift_mask is not None else 0
        a = to_windows(self.conv(x), self.window, shift)  # (B·nW, M², G)
        a_sar = to_windows(self.conv_SAR(x_sar), self.window, shift)
        y, y_sar = self.attn(a, a_sar, shift_mask if shift else None)
        u = a + _per_image(self.drop_path, y, b)
        u = u + _per_image(self.drop_path, self.mlp(self.norm2(u)), b)
        u_sar = a_sar + _per_image(self.drop_path_SAR, y_sar, b)
        u_sar = u_sar + _per_image(self.drop_path_SAR, self.mlp_SAR(self.norm2_SAR(u_sar)), b)
        return (
            torch.cat((x, from_windows(u, self.window, h, w, shift)), dim=1),
            torch.cat((x_sar, from_windows(u_sar, self.window, h, w, shift)), dim=1),
        )


def _per_image(drop: DropPath, t: torch.Tensor, b: int) -> torch.Tensor:
    """Stochastic depth per image (as on the raster map), on window tokens (B·nW, M², C)."""
    if drop.p == 0.0 or not drop.training:
        return t
    return drop(t.reshape(b, -1, t.shape[-1])).view_as(t)


class SGCIBlock(nn.Module):
    """SAR-guided residual dense block, two streams with separate weights (docs/models/glf_cr.md, "SGCI block")."""

    def __init__(
        self, channels: int, growth: int, layers: int, window: int, heads: int,
        mlp_ratio: float, drop_paths: list[float],
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            DenseSTLLayer(
                channels + i * growth, growth, window, heads,
                shift=0 if i % 2 == 0 else window // 2,
                mlp_ratio=mlp_ratio, drop_path=drop_paths[i],
            )
            for i in range(layers)
        )
        self.LFF = nn.Conv2d(channels + layers * growth, channels, 3, padding=1)
        self.LFF_SAR = nn.Conv2d(channels + layers * growth, channels, 3, padding=1)

    def forward(
        self, x: torch.Tensor, x_sar: torch.Tensor, shift_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        d, d_sar = x, x_sar
        for layer in self.convs:
            d, d_sar = layer(d, d_sar, shift_mask)
        return self.LFF(d) + x, self.LFF_SAR(d_sar) + x_sar


class ResBlock(nn.Module):
    """Conv3×3 → LeakyReLU → Conv3×3, plus the input; no activation after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x) + x


class DFG(nn.Module):
    """Dynamic filter generator: (optical, SAR) features → per-pixel k×k kernels.

    docs/models/glf_cr.md, "SLFC block".
    """

    def __init__(self, in_channels: int, kernel_size: int) -> None:
        super().__init__()
        half = in_channels // 2
        self.kernel_size = kernel_size
        self.fac_warp = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, half, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE)),
            ResBlock(half),
            ResBlock(half),
            nn.Sequential(nn.Conv2d(half, half * kernel_size**2, 1), nn.LeakyReLU(LEAKY_SLOPE)),
        )

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) ×2 → (B, C·k², h, w)."""
        return self.fac_warp(torch.cat((opt, sar), dim=1))

    def filter(self, x: torch.Tensor, opt: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """``dynamic_filter(x, self(opt, sar), k)`` without holding all C·k² kernel channels
        at once on the CPU (:func:`dynamic_filter_from_features`): (B, C, h, w) → same."""
        feats = self.fac_warp[:3](torch.cat((opt, sar), dim=1))
        tail = self.fac_warp[3]
        assert isinstance(tail, nn.Sequential)
        conv = tail[0]
        assert isinstance(conv, nn.Conv2d)
        return dynamic_filter_from_features(x, feats, conv.weight, conv.bias, self.kernel_size, LEAKY_SLOPE)


class GLFCR(nn.Module):
    """GLF-CR network.

    ``forward(optical, sar)``: optical (B, C_opt, H, W) scaled to [0, 1] (S2 DN / 10000),
    SAR (B, 2, H, W) in [0, 1] (VV [−25, 0] dB and VH [−32.5, 0] dB mapped to [0, 1]). Returns
    (B, C_opt, H, W) in the optical scaling, not clamped: the input plus a learned residual.
    H and W must be multiples of :attr:`size_multiple` (16).
    """

    def __init__(
        self,
        optical_bands: int = 13,
        sar_bands: int = 2,
        channels: int = 96,
        growth: int = 48,
        blocks: int = 6,
        layers: int = 5,
        heads: int = 8,
        window: int = 8,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.2,
        filter_size: int = 5,
    ) -> None:
        super().__init__()
        self.optical_bands = optical_bands
        self.sar_bands = sar_bands
        self.window = window
        self.filter_size = filter_size
        self.size_multiple = 2 * window  # pixel-unshuffle ×2, then M×M windows
        # Features in channels-last memory (values unchanged): the window tokens are then views
        # of the conv outputs, and oneDNN's convolutions ran 10-45 % faster so on the CPU.
        self.channels_last = True

        self.SFENet1 = nn.Conv2d(optical_bands * 4, channels, 5, padding=2)
        self.SFENet2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.SFENet1_SAR = nn.Conv2d(sar_bands * 4, channels, 5, padding=2)
        self.SFENet2_SAR = nn.Conv2d(channels, channels, 3, padding=1)

        n = blocks * layers  # stochastic depth rises linearly from 0 over all 30 layers
        rates = [drop_path * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
        self.RDBs = nn.ModuleList(
            SGCIBlock(channels, growth, layers, window, heads, mlp_ratio,
                      rates[i * layers : (i + 1) * layers])
            for i in range(blocks)
        )
        self.DF = nn.ModuleList(DFG(2 * channels, filter_size) for _ in range(blocks))
        self.sar_fuse_1x1conv = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(blocks))
        self.opt_distribute_1x1conv = nn.ModuleList(
            nn.Conv2d(channels, channels, 1) for _ in range(blocks)
        )
        self.GFF = nn.Sequential(
            nn.Conv2d(blocks * channels, channels, 1),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.UPNet = nn.Sequential(
            nn.Conv2d(channels, 256, 3, padding=1),
            nn.PixelShuffle(2),
            nn.Conv2d(64, optical_bands, 3, padding=1),
        )

    def fuse(self, i: int, opt: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SLFC block i: dynamic filtering of SAR, then gated exchange (paper Eq. 11-12)."""
        return slfc_fuse(self, i, opt, sar)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        b, c, h, w = optical.shape
        if c != self.optical_bands or sar.shape[1] != self.sar_bands:
            raise ValueError(
                f"GLF-CR built for {self.optical_bands} optical + {self.sar_bands} SAR bands, "
                f"got {c} + {sar.shape[1]}"
            )
        if sar.shape[0] != b or sar.shape[-2:] != optical.shape[-2:]:
            raise ValueError(f"optical {tuple(optical.shape)} and SAR {tuple(sar.shape)} differ in B/H/W")
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"GLF-CR needs H and W that are multiples of {m}, got {h}×{w}")
        hs, ws = h // 2, w // 2
        # As in the official code, a map no larger than one window is not shifted.
        shift_mask = (
            cached_shift_mask(hs, ws, self.window, self.window // 2, optical.device, optical.dtype)
            if min(hs, ws) > self.window
            else None
        )

        skip = self.SFENet1(as_channels_last(F.pixel_unshuffle(optical, 2), self.channels_last))
        x = self.SFENet2(skip)
        sar_in = as_channels_last(F.pixel_unshuffle(sar, 2), self.channels_last)
        x_sar = self.SFENet2_SAR(self.SFENet1_SAR(sar_in))
        outs = []
        for i, block in enumerate(self.RDBs):
            x, x_sar = block(x, x_sar, shift_mask)
            x, x_sar = self.fuse(i, x, x_sar)
            outs.append(x)
        x = self.GFF(torch.cat(outs, dim=1)) + skip
        # Callers get NCHW-contiguous output whatever the internal layout (a small copy).
        return (self.UPNet(x) + optical).contiguous()


def slfc_fuse(
    model: nn.Module, i: int, opt: torch.Tensor, sar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SLFC block i of ``model`` (GLF-CR, or Align-CR, which has the same attribute names
    ``DF``, ``sar_fuse_1x1conv`` and ``opt_distribute_1x1conv``): filter the SAR features with
    the per-pixel kernels of ``DF[i]``, then exchange information through the two sigmoid gates.
    (B, 96, h, w) ×2 → same."""
    dfgs, opt_gates, sar_gates = model.DF, model.sar_fuse_1x1conv, model.opt_distribute_1x1conv
    assert isinstance(dfgs, nn.ModuleList) and isinstance(opt_gates, nn.ModuleList)
    assert isinstance(sar_gates, nn.ModuleList)
    dfg = dfgs[i]
    assert isinstance(dfg, DFG)
    sar_f = dfg.filter(sar, opt, sar)
    d1 = sar_f - opt
    opt_new = opt + d1 * torch.sigmoid(opt_gates[i](d1))
    d2 = opt_new - sar_f
    sar_new = sar + d2 * torch.sigmoid(sar_gates[i](d2))
    return opt_new, sar_new


def as_channels_last(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` (B, C, H, W) in channels-last memory if asked, else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


_MODULE_PREFIX = re.compile(r"^module\.")


def remap_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``checkpoint['network']`` dict → our names (GLF-CR ``CR_net.pth``; Align-CR too).

    Names already match; DataParallel's ``module.`` prefix is stripped and the size-frozen
    ``attn_mask`` buffers are dropped (we rebuild masks per input size).
    """
    out = {}
    for key, value in state.items():
        key = _MODULE_PREFIX.sub("", key)
        if key.endswith(".attn_mask"):
            continue
        out[key] = value
    return out


@register_model("glf_cr", official_remap=remap_official_state_dict)
def glf_cr(**kwargs: object) -> GLFCR:
    """GLF-CR with the official hyperparameters; kwargs override (e.g. optical_bands=4)."""
    return GLFCR(**kwargs)  # type: ignore[arg-type]
