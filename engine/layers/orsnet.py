"""MPRNet's original-resolution blocks: channel attention (CA), CAB, ORB.

Paper: Zamir et al., "Multi-Stage Progressive Image Restoration" (CVPR 2021); official code
github.com/swz30/MPRNet (no licence: read for layer shapes only, nothing copied). Used by
MPIR2's third stage (docs/models/mmcanet.md, "MPIR2"). All convs without bias, kernel 3, reduction 4.
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    """3×3 conv, 'same' padding, no bias (MPRNet default)."""
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ChannelAttention(nn.Module):
    """x · sigmoid(1×1(ReLU(1×1(GAP(x))))), widths C → C/r → C; (B, C, H, W) → same."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class CAB(nn.Module):
    """Channel-attention block: conv → PReLU (one slope, 0.25) → conv → CA, plus the input."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.PReLU(), conv3x3(channels, channels))
        self.ca = ChannelAttention(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.body(x)) + x


class ORB(nn.Module):
    """Original-resolution block: ``cabs`` CABs → 3×3 conv, plus a residual over the whole."""

    def __init__(self, channels: int, cabs: int = 8, reduction: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(CAB(channels, reduction) for _ in range(cabs)), conv3x3(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x
