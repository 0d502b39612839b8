"""MPIR1-4: multi-stage progressive restoration built from MMCANet stages.

Paper: Zhou et al., IEEE TGRS 2025 (see :mod:`.mmcanet`), section on progressive
restoration. Described in docs/models/mmcanet.md, "MPIR1–4"; the topology is our choice (the paper's
Fig. 3 is not in the text and no code exists).

Common frame: S stages on an image pyramid, stage s at downscale 2^(S−s) of the
input (antialiased bilinear). Stage 1 sees the downscaled cloudy image and its base is that
image; stage s > 1 sees concat(downscaled cloudy, base) with base = ×2 bilinear upsampling of
the previous prediction; every stage predicts base + residual. Variants:

- MPIR1: 3 MMCANet stages; the previous stage's decoder features G (×2) are concatenated
  with the optical intro features and merged by a 1×1 conv.
- MPIR2: MPIR1 with stage 3 replaced by MPRNet's ORSNet at full resolution.
- MPIR3: 3 MMCANet stages with dense additive cross-stage skips on the decoder features.
- MPIR4: MPIR3 with 2 stages.

Parameters: 66,730,037 / 46,480,935 / 66,729,045 / 44,484,686 (docs/models/mmcanet.md, "Parameter counts").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.orsnet import CAB, ORB, conv3x3
from ._registry import register_model
from .mmcanet import MMCANet, check_pair, pad_to_multiple


def downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Antialiased bilinear downsampling by an integer factor: (B, C, H, W) → H/f, W/f."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    return F.interpolate(
        x, size=(h // factor, w // factor), mode="bilinear", antialias=True, align_corners=False
    )


def upscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling by an integer factor (align_corners False): (B, C, h, w) → h·f, w·f."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h * factor, w * factor), mode="bilinear", align_corners=False)


class ORSNetStage(nn.Module):
    """MPIR2's full-resolution last stage (docs/models/mmcanet.md, "MPIR2").

    Shallow features from concat(O, B, R) (3×3 conv + CAB), merged with the previous
    stage's features (3×3 conv 2C → W), three ORBs each followed by an injection of those
    features (1×1 conv C → W), and a 3×3 tail; the output is tail + base. No bias anywhere.
    """

    def __init__(
        self, optical_bands: int, sar_bands: int, width: int, extra: int = 32, orbs: int = 3, cabs: int = 8
    ) -> None:
        super().__init__()
        wide = width + extra
        self.shallow = nn.Sequential(conv3x3(2 * optical_bands + sar_bands, width), CAB(width))
        self.merge = conv3x3(2 * width, wide)
        self.orbs = nn.ModuleList(ORB(wide, cabs) for _ in range(orbs))
        self.inject = nn.ModuleList(nn.Conv2d(width, wide, 1, bias=False) for _ in range(orbs))
        self.tail = conv3x3(wide, optical_bands)

    def forward(
        self, optical: torch.Tensor, base: torch.Tensor, sar: torch.Tensor, previous: torch.Tensor
    ) -> torch.Tensor:
        """O, B (B, 3, H, W), R (B, 2, H, W), previous features (B, C, H, W) → Î (B, 3, H, W)."""
        x = self.shallow(torch.cat((optical, base, sar), dim=1))
        x = self.merge(torch.cat((x, previous), dim=1))
        for orb, inject in zip(self.orbs, self.inject, strict=True):
            x = orb(x) + inject(previous)
        return self.tail(x) + base


class MPIR(nn.Module):
    """Progressive restoration over ``stages`` scales.

    ``forward(optical, sar)`` → final prediction (B, 3, H, W), any H, W (reflect-padded to
    :attr:`size_multiple` and cropped). ``forward_stages`` → all stage predictions, coarse
    to fine, at H/2^(S−s); ``stage_targets(target)`` builds the matching target pyramid.

    Args:
        stages: S (3 for MPIR1-3, 2 for MPIR4).
        connection: ``concat`` (G of the previous stage merged at the intro, MPIR1/2) or
            ``skip`` (dense additive skips on G, MPIR3/4).
        orsnet: replace the last stage by :class:`ORSNetStage` (MPIR2; needs ``concat``).
        optical_bands, sar_bands, width, **mmcanet: passed to every :class:`MMCANet` stage.
    """

    def __init__(
        self,
        stages: int = 3,
        connection: str = "concat",
        orsnet: bool = False,
        optical_bands: int = 3,
        sar_bands: int = 2,
        width: int = 32,
        **mmcanet: Any,
    ) -> None:
        super().__init__()
        if connection not in ("concat", "skip"):
            raise ValueError(f"connection must be 'concat' or 'skip', got {connection!r}")
        if orsnet and connection != "concat":
            raise ValueError(
                "the ORSNet last stage (MPIR2) takes concatenated features: use connection='concat'"
            )
        if stages < 2:
            raise ValueError(f"MPIR needs at least 2 stages, got {stages}")
        self.n_stages, self.connection = stages, connection
        self.optical_bands, self.sar_bands = optical_bands, sar_bands
        self.size_multiple = MMCANet.size_multiple * 2 ** (stages - 1)
        common = dict(optical_bands=optical_bands, sar_bands=sar_bands, width=width, **mmcanet)
        nets: list[nn.Module] = [MMCANet(**common)]
        for s in range(2, stages + 1):
            if orsnet and s == stages:
                nets.append(ORSNetStage(optical_bands, sar_bands, width))
            else:
                nets.append(
                    MMCANet(optical_in=2 * optical_bands, feature_in=connection == "concat", **common)
                )
        self.stages = nn.ModuleList(nets)
        # K_{t→s}: 1×1 conv C → C with bias on the upsampled G̃_t; keys "t_s", 1-based.
        self.skips = nn.ModuleDict(
            {
                f"{t}_{s}": nn.Conv2d(width, width, 1)
                for s in range(2, stages + 1)
                for t in range(1, s)
                if connection == "skip"
            }
        )

    def factor(self, s: int) -> int:
        """Downscale factor of stage s (1-based): 2^(S − s)."""
        return 2 ** (self.n_stages - s)

    def _run(self, optical: torch.Tensor, sar: torch.Tensor) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        feats: list[torch.Tensor] = []  # G̃_s
        for s, net in enumerate(self.stages, start=1):
            f = self.factor(s)
            o, r = downscale(optical, f), downscale(sar, f)
            if s == 1:
                base, opt_in = o, o
            else:
                base = upscale(outs[-1], 2)
                opt_in = torch.cat((o, base), dim=1)
            if isinstance(net, ORSNetStage):
                outs.append(net(o, base, r, upscale(feats[-1], 2)))
                continue
            assert isinstance(net, MMCANet)
            previous = upscale(feats[-1], 2) if s > 1 and self.connection == "concat" else None
            g = net.features(opt_in, r, previous)
            if self.connection == "skip":
                for t in range(1, s):
                    g = g + self.skips[f"{t}_{s}"](upscale(feats[t - 1], 2 ** (s - t)))
            feats.append(g)
            outs.append(net.end(g) + base)
        return outs

    def forward_stages(self, optical: torch.Tensor, sar: torch.Tensor) -> list[torch.Tensor]:
        """All stage predictions Î_1..Î_S, (B, 3, H/2^(S−s), W/2^(S−s)); last = final.

        H and W must be multiples of :attr:`size_multiple` (training tiles, e.g. 128).
        """
        check_pair(optical, sar, self.optical_bands, self.sar_bands, "MPIR")
        h, w = optical.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"MPIR with {self.n_stages} stages needs H and W that are multiples of {m}, got {h}×{w}"
            )
        return self._run(optical, sar)

    def stage_targets(self, target: torch.Tensor) -> list[torch.Tensor]:
        """Target pyramid Y_1..Y_S matching :meth:`forward_stages` (same downsampling)."""
        return [downscale(target, self.factor(s)) for s in range(1, self.n_stages + 1)]

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        check_pair(optical, sar, self.optical_bands, self.sar_bands, "MPIR")
        h, w = optical.shape[-2:]
        m = self.size_multiple
        return self._run(pad_to_multiple(optical, m), pad_to_multiple(sar, m))[-1][..., :h, :w]


@register_model("mpir1")
def mpir1(**kwargs: Any) -> MPIR:
    """MPIR1: 3 MMCANet stages, features concatenated at the next stage's intro."""
    return MPIR(**{"stages": 3, "connection": "concat", **kwargs})


@register_model("mpir2")
def mpir2(**kwargs: Any) -> MPIR:
    """MPIR2: MPIR1 with an ORSNet third stage."""
    return MPIR(**{"stages": 3, "connection": "concat", "orsnet": True, **kwargs})


@register_model("mpir3")
def mpir3(**kwargs: Any) -> MPIR:
    """MPIR3: 3 MMCANet stages with dense additive cross-stage skips."""
    return MPIR(**{"stages": 3, "connection": "skip", **kwargs})


@register_model("mpir4")
def mpir4(**kwargs: Any) -> MPIR:
    """MPIR4: MPIR3 with 2 stages."""
    return MPIR(**{"stages": 2, "connection": "skip", **kwargs})
