"""Modulated deformable convolution (DCNv2) and EDVR's PCD alignment, on torchvision ops.

Align-CR (spec align_cr.md §2.1) aligns SAR features to optical ones with the PCD module of
EDVR as packaged by BasicSR (``PCDAlignment``, ``DCNv2Pack``; Apache-2.0, read for names and
shapes only). Parameter names match BasicSR so official Align-CR weights load 1:1. The
deformable sampling itself is ``torchvision.ops.deform_conv2d`` (CPU and CUDA, no compiled
extension of ours).
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
    ``out = 0.5·conv(x, weight) + bias`` (spec §8.3).

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
        """Main weight U(±1/√(C_in·k²)), bias 0; offset/mask conv all zero (spec §2.1)."""
        fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Guide (B, C_in, H, W) → offsets (B, 2·G·k², H, W) in pixels, mask (B, G·k², H, W) in (0, 1)."""
        o1, o2, m = torch.chunk(self.conv_offset(guide), 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(m)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` (B, C_in, H, W) where ``guide`` says: (B, C_out, H, W).

        Computed in the weight's dtype: under autocast the inputs may arrive in float16/bfloat16,
        and torchvision's CPU kernel has no autocast rule (and no bfloat16 kernel).
        """
        offset, mask = self.offsets_and_mask(guide)
        dt = self.weight.dtype
        return deform_conv2d(
            x.to(dt), offset.to(dt), self.weight, self.bias, padding=self.padding, mask=mask.to(dt)
        )


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class PCDAlignment(nn.Module):
    """Pyramid, cascading and deformable alignment (EDVR; spec align_cr.md §2.1).

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
        up_offset = up_feat = None
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
