"""CA-MTCR: change-aware multi-temporal SAR-optical cloud removal.

Paper: You, Xu, Pan, Dong, Yang, Xia, "Change-aware multi-temporal cloud removal",
Sci China Inf Sci 69(3):132306, 2026. Described in docs/models/ca_mtcr.md (sections named below).
No official code exists; the paper fixes only the block layout
(L = 9 Transformer blocks with region-selection heads, a 3 conv + 2 MBConv SAR encoder, the
fusion and change-aware temporal attention). Widths, resolutions and the decoder are our
configuration ("Architecture"), calibrated to the paper's 7.45 M parameters / 456.57 GFLOPs.
MBConv and L-TAE follow UnCRtainTS / utae-paps as described there (re-written, nothing
copied).

Data flow (section "Data flow"), target = last step N:
    F_opt^t = OptEnc(opt_t), F_sar^t = SarEnc(sar_t), F_f^t = MMF([F_opt^t, F_sar^t])
    c_t = cos_ch(F_sar^t, F_sar^N) (c_N = 1), W = L-TAE(MaxPool8(Conv1x1([c_t, F_f^t])))
    out = sigmoid(Decoder(Σ_t W_t · F_f^t))

Parameters: 7,431,287 (w/o RegS 7,430,117; w/o SAR 6,889,015; "Parameter counts").
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._registry import register_model

GROUPS = 4  # GroupNorm groups everywhere in the conv pipeline (as UnCRtainTS's ConvLayer)


# --------------------------------------------------------------------------- shared blocks


class ConvGN(nn.Sequential):
    """3×3 conv (reflect padding, bias) → GroupNorm(4) → ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"),
            nn.GroupNorm(GROUPS, cout),
            nn.ReLU(),
        )


class SqueezeExcite(nn.Module):
    """Channel gate: avg-pool → Linear(C→h) → GELU → Linear(h→C) → sigmoid → scale."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → same shape, each channel scaled by its gate in (0, 1)."""
        g = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3))))))
        return x * g[:, :, None, None]


class MBConv(nn.Module):
    """Residual inverted bottleneck, expansion 2, GroupNorm (85,760 params at 128).

    out = x + Body(GN(x)); Body = 1×1 expand, GN, GELU, depthwise 3×3 (reflect), GN, GELU,
    SE (hidden = channels / 4), 1×1 project, GN. No bias in the convs (each is followed by GN).
    """

    def __init__(self, channels: int = 128, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.pre_norm = nn.GroupNorm(GROUPS, channels)
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.GroupNorm(GROUPS, hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, padding_mode="reflect", groups=hidden, bias=False),
            nn.GroupNorm(GROUPS, hidden),
            nn.GELU(),
            SqueezeExcite(hidden, channels // 4),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.GroupNorm(GROUPS, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W)."""
        return x + self.body(self.pre_norm(x))


# --------------------------------------------------------------------------- optical encoder


class TBlock(nn.Module):
    """Post-norm Transformer block with global multi-head self-attention (626,772 params).

    u = LN1(x + Proj(MHSA(x))); y = LN2(u + MLP(u)). Post-norm on purpose: the region mask R
    scales whole tokens, and a pre-norm LayerNorm would divide that scale out again.
    """

    use_sdpa = True
    """Fused attention (less memory, faster). Set False for explicit matmuls, e.g. to count
    FLOPs with fvcore ("Cost and counting convention"); both give the same result up to rounding."""

    def __init__(self, dim: int = 228, heads: int = 6, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D) tokens → (N, L, D) attention output before the projection."""
        n, length, d = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
            y = attn.softmax(dim=-1) @ v
        return y.transpose(1, 2).reshape(n, length, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D) → (N, L, D)."""
        u = self.norm1(x + self.proj(self.attention(x)))
        return self.norm2(u + self.fc2(self.act(self.fc1(u))))


class RegionHead(nn.Module):
    """Region-selection head after each TBlock (130 params) → soft mask R in (0, 1).

    R1 = CBAM spatial attention of the block output; R2 = 1 − cos(block input, output) per
    token (0 where the block changed nothing); CBAM channel attention over [R1; R2]; 3×3 conv;
    sigmoid.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.cam = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1))
        self.out = nn.Conv2d(2, 1, 3, padding=1)

    @staticmethod
    def change(f_in: torch.Tensor, f_out: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """R2 = 1 − cosine similarity over channels: (N, L, D) ×2 → (N, 1, h, w) in [0, 2]."""
        r2 = 1.0 - F.cosine_similarity(f_in, f_out, dim=-1, eps=1e-8)
        return r2.reshape(-1, 1, h, w)

    def forward(self, f_in: torch.Tensor, f_out: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Block input and output tokens (N, h·w, D), row-major → mask R (N, 1, h, w) in (0, 1)."""
        pooled = torch.stack([f_out.mean(dim=-1), f_out.amax(dim=-1)], dim=1).reshape(-1, 2, h, w)
        r1 = torch.sigmoid(self.spatial(pooled))
        x = torch.cat([r1, self.change(f_in, f_out, h, w)], dim=1)
        a = torch.sigmoid(self.cam(x.mean(dim=(2, 3), keepdim=True)) + self.cam(x.amax(dim=(2, 3), keepdim=True)))
        return torch.sigmoid(self.out(x * a))


def position_code(h: int, w: int, dim: int = 228, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sin/cos code: (h·w, dim), row-major; [sin cω, cos cω, sin rω, cos rω].

    ω_k = 10000^(−k/(dim/4)), k = 0 … dim/4 − 1. No parameters, so any grid size works.
    """
    q = dim // 4
    omega = 10000.0 ** (-torch.arange(q, dtype=torch.float64, device=device) / q)
    r, c = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
        indexing="ij",
    )
    r, c = r.reshape(-1, 1) * omega, c.reshape(-1, 1) * omega
    return torch.cat([c.sin(), c.cos(), r.sin(), r.cos()], dim=1).float()


class OpticalEncoder(nn.Module):
    """Region-selective optical encoder (6,158,762 params with heads).

    (N, 13, H, W) → patch 4 embedding (228 dims) + position code → 9 × [TBlock, region head,
    F ← F̃ ⊙ R] → Linear 228→2048 per token → PixelShuffle(4) → (N, 128, H, W).
    ``region_selection=False`` is the paper's "w/o RegS" (F ← F̃, no heads).
    """

    def __init__(
        self, in_channels: int = 13, dim: int = 228, depth: int = 9, heads: int = 6,
        patch: int = 4, width: int = 128, region_selection: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.patch = dim, patch
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.blocks = nn.ModuleList(TBlock(dim, heads) for _ in range(depth))
        self.heads = nn.ModuleList(RegionHead() for _ in range(depth)) if region_selection else None
        self.unembed = nn.Linear(dim, width * patch * patch)

    def forward(
        self, x: torch.Tensor, return_masks: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(N, C, H, W) in [0, 1] → F_opt (N, 128, H, W); with ``return_masks`` also the 9 masks
        R, each (N, 1, H/4, W/4) in (0, 1) (empty list without region selection)."""
        f = self.patch_embed(x)
        n, d, h, w = f.shape
        f = f.flatten(2).transpose(1, 2) + position_code(h, w, d, f.device).to(f.dtype)
        masks = []
        for j, block in enumerate(self.blocks):
            g = block(f)
            if self.heads is not None:
                r = self.heads[j](f, g, h, w)
                masks.append(r)
                g = g * r.flatten(2).transpose(1, 2)  # (N, L, 1): one scalar per token
            f = g
        f = self.unembed(f).transpose(1, 2).reshape(n, -1, h, w)
        f = F.pixel_shuffle(f, self.patch)
        return (f, masks) if return_masks else f


# --------------------------------------------------------------------------- SAR encoder, fusion


class SAREncoder(nn.Sequential):
    """3 ConvGN + 2 MBConv at full resolution (394,816 params): (N, 2, H, W) → (N, 128, H, W).

    The same class is the VQ-VAE encoder (models/sar_vqvae.py), so its pretrained state dict
    loads with identical keys.
    """

    def __init__(self, in_channels: int = 2, width: int = 128) -> None:
        super().__init__(
            ConvGN(in_channels, width // 2),
            ConvGN(width // 2, width),
            ConvGN(width, width),
            MBConv(width),
            MBConv(width),
        )


class Fusion(nn.Module):
    """Multi-modal fusion (380,800 params): concat → 3×3 conv (reflect, no norm) → MBConv."""

    def __init__(self, in_channels: int = 256, width: int = 128) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, padding_mode="reflect")
        self.mbconv = MBConv(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) → (N, 128, H, W)."""
        return self.mbconv(self.conv(x))


# --------------------------------------------------------------------------- temporal attention


def days_code(days: torch.Tensor, dims: int = 16, period: float = 1000.0, repeat: int = 16) -> torch.Tensor:
    """Sinusoidal code of acquisition days: (B, T) → (B, T, dims·repeat).

    Denominator period^(2⌊i/2⌋/dims); sin at even i, cos at odd i; the block is tiled ``repeat``×.
    """
    i = torch.arange(dims, device=days.device, dtype=torch.float64)
    denom = period ** (2 * torch.div(i, 2, rounding_mode="floor") / dims)
    a = days.to(torch.float64)[..., None] / denom
    code = torch.where(i.remainder(2) == 0, a.sin(), a.cos())
    return code.repeat(1, 1, repeat).to(torch.float32)


class LTAE(nn.Module):
    """Lightweight temporal attention, weights only (49,792 params).

    Per pixel sequence (T, 128): GroupNorm(16) over channels × time → 1×1 Conv1d 128→256 →
    + days code → keys Linear 256→64 (16 heads × 4); a learned query per head;
    softmax over t of q·k/√4. Returns the head-averaged weights.
    """

    def __init__(
        self, in_channels: int = 128, n_head: int = 16, d_k: int = 4, d_model: int = 256, period: float = 1000.0
    ) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_model, self.period = n_head, d_k, d_model, period
        self.in_norm = nn.GroupNorm(n_head, in_channels)
        self.inconv = nn.Conv1d(in_channels, d_model, 1)
        self.query = nn.Parameter(torch.empty(n_head, d_k))
        self.key = nn.Linear(d_model, n_head * d_k)
        # Initialisation as in L-TAE: N(0, sqrt(2 / d_k)).
        nn.init.normal_(self.query, mean=0.0, std=math.sqrt(2.0 / d_k))
        nn.init.normal_(self.key.weight, mean=0.0, std=math.sqrt(2.0 / d_k))

    def forward(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        """x (B, T, C, h, w), days (B, T) → weights (B, T, h, w), ≥ 0, summing to 1 over T."""
        b, t, c, h, w = x.shape
        seq = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, c, t)  # one sequence per pixel
        seq = self.inconv(self.in_norm(seq)).transpose(1, 2)  # (BHW, T, d_model)
        code = days_code(days, self.d_model // self.n_head, self.period, self.n_head)  # (B, T, d_model)
        seq = seq + code.repeat_interleave(h * w, dim=0)
        k = self.key(seq).reshape(b * h * w, t, self.n_head, self.d_k)
        logits = torch.einsum("nthk,hk->nht", k, self.query) / math.sqrt(self.d_k)
        attn = logits.softmax(dim=-1).mean(dim=1)  # mean over heads: (BHW, T)
        return attn.reshape(b, h, w, t).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- model


class CAMTCR(nn.Module):
    """CA-MTCR: time series of S2 (13 bands) + S1 (VV, VH) → cloud-free S2 of the last step.

    Config flags give the paper's ablations: ``region_selection=False`` ("w/o RegS"),
    ``change_aware=False`` ("w/o CA": c ≡ 1, same parameters), ``use_sar=False`` ("w/o SAR");
    docs/models/ca_mtcr.md, "Parameter counts", gives their sizes. H and W must be multiples
    of 8 (patch 4, pool 8).
    """

    def __init__(
        self, in_channels: int = 13, out_channels: int = 13, sar_channels: int = 2, width: int = 128,
        dim: int = 228, depth: int = 9, heads: int = 6, patch: int = 4, pool: int = 8,
        region_selection: bool = True, change_aware: bool = True, use_sar: bool = True,
        decoder_blocks: int = 5,
    ) -> None:
        super().__init__()
        self.in_channels, self.sar_channels = in_channels, sar_channels
        self.pool, self.patch = pool, patch
        self.change_aware, self.use_sar = change_aware, use_sar
        self.opt_encoder = OpticalEncoder(in_channels, dim, depth, heads, patch, width, region_selection)
        self.sar_encoder = SAREncoder(sar_channels, width) if use_sar else None
        self.fusion = Fusion(2 * width if use_sar else width, width)
        self.caf_conv = nn.Conv2d(width + 1, width, 1)
        self.ltae = LTAE(width)
        self.decoder = nn.Sequential(*(MBConv(width) for _ in range(decoder_blocks)))
        self.out_conv = nn.Conv2d(width, out_channels, 1)
        # The conv stages (SAR encoder, fusion, decoder: GroupNorm, depth-wise 3×3, 1×1) run
        # on channels-last features: oneDNN's depth-wise conv was 2.8× and the SAR encoder
        # 1.8× faster so on the CPU (issue 11); the values are unchanged.
        self.channels_last = True

    @property
    def size_multiple(self) -> int:
        return math.lcm(self.patch, self.pool)

    def _check(self, optical: torch.Tensor, sar: torch.Tensor, days: torch.Tensor | None) -> None:
        if optical.ndim != 5 or optical.shape[2] != self.in_channels:
            raise InputError(
                f"CA-MTCR: optical must be (B, T, {self.in_channels}, H, W), got {tuple(optical.shape)}"
            )
        b, t, _, h, w = optical.shape
        if tuple(sar.shape) != (b, t, self.sar_channels, h, w):
            raise InputError(
                f"CA-MTCR: sar must be (B, T, {self.sar_channels}, H, W) = "
                f"({b}, {t}, {self.sar_channels}, {h}, {w}), got {tuple(sar.shape)}"
            )
        m = self.size_multiple
        if h % m or w % m:
            raise InputError(f"CA-MTCR: H and W must be multiples of {m} (patch 4, pool 8), got {h}×{w}")
        if days is not None and tuple(days.shape) != (b, t):
            raise InputError(f"CA-MTCR: days must be (B, T) = ({b}, {t}), got {tuple(days.shape)}")

    def _features(
        self, optical: torch.Tensor, sar: torch.Tensor, sar_valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-step fused features F_f (B, T, 128, H, W) and SAR features (B, T, 128, H, W) or None."""
        b, t, _, h, w = optical.shape
        f_opt = self.opt_encoder(self._layout(optical.reshape(b * t, -1, h, w)))  # B·T folded into the batch
        if self.sar_encoder is None:
            return self.fusion(f_opt).reshape(b, t, -1, h, w), None
        if sar_valid is not None:  # a step without S1 is fed as zeros
            sar = sar * sar_valid.to(sar)[:, :, None, None, None]
        f_sar = self.sar_encoder(self._layout(sar.reshape(b * t, -1, h, w)))
        f_f = self.fusion(torch.cat([f_opt, f_sar], dim=1))
        return f_f.reshape(b, t, -1, h, w), f_sar.reshape(b, t, -1, h, w)

    def _change(
        self, f_sar: torch.Tensor | None, like: torch.Tensor, sar_valid: torch.Tensor | None
    ) -> torch.Tensor:
        """Change maps c (B, T, 1, H, W) from SAR features (B, T, 128, H, W); ones at the target
        step, and everywhere without SAR or change awareness. ``like``: (B, T, ·, H, W)."""
        b, t, _, h, w = like.shape
        if f_sar is None or not self.change_aware or t == 1:
            return like.new_ones(b, t, 1, h, w)
        ref = f_sar[:, -1:].expand_as(f_sar[:, :-1])
        c = F.cosine_similarity(f_sar[:, :-1], ref, dim=2, eps=1e-8).unsqueeze(2)
        c = torch.cat([c, torch.ones_like(c[:, :1])], dim=1)
        if sar_valid is not None:  # no SAR at t or at N: "no information", c = 1 (our choice)
            ok = (sar_valid & sar_valid[:, -1:]).to(c.device)
            c = torch.where(ok[:, :, None, None, None], c, torch.ones_like(c))
        return c

    def weights_and_changes(
        self, optical: torch.Tensor, sar: torch.Tensor, days: torch.Tensor | None = None,
        sar_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Intermediate maps, for tests and inspection.

        Returns:
            change maps c (B, T, 1, H, W) in [−1, 1] (1 at the target step), temporal weights
            W (B, T, H, W) ≥ 0 summing to 1 over T, and fused features F_f (B, T, 128, H, W).
        """
        self._check(optical, sar, days)
        f_f, f_sar = self._features(optical, sar, sar_valid)
        c = self._change(f_sar, f_f, sar_valid)
        b, t, ch, h, w = f_f.shape
        g = self.caf_conv(torch.cat([c, f_f], dim=2).reshape(b * t, ch + 1, h, w))
        g = F.max_pool2d(g, self.pool).reshape(b, t, ch, h // self.pool, w // self.pool)
        if days is None:
            days = torch.zeros(b, t, device=f_f.device)
        wts = self.ltae(g, days.to(f_f.device))
        wts = F.interpolate(wts, size=(h, w), mode="bilinear", align_corners=False)
        return c, wts, f_f

    @torch.no_grad()
    def change_maps(
        self, optical: torch.Tensor, sar: torch.Tensor, sar_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Change maps only: (B, T, 1, H, W), cosine similarity of SAR features to the target's."""
        self._check(optical, sar, None)
        b, t, _, h, w = sar.shape
        if self.sar_encoder is None:
            return sar.new_ones(b, t, 1, h, w)
        if sar_valid is not None:
            sar = sar * sar_valid.to(sar)[:, :, None, None, None]
        f_sar = self.sar_encoder(self._layout(sar.reshape(b * t, -1, h, w))).reshape(b, t, -1, h, w)
        return self._change(f_sar, f_sar, sar_valid)

    def forward(
        self, optical: torch.Tensor, sar: torch.Tensor, days: torch.Tensor | None = None,
        sar_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruct the last step.

        Args:
            optical: (B, T, 13, H, W) S2 L1C in [0, 1] (DN / 10000), T ≥ 1, target last.
            sar: (B, T, 2, H, W) S1 VV, VH in [0, 1] ((dB + 25) / 25).
            days: (B, T) acquisition day minus the target's (≤ 0 for history); None = zeros.
            sar_valid: (B, T) bool, False where a step has no S1 (optional).

        Returns:
            (B, 13, H, W) in (0, 1).
        """
        _, wts, f_f = self.weights_and_changes(optical, sar, days, sar_valid)
        fused = (wts.unsqueeze(2) * f_f).sum(dim=1)  # weights broadcast over channels
        # Callers get NCHW-contiguous output whatever the internal layout (a small copy).
        return torch.sigmoid(self.out_conv(self.decoder(self._layout(fused)))).contiguous()

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in channels-last memory when :attr:`channels_last` (values unchanged)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def param_groups(model: CAMTCR, lr: float = 1e-4, sar_encoder_lr: float = 1e-5) -> list[dict[str, Any]]:
    """The two Adam groups of the paper: everything at ``lr``, the (pretrained) SAR encoder fine-tuned
    at ``sar_encoder_lr``. Picked up by the training loop (module-level, as for Align-CR)."""
    sar = list(model.sar_encoder.parameters()) if model.sar_encoder is not None else []
    ids = {id(p) for p in sar}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}] + ([{"params": sar, "lr": sar_encoder_lr}] if sar else [])


def lr_factor(epoch: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch`` (our reading: milestones 10, 15, 20, 25,
    γ = 0.5): 1 for epochs 0-9, 0.5 for 10-14, 0.25 for 15-19, 0.125 for 20-24, 0.0625 after."""
    return 0.5 ** sum(epoch >= m for m in (10, 15, 20, 25))


@register_model("ca_mtcr")
def ca_mtcr(**kwargs: object) -> CAMTCR:
    """CA-MTCR with our configuration; kwargs override (ablation flags)."""
    return CAMTCR(**kwargs)  # type: ignore[arg-type]
