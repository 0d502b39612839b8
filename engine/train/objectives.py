"""Training objectives by name, as the training config selects them.

Every objective takes ``(pred, batch)`` where ``pred`` is (B, C, H, W) and ``batch`` holds
``target`` (B, C, H, W), ``weight`` (B, 1, H, W; 1 where the target is trustworthy) and
``mask`` (B, 1, H, W; 1 = cloudy input). Pixels with weight 0 are neutralised by replacing the
prediction with the target there, so every loss (SSIM included) ignores them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError

Objective = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


def _masked_l1(pred: torch.Tensor, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    w = b["weight"]
    return ((pred - b["target"]).abs() * w).sum() / (w.sum() * pred.shape[1]).clamp(min=1)


def _neutral(pred: torch.Tensor, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    w = b["weight"]
    return pred * w + b["target"] * (1 - w)


def objective(name: str, options: Mapping[str, Any] | None = None) -> Objective:
    """The loss called ``name``: ``l1`` (GLF-CR), ``l1_ssim`` (MMCANet: L1 + (1 − SSIM)),
    ``cafr`` (cloud-aware MSE + SSIM; ``options`` go to ``cafr_loss``, e.g.
    ``repo_loss: true``), ``align_cr`` (cloud-weighted Charbonnier), ``ca_mtcr``
    (2·L1 + 1·VGG16 feature + 250·style; ``vgg_weights: FILE`` in ``options``,
    since VGG16 weights cannot be downloaded at run time). Each is described in the "Loss"
    section of its model's page under docs/models/."""
    opts = dict(options or {})
    if name == "l1":
        return _masked_l1
    if name == "l1_ssim":
        from ..losses.basic import l1_ssim_loss

        return lambda pred, b: l1_ssim_loss(_neutral(pred, b), b["target"])
    if name == "cafr":
        from ..losses.cafr import cafr_loss

        return lambda pred, b: cafr_loss(_neutral(pred, b), b["target"], b["mask"], **opts)
    if name == "ca_mtcr":
        from ..losses.perceptual import PerceptualLoss

        perceptual = PerceptualLoss(opts.pop("vgg_weights", None), **opts)

        def ca_mtcr(pred: torch.Tensor, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
            perceptual.to(pred.device)
            return perceptual(_neutral(pred, b), b["target"])

        return ca_mtcr
    if name == "align_cr":
        from ..losses.align_cr import cloud_weighted_loss

        return lambda pred, b: cloud_weighted_loss(_neutral(pred, b), b["target"], b["mask"], **opts)
    raise InputError(f"training config: unknown loss {name!r} (known: {', '.join(NAMES)})")


NAMES = ("l1", "l1_ssim", "cafr", "align_cr", "ca_mtcr")


StagedObjective = Callable[[list[torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]


def staged(loss: Objective, weights: list[float] | None = None) -> StagedObjective:
    """Sum of ``loss`` over the stage outputs of a multi-stage model (MPIR, equal weights).

    Stages that predict at a lower resolution are scored against the target downsampled the
    same way (antialiased bilinear); a pixel's weight stays 1 only if all its sub-pixels had 1.
    """

    def at(b: Mapping[str, torch.Tensor], hw: tuple[int, int]) -> Mapping[str, torch.Tensor]:
        if b["target"].shape[-2:] == hw:
            return b
        return {
            "target": F.interpolate(b["target"], size=hw, mode="bilinear", antialias=True, align_corners=False),
            "weight": (F.adaptive_avg_pool2d(b["weight"], hw) > 0.999).to(b["weight"].dtype),
            "mask": (F.adaptive_avg_pool2d(b["mask"], hw) > 0.5).to(b["mask"].dtype),
        }

    def total(preds: list[torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ws = weights or [1.0] * len(preds)
        if len(ws) != len(preds):
            raise InputError(f"training config: {len(ws)} stage weights for {len(preds)} stages")
        out = torch.zeros((), device=preds[0].device)
        for w, p in zip(ws, preds, strict=True):
            out = out + w * loss(p, at(b, (int(p.shape[-2]), int(p.shape[-1]))))
        return out

    return total
