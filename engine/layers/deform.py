"""Modulated deformable convolution (DCNv2) and EDVR's PCD alignment, on torchvision ops.

Align-CR (docs/models/align_cr.md, "Alignment block") aligns SAR features to optical ones with the PCD module of
EDVR as packaged by BasicSR (``PCDAlignment``, ``DCNv2Pack``; Apache-2.0, read for names and
shapes only). Parameter names match BasicSR so official Align-CR weights load 1:1. The
deformable sampling itself is ``torchvision.ops.deform_conv2d`` (CPU and CUDA, no compiled
extension of ours), or on the CPU in inference the same sampling through ``grid_sample``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

LEAKY_SLOPE = 0.1  # EDVR's lrelu


class DCNv2Pack(nn.Module):
    """Modulated deformable conv whose offsets and mask come from a conv on a guide tensor.

    ``conv_offset`` maps the guide (B, C_in, H, W) to 3·G·k² channels, split as BasicSR does:
    chunk into (o1, o2, m) of G·k² each; offsets = cat(o1, o2) (2·G·k² channels, in
    torchvision's per-group (dy, dx) interleaved reading), mask = sigmoid(m). ``conv_offset``
    starts at zero, so a fresh pack samples the regular grid with mask 0.5:
    ``out = 0.5·conv(x, weight) + bias`` (a test checks it).

    Parameters: ``weight`` (C_out, C_in, k, k), ``bias`` (C_out), ``conv_offset.{weight,bias}``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
        deformable_groups: int = 8,
    ) -> None:
        super().__init__()
        self.padding = padding
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.conv_offset = nn.Conv2d(
            in_channels, deformable_groups * 3 * kernel_size * kernel_size, kernel_size,
            padding=padding,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Main weight U(±1/√(C_in·k²)), bias 0; offset/mask conv all zero (BasicSR's init)."""
        fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        if self.conv_offset.bias is not None:
            nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Guide (B, C_in, H, W) → offsets (B, 2·G·k², H, W) in pixels, mask (B, G·k², H, W) in (0, 1)."""
        o1, o2, m = torch.chunk(self.conv_offset(guide), 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(m)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` (B, C_in, H, W) where ``guide`` says: (B, C_out, H, W).

        Computed in the weight's dtype: under autocast the inputs may arrive in float16/bfloat16,
        and torchvision's CPU kernel has no autocast rule (and no bfloat16 kernel). CPU
        inference uses :func:`sampled_deform_conv2d` (same result, ≈ 3× faster); training
        and other devices keep torchvision's op and its backward.
        """
        offset, mask = self.offsets_and_mask(guide)
        dt = self.weight.dtype
        x, offset, mask = x.to(dt), offset.to(dt), mask.to(dt)
        if x.device.type == "cpu" and not torch.is_grad_enabled() and min(x.shape[-2:]) > 1:
            return sampled_deform_conv2d(x, offset, mask, self.weight, self.bias, self.padding)
        return deform_conv2d(x, offset, self.weight, self.bias, padding=self.padding, mask=mask)


DEFORM_CPU_BAND_BYTES = 4 * 2**20
"""Per-band budget of :func:`sampled_deform_conv2d`'s sampled columns (C·k² per pixel)."""


def sampled_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: int,
) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` (stride 1, dilation 1, modulated) via ``grid_sample``.

    The CPU inference path: torchvision's CPU kernel samples the k² taps one value at a time
    in a serial loop (≈ 40 ms of an Align-CR 64×64 DCN); ``grid_sample`` does the same
    bilinear reads vectorised, about 3× faster. Tap t of deformable group g reads channel
    group g at (y − p + t // k + dy, x − p + t % k + dx); bilinear with zeros outside, which
    is ``grid_sample(..., padding_mode="zeros", align_corners=True)`` on pixel coordinates
    normalised by (size − 1). The sampled columns are built in bands of output rows
    (:data:`DEFORM_CPU_BAND_BYTES`) and multiplied by the weight as one GEMM per band.
    Equal to torchvision up to float rounding of the sampling coordinates.

    Args:
        x: input (B, C, H, W), H and W ≥ 2.
        offset: (B, 2·G·k², H, W), per group and tap (dy, dx) (torchvision's layout).
        mask: (B, G·k², H, W) modulation.
        weight: (C_out, C, k, k); bias: (C_out,) or None.
        padding: p (the output keeps H × W, so p = k // 2).

    Returns:
        (B, C_out, H, W).
    """
    b, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    groups = mask.shape[1] // taps
    per_group = c // groups
    off = offset.view(b, groups, taps, 2, h, w)
    tap = torch.arange(taps, device=x.device)
    tap_y = (tap // kw - padding).to(x.dtype).view(1, 1, taps, 1, 1)
    tap_x = (tap % kw - padding).to(x.dtype).view(1, 1, taps, 1, 1)
    cols_x = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, 1, w)
    scale_y, scale_x = 2.0 / (h - 1), 2.0 / (w - 1)
    w_mat = weight.reshape(c_out, c * taps)  # columns (channel, tap): the order built below
    x_groups = x.reshape(b * groups, per_group, h, w)
    rows = max(1, DEFORM_CPU_BAND_BYTES // (b * c * taps * w * x.element_size()))
    out = x.new_empty(b, c_out, h, w)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        rows_y = torch.arange(r0, r1, device=x.device, dtype=x.dtype).view(1, 1, 1, n, 1)
        grid_y = (rows_y + tap_y + off[:, :, :, 0, r0:r1]) * scale_y - 1
        grid_x = (cols_x + tap_x + off[:, :, :, 1, r0:r1]) * scale_x - 1
        grid = torch.stack((grid_x, grid_y), dim=-1).view(b * groups, taps * n, w, 2)
        cols = F.grid_sample(x_groups, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        cols = cols.view(b, groups, per_group, taps, n * w) * mask[:, :, r0:r1].reshape(b, groups, 1, taps, n * w)
        band = torch.matmul(w_mat, cols.view(b, c * taps, n * w))
        if bias is not None:
            band += bias.view(1, c_out, 1)
        out[:, :, r0:r1] = band.view(b, c_out, n, w)
    return out


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class PCDAlignment(nn.Module):
    """Pyramid, cascading and deformable alignment (EDVR, as packaged by BasicSR).

    Aligns neighbour features to reference features over three pyramid levels (L1 full,
    L2 half, L3 quarter resolution), coarse to fine, then refines once more at L1 ("cascade").
    Module names (``offset_conv1.l3`` ..., ``cas_dcnpack``) follow BasicSR.
    """

    def __init__(self, num_feat: int = 64, deformable_groups: int = 8) -> None:
        super().__init__()
        c = num_feat
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        for i in (3, 2, 1):
            level = f"l{i}"
            self.offset_conv1[level] = nn.Conv2d(2 * c, c, 3, padding=1)
            # Below the top level the conv also sees the upsampled coarser offset features.
            self.offset_conv2[level] = nn.Conv2d(c if i == 3 else 2 * c, c, 3, padding=1)
            if i < 3:
                self.offset_conv3[level] = nn.Conv2d(c, c, 3, padding=1)
                self.feat_conv[level] = nn.Conv2d(2 * c, c, 3, padding=1)
            self.dcn_pack[level] = DCNv2Pack(c, c, 3, padding=1, deformable_groups=deformable_groups)
        self.cas_offset_conv1 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.cas_offset_conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.cas_dcnpack = DCNv2Pack(c, c, 3, padding=1, deformable_groups=deformable_groups)

    def forward(self, nbr: list[torch.Tensor], ref: list[torch.Tensor]) -> torch.Tensor:
        """Align.

        Args:
            nbr: neighbour (to be aligned) features [L1, L2, L3]: (B, C, h, w), (B, C, h/2, w/2),
                (B, C, h/4, w/4).
            ref: reference features, same shapes.

        Returns:
            Aligned neighbour features, (B, C, h, w).
        """
        act = lambda t: F.leaky_relu(t, LEAKY_SLOPE)  # noqa: E731
        # Level 3 has no coarser level; the zero-size placeholders are never read.
        up_offset = up_feat = nbr[0].new_empty(0)
        feat = nbr[0]
        for i in (3, 2, 1):
            level = f"l{i}"
            offset = act(self.offset_conv1[level](torch.cat((nbr[i - 1], ref[i - 1]), dim=1)))
            if i == 3:
                offset = act(self.offset_conv2[level](offset))
            else:
                offset = act(self.offset_conv2[level](torch.cat((offset, up_offset), dim=1)))
                offset = act(self.offset_conv3[level](offset))
            feat = self.dcn_pack[level](nbr[i - 1], offset)
            if i < 3:
                feat = self.feat_conv[level](torch.cat((feat, up_feat), dim=1))
            if i > 1:
                feat = act(feat)
                # BasicSR doubles the upsampled "offset" features as if they were pixel
                # offsets (they are features); kept for weight compatibility.
                up_offset = _up2(offset) * 2
                up_feat = _up2(feat)
        offset = act(self.cas_offset_conv1(torch.cat((feat, ref[0]), dim=1)))
        offset = act(self.cas_offset_conv2(offset))
        return act(self.cas_dcnpack(feat, offset))
