"""Align-CR's cloud-weighted Charbonnier-type loss (paper Eq. 8; docs/models/align_cr.md, "Loss")."""

from __future__ import annotations

import torch


def cloud_weighted_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    cloudmask: torch.Tensor,
    weight: float = 5.0,
    eps: float = 1e-3,
    alpha: float = 0.45,
) -> torch.Tensor:
    """``L_b = mean_{c,h,w} (1 + weight·M_b) · ((ŷ − y)² + eps²)^alpha``, averaged over the batch.

    ``alpha`` applies to the *squared* error (so it grows like |d|^0.9), and cloudy pixels
    (M = 1) count ``1 + weight`` times. Known values: ŷ = y, M = 0 → 1e-6^0.45 = 0.0019953;
    M = 1 → 0.0119716; |ŷ − y| = 0.1, M = 0 → 0.125898.

    Args:
        pred, target: (B, C, H, W) in the model's [0, 1] scale.
        cloudmask: (B, H, W) or (B, 1, H, W), 1 = cloudy (UDM), broadcast over bands.

    Returns:
        Scalar loss.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (B, C, H, W)")
    b, _, h, w = pred.shape
    if cloudmask.ndim == 3:
        cloudmask = cloudmask.unsqueeze(1)
    if cloudmask.shape != (b, 1, h, w):
        raise ValueError(f"cloudmask must be (B, H, W) = {(b, h, w)}, got {tuple(cloudmask.shape)}")
    w_map = 1.0 + weight * cloudmask.to(pred.dtype)
    per_pixel = w_map * ((pred - target) ** 2 + eps**2) ** alpha
    # Mean per sample, then over the batch (equal sizes make this the global mean; kept
    # explicit to follow the paper's per-sample definition).
    return per_pixel.flatten(1).mean(dim=1).mean()
