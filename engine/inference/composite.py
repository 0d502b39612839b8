"""Keep clear pixels: paste a model's prediction into the input only where it is cloudy.

A cloud-removal network changes every pixel a little, also the clear ones. When the user
wants the real observation wherever there is one, :func:`keep_clear` writes

    output = input                              outside the cloud mask (bit-exact)
    output = (1 − w) · input + w · prediction   inside it, w = min(1, d / feather_px)

with ``d`` the chessboard distance (px) from a cloudy pixel to the nearest clear one. The
transition therefore lies entirely on the cloudy side of the mask edge: the first cloudy ring
gets ``1 / feather_px`` of the prediction, pixels ``feather_px`` or more inside get all of it.

The pass is windowed (``block_size`` blocks, each read with a halo wide enough for the cloud
detector and the distance), so memory does not grow with the scene, and the result equals a
whole-scene computation exactly.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from ..data import cloudmask
from ..data.bands import S2_BANDS
from ..errors import Canceled, InputError
from ..io.raster import RasterInfo, atomic_output, geotiff_profile, invalid_mask, raster_info
from ..progress import NullProgress, Progress

CloudMaskFn = Callable[[np.ndarray], np.ndarray]
"""(C, h, w) float32 reflectance in [0, 1] (DN / scale) → (h, w) bool, True = cloud."""

MASK_METHODS = ("s2_rule",)
"""Named cloud detectors: ``s2_rule`` = :func:`cloudmask.cloud_mask` (13-band S2 L1C)."""

S2_RULE_REACH = 7
"""Pixels the rule-based detector looks around a pixel: 5×5 closing (2 + 2) + 7×7 mean (3)."""


@dataclass
class KeepClearResult:
    """What :func:`keep_clear` did. Pixel counts are over the whole scene."""

    output: Path
    mask: Path | None
    pixels: int
    cloudy_pixels: int
    filled_pixels: int
    feather_px: int
    seconds: float

    @property
    def cloud_fraction(self) -> float:
        return self.cloudy_pixels / max(self.pixels, 1)


def _same_grid(a: RasterInfo, b: RasterInfo) -> None:
    if (a.width, a.height) != (b.width, b.height) or a.transform != b.transform or a.crs != b.crs:
        raise InputError(
            f"prediction {b.describe()} is not on the grid of the optical input {a.describe()}: "
            "keep-clear needs the predictor's output for this very image"
        )
    if a.count != b.count:
        raise InputError(
            f"prediction {b.describe()} has {b.count} bands, the optical input {a.describe()} {a.count}: "
            "keep-clear can only mix images with the same bands"
        )


def _resolve_mask_fn(
    cloud_mask_fn: CloudMaskFn | str | None, info: RasterInfo, threshold: float
) -> tuple[CloudMaskFn, str]:
    if callable(cloud_mask_fn):
        return cloud_mask_fn, getattr(cloud_mask_fn, "__name__", "custom")
    method = cloud_mask_fn or "s2_rule"
    if method not in MASK_METHODS:
        raise InputError(f"unknown cloud mask method {method!r}; known: {', '.join(MASK_METHODS)}")
    if info.count != len(S2_BANDS):
        raise InputError(
            f"keep-clear with the rule-based Sentinel-2 cloud detector needs the {len(S2_BANDS)} "
            f"S2 L1C bands ({', '.join(S2_BANDS)}); optical raster {info.describe()} has {info.count}"
        )

    def s2_rule(reflectance: np.ndarray) -> np.ndarray:
        return cloudmask.cloud_mask(reflectance, threshold=threshold)

    return s2_rule, f"s2_rule(threshold={threshold})"


def feather_weight(cloudy: np.ndarray, feather_px: int, clear: np.ndarray | None = None) -> np.ndarray:
    """Weight of the prediction: 0 off the cloud, min(1, d / feather_px) on cloudy pixels.

    Args:
        cloudy: (H, W) bool, True = cloud.
        feather_px: width of the transition inside the cloud; 0 = hard switch.
        clear: (H, W) bool, the pixels distances are measured from; default ``~cloudy``.
            Pass ``valid & ~cloudy`` so nodata is no edge to blend towards. Pixels beyond
            the array are not clear, so a scene border is no edge either.

    Returns:
        (H, W) float64 in [0, 1]; d is the chessboard distance to the nearest clear pixel.
    """
    w = cloudy.astype(np.float64)
    sources = ~cloudy if clear is None else clear & ~cloudy
    if feather_px <= 0 or not cloudy.any() or not sources.any():
        return w
    reached = torch.from_numpy(sources).float()[None, None]
    dist = np.full(cloudy.shape, float(feather_px), dtype=np.float64)
    for k in range(1, feather_px):
        grown = F.max_pool2d(reached, 3, stride=1, padding=1)  # one more ring around clear pixels
        new = ((grown > 0) & (reached == 0))[0, 0].numpy()
        dist[new] = float(k)
        reached = grown
    return np.where(cloudy, np.minimum(dist / feather_px, 1.0), 0.0)


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) True where any band of (C, H, W) ``a`` and ``b`` differ (NaN equals NaN)."""
    d = a != b
    if a.dtype.kind == "f":
        d &= ~(np.isnan(a) & np.isnan(b))
    return d.any(axis=0)


def keep_clear(
    optical: str | os.PathLike[str],
    predicted: str | os.PathLike[str],
    out: str | os.PathLike[str],
    cloud_mask_fn: CloudMaskFn | str | None = "s2_rule",
    feather_px: int = 8,
    progress: Progress | None = None,
    mask_out: str | os.PathLike[str] | None = None,
    threshold: float = 0.2,
    scale: float = 10000.0,
    block_size: int = 512,
    mask_reach: int | None = None,
) -> KeepClearResult:
    """Write ``out`` = the optical input with its cloudy pixels replaced by the prediction.

    Args:
        optical: the cloudy optical GeoTIFF given to the predictor.
        predicted: the predictor's output for it (same grid, bands and dtype).
        out: output GeoTIFF (optical dtype and nodata); may be ``predicted`` itself.
        cloud_mask_fn: ``"s2_rule"`` (the engine's rule-based S2 detector, :mod:`..data.cloudmask`)
            or a :data:`CloudMaskFn`.
        feather_px: width (px) of the blend inside the cloud mask; 0 = hard switch.
        progress: block counts; asked for cancellation between blocks.
        mask_out: optional uint8 GeoTIFF, 1 where ``out`` differs from the input, else 0.
        threshold: cloud-score threshold of ``s2_rule``.
        scale: DN per unit reflectance (S2 L1C: 10000) for the detector's input.
        block_size: pixels per block side.
        mask_reach: how far (px) the detector looks around a pixel; 7 for ``s2_rule``,
            ``block_size`` (a generous guess) for a custom function unless given.

    Returns:
        :class:`KeepClearResult` with pixel counts.

    Raises:
        InputError: rasters on different grids, bad parameters, no detector for these bands.
        Canceled: the caller canceled; neither ``out`` nor ``mask_out`` is written.
    """
    rec = progress or NullProgress()
    t0 = time.time()
    if feather_px < 0:
        raise InputError(f"feather_px must be ≥ 0, got {feather_px}")
    if block_size < 16:
        raise InputError(f"block_size must be ≥ 16, got {block_size}")
    opt_info = raster_info(optical, role="optical")
    pred_info = raster_info(predicted, role="prediction")
    _same_grid(opt_info, pred_info)
    for target in (out, mask_out):
        if target is not None and Path(target).resolve() == opt_info.path.resolve():
            raise InputError(f"output {target} is the optical input {opt_info.describe()}: choose another file")
    fn, method = _resolve_mask_fn(cloud_mask_fn, opt_info, threshold)
    if mask_reach is None:
        mask_reach = block_size if callable(cloud_mask_fn) else S2_RULE_REACH
    halo = mask_reach + feather_px
    dtype = np.dtype(opt_info.dtype)
    lo, hi = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (-np.inf, np.inf)
    H, W = opt_info.height, opt_info.width
    blocks = [(y, x) for y in range(0, H, block_size) for x in range(0, W, block_size)]
    cloudy_total = filled_total = 0

    profile = geotiff_profile(opt_info, opt_info.count, opt_info.dtype, opt_info.nodata)
    mask_profile = {**geotiff_profile(opt_info, 1, "uint8", None), "predictor": 2}
    with contextlib.ExitStack() as stack:
        opt_ds = stack.enter_context(rasterio.open(opt_info.path))
        pred_ds = stack.enter_context(rasterio.open(pred_info.path))
        tmp = stack.enter_context(atomic_output(out))
        # entered after `out`, so it is renamed into place first; both vanish on any error
        tmp_mask = stack.enter_context(atomic_output(mask_out)) if mask_out is not None else None
        with rasterio.open(tmp, "w", **profile) as dst:
            for b, d in enumerate(pred_ds.descriptions, start=1):
                if d:
                    dst.set_band_description(b, d)
            dst.update_tags(
                **pred_ds.tags(),
                CLOUDRM_KEEP_CLEAR=f"mask={method}, feather_px={feather_px}",
            )
            mask_dst = rasterio.open(tmp_mask, "w", **mask_profile) if tmp_mask is not None else None
            try:
                if mask_dst is not None:
                    mask_dst.set_band_description(1, "filled by the model (1) / input kept (0)")
                rec.update(0, len(blocks))
                for i, (y, x) in enumerate(blocks):
                    if rec.is_canceled():
                        raise Canceled("canceled; no output written")
                    h, w = min(block_size, H - y), min(block_size, W - x)
                    y0, x0 = max(0, y - halo), max(0, x - halo)
                    y1, x1 = min(H, y + h + halo), min(W, x + w + halo)
                    big = opt_ds.read(window=Window(x0, y0, x1 - x0, y1 - y0))
                    valid_big = ~invalid_mask(big, opt_info.nodata)
                    refl = np.nan_to_num(big.astype(np.float32) / scale, nan=0.0)
                    cloudy_big = np.asarray(fn(refl), dtype=bool) & valid_big
                    weight = feather_weight(cloudy_big, feather_px, clear=valid_big & ~cloudy_big)
                    sl = (slice(y - y0, y - y0 + h), slice(x - x0, x - x0 + w))
                    inp = big[:, sl[0], sl[1]]
                    wgt = weight[sl]
                    pred = pred_ds.read(window=Window(x, y, w, h))
                    mixed = inp.astype(np.float64) * (1.0 - wgt) + pred.astype(np.float64) * wgt
                    if dtype.kind in "iu":
                        mixed = np.rint(mixed)
                    mixed = np.clip(mixed, lo, hi).astype(dtype)
                    # exact copies where the weight is 0 (clear) or 1 (deep inside the cloud)
                    result = np.where(wgt > 0, mixed, inp)
                    result = np.where(wgt >= 1, pred.astype(dtype), result)
                    dst.write(result, window=Window(x, y, w, h))
                    filled = _differs(result, inp)
                    cloudy_total += int(cloudy_big[sl].sum())
                    filled_total += int(filled.sum())
                    if mask_dst is not None:
                        mask_dst.write(filled.astype(np.uint8)[None], window=Window(x, y, w, h))
                    rec.update(i + 1, len(blocks))
            finally:
                if mask_dst is not None:
                    mask_dst.close()
    rec.info(
        f"keep clear pixels ({method}, feather {feather_px} px): {cloudy_total} of {H * W} pixels cloudy, "
        f"{filled_total} filled by the model"
    )
    return KeepClearResult(
        output=Path(out),
        mask=Path(mask_out) if mask_out is not None else None,
        pixels=H * W,
        cloudy_pixels=cloudy_total,
        filled_pixels=filled_total,
        feather_px=feather_px,
        seconds=time.time() - t0,
    )
