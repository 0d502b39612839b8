"""Pixel and structural losses: L1, MSE, Gaussian SSIM and their MMCANet sum.

All take (B, C, H, W) tensors in the models' [0, 1] scale and return a 0-dim tensor that
autograd can differentiate. SSIM follows pytorch-ssim as used by the CAFR and MMCANet code
(docs/models/cafr.md and docs/models/mmcanet.md, "Loss"): 11×11 Gaussian, σ = 1.5, applied
per band (depthwise) with zero padding ('same' size), C1 = 0.01², C2 = 0.03², data range 1,
window centred on tap 5.
(The GLF-CR *metric* in ``..metrics`` uses its code's half-pixel-off centre 5.5 instead.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

C1 = 0.01**2
C2 = 0.03**2


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |pred − target| over batch, bands and pixels."""
    return (pred - target).abs().mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean (pred − target)² over batch, bands and pixels."""
    return ((pred - target) ** 2).mean()


def gaussian_window(
    size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32,
    device: torch.device | None = None, centre: float | None = None,
) -> torch.Tensor:
    """Normalised 2-D Gaussian (size, size), sums to 1; centred on tap ``size // 2`` unless
    ``centre`` is given (the GLF-CR metric uses size / 2, see ``..metrics``)."""
    c = size // 2 if centre is None else centre
    g = torch.tensor([math.exp(-((i - c) ** 2) / (2 * sigma**2)) for i in range(size)], dtype=torch.float64)
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim_map(
    pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5,
    eps: float = 0.0, centre: float | None = None,
) -> torch.Tensor:
    """Per-pixel, per-band SSIM, (B, C, H, W).

    SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2) + eps), with the
    local moments taken by a depthwise Gaussian filter with zero padding (borders included).
    ``eps`` = 1e-8 reproduces the CAFR repository; 0 is pytorch-ssim.
    ``centre``: the Gaussian's centre tap (see :func:`gaussian_window`).
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    c = pred.shape[1]
    w = gaussian_window(window, sigma, pred.dtype, pred.device, centre).expand(c, 1, window, window)
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, padding=pad, groups=c)

    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    num = (2 * mu_x * mu_y + C1) * (2 * cov + C2)
    den = (mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2) + eps
    return num / den


def ssim(
    pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5,
    eps: float = 0.0,
) -> torch.Tensor:
    """Mean of :func:`ssim_map` over batch, bands and pixels (1 for identical images)."""
    return ssim_map(pred, target, window, sigma, eps).mean()


def ssim_loss(
    pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5,
    eps: float = 0.0,
) -> torch.Tensor:
    """1 − :func:`ssim` (0 for identical images)."""
    return 1.0 - ssim(pred, target, window, sigma, eps)


def l1_ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MMCANet loss L_sum = L1 + (1 − SSIM), weights 1 and 1 (paper eq. 16).

    For the multi-stage MPIR models, sum this over the stage outputs (docs/models/mmcanet.md,
    "Common frame").
    """
    return l1_loss(pred, target) + ssim_loss(pred, target)
