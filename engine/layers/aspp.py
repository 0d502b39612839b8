"""Atrous spatial pyramid pooling (DeepLabv3), as used by MMCANet (docs/models/mmcanet.md, "ASPP").

Branches: three 3×3 atrous convs (rates 6/12/18, padding = rate) and image pooling
(GAP → 1×1 → broadcast), each to ``channels`` + ReLU; concatenated and projected by a 1×1
conv + ReLU. No BatchNorm or dropout by default: BN breaks at batch 1 and in tiled
inference (our choice). 768 → 256 channels: 5,768,448 parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class ASPP(nn.Module):
    """(B, C_in, h, w) → (B, channels, h, w).

    Args:
        in_channels, channels: input and branch/output widths.
        rates: dilations of the atrous branches.
        conv1x1_branch: add the standard DeepLabv3 1×1 branch (off: the paper lists four).
        group_norm: GroupNorm(32) after each conv except image pooling (off by default).
    """

    def __init__(
        self, in_channels: int, channels: int = 256, rates: tuple[int, ...] = (6, 12, 18),
        conv1x1_branch: bool = False, group_norm: bool = False,
    ) -> None:
        super().__init__()

        def act(n: int) -> list[nn.Module]:
            return ([nn.GroupNorm(32, n)] if group_norm else []) + [nn.ReLU()]

        branches: list[nn.Module] = []
        if conv1x1_branch:
            branches.append(nn.Sequential(nn.Conv2d(in_channels, channels, 1), *act(channels)))
        for r in rates:
            branches.append(
                nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=r, dilation=r), *act(channels))
            )
        self.branches = nn.ModuleList(branches)
        # No norm on the pooled 1×1 map: a group there would hold too few values to normalise.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU())
        n = len(branches) + 1
        self.project = nn.Sequential(nn.Conv2d(n * channels, channels, 1), *act(channels))

    @property
    def num_branches(self) -> int:
        return len(self.branches) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The image-pooling branch alone, broadcast to (B, channels, h, w) (spatially constant)."""
        return self.pool(x).expand(-1, -1, *x.shape[-2:])

