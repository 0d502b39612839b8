"""MMCANet: multimodal cross-attention network for SAR-aided cloud removal (RGB).

Paper: Zhou et al., "MMCANet: A Multimodal and Cross-Attention Network for Cloud Removal
and Exploration of Progressive Remote Sensing Images Restoration Algorithm", IEEE TGRS 2025,
DOI 10.1109/TGRS.2025.3556560. Described in docs/models/mmcanet.md (sections named below).
No official code exists; sizes not in the paper are our choices (docs/models/mmcanet.md,
"Implementation choices"). Blocks: KBNet ``KBBlock_s`` (:mod:`..layers.kbnet`), DeepLabv3
ASPP (:mod:`..layers.aspp`).

Structure (docs/models/mmcanet.md, "Data flow"): two MFF encoders with independent weights
(optical, SAR), widths C, 2C, 4C, 8C with [2, 2, 4, 8] blocks; cross attention at the low (2C, stride 2) and high
(8C, stride 8) level; ASPP on the fused high level; DeepLabv3+-style low-high fusion; a
two-level MFF decoder; the output is the optical input plus a learned residual.

Parameters: 22,241,383 (``mmcanet``, C = 32), 22,759,719 (``mmcanet_l``: 5×5
grouped conv in every DW branch), 74,540,743 for C = 64 (docs/models/mmcanet.md,
"Parameter counts").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers.aspp import ASPP
from ..layers.kbnet import MFFBlock
from ._registry import register_model


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad H and W at the bottom/right up to multiples of ``multiple`` (then crop back)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="reflect")


def check_pair(
    optical: torch.Tensor, sar: torch.Tensor, optical_bands: int, sar_bands: int, name: str
) -> None:
    """Raise ValueError if the band counts or B/H/W of the two inputs do not fit the model."""
    if optical.ndim != 4 or sar.ndim != 4:
        raise ValueError(
            f"{name} expects (B, C, H, W) inputs, got {tuple(optical.shape)} and {tuple(sar.shape)}"
        )
    if optical.shape[1] != optical_bands or sar.shape[1] != sar_bands:
        raise ValueError(
            f"{name} built for {optical_bands} optical + {sar_bands} SAR bands, "
            f"got {optical.shape[1]} + {sar.shape[1]}"
        )
    if sar.shape[0] != optical.shape[0] or sar.shape[-2:] != optical.shape[-2:]:
        raise ValueError(f"optical {tuple(optical.shape)} and SAR {tuple(sar.shape)} differ in B/H/W")


def run_blocks(blocks: nn.Module, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    """Apply the MFF blocks of a ``nn.Sequential`` in order; recompute each in backward when
    ``use_checkpoint`` (training memory)."""
    assert isinstance(blocks, nn.Sequential)
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if use_checkpoint and torch.is_grad_enabled() else block(x)
    return x


class CrossAttention(nn.Module):
    """Multimodal cross attention, channel ("transposed") reading.

    Our reading of the paper, explained in docs/models/mmcanet.md, "Cross attention".

    Per modality, Q, K, V are 1×1 convs; rows of Q and K are L2-normalised along the N = H·W
    pixels and P_m = softmax_row(τ_m · Q̂ K̂ᵀ) is C×C, so memory and cost are linear in H·W
    and no parameter depends on the tile size. P_fuse = P_opt ⊙ P_sar (not renormalised);
    AP_joint = (P_fuse V_opt) ⊙ (P_fuse V_sar). 2·(3C² + 3C) + 2 parameters.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.q_sar = nn.Conv2d(channels, channels, 1)
        self.k_sar = nn.Conv2d(channels, channels, 1)
        self.v_sar = nn.Conv2d(channels, channels, 1)
        self.tau = nn.Parameter(torch.ones(1))
        self.tau_sar = nn.Parameter(torch.ones(1))

    @staticmethod
    def _map(q: torch.Tensor, k: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        q = F.normalize(q.flatten(2), dim=-1)
        k = F.normalize(k.flatten(2), dim=-1)
        return (tau * (q @ k.transpose(-2, -1))).softmax(dim=-1)

    def attention_maps(self, x_opt: torch.Tensor, x_sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P_opt, P_sar: (B, C, C) each, rows summing to 1, whatever H and W are."""
        return (
            self._map(self.q(x_opt), self.k(x_opt), self.tau),
            self._map(self.q_sar(x_sar), self.k_sar(x_sar), self.tau_sar),
        )

    def forward(self, x_opt: torch.Tensor, x_sar: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) ×2 → AP_joint (B, C, H, W)."""
        p_opt, p_sar = self.attention_maps(x_opt, x_sar)
        p = p_opt * p_sar
        ap_opt = p @ self.v(x_opt).flatten(2)
        ap_sar = p @ self.v_sar(x_sar).flatten(2)
        return (ap_opt * ap_sar).view_as(x_opt)


class MFFEncoder(nn.Module):
    """One stream: 3×3 intro conv, then MFF stages at widths C·2^i, 2×2 stride-2 convs between.

    ``forward`` returns (e1, e2, e4): full resolution C, stride 2 (F^low, 2C) and stride 8
    (F^high, 8C); the stride-4 output only feeds the next stage.
    """

    def __init__(self, in_channels: int, width: int, blocks: Sequence[int], dw_kernel: int) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"MMCANet encoders have 4 stages, got blocks={list(blocks)}")
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        widths = [width * 2**i for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Sequential(*(MFFBlock(c, dw_kernel) for _ in range(n))) for c, n in zip(widths, blocks, strict=True)
        )
        self.downs = nn.ModuleList(nn.Conv2d(c, 2 * c, 2, stride=2) for c in widths[:3])
        self.grad_checkpoint = False

    def body(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Intro features (B, C, H, W) → (e1, e2, e4)."""
        ck = self.grad_checkpoint and self.training
        e1 = run_blocks(self.stages[0], h, ck)
        e2 = run_blocks(self.stages[1], self.downs[0](e1), ck)
        e3 = run_blocks(self.stages[2], self.downs[1](e2), ck)
        e4 = run_blocks(self.stages[3], self.downs[2](e3), ck)
        return e1, e2, e4


class MMCANet(nn.Module):
    """MMCANet.

    ``forward(optical, sar)``: optical (B, 3, H, W) in [0, 1] (B4, B3, B2 / 10000), SAR
    (B, 2, H, W) in [0, 1] (VV, VH). Returns (B, 3, H, W): optical plus a learned residual,
    not clamped. Any H, W: inputs are reflect-padded to multiples of 8 and cropped back.

    The pieces MPIR chains (mpir.py) are public: :meth:`features` (→ G, the decoder output
    before the terminal conv) and :attr:`end` (G → residual image).

    Args:
        optical_bands, sar_bands: input bands; the output has ``optical_bands`` bands.
        width: C. enc_blocks: MFF blocks per encoder stage. dec_blocks: MFF blocks at stride
            2 and at full resolution in the decoder.
        dw_kernel, dw_kernel_sar: DW-branch kernel of the optical / SAR stream (3, or 5 for
            MMCANet_l); the decoder uses ``dw_kernel``. None = same as optical.
        aspp_channels, aspp_rates, aspp_1x1_branch, aspp_group_norm: ASPP;
            width None = 8C.
        cross_attention, aspp: False gives the paper's Table V ablations (AP dropped from the concats;
            ASPP replaced by a 1×1 conv).
        sar_stream: False gives the "no SAR" ablation: one stream on
            concat(optical, SAR), no cross attention; the inputs stay the same.
        optical_in: channels of the optical-stream input (MPIR stages > 1 take 2× bands).
        feature_in: add the 1×1 conv 2C → C that merges previous-stage features after the
            intro conv (MPIR1/2).
        grad_checkpoint: recompute whole MFF blocks in backward (training memory).
            Independently, every block recomputes its KBA basis responses in
            backward (:attr:`MFFBlock.recompute_kba`, on by default).
    """

    size_multiple = 8  # three stride-2 downsamplings

    def __init__(
        self,
        optical_bands: int = 3,
        sar_bands: int = 2,
        width: int = 32,
        enc_blocks: Sequence[int] = (2, 2, 4, 8),
        dec_blocks: Sequence[int] = (2, 2),
        dw_kernel: int = 3,
        dw_kernel_sar: int | None = None,
        aspp_channels: int | None = None,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_1x1_branch: bool = False,
        aspp_group_norm: bool = False,
        cross_attention: bool = True,
        aspp: bool = True,
        sar_stream: bool = True,
        optical_in: int | None = None,
        feature_in: bool = False,
        grad_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        c = width
        self.optical_bands, self.sar_bands, self.width = optical_bands, sar_bands, width
        self.optical_in = optical_in or optical_bands
        self.grad_checkpoint = grad_checkpoint
        opt_in = self.optical_in + (0 if sar_stream else sar_bands)
        self.encoder = MFFEncoder(opt_in, c, enc_blocks, dw_kernel)
        self.encoder.grad_checkpoint = grad_checkpoint
        self.encoder_sar = (
            MFFEncoder(sar_bands, c, enc_blocks, dw_kernel_sar or dw_kernel) if sar_stream else None
        )
        if self.encoder_sar is not None:
            self.encoder_sar.grad_checkpoint = grad_checkpoint
        cross_attention = cross_attention and sar_stream
        self.feature_merge = nn.Conv2d(2 * c, c, 1) if feature_in else None

        self.xa_low = CrossAttention(2 * c) if cross_attention else None
        self.xa_high = CrossAttention(8 * c) if cross_attention else None
        aspp_channels = aspp_channels or 8 * c  # 256 at C = 32; 8C reproduces the C = 64 count
        n_cat = (3 if cross_attention else 2) if sar_stream else 1
        high = n_cat * 8 * c
        self.aspp: nn.Module = (
            ASPP(high, aspp_channels, tuple(aspp_rates), aspp_1x1_branch, aspp_group_norm)
            if aspp
            else nn.Conv2d(high, aspp_channels, 1)
        )
        self.fuse = nn.Conv2d(aspp_channels + n_cat * 2 * c, 2 * c, 1)
        self.decoder2 = nn.Sequential(*(MFFBlock(2 * c, dw_kernel) for _ in range(dec_blocks[0])))
        self.up2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 1, bias=False), nn.PixelShuffle(2))
        self.skip = nn.Conv2d((2 if sar_stream else 1) * c, c, 1)
        self.decoder1 = nn.Sequential(*(MFFBlock(c, dw_kernel) for _ in range(dec_blocks[1])))
        self.end = nn.Conv2d(c, optical_bands, 3, padding=1)

    def _fused(
        self, a_opt: torch.Tensor, a_sar: torch.Tensor | None, xa: CrossAttention | None
    ) -> torch.Tensor:
        if a_sar is None:
            return a_opt
        parts = [a_sar, a_opt]  # paper eq. 9-10 order
        if xa is not None:
            parts.append(xa(a_opt, a_sar))
        return torch.cat(parts, dim=1)

    def features(
        self, optical_in: torch.Tensor, sar: torch.Tensor, previous: torch.Tensor | None = None
    ) -> torch.Tensor:
        """G, the decoder features before the terminal conv ("D1" in the data flow).

        Args:
            optical_in: (B, optical_in, H, W); H, W multiples of 8.
            sar: (B, sar_bands, H, W).
            previous: (B, C, H, W) features merged after the optical intro conv; required
                exactly when the model was built with ``feature_in``.

        Returns:
            (B, C, H, W).
        """
        if (previous is None) != (self.feature_merge is None):
            raise ValueError("previous-stage features must be given iff the model has feature_in")
        if self.encoder_sar is None:  # "no SAR" ablation: one stream on the concatenation
            optical_in = torch.cat((optical_in, sar), dim=1)
        h = self.encoder.intro(optical_in)
        if self.feature_merge is not None:
            assert previous is not None  # checked above
            h = self.feature_merge(torch.cat((h, previous), dim=1))
        e1, e2, e4 = self.encoder.body(h)
        s1 = s2 = s4 = None
        if self.encoder_sar is not None:
            s1, s2, s4 = self.encoder_sar.body(self.encoder_sar.intro(sar))
        low = self._fused(e2, s2, self.xa_low)
        high = self.aspp(self._fused(e4, s4, self.xa_high))
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        ck = self.grad_checkpoint and self.training
        d = run_blocks(self.decoder2, self.fuse(torch.cat((high, low), dim=1)), ck)
        d = self.up2(d) + self.skip(e1 if s1 is None else torch.cat((e1, s1), dim=1))
        return run_blocks(self.decoder1, d, ck)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        check_pair(optical, sar, self.optical_bands, self.sar_bands, "MMCANet")
        if self.optical_in != self.optical_bands or self.feature_merge is not None:
            raise ValueError("this MMCANet is an MPIR stage; run it through its MPIR model")
        h, w = optical.shape[-2:]
        opt = pad_to_multiple(optical, self.size_multiple)
        g = self.features(opt, pad_to_multiple(sar, self.size_multiple))
        return (self.end(g) + opt)[..., :h, :w]

    def forward_stages(self, optical: torch.Tensor, sar: torch.Tensor) -> list[torch.Tensor]:
        """[forward(optical, sar)]: one stage, so training code can treat all models alike."""
        return [self(optical, sar)]

    def stage_targets(self, target: torch.Tensor) -> list[torch.Tensor]:
        """Targets matching :meth:`forward_stages`: [target]."""
        return [target]


@register_model("mmcanet")
def mmcanet(**kwargs: object) -> MMCANet:
    """MMCANet, C = 32, depth-wise 3×3 DW branch; kwargs override."""
    return MMCANet(**kwargs)  # type: ignore[arg-type]


@register_model("mmcanet_l")
def mmcanet_l(**kwargs: object) -> MMCANet:
    """MMCANet_l: 5×5 conv with C/4 groups in every DW branch."""
    return MMCANet(**{"dw_kernel": 5, **kwargs})  # type: ignore[arg-type]
