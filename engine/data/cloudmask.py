"""Rule-based Sentinel-2 cloud score (DSen2-CR / SEN12MS-CR detector, glf_cr.md §5).

Used to find cloud-free pixels (training targets, cloud-cover statistics); not a model input.
Written with torch pooling ops so it runs on whole tiles on CPU or GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .bands import S2_BANDS

_I = {b: i for i, b in enumerate(S2_BANDS)}


def _rescale(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return (x - lo) / (hi - lo)


def cloud_score(s2: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Cloud score in [1e-5, 1] per pixel.

    Args:
        s2: (13, H, W) or (B, 13, H, W) reflectance in [0, 1] (DN / 10000), SEN12MS-CR band order.

    Returns:
        (H, W) or (B, H, W) float32 score; ≥ 0.2 means cloud.
    """
    x = torch.as_tensor(s2, dtype=torch.float32)
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    b = {k: x[:, i] for k, i in _I.items()}
    score = torch.ones_like(b["B1"])
    score = torch.minimum(score, _rescale(b["B2"], 0.1, 0.5))
    score = torch.minimum(score, _rescale(b["B1"], 0.1, 0.3))
    score = torch.minimum(score, _rescale(b["B1"] + b["B10"], 0.15, 0.2))
    score = torch.minimum(score, _rescale(b["B4"] + b["B3"] + b["B2"], 0.2, 0.8))
    den = b["B3"] + b["B11"]
    ndsi = (b["B3"] - b["B11"]) / torch.where(den == 0, torch.full_like(den, 0.001), den)
    score = torch.minimum(score, _rescale(ndsi, 0.8, 0.6))
    s = score.unsqueeze(1)
    # grey closing 5×5 = dilation then erosion (max-pools with edge replication)
    s = F.max_pool2d(F.pad(s, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    s = -F.max_pool2d(F.pad(-s, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    s = F.avg_pool2d(s, 7, stride=1, padding=3, count_include_pad=True)  # zero-padded 'same'
    out = s.squeeze(1).clamp(1e-5, 1.0)
    return out[0] if squeeze else out


def cloud_mask(s2: np.ndarray | torch.Tensor, threshold: float = 0.2) -> np.ndarray:
    """Boolean cloud mask (True = cloud) from :func:`cloud_score`."""
    return (cloud_score(s2) >= threshold).numpy()
