"""KBNet building blocks: LayerNorm2d, SimpleGate, kernel-basis attention (KBA), MFF block.

Paper: Zhang et al., "KBNet: Kernel Basis Network for Image Restoration" (2023); official
code github.com/zhangyi-3/KBNet (no licence: read for layer names and shapes only, nothing
copied). MMCANet calls its ``KBBlock_s`` the "MFF" block; docs/models/mmcanet.md, "MFF block",
describes it (parameter counts: MFF(32) = 48,096, MFF(64) = 109,888, MFF(256) = 781,696,
MFF_l(32) = 51,008).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at each pixel, (B, C, H, W) → same; eps 1e-6, affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split channels in half and multiply the halves: (B, 2C, H, W) → (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


def kba(
    u: torch.Tensor,
    att: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    kernel_size: int,
    group_size: int,
    chunk: int | None = None,
) -> torch.Tensor:
    """Kernel-basis attention: a per-pixel grouped conv whose kernel mixes ``nset`` bases.

    out(p) = Σ_s att_s(p) · (conv_{W_s}(u)(p) + b_s), with conv_{W_s} the grouped k×k conv
    (groups = C / gc, zero padding) of basis s. Because att_s(p) is a scalar per pixel, this
    equals applying the mixed kernel Σ_s att_s(p)·W_s at p (KBNet's definition), but it runs
    the ``nset`` basis convolutions with the ordinary conv kernel instead of materialising
    C·gc·k² kernel values per pixel.

    Args:
        u: features (B, C, H, W).
        att: basis coefficients (B, nset, H, W).
        weight: bases (nset, C·gc·k²); basis s reshaped to (C, gc, k, k) is a grouped conv weight.
        bias: bases (nset, C).
        kernel_size: k (odd).
        group_size: gc, channels per group.
        chunk: bases per pass (bounds the transient memory to chunk·C per pixel); None = all.

    Returns:
        (B, C, H, W).
    """
    b, c, h, w = u.shape
    nset = att.shape[1]
    k, gc = kernel_size, group_size
    g = c // gc
    # (nset, g, gc_out, gc_in, k, k) → group-major output channels (g, nset, gc_out) so that
    # one grouped conv with g groups evaluates every basis at once.
    wb = weight.view(nset, g, gc, gc, k, k).transpose(0, 1)
    out = torch.einsum("bshw,sc->bchw", att, bias)
    step = nset if chunk is None else max(1, chunk)
    for s0 in range(0, nset, step):
        s1 = min(nset, s0 + step)
        wk = wb[:, s0:s1].reshape(g * (s1 - s0) * gc, gc, k, k)
        y = F.conv2d(u, wk, padding=k // 2, groups=g).view(b, g, s1 - s0, gc, h, w)
        # Broadcast multiply + sum: about 5× faster on CPU than the equivalent einsum.
        a = att[:, s0:s1].view(b, 1, s1 - s0, 1, h, w)
        out = out + (y * a).sum(2).view(b, c, h, w)
    return out


KBA_CPU_BAND_BYTES = 4 * 2**20
"""Per-band budget of :func:`kba_unfolded`'s nset·C-per-pixel intermediate."""


def kba_unfolded(
    u: torch.Tensor,
    att: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    kernel_size: int,
    group_size: int,
) -> torch.Tensor:
    """:func:`kba` as im2col + one GEMM per group, in bands of rows: the CPU inference path.

    oneDNN runs the grouped conv of :func:`kba` (C/gc groups of gc → nset·gc channels) at a
    fraction of its GEMM speed. Here each band of rows is unfolded once (gc·k² values per
    group and pixel) and all bases of a group are one (nset·gc × gc·k²) GEMM on it; the band
    is sized so that the nset·C responses per pixel stay in cache while they are weighted by
    ``att`` and summed. Same arguments and result as :func:`kba` (up to float rounding).

    Returns:
        (B, C, H, W), NCHW-contiguous.
    """
    b, c, h, w = u.shape
    nset = att.shape[1]
    k, gc = kernel_size, group_size
    g, taps, pad = c // gc, kernel_size * kernel_size, kernel_size // 2
    # Basis s, group j: rows (s, o) of group j's GEMM; columns (i, ky, kx) = F.unfold's order.
    w_groups = weight.view(nset, g, gc, gc * taps).transpose(0, 1).reshape(g, nset * gc, gc * taps)
    u_pad = F.pad(u, (pad, pad, pad, pad))
    rows = max(1, KBA_CPU_BAND_BYTES // (b * c * nset * w * u.element_size()))
    out = u.new_empty(b, c, h, w)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n_pix = (r1 - r0) * w
        cols = F.unfold(u_pad[:, :, r0 : r1 + 2 * pad], k).view(b, g, gc * taps, n_pix)
        y = torch.matmul(w_groups, cols).view(b, g, nset, gc, n_pix)
        a = att[:, :, r0:r1].reshape(b, nset, n_pix)
        band = y.mul_(a.view(b, 1, nset, 1, n_pix)).sum(2).view(b, c, n_pix)
        # + Σ_s att_s · b_s (out of place: under autocast the two terms may differ in dtype)
        band = band + torch.bmm(bias.t().expand(b, c, nset), a)
        out[:, :, r0:r1] = band.view(b, c, r1 - r0, w)
    return out


class MFFBlock(nn.Module):
    """KBNet ``KBBlock_s`` (MMCANet "MFF"), (B, C, H, W) → (B, C, H, W).

    Branches after LayerNorm: channel attention (GAP → 1×1, no sigmoid), DW conv branch
    (1×1 → depth-wise 3×3, or 5×5 with C/4 groups for MMCANet_l), and KBA. They are fused by
    point-wise product, projected, and added with a learned per-channel scale; then a gated
    FFN (expansion 2) with its own scale.

    Args:
        channels: C, divisible by ``group_size`` and by min(C, 32).
        dw_kernel: 3 (depth-wise, groups C) or 5 (groups C/4, MMCANet_l).
        nset: number of kernel bases; kernel_size: KBA kernel; group_size: KBA group width.
    """

    def __init__(
        self, channels: int, dw_kernel: int = 3, nset: int = 32, kernel_size: int = 3,
        group_size: int = 4,
    ) -> None:
        super().__init__()
        c = channels
        if c % group_size or c % min(c, 32):
            raise ValueError(f"MFF block needs channels divisible by {group_size} and min(C, 32); got {c}")
        if dw_kernel not in (3, 5):
            raise ValueError(f"dw_kernel must be 3 or 5, got {dw_kernel}")
        self.nset, self.k, self.gc = nset, kernel_size, group_size
        self.kba_chunk = 8  # bases per pass when no gradient is needed (inference memory)
        # In training, keep only KBA's inputs and recompute the nset·C basis responses in
        # backward (KBNet does the same with a custom autograd function): about
        # half the activation memory of a block for ~15 % more time.
        self.recompute_kba = True

        self.w = nn.Parameter(torch.empty(nset, c * group_size * kernel_size**2))
        self.b = nn.Parameter(torch.empty(nset, c))
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        dw_groups = c if dw_kernel == 3 else c // 4
        self.conv11 = nn.Sequential(
            nn.Conv2d(c, c, 1), nn.Conv2d(c, c, dw_kernel, padding=dw_kernel // 2, groups=dw_groups)
        )
        self.conv1 = nn.Conv2d(c, c, 1)
        self.conv21 = nn.Conv2d(c, c, kernel_size, padding=kernel_size // 2, groups=c)
        m = min(c, 32)
        self.conv2 = nn.Sequential(
            nn.Conv2d(c, m, 3, padding=1, groups=m), SimpleGate(), nn.Conv2d(m // 2, nset, 1)
        )
        self.conv211 = nn.Conv2d(c, nset, 1)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.sg = SimpleGate()
        self.ga1 = nn.Parameter(torch.full((c,), 1e-2))
        self.attgamma = nn.Parameter(torch.full((nset,), 1e-2))
        self.beta = nn.Parameter(torch.full((c,), 1e-2))
        self.gamma = nn.Parameter(torch.full((c,), 1e-2))
        self.reset_bases()

    def reset_bases(self) -> None:
        """KBNet init: kaiming_uniform(a=√5) on a (1, nset, C·gc·k²) tensor, bias with its bound."""
        if self.w.is_meta:
            return
        fan_in = self.w.numel()  # PyTorch's fan-in of the (1, nset, C·gc·k²) shape
        bound = math.sqrt(6.0 / ((1 + 5.0) * fan_in))  # gain √(2/(1+a²)) with a = √5
        with torch.no_grad():
            self.w.uniform_(-bound, bound)
            self.b.uniform_(-bound, bound)

    @staticmethod
    def _scale(p: torch.Tensor) -> torch.Tensor:
        return p.view(1, -1, 1, 1)

    def coefficients(self, y: torch.Tensor) -> torch.Tensor:
        """Basis coefficients from the normalised input: (B, C, H, W) → (B, nset, H, W)."""
        return self.conv2(y) * self._scale(self.attgamma) + self.conv211(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        ca = self.sca(y)
        x1 = self.conv11(y)
        att = self.coefficients(y)
        u = self.conv21(self.conv1(y))
        if not torch.is_grad_enabled() and u.device.type == "cpu":
            k = kba_unfolded(u, att, self.w, self.b, self.k, self.gc)
        elif not torch.is_grad_enabled():
            k = kba(u, att, self.w, self.b, self.k, self.gc, self.kba_chunk)
        elif self.recompute_kba:
            k = checkpoint(kba, u, att, self.w, self.b, self.k, self.gc, None, use_reentrant=False)
        else:
            k = kba(u, att, self.w, self.b, self.k, self.gc)
        z = k * self._scale(self.ga1) + u
        x = x + self.conv3(z * x1 * ca) * self._scale(self.beta)
        return x + self.conv5(self.sg(self.conv4(self.norm2(x)))) * self._scale(self.gamma)
