"""Image-quality metrics on [0, 1]-scaled tensors, defined as the official GLF-CR test code does
(docs/models/glf_cr.md, "Metrics").

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
    code's half-pixel-off centre, 5.5 for 11, kept for comparable scores)."""
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


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error per image (over bands and pixels), averaged over the batch."""
    p, t = _batch(pred).double(), _batch(target).double()
    return float(((p - t) ** 2).flatten(1).mean(1).sqrt().mean())


def image_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM, SAM (degrees), MAE and RMSE of one (C, H, W) image pair, as defined above.

    ``pred`` is taken as it is (the model's own output, not clipped or rounded); ``target`` is the
    reference in the loaders' [0, 1] scale.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"image_scores needs two (C, H, W) tensors of one shape, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "sam": sam(pred, target),
            "mae": mae(pred, target), "rmse": rmse(pred, target)}


def landcover_scores(
    pred: torch.Tensor, target: torch.Tensor, landcover: torch.Tensor, classes: int
) -> dict[int, tuple[float, float, int]]:
    """Per land-cover class c present in ``landcover`` (H, W): (MAE_c, SAM_c, pixel count N_c).

    MAE_c = Σ|pred − target| over the class's pixels and all bands / (N_c · bands); SAM_c = mean
    spectral angle (degrees, as :func:`sam`) over the class's pixels — the official Planet-CR
    test's definitions. Classes 0 … ``classes`` − 1; other values are ignored.
    """
    p, t = pred.double(), target.double()
    err = (p - t).abs().sum(0)  # (H, W), summed over bands
    eps = torch.finfo(torch.float16).eps
    dot = (p.float() * t.float()).sum(0)
    den = torch.sqrt(torch.clamp((p.float() ** 2).sum(0), min=eps) * torch.clamp((t.float() ** 2).sum(0), min=eps))
    ang = torch.arccos(torch.clamp(dot / den, -1.0, 1.0)).double() * (180.0 / math.pi)
    out: dict[int, tuple[float, float, int]] = {}
    for c in range(classes):
        m = landcover == c
        n = int(m.sum())
        if n:
            out[c] = (float(err[m].sum()) / (n * pred.shape[0]), float(ang[m].mean()), n)
    return out
