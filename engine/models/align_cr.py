"""Align-CR: low-resolution SAR guiding high-resolution (PlanetScope) cloud removal.

Paper: Xu, Shi, Ebel, Yang, Zhu, "Multimodal and Multiresolution Data Fusion for
High-Resolution Cloud Removal: A Novel Baseline and Benchmark", IEEE TGRS 62 (2024)
(arXiv: "High-Resolution Cloud Removal with Multi-Modal and Multi-Resolution Data Fusion").
Described in docs/models/align_cr.md (sections named below). Official code:
github.com/zhu-xlab/M3R-CR, folder ``Align-CR`` (no licence: read for layer names and shapes
only, nothing copied); its PCD alignment is BasicSR's (see ``layers/deform.py``).

GLF-CR's two-stream design with three changes: WDSR-B feature extractors, an alignment block
(feature pyramid + PCD deformable alignment) that warps the SAR features onto the optical ones
before every fusion block, and one pre-norm dual Swin layer per block instead of one per dense
layer. Parameter names follow the official ``RDN_residual_CR`` so its checkpoints would load
after :func:`remap_official_state_dict` (no official weights exist yet). Shifted-window
masks are built per forward for the actual size, so any H, W that are multiples of 16 work.

Parameters: 45,528,532 (per part: docs/models/align_cr.md, "Parameter counts").
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.common import Mlp
from ..layers.deform import PCDAlignment
from ..layers.windows import cached_shift_mask, from_windows, to_windows
from ._registry import register_model
from .glf_cr import DFG, DualWindowAttention, as_channels_last, remap_official_state_dict, slfc_fuse


class WNConv2d(nn.Module):
    """Weight-normalised conv: ``weight = weight_g · weight_v / ‖weight_v‖`` per output channel.

    Same parameters and names as ``torch.nn.utils.weight_norm(nn.Conv2d(...), dim=0)``
    (``weight_g`` (out, 1, 1, 1), ``weight_v`` (out, in, k, k), ``bias``), without the
    deprecated hook. At init ``weight`` equals a default ``nn.Conv2d`` init (g = ‖v‖).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.weight_g = nn.Parameter(torch.empty(out_channels, 1, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Conv2d's default
        fan_in = self.weight_v[0].numel()
        nn.init.uniform_(self.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))
        with torch.no_grad():
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2, 3), keepdim=True))

    def effective_weight(self) -> torch.Tensor:
        """The effective conv weight (out, in, k, k); fold it into a plain conv for export."""
        norm = torch.linalg.vector_norm(self.weight_v, dim=(1, 2, 3), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)


class WDSRBlock(nn.Module):
    """WDSR-B residual block: WN 1×1 nf→6nf, ReLU, WN 1×1 →0.8nf, WN 3×3 →nf, + x."""

    def __init__(self, nf: int = 96, expand: int = 6, linear: float = 0.8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            WNConv2d(nf, nf * expand, 1),
            nn.ReLU(),
            WNConv2d(nf * expand, int(nf * linear), 1),
            WNConv2d(int(nf * linear), nf, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nf, h, w) → (B, nf, h, w)."""
        return self.body(x) + x


class AlignFeature(nn.Module):
    """Alignment block: two feature pyramids + FPN, then PCD alignment of src to ref.

    Separate pyramid weights for ``src`` (SAR) and ``ref`` (optical); names as the official
    ``Align_Feature``. docs/models/align_cr.md, "Alignment block".
    """

    def __init__(self, channels: int = 96, deformable_groups: int = 8) -> None:
        super().__init__()
        c = channels
        for s in ("src", "ref"):
            setattr(self, f"{s}_L2_conv1", nn.Conv2d(c, 2 * c, 3, stride=2, padding=1))
            setattr(self, f"{s}_L3_conv1", nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1))
            setattr(self, f"{s}_toplayer", nn.Conv2d(4 * c, c, 1))
            setattr(self, f"{s}_smooth1", nn.Conv2d(c, c, 3, padding=1))
            setattr(self, f"{s}_smooth2", nn.Conv2d(c, c, 3, padding=1))
            setattr(self, f"{s}_latlayer1", nn.Conv2d(2 * c, c, 1))
            setattr(self, f"{s}_latlayer2", nn.Conv2d(c, c, 1))
        self.pcd_align = PCDAlignment(num_feat=c, deformable_groups=deformable_groups)

    def pyramid(self, stream: str, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, h, w) → FPN levels [P1 (h), P2 (h/2), P3 (h/4)], C channels each."""
        conv = lambda name: getattr(self, f"{stream}_{name}")  # noqa: E731
        l2 = F.relu(conv("L2_conv1")(x))
        l3 = F.relu(conv("L3_conv1")(l2))
        p3 = F.relu(conv("toplayer")(l3))
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        p2 = conv("smooth1")(up(p3) + conv("latlayer1")(l2))
        p1 = conv("smooth2")(up(p2) + conv("latlayer2")(x))
        return [p1, p2, p3]

    def forward(self, src: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Warp ``src`` (B, C, h, w) onto ``ref`` (B, C, h, w); h, w multiples of 4."""
        return self.pcd_align(self.pyramid("src", src), self.pyramid("ref", ref))


class DualSTL(nn.Module):
    """Pre-norm dual Swin layer: SAR-guided window attention + MLP, per stream.

    Names as the official ``SwinTransformerBlock`` (``norm1``, ``norm1_SAR``, ``attn``,
    ``norm2``, ``norm2_SAR``, ``mlp``, ``mlp_SAR``); drop-path is 0 so there is none.
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.norm1_SAR = nn.LayerNorm(dim)
        self.attn = DualWindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.norm2_SAR = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.mlp_SAR = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, x_sar: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) ×2 → same. ``mask`` (nW, M², M²) for a shifted layer, None = no shift.

        Everything after the window cut is per token, so the layer runs in window order and
        the tokens return to raster order once (one gather each way, shift included).
        """
        h, w = x.shape[-2:]
        shift = self.shift if mask is not None else 0
        t = to_windows(x, self.window, shift)  # (B·nW, M², C)
        t_sar = to_windows(x_sar, self.window, shift)
        y, y_sar = self.attn(self.norm1(t), self.norm1_SAR(t_sar), mask if shift else None)
        t = t + y
        t = t + self.mlp(self.norm2(t))
        t_sar = t_sar + y_sar
        t_sar = t_sar + self.mlp_SAR(self.norm2_SAR(t_sar))
        return from_windows(t, self.window, h, w, shift), from_windows(t_sar, self.window, h, w, shift)


class DenseLayer(nn.Module):
    """One dense layer per stream: 3×3 conv + ReLU, output appended to the input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, 3, padding=1), nn.ReLU())
        self.conv_SAR = nn.Sequential(nn.Conv2d(in_channels, growth, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor, x_sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Cin, h, w) ×2 → (B, Cin + G, h, w) ×2."""
        return torch.cat((x, self.conv(x)), dim=1), torch.cat((x_sar, self.conv_SAR(x_sar)), dim=1)


class RDB(nn.Module):
    """Adapted SGCI block: dense convs → LFF → one dual STL → + block input.

    docs/models/align_cr.md, "Adapted SGCI block".
    """

    def __init__(
        self, channels: int, growth: int, layers: int, heads: int, window: int, shift: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(DenseLayer(channels + c * growth, growth) for c in range(layers))
        self.LFF = nn.Conv2d(channels + layers * growth, channels, 3, padding=1)
        self.LFF_SAR = nn.Conv2d(channels + layers * growth, channels, 3, padding=1)
        self.SwinTransformerBlock = DualSTL(channels, heads, window, shift, mlp_ratio)

    @property
    def shift(self) -> int:
        return self.SwinTransformerBlock.shift

    def forward(
        self, x: torch.Tensor, x_sar: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) ×2 → same; ``mask`` as in :class:`DualSTL`."""
        d, d_sar = x, x_sar
        for layer in self.convs:
            d, d_sar = layer(d, d_sar)
        o, o_sar = self.SwinTransformerBlock(self.LFF(d), self.LFF_SAR(d_sar), mask)
        return o + x, o_sar + x_sar


class AlignCR(nn.Module):
    """Align-CR network.

    ``forward(optical, sar)``: optical (B, 4, H, W) PlanetScope TOA reflectance / 10000 in
    [0, 1], bands Blue, Green, Red, NIR; SAR (B, 2, H, W) VV, VH in [0, 1], already
    nearest-resampled onto the optical grid. Returns (B, 4, H, W) in the optical
    scaling, not clamped: the input plus a learned residual. H and W must be
    multiples of :attr:`size_multiple` (16).
    """

    def __init__(
        self,
        optical_bands: int = 4,
        sar_bands: int = 2,
        channels: int = 96,
        growth: int = 48,
        blocks: int = 6,
        layers: int = 5,
        heads: int = 8,
        window: int = 8,
        mlp_ratio: float = 4.0,
        deformable_groups: int = 8,
        wdsr_blocks: int = 5,
        filter_size: int = 5,
    ) -> None:
        super().__init__()
        self.optical_bands = optical_bands
        self.sar_bands = sar_bands
        self.window = window
        self.filter_size = filter_size
        # pixel-unshuffle ×2, then M×M windows; the two stride-2 pyramid levels need h/4 too
        self.size_multiple = math.lcm(2 * window, 8)
        # Channels-last features (values unchanged), as in GLF-CR: window tokens without copies.
        self.channels_last = True

        self.SFE_conv = nn.Conv2d(optical_bands * 4, channels, 3, padding=1)
        self.SFE_module = nn.Sequential(*(WDSRBlock(channels) for _ in range(wdsr_blocks)))
        self.SFE_conv_SAR = nn.Conv2d(sar_bands * 4, channels, 3, padding=1)
        self.SFE_module_SAR = nn.Sequential(*(WDSRBlock(channels) for _ in range(wdsr_blocks)))

        self.RDBs = nn.ModuleList(
            RDB(channels, growth, layers, heads, window,
                shift=0 if i % 2 == 0 else window // 2, mlp_ratio=mlp_ratio)
            for i in range(blocks)
        )
        self.SFAlign = nn.ModuleList(AlignFeature(channels, deformable_groups) for _ in range(blocks))
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

    def attention_masks(
        self, h: int, w: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> list[torch.Tensor | None]:
        """Per block, the shifted-window mask for an H×W input ((nW, M², M²)) or None (no shift).

        Blocks 1, 3, 5 shift by M/2; as in the official code a feature map no larger than one
        window is not shifted. Built at run time, never stored.
        """
        hs, ws = h // 2, w // 2
        shared: torch.Tensor | None = None
        masks: list[torch.Tensor | None] = []
        for block in self.RDBs:
            if block.shift and min(hs, ws) > self.window:
                if shared is None:
                    shared = cached_shift_mask(hs, ws, self.window, block.shift, torch.device(device or "cpu"), dtype)
                masks.append(shared)
            else:
                masks.append(None)
        return masks

    def fuse(self, i: int, opt: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SLFC block i: GLF-CR's, with the same attribute names."""
        return slfc_fuse(self, i, opt, sar)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        b, c, h, w = optical.shape
        if c != self.optical_bands or sar.shape[1] != self.sar_bands:
            raise ValueError(
                f"Align-CR built for {self.optical_bands} optical + {self.sar_bands} SAR bands, "
                f"got {c} + {sar.shape[1]}"
            )
        if sar.shape[0] != b or sar.shape[-2:] != optical.shape[-2:]:
            raise ValueError(
                f"optical {tuple(optical.shape)} and SAR {tuple(sar.shape)} differ in B/H/W "
                "(resample the SAR onto the optical grid first)"
            )
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"Align-CR needs H and W that are multiples of {m}, got {h}×{w}")
        masks = self.attention_masks(h, w, optical.device, optical.dtype)

        # The official ReLU is in place, so the global skip adds ReLU(first conv).
        skip = F.relu(self.SFE_conv(as_channels_last(F.pixel_unshuffle(optical, 2), self.channels_last)))
        x = self.SFE_module(skip)
        sar_in = as_channels_last(F.pixel_unshuffle(sar, 2), self.channels_last)
        x_sar = self.SFE_module_SAR(F.relu(self.SFE_conv_SAR(sar_in)))
        outs = []
        for i, block in enumerate(self.RDBs):
            x_sar = self.SFAlign[i](x_sar, x)
            x, x_sar = block(x, x_sar, masks[i])
            x, x_sar = self.fuse(i, x, x_sar)
            outs.append(x)
        x = self.GFF(torch.cat(outs, dim=1)) + skip
        # Callers get NCHW-contiguous output whatever the internal layout (a small copy).
        return (self.UPNet(x) + optical).contiguous()


def param_groups(model: AlignCR, lr: float = 1e-4, align_lr: float = 1e-5) -> list[dict[str, Any]]:
    """The two Adam parameter groups of the official code: everything but the Align blocks at ``lr``,
    the 6 Align blocks (pyramids, FPN, PCD: 29,168,064 parameters) at ``align_lr``."""
    align = list(model.SFAlign.parameters())
    ids = {id(p) for p in align}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}, {"params": align, "lr": align_lr}]


def lr_factor(epoch: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch`` (official code): 1 for epochs 0-9, then halved
    every 5 epochs (0.5 for 10-14, 0.25 for 15-19, ...); applies to both groups."""
    return 0.5 ** max(0, (epoch - 5) // 5)


@register_model("align_cr", official_remap=remap_official_state_dict)
def align_cr(**kwargs: Any) -> AlignCR:
    """Align-CR with the official hyperparameters; kwargs override."""
    return AlignCR(**kwargs)
