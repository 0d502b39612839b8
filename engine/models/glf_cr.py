"""GLF-CR: SAR-enhanced cloud removal with global-local fusion.

Paper: Xu et al., "GLF-CR: SAR-Enhanced Cloud Removal with Global-Local Fusion",
ISPRS J. P&RS 192 (2022) 268-278. Spec: ../shared/specs/glf_cr.md (every number below
cites a section of it). Official code: github.com/xufangchn/GLF-CR (no licence: read for
layer names and shapes only, nothing copied).

Parameter names follow the official ``RDN_residual_CR`` so its released ``CR_net.pth``
(state dict under ``network``) loads after :func:`remap_official_state_dict`. Unlike the
official model, attention masks are built per forward for the actual input size, so any
H, W that are multiples of 16 work, and no compiled extension is needed.

Parameters: 14,827,373 for 13 optical bands, 14,735,780 for 4 (spec §2.5).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.common import DropPath, Mlp
from ..layers.dynamic_filter import dynamic_filter
from ..layers.windows import (
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from ._registry import register_model

LEAKY_SLOPE = 0.1  # DFG activations, spec §2.3


class DualWindowAttention(nn.Module):
    """SAR-guided window attention over two token streams (spec §2.2).

    The optical logits move towards the SAR logits by a learned, per-pair sigmoid gate
    (code: sigmoid; paper: "softmax"; we follow the code, R4). Both streams share one
    relative-position bias table.
    """

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window = window
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # Persistent so the official checkpoint's keys map 1:1 (spec §2.6).
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.qkv_SAR = nn.Linear(dim, dim * 3)
        self.attn_fuse_1x1conv = nn.Conv2d(heads, heads, kernel_size=1)
        self.proj = nn.Linear(dim, dim)
        self.proj_SAR = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _logits(self, qkv: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_win, n, c = x.shape
        q, k, v = qkv(x).reshape(n_win, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return (q * self.scale) @ k.transpose(-2, -1), v

    def forward(
        self, x: torch.Tensor, x_sar: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend within windows.

        Args:
            x, x_sar: window tokens, (B·nW, M², C) each.
            mask: additive shifted-window mask (nW, M², M²) or None.

        Returns:
            Optical and SAR outputs, (B·nW, M², C) each.
        """
        logits, logits_sar, v, v_sar = self._biased_logits(x, x_sar)
        if mask is not None:
            logits, logits_sar = self._masked(logits, mask), self._masked(logits_sar, mask)
        diff = logits_sar - logits
        logits = logits + diff * torch.sigmoid(self.attn_fuse_1x1conv(diff))
        return self._attend(logits, logits_sar, v, v_sar)

    def _biased_logits(
        self, x: torch.Tensor, x_sar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-stream logits plus the shared relative-position bias (B·nW, heads, M², M²), and values."""
        n = x.shape[1]
        logits, v = self._logits(self.qkv, x)
        logits_sar, v_sar = self._logits(self.qkv_SAR, x_sar)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        return logits + bias, logits_sar + bias, v, v_sar

    def _masked(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Add the shifted-window mask (nW, M², M²) to logits (B·nW, heads, M², M²)."""
        n_win, n = logits.shape[0], logits.shape[-1]
        nw = mask.shape[0]
        m = mask.unsqueeze(1).unsqueeze(0)
        return (logits.view(n_win // nw, nw, self.heads, n, n) + m).view(-1, self.heads, n, n)

    def _attend(
        self, logits: torch.Tensor, logits_sar: torch.Tensor, v: torch.Tensor, v_sar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax-weighted values per stream, projected: (B·nW, M², C) each."""
        n_win, _, n, _ = logits.shape
        y = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(n_win, n, -1)
        y_sar = (logits_sar.softmax(dim=-1) @ v_sar).transpose(1, 2).reshape(n_win, n, -1)
        return self.proj(y), self.proj_SAR(y_sar)


class DenseSTLLayer(nn.Module):
    """One dense layer of an SGCI block: 3×3 conv + ReLU per stream, then a dual Swin layer.

    Returns the input concatenated with the 48 new channels, per stream (spec §2.1-2.2).
    Only the pre-MLP LayerNorm exists (the official pre-attention norm is commented out).
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
        a = self.conv(x).permute(0, 2, 3, 1)  # (B, h, w, G)
        a_sar = self.conv_SAR(x_sar).permute(0, 2, 3, 1)
        shift = self.shift if shift_mask is not None else 0
        mask = shift_mask if shift else None
        if shift:
            a_in = torch.roll(a, (-shift, -shift), dims=(1, 2))
            a_sar_in = torch.roll(a_sar, (-shift, -shift), dims=(1, 2))
        else:
            a_in, a_sar_in = a, a_sar
        y, y_sar = self.attn(
            window_partition(a_in, self.window), window_partition(a_sar_in, self.window), mask
        )
        y = window_reverse(y, self.window, h, w)
        y_sar = window_reverse(y_sar, self.window, h, w)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
            y_sar = torch.roll(y_sar, (shift, shift), dims=(1, 2))
        u = a + self.drop_path(y)
        u = u + self.drop_path(self.mlp(self.norm2(u)))
        u_sar = a_sar + self.drop_path_SAR(y_sar)
        u_sar = u_sar + self.drop_path_SAR(self.mlp_SAR(self.norm2_SAR(u_sar)))
        return (
            torch.cat((x, u.permute(0, 3, 1, 2)), dim=1),
            torch.cat((x_sar, u_sar.permute(0, 3, 1, 2)), dim=1),
        )


class SGCIBlock(nn.Module):
    """SAR-guided residual dense block, two streams with separate weights (spec §2.1)."""

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
    """Dynamic filter generator: (optical, SAR) features → per-pixel k×k kernels (spec §2.3)."""

    def __init__(self, in_channels: int, kernel_size: int) -> None:
        super().__init__()
        half = in_channels // 2
        self.fac_warp = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, half, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE)),
            ResBlock(half),
            ResBlock(half),
            nn.Sequential(nn.Conv2d(half, half * kernel_size**2, 1), nn.LeakyReLU(LEAKY_SLOPE)),
        )

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) ×2 → (B, C·k², h, w)."""
        return self.fac_warp(torch.cat((opt, sar), dim=1))


class GLFCR(nn.Module):
    """GLF-CR network.

    ``forward(optical, sar)``: optical (B, C_opt, H, W) scaled to [0, 1] (S2 DN / 10000),
    SAR (B, 2, H, W) in [0, 1] (VV, VH, spec §1). Returns (B, C_opt, H, W) in the optical
    scaling, not clamped: the input plus a learned residual (spec §2.0 step 4).
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

        self.SFENet1 = nn.Conv2d(optical_bands * 4, channels, 5, padding=2)
        self.SFENet2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.SFENet1_SAR = nn.Conv2d(sar_bands * 4, channels, 5, padding=2)
        self.SFENet2_SAR = nn.Conv2d(channels, channels, 3, padding=1)

        n = blocks * layers  # stochastic depth rises linearly over all 30 layers (spec §2.2)
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
        """SLFC block i: dynamic filtering of SAR, then gated exchange (spec §2.3, Eq. 11-12)."""
        sar_f = dynamic_filter(sar, self.DF[i](opt, sar), self.filter_size)
        d1 = sar_f - opt
        opt_new = opt + d1 * torch.sigmoid(self.sar_fuse_1x1conv[i](d1))
        d2 = opt_new - sar_f
        sar_new = sar + d2 * torch.sigmoid(self.opt_distribute_1x1conv[i](d2))
        return opt_new, sar_new

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
            shifted_window_mask(hs, ws, self.window, self.window // 2, optical.device).to(optical.dtype)
            if min(hs, ws) > self.window
            else None
        )

        skip = self.SFENet1(F.pixel_unshuffle(optical, 2))
        x = self.SFENet2(skip)
        x_sar = self.SFENet2_SAR(self.SFENet1_SAR(F.pixel_unshuffle(sar, 2)))
        outs = []
        for i, block in enumerate(self.RDBs):
            x, x_sar = block(x, x_sar, shift_mask)
            x, x_sar = self.fuse(i, x, x_sar)
            outs.append(x)
        x = self.GFF(torch.cat(outs, dim=1)) + skip
        return self.UPNet(x) + optical


_MODULE_PREFIX = re.compile(r"^module\.")


def remap_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``checkpoint['network']`` dict → our names (GLF-CR ``CR_net.pth``; Align-CR too).

    Names already match; DataParallel's ``module.`` prefix is stripped and the size-frozen
    ``attn_mask`` buffers are dropped (we rebuild masks per input size, spec §7 R1).
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
    """GLF-CR with the official hyperparameters (spec §2); kwargs override (e.g. optical_bands=4)."""
    return GLFCR(**kwargs)  # type: ignore[arg-type]
