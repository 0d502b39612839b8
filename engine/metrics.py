"""Image-quality metrics on [0, 1]-scaled tensors, defined as in glf_cr.md §6.

All functions take (C, H, W) or (B, C, H, W) tensors and return one float per image
averaged over the batch (the papers average per image, then over images).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.ndim == 3 else x


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error over bands and pixels."""
    return float((pred - target).abs().mean())


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR with peak 1, per image (MSE over all bands and pixels); 100 where MSE is 0."""
    p, t = _batch(pred).double(), _batch(target).double()
    mse = ((p - t) ** 2).flatten(1).mean(1)
    vals = [100.0 if m == 0 else 20 * math.log10(1.0 / math.sqrt(m)) for m in mse.tolist()]
    return sum(vals) / len(vals)


def gaussian_window(size: int = 11, sigma: float = 1.5, centre: float | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian (size, size). ``centre`` defaults to size / 2 (the official
    code's half-pixel-off centre, 5.5 for 11; spec §6 and R5)."""
    c = size / 2 if centre is None else centre
    g = torch.tensor([math.exp(-((i - c) ** 2) / (2 * sigma**2)) for i in range(size)], dtype=torch.float64)
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM: Gaussian window, depth-wise per band, zero padding ('same'), C1=0.01², C2=0.03²."""
    p, t = _batch(pred).double(), _batch(target).double()
    c = p.shape[1]
    w = gaussian_window(window, sigma).to(p.device).expand(c, 1, window, window).contiguous()
    pad = window // 2

    def conv(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, padding=pad, groups=c)

    mu_p, mu_t = conv(p), conv(t)
    var_p = conv(p * p) - mu_p**2
    var_t = conv(t * t) - mu_t**2
    cov = conv(p * t) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return float(s.flatten(1).mean(1).mean())


def sam(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Spectral angle in degrees, mean over pixels (ε = float16 eps on the squared norms)."""
    p, t = _batch(pred).float(), _batch(target).float()
    eps = torch.finfo(torch.float16).eps
    dot = (p * t).sum(1)
    den = torch.sqrt(torch.clamp((p * p).sum(1), min=eps) * torch.clamp((t * t).sum(1), min=eps))
    ang = torch.arccos(torch.clamp(dot / den, -1.0, 1.0)) * (180.0 / math.pi)
    return float(ang.flatten(1).mean(1).mean())
