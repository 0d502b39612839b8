"""Image-quality metrics on [0, 1]-scaled tensors, defined as in glf_cr.md §6.

All functions take (C, H, W) or (B, C, H, W) tensors and return one float per image
averaged over the batch (the papers average per image, then over images).
"""

from __future__ import annotations

import math

import torch

from .losses.basic import gaussian_window as _gaussian
from .losses.basic import ssim_map


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
    """Normalised 2-D Gaussian (size, size), float64. ``centre`` defaults to size / 2 (the official
    code's half-pixel-off centre, 5.5 for 11; spec §6 and R5)."""
    return _gaussian(size, sigma, torch.float64, centre=size / 2 if centre is None else centre)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM: Gaussian window (centre size / 2), depth-wise per band, zero padding ('same'),
    C1=0.01², C2=0.03², in float64; the map is the losses' :func:`ssim_map`."""
    s = ssim_map(_batch(pred).double(), _batch(target).double(), window, sigma, centre=window / 2)
    return float(s.flatten(1).mean(1).mean())


def sam(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Spectral angle in degrees, mean over pixels (ε = float16 eps on the squared norms)."""
    p, t = _batch(pred).float(), _batch(target).float()
    eps = torch.finfo(torch.float16).eps
    dot = (p * t).sum(1)
    den = torch.sqrt(torch.clamp((p * p).sum(1), min=eps) * torch.clamp((t * t).sum(1), min=eps))
    ang = torch.arccos(torch.clamp(dot / den, -1.0, 1.0)) * (180.0 / math.pi)
    return float(ang.flatten(1).mean(1).mean())
