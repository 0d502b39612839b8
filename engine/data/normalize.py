"""Input scaling per model card (docs/data.md, "Scaling conventions").

Optical: clip to [0, 10000] DN, divide by 10000 → [0, 1]. SAR (dB): clip each band to its
[lo, hi] and map (x − lo) / (hi − lo) → [0, 1] (VV [−25, 0], VH [−32.5, 0]). NaN and nodata
are replaced by the mean of the whole file *before* clipping (GLF-CR code).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def fill_invalid(x: np.ndarray, invalid: np.ndarray | None, fill: float) -> np.ndarray:
    """Replace NaN (and pixels flagged in ``invalid``, broadcast over bands) by ``fill``.

    Args:
        x: (C, H, W) float array; a float32 copy is returned.
        invalid: (H, W) or (C, H, W) bool, or None.
        fill: replacement value (in the file's units).
    """
    out = np.array(x, dtype=np.float32, copy=True)
    bad = np.isnan(out)
    if invalid is not None:
        bad |= np.broadcast_to(invalid, out.shape)
    out[bad] = fill
    return out


def normalize_optical(x: np.ndarray, clip: Sequence[float] = (0, 10000), scale: float = 10000) -> np.ndarray:
    """(C, H, W) DN → float32 in [clip[0], clip[1]] / scale (S2: [0, 1])."""
    # in place in one float32 copy: the values of np.clip(…) / scale, at a third of the passes
    out = x.astype(np.float32)
    np.maximum(out, clip[0], out=out)
    np.minimum(out, clip[1], out=out)
    out /= np.float32(scale)
    return out


def denormalize_optical(y: np.ndarray, scale: float = 10000) -> np.ndarray:
    """Model output back to DN units (float32, not rounded or clipped)."""
    return (y * np.float32(scale)).astype(np.float32)


def normalize_sar(x: np.ndarray, clip: Sequence[Sequence[float]] = ((-25.0, 0.0), (-32.5, 0.0))) -> np.ndarray:
    """(2, H, W) σ0 in dB → float32 in [0, 1], one [lo, hi] range per band."""
    if x.shape[0] != len(clip):
        raise ValueError(f"SAR has {x.shape[0]} bands; normalisation defines {len(clip)} ranges")
    out = x.astype(np.float32)
    for i, (lo, hi) in enumerate(clip):
        band = out[i]
        np.maximum(band, lo, out=band)
        np.minimum(band, hi, out=band)
        band -= np.float32(lo)
        band /= np.float32(hi - lo)
    return out


def apply_card(optical: np.ndarray, sar: np.ndarray, norm: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Scale NaN-free optical DN and SAR dB with a card's ``normalisation`` block."""
    o = norm["optical"]
    return (
        normalize_optical(optical, o["clip"], o["scale"]),
        normalize_sar(sar, norm["sar"]["clip"]),
    )
