"""Weight-free multi-temporal baselines on numpy arrays (no checkpoint, no SAR).

Both take a date-sorted stack whose last acquisition is the target and a per-pixel cloud
mask (True = unusable: cloud, or no data), and return one composite on the target grid.

- :func:`least_cloudy`: per pixel (or per whole tile) the acquisition with the least cloud;
  ties go to the latest date, so a clear target pixel is always kept as is.
- :func:`mosaicing`: per pixel the mean or median of the clear observations; pixels with no
  clear observation keep the target's value.
"""

from __future__ import annotations

import warnings

import numpy as np

METHODS = ("least_cloudy", "mosaicing")


def _check(stack: np.ndarray, cloud: np.ndarray) -> None:
    if stack.ndim != 4:
        raise ValueError(f"stack must be (T, C, H, W), got shape {stack.shape}")
    t, _, h, w = stack.shape
    if cloud.shape != (t, h, w):
        raise ValueError(f"cloud must be (T, H, W) = {(t, h, w)}, got {cloud.shape}")


def _latest_argmin(score: np.ndarray) -> np.ndarray:
    """Index of the minimum along axis 0, ties to the highest index (the latest date)."""
    return score.shape[0] - 1 - np.argmin(score[::-1], axis=0)


def least_cloudy(stack: np.ndarray, cloud: np.ndarray, per: str = "pixel") -> np.ndarray:
    """Pick, per pixel or per tile, the acquisition with the least cloud.

    Args:
        stack: (T, C, H, W) acquisitions sorted by date, target last.
        cloud: (T, H, W) bool mask (True = cloudy) or a float cloud score (lower = clearer).
        per: ``pixel`` (argmin per pixel) or ``tile`` (the acquisition whose mean cloud over
            the whole array is least).

    Returns:
        (C, H, W) composite in ``stack``'s dtype; ties go to the latest date.
    """
    _check(stack, cloud)
    score = np.asarray(cloud, dtype=np.float64)
    if per == "tile":
        return stack[tile_choice(score)].copy()
    if per != "pixel":
        raise ValueError(f"per must be 'pixel' or 'tile', got {per!r}")
    idx = _latest_argmin(score)  # (H, W)
    return np.take_along_axis(stack, idx[None, None], axis=0)[0]


def choice_index(cloud: np.ndarray) -> np.ndarray:
    """(H, W) index chosen by :func:`least_cloudy` per pixel (for validity and statistics)."""
    return _latest_argmin(np.asarray(cloud, dtype=np.float64))


def tile_choice(cloud: np.ndarray) -> int:
    """Index chosen by :func:`least_cloudy` with ``per='tile'``: least mean cloud, ties → latest."""
    score = np.asarray(cloud, dtype=np.float64)
    return int(_latest_argmin(score.reshape(score.shape[0], -1).mean(axis=1)))


def mosaicing(stack: np.ndarray, cloud: np.ndarray, reducer: str = "median") -> np.ndarray:
    """Per-pixel mean or median of the clear observations; the target where none is clear.

    Args:
        stack: (T, C, H, W) acquisitions sorted by date, target last.
        cloud: (T, H, W) bool, True = cloudy (or no data).
        reducer: ``mean`` or ``median``.

    Returns:
        (C, H, W) float64 composite (the median of an even count averages the middle two).
    """
    _check(stack, cloud)
    if reducer not in ("mean", "median"):
        raise ValueError(f"reducer must be 'mean' or 'median', got {reducer!r}")
    clear = ~np.asarray(cloud, dtype=bool)
    vals = np.where(clear[:, None], stack.astype(np.float64), np.nan)
    with warnings.catch_warnings():  # all-NaN pixels are expected; they are replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(vals, axis=0) if reducer == "mean" else np.nanmedian(vals, axis=0)
    none_clear = ~clear.any(axis=0)
    out[:, none_clear] = stack[-1][:, none_clear]
    return out
