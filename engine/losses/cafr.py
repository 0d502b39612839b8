"""CAFR cloud-aware loss: per-pixel weights from the cloud mask M′ (docs/models/cafr.md, "Loss").

Paper (default): W = α·M′ + (1 − α)·(1 − M′), α = 0.8, and
L = mean over (B, C, H, W) of W · (λ1·(pred − gt)² + λ2·(1 − SSIM_map)), λ1 = λ2 = 0.5.
Repository (``repo_loss=True``): L = 2.0·mean|pred·M − gt·M| + 0.5·pixel + 0.5·(1 − mean SSIM),
pixel = mean|pred − gt| (``pixel_loss="mae"``, default) or mean (pred − gt)² (``"mse"``).
The mask comes from :func:`..data.cloudmask.cafr_cloud_mask` on the raw cloudy DN.
"""

from __future__ import annotations

import torch

from .basic import l1_loss, mse_loss, ssim, ssim_map

ALPHA = 0.8  # paper eq. 17
LAMBDA_MSE = 0.5  # paper eq. 18, λ1
LAMBDA_SSIM = 0.5  # λ2
REPO_WEIGHTS = (2.0, 0.5, 0.5)  # masked L1, pixel, SSIM (the repository's defaults)
SSIM_EPS = 1e-8  # the repo adds this to the SSIM denominator


def _mask_like(mask: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) mask of any dtype → float (B, 1, H, W) in {0, 1}."""
    m = torch.as_tensor(mask, device=pred.device)
    if m.ndim == 3:
        m = m.unsqueeze(1)
    if m.ndim != 4 or m.shape[1] != 1 or m.shape[0] != pred.shape[0] or m.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"cloud mask must be (B, H, W) or (B, 1, H, W) matching prediction "
                         f"{tuple(pred.shape)}, got {tuple(m.shape)}")
    return (m != 0).to(pred.dtype)  # the repo binarises with != 0


def cloud_weights(mask: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """W = α·M′ + (1 − α)·(1 − M′) (paper eq. 17): (B, H, W) or (B, 1, H, W) → same shape."""
    m = (torch.as_tensor(mask) != 0).to(torch.get_default_dtype())
    return alpha * m + (1 - alpha) * (1 - m)


def cafr_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = ALPHA,
    lambda_mse: float = LAMBDA_MSE,
    lambda_ssim: float = LAMBDA_SSIM,
    weighted: bool = True,
    repo_loss: bool = False,
    pixel_loss: str = "mae",
    repo_weights: tuple[float, float, float] = REPO_WEIGHTS,
    ssim_eps: float = SSIM_EPS,
) -> torch.Tensor:
    """Cloud-aware loss of CAFR, a 0-dim tensor.

    Args:
        pred, target: (B, C, H, W) in [0, 1] scale (C = 13 for SEN12MS-CR).
        mask: cloud mask M′ of the cloudy input, (B, H, W) or (B, 1, H, W), nonzero = cloud;
            broadcast over bands.
        alpha: weight of cloud pixels (clear pixels get 1 − α); paper 0.8.
        lambda_mse, lambda_ssim: λ1, λ2 of the paper's per-pixel error (0.5 each).
        weighted: False gives the paper's "no weighting" ablation, W ≡ 1.
        repo_loss: use the official repository's objective instead of the paper's.
        pixel_loss: repo mode only: ``mae`` (repo default) or ``mse`` for the pixel term.
        repo_weights: repo mode only: weights of (masked L1, pixel term, 1 − SSIM).
        ssim_eps: added to the SSIM denominator; the repo's 1e-8 makes SSIM(x, x) slightly
            below 1 on flat, dark areas (0.9 where x ≡ 0), 0 gives the textbook SSIM.

    Returns:
        Scalar loss; 0 when ``pred`` equals ``target`` and ``ssim_eps`` is 0.
    """
    m = _mask_like(mask, pred)
    if repo_loss:
        if pixel_loss not in ("mae", "mse"):
            raise ValueError(f"pixel_loss must be 'mae' or 'mse', got {pixel_loss!r}")
        w_masked, w_pixel, w_ssim = repo_weights
        # averaged over *all* elements, so a cloud pixel's L1 weight is 2.0 + 0.5 vs 0.5 clear
        masked = l1_loss(pred * m, target * m)
        pixel = l1_loss(pred, target) if pixel_loss == "mae" else mse_loss(pred, target)
        return w_masked * masked + w_pixel * pixel + w_ssim * (1 - ssim(pred, target, eps=ssim_eps))
    err = lambda_mse * (pred - target) ** 2
    if lambda_ssim:
        err = err + lambda_ssim * (1 - ssim_map(pred, target, eps=ssim_eps))
    if not weighted:
        return err.mean()
    w = alpha * m + (1 - alpha) * (1 - m)
    return (w * err).mean()
