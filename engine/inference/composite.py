"""Keep clear pixels: use the model's prediction only where the input is cloudy (or shadowed).

A cloud-removal network changes every pixel a little, also the clear ones. Keep-clear writes

    output = input                              outside the grown mask (bit-exact)
    output = (1 − w) · input + w · prediction   inside it, w = min(1, d / feather_px)

where the mask marks clouds and cloud shadows (a cloud-mask method of :mod:`engine.masks`, or a
mask raster from the user: non-zero = replace), grown by a margin of ``buffer_px`` (a disk),
and ``d`` is the chessboard distance (px) from a masked pixel to the nearest kept one. The
transition lies entirely inside the grown mask: its first ring gets ``1 / feather_px`` of the
prediction, pixels ``feather_px`` or more inside get all of it. The margin matters: the bright
haze rim around a cloud and the soft edge of its shadow are no clear observation.

Every computation is windowed, with a halo of ``buffer_px + feather_px + 1`` px read around a
block and no padding at the raster's edge, so the result equals a whole-scene computation
exactly whatever the block size (the predictor composites the blocks it emits; the standalone
:func:`keep_clear` composites an existing prediction).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from ..choices import DEFAULT_FEATHER_PX, DEFAULT_MASK_BUFFER_M, DEFAULT_MASK_METHOD
from ..data.bands import S2_BANDS
from ..errors import Canceled, InputError
from ..io.align import check_grid, warped_onto
from ..io.per_thread import PerThread
from ..io.raster import (
    RasterInfo,
    atomic_output,
    check_readable,
    geotiff_profile,
    invalid_mask,
    raster_info,
    read_window,
    reading,
)
from ..progress import NullProgress, Progress, Span


@dataclass
class KeepClearResult:
    """What :func:`keep_clear` did. Pixel counts are over the valid pixels of the whole scene."""

    output: Path
    mask: Path | None
    pixels: int
    cloudy_pixels: int
    filled_pixels: int
    feather_px: int
    buffer_px: int
    seconds: float

    @property
    def cloud_fraction(self) -> float:
        return self.cloudy_pixels / max(self.pixels, 1)


def feather_weight(cloudy: np.ndarray, feather_px: int, clear: np.ndarray | None = None) -> np.ndarray:
    """Weight of the prediction: 0 off the mask, min(1, d / feather_px) on masked pixels.

    Args:
        cloudy: (H, W) bool, True = replace.
        feather_px: width of the transition inside the mask; 0 = hard switch.
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


def disk(radius: int) -> np.ndarray:
    """(2r + 1, 2r + 1) bool disk: offsets with dy² + dx² ≤ r²."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def grow(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """(H, W) bool ``mask`` dilated by a disk of ``radius_px``; pixels beyond the array count as unmasked."""
    if radius_px <= 0 or not mask.any():
        return mask.copy()
    k = torch.from_numpy(disk(radius_px).astype(np.float32))[None, None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.conv2d(m, k, padding=radius_px)[0, 0] > 0.5).numpy()


def mix(inp: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend (C, h, w) ``inp`` and ``pred`` (same dtype) with (h, w) ``weight``.

    Returns the result in ``inp``'s dtype (exact copies where the weight is 0 or 1, rounded
    and clipped to the dtype's range in between) and (h, w) bool: where it differs from ``inp``.
    """
    dtype = inp.dtype
    lo, hi = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (-np.inf, np.inf)
    a = inp.astype(np.float64)
    p = pred.astype(np.float64)
    if dtype.kind == "f":  # ±inf or NaN in the input: no value to blend from, the prediction stands in
        a = np.where(np.isfinite(a), a, p)
    with np.errstate(invalid="ignore"):
        mixed = a * (1.0 - weight) + p * weight
    if dtype.kind in "iu":
        mixed = np.rint(mixed)
    mixed = np.clip(mixed, lo, hi).astype(dtype)
    result = np.where(weight > 0, mixed, inp)
    result = np.where(weight >= 1, pred.astype(dtype), result)
    differs = result != inp
    if dtype.kind == "f":
        differs &= ~(np.isnan(result) & np.isnan(inp))
    return result, differs.any(axis=0)


class KeepClear:
    """Which pixels of the optical grid get the model's value, and how much (thread-safe).

    Args:
        optical: the input the output is on (and composited with).
        mask: a raster marking pixels to replace (non-zero and not its nodata); on another grid
            it is resampled (nearest) onto the optical grid, with a warning. None: every valid
            pixel is replaced (keep-clear off, but the filled-pixels flags are still wanted).
        bands: 1-based bands of ``optical`` that match the output bands, in output order.
        buffer_px: disk radius the mask is grown by.
        feather_px: width of the blend inside the grown mask.
    """

    def __init__(
        self,
        optical: RasterInfo,
        mask: RasterInfo | None,
        bands: list[int],
        buffer_px: int,
        feather_px: int,
        progress: Progress,
    ) -> None:
        self.optical, self.mask, self.bands = optical, mask, bands
        self.buffer_px, self.feather_px = int(buffer_px), int(feather_px)
        self.halo = self.buffer_px + self.feather_px + 1
        self.warp = mask is not None and check_grid(
            mask, optical, progress, "mask", "optical raster",
            "resampling the mask onto the optical grid (nearest neighbour)",
            "pixels outside the mask raster are kept as they are",
        )
        self._lock = threading.Lock()
        self._per_thread: PerThread[tuple[contextlib.ExitStack, Any, Any]] = PerThread(
            self._open_handles, lambda h: h[0].close()
        )
        self.cloudy = 0
        self.filled = 0
        self.valid = 0

    # ---- per-thread handles -------------------------------------------------------------
    def _open_handles(self) -> tuple[contextlib.ExitStack, Any, Any]:
        stack = contextlib.ExitStack()
        # opened on reader threads, closed by the one that ends the run: see reading()
        opt = stack.enter_context(reading(self.optical.path))
        msk = None
        if self.mask is not None and self.warp:
            msk = stack.enter_context(warped_onto(self.mask.path, self.optical, "nearest"))
        elif self.mask is not None:
            msk = stack.enter_context(reading(self.mask.path))
        return stack, opt, msk

    def _handles(self) -> tuple[Any, Any]:
        """This thread's (optical, mask or None) datasets."""
        _, opt, msk = self._per_thread.get()
        return opt, msk

    def close(self) -> None:
        self._per_thread.close()

    def __enter__(self) -> KeepClear:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ------------------------------------------------------------------------
    def _mask(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """(y1 − y0, x1 − x0) bool: the raw mask (replace = non-zero, not nodata) on the optical grid."""
        _, msk = self._handles()
        if msk is None:
            return np.ones((y1 - y0, x1 - x0), dtype=bool)
        m = read_window(msk, Window(x0, y0, x1 - x0, y1 - y0), bands=1, what=f"mask raster '{self.mask.name}'")  # type: ignore[union-attr]
        out = m != 0
        if m.dtype.kind == "f":
            out &= ~np.isnan(m)
        if msk.nodata is not None and not (isinstance(msk.nodata, float) and math.isnan(msk.nodata)):
            out &= m != msk.nodata
        return out

    def needed(self, y: int, x: int, h: int, w: int) -> bool:
        """False when no pixel of the window can get a weight > 0 (the model need not run there)."""
        r = self.buffer_px
        y0, x0 = max(0, y - r), max(0, x - r)
        y1, x1 = min(self.optical.height, y + h + r), min(self.optical.width, x + w + r)
        return bool(self._mask(y0, x0, y1, x1).any())

    def weights(self, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(C, h, w) input in the output bands and (h, w) float64 prediction weight of a window."""
        opt, _ = self._handles()
        H, W = self.optical.height, self.optical.width
        y0, x0 = max(0, y - self.halo), max(0, x - self.halo)
        y1, x1 = min(H, y + h + self.halo), min(W, x + w + self.halo)
        big = read_window(opt, Window(x0, y0, x1 - x0, y1 - y0), bands=self.bands,
                          what=f"optical raster '{self.optical.name}'")
        valid = ~invalid_mask(big, self.optical.nodata)
        grown = grow(self._mask(y0, x0, y1, x1), self.buffer_px) & valid
        weight = feather_weight(grown, self.feather_px, clear=valid & ~grown)
        sy, sx = slice(y - y0, y - y0 + h), slice(x - x0, x - x0 + w)
        return big[:, sy, sx], weight[sy, sx]

    def composite(self, y: int, x: int, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, h, w) prediction in the output dtype at (y, x) → (result, (h, w) uint8 filled flags)."""
        h, w = pred.shape[1:]
        inp, weight = self.weights(y, x, h, w)
        result, filled = mix(inp, pred, weight)
        valid = ~invalid_mask(inp, self.optical.nodata)
        with self._lock:
            self.cloudy += int((weight > 0).sum())
            self.filled += int(filled.sum())
            self.valid += int(valid.sum())
        return result, filled.astype(np.uint8)


def buffer_pixels(info: RasterInfo, buffer_m: float) -> int:
    """A margin in metres as a whole number of the raster's pixels."""
    from ..masks import pixel_size_m

    return round(max(buffer_m, 0.0) / max(pixel_size_m(info), 1e-9))


@contextlib.contextmanager
def mask_for(
    optical: RasterInfo,
    mask: str | os.PathLike[str] | None,
    method: str,
    progress: Progress,
    mask_name: str | None = None,
) -> Iterator[RasterInfo]:
    """The mask raster keep-clear uses: the user's ``mask``, else one computed with ``method``
    (clouds and shadows, :func:`engine.masks.cloud_mask_scene`) into a temporary file that is
    removed afterwards.
    """
    if mask:
        info = raster_info(mask, mask_name, role="mask")
        check_readable(info, "mask")
        yield info
        return
    if optical.count != len(S2_BANDS):
        raise InputError(
            f"keep-clear computes its cloud mask from the {len(S2_BANDS)} Sentinel-2 L1C bands; optical raster "
            f"{optical.describe()} has {optical.count}: give a mask raster or switch keep-clear off"
        )
    from ..masks import cloud_mask_scene

    with tempfile.TemporaryDirectory(prefix="cloudrm-mask-") as tmp:
        out = Path(tmp) / "mask.tif"
        res = cloud_mask_scene(optical.path, out, method=method, progress=progress, name=optical.name)
        progress.info(
            f"keep-clear mask ({method}): cloud {100 * res.cloud_fraction:.1f} %, "
            f"shadow {100 * res.shadow_fraction:.1f} % of the valid pixels"
        )
        yield raster_info(out, f"{optical.name} cloud mask", role="mask")


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


def keep_clear(
    optical: str | os.PathLike[str],
    predicted: str | os.PathLike[str],
    out: str | os.PathLike[str],
    mask: str | os.PathLike[str] | None = None,
    method: str = DEFAULT_MASK_METHOD,
    buffer_m: float = DEFAULT_MASK_BUFFER_M,
    feather_px: int = DEFAULT_FEATHER_PX,
    progress: Progress | None = None,
    mask_out: str | os.PathLike[str] | None = None,
    block_size: int = 512,
) -> KeepClearResult:
    """Write ``out`` = the optical input with its masked pixels replaced by an existing prediction.

    Args:
        optical: the cloudy optical GeoTIFF given to the predictor.
        predicted: the predictor's output for it (same grid, bands and dtype).
        out: output GeoTIFF (optical dtype and nodata).
        mask: a mask raster (non-zero = replace); None computes one with ``method``.
        method: cloud-mask method (see :data:`engine.choices.MASK_METHODS`) when ``mask`` is None.
        buffer_m: margin (metres) the mask is grown by.
        feather_px: width (px) of the blend inside the grown mask; 0 = hard switch.
        progress: block counts; asked for cancellation between blocks.
        mask_out: optional uint8 GeoTIFF, 1 where ``out`` differs from the input, else 0.
        block_size: pixels per block side.

    Raises:
        InputError: rasters on different grids, bad parameters, no mask for these bands.
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
    H, W = opt_info.height, opt_info.width
    blocks = [(y, x) for y in range(0, H, block_size) for x in range(0, W, block_size)]
    buffer_px = buffer_pixels(opt_info, buffer_m)
    profile = geotiff_profile(opt_info, opt_info.count, opt_info.dtype, opt_info.nodata)
    mask_profile = {**geotiff_profile(opt_info, 1, "uint8", None), "predictor": 2}
    with contextlib.ExitStack() as stack:
        mask_info = stack.enter_context(mask_for(opt_info, mask, method, Span(rec, 0.0, 0.5) if mask is None else rec))
        keep = stack.enter_context(
            KeepClear(opt_info, mask_info, list(range(1, opt_info.count + 1)), buffer_px, feather_px, rec)
        )
        pred_ds = stack.enter_context(rasterio.open(pred_info.path))
        tmp = stack.enter_context(atomic_output(out))
        # entered after `out`, so it is renamed into place first; both vanish on any error
        tmp_mask = stack.enter_context(atomic_output(mask_out)) if mask_out is not None else None
        blocks_rec = Span(rec, 0.5, 1.0) if mask is None else rec
        with rasterio.open(tmp, "w", **profile) as dst:
            for b, d in enumerate(pred_ds.descriptions, start=1):
                if d:
                    dst.set_band_description(b, d)
            dst.update_tags(**pred_ds.tags(), CLOUDRM_KEEP_CLEAR=describe(mask, method, buffer_m, feather_px))
            mask_dst = stack.enter_context(rasterio.open(tmp_mask, "w", **mask_profile)) if tmp_mask else None
            if mask_dst is not None:
                mask_dst.set_band_description(1, FILLED_DESCRIPTION)
            blocks_rec.update(0, len(blocks))
            for i, (y, x) in enumerate(blocks):
                if blocks_rec.is_canceled():
                    raise Canceled("canceled; no output written")
                h, w = min(block_size, H - y), min(block_size, W - x)
                pred = read_window(pred_ds, Window(x, y, w, h), what=f"prediction raster '{pred_info.name}'")
                result, filled = keep.composite(y, x, pred)
                dst.write(result, window=Window(x, y, w, h))
                if mask_dst is not None:
                    mask_dst.write(filled[None], window=Window(x, y, w, h))
                blocks_rec.update(i + 1, len(blocks))
    rec.info(
        f"keep clear pixels (buffer {buffer_px} px, feather {feather_px} px): {keep.cloudy} of {keep.valid} "
        f"valid pixels masked, {keep.filled} filled by the model"
    )
    return KeepClearResult(
        output=Path(out), mask=Path(mask_out) if mask_out is not None else None, pixels=keep.valid,
        cloudy_pixels=keep.cloudy, filled_pixels=keep.filled, feather_px=feather_px, buffer_px=buffer_px,
        seconds=time.time() - t0,
    )


FILLED_DESCRIPTION = "filled by the model (1) / input kept (0)"


def describe(mask: str | os.PathLike[str] | None, method: str, buffer_m: float, feather_px: int) -> str:
    """The ``CLOUDRM_KEEP_CLEAR`` tag: where the mask came from and how it was grown."""
    source = f"raster {Path(mask).name}" if mask else method
    return f"mask={source}, buffer_m={buffer_m:g}, feather_px={feather_px}"
