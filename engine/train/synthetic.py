"""Synthetic clouds on a real scene: training pairs when no cloud-free target exists.

The demo checkpoint is trained this way on the bundled SEN12MS-CR sample (which has no
cloud-free target): clouds with the spectrum of the scene's own thick clouds are blended
over pixels that the rule-based detector calls clear; SAR is left as is (it sees through
clouds). The loss only counts pixels that are really clear. This teaches the mechanics of
cloud removal on real radiometry; it is no substitute for training on SEN12MS-CR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.cloudmask import cloud_score


def cloud_alpha(h: int, w: int, gen: torch.Generator, coverage: float, opacity: float) -> torch.Tensor:
    """Smooth cloud opacity in [0, opacity], shape (h, w); about ``coverage`` of pixels > 0.

    Fractal noise (four octaves of bilinearly upsampled white noise), thresholded at the
    (1 − coverage) quantile and ramped over a soft edge.
    """
    noise = torch.zeros(1, 1, h, w)
    for octave, amp in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125)):
        side = max(h, w)
        small = torch.randn(1, 1, max(2, octave * h // side), max(2, octave * w // side), generator=gen)
        noise += amp * F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    n = noise[0, 0]
    n = (n - n.mean()) / (n.std() + 1e-6)
    t = torch.quantile(n.flatten(), 1.0 - coverage)
    return (((n - t) / 0.5).clamp(0, 1) * opacity).float()


@dataclass
class SceneSampler:
    """Random crops with synthetic clouds from one normalised scene.

    Args:
        optical: (13, H, W) reflectance in [0, 1].
        sar: (2, H, W) in [0, 1].
        columns: [x0, x1) of the scene that crops may come from (the rest is held out).
    """

    optical: np.ndarray
    sar: np.ndarray
    columns: tuple[int, int]
    threshold: float = 0.2
    bands: tuple[int, ...] | None = None
    """0-based optical bands the model sees (e.g. B4, B3, B2 for RGB models); all when None.
    Clouds are detected and synthesised on all 13 bands first."""
    dates: int = 1
    """> 1: time series for temporal models. Earlier dates are the clear scene with a small
    gain change (±5 %) and their own synthetic clouds, 12 days apart; the last date is the
    target. SAR is the same at every date (no change on the ground)."""

    def __post_init__(self) -> None:
        score = cloud_score(self.optical)
        cloud = score >= self.threshold
        # one 5-px dilation: cloud edges are haze, not clear ground
        cloud = F.max_pool2d(cloud[None, None].float(), 11, stride=1, padding=5)[0, 0] > 0
        self.clear = (~cloud).numpy()
        thick = (score >= 0.9).numpy()
        pool = self.optical[:, thick] if thick.sum() >= 50 else self.optical[:, cloud.numpy()]
        if pool.shape[1] < 50:
            raise ValueError("scene has too few cloudy pixels to measure a cloud spectrum")
        self.cloud_spectrum = pool.mean(axis=1).astype(np.float32)

    def _cloudy(self, clear: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        _, h, w = clear.shape
        coverage = float(torch.empty(1).uniform_(0.2, 0.7, generator=gen))
        opacity = float(torch.empty(1).uniform_(0.5, 1.0, generator=gen))
        alpha = cloud_alpha(h, w, gen, coverage, opacity)
        scale = float(torch.empty(1).uniform_(0.85, 1.15, generator=gen))
        spectrum = torch.from_numpy(self.cloud_spectrum * scale)[:, None, None]
        return clear * (1 - alpha) + spectrum * alpha, alpha

    def crop(self, y: int, x: int, size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """One sample at (y, x): cloudy, sar, target, weight (1 where really clear), alpha."""
        sl = (slice(y, y + size), slice(x, x + size))
        target = torch.from_numpy(self.optical[(slice(None), *sl)].copy())
        cloudy, alpha = self._cloudy(target, gen)
        sar = torch.from_numpy(self.sar[(slice(None), *sl)].copy())
        extra = {}
        if self.dates > 1:
            aux = []
            for _ in range(self.dates - 1):
                gain = float(torch.empty(1).uniform_(0.95, 1.05, generator=gen))
                aux.append(self._cloudy(target * gain, gen)[0])
            cloudy = torch.stack([*aux, cloudy])  # (T, C, h, w), target last
            sar = sar.expand(self.dates, *sar.shape).clone()
            extra["days"] = torch.arange(-(self.dates - 1), 1, dtype=torch.float32) * 12.0
        if self.bands is not None:
            target, cloudy = target[list(self.bands)], cloudy[..., list(self.bands), :, :]
        return {
            "cloudy": cloudy,
            "sar": sar,
            "target": target,
            "weight": torch.from_numpy(self.clear[sl].astype(np.float32))[None],
            "alpha": alpha[None],
            **extra,
        }

    def batch(self, n: int, size: int, gen: torch.Generator, min_clear: float = 0.5) -> dict[str, torch.Tensor]:
        """``n`` random crops from the training columns, flipped/rotated at random."""
        h = self.optical.shape[1]
        x0, x1 = self.columns
        items: list[dict[str, torch.Tensor]] = []
        while len(items) < n:
            y = int(torch.randint(0, h - size + 1, (1,), generator=gen))
            x = int(torch.randint(x0, x1 - size + 1, (1,), generator=gen))
            if self.clear[y : y + size, x : x + size].mean() < min_clear:
                continue
            s = self.crop(y, x, size, gen)
            k = int(torch.randint(0, 4, (1,), generator=gen))
            flip = bool(torch.randint(0, 2, (1,), generator=gen))
            for key, v in s.items():
                if v.ndim < 3:
                    continue  # days
                v = torch.rot90(v, k, dims=(-2, -1))
                s[key] = torch.flip(v, dims=(-1,)) if flip else v
            items.append(s)
        return {k: torch.stack([s[k] for s in items]) for k in items[0]}

    def eval_set(self, columns: tuple[int, int], size: int, seed: int) -> dict[str, torch.Tensor]:
        """Fixed crops tiling the held-out columns, with clouds drawn from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        h = self.optical.shape[1]
        items = [
            self.crop(y, x, size, gen)
            for y in range(0, h - size + 1, size)
            for x in range(columns[0], columns[1] - size + 1, size)
        ]
        return {k: torch.stack([s[k] for s in items]) for k in items[0]}


def score(pred: torch.Tensor, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """Errors on really-clear pixels (pooled): PSNR, MAE, and MAE under synthetic cloud (α > 0.1)."""
    w = data["weight"].expand_as(pred) > 0
    cloudy = (data["alpha"].expand_as(pred) > 0.1) & w
    t = data["target"]
    mse = float(((pred - t) ** 2)[w].double().mean())
    return {
        "psnr": 100.0 if mse == 0 else -10 * math.log10(mse),
        "mae": float((pred - t).abs()[w].mean()),
        "mae_under_cloud": float((pred - t).abs()[cloudy].mean()) if cloudy.any() else float("nan"),
    }
