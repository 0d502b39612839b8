"""Whole-scene Sentinel-2 L1C cloud (and shadow) masks, written as a uint8 GeoTIFF.

Two methods:

- ``s2cloudless``: Sentinel Hub's pixel classifier (LightGBM model shipped inside the
  ``s2cloudless`` PyPI package; 10 of the 13 bands, reflectance = DN / 10000). Probability
  > threshold (0.4), averaged over a disk and dilated; the disk sizes follow the package's
  recommendations (22 and 11 px at 10 m, 4 and 2 px at 60 m) scaled by the pixel size.
  The classifier costs about 40 µs per pixel on one CPU core, so ``resolution=60`` (k×k
  pixel means, the package's 60 m setting, mask repeated back onto the input grid) is 36×
  faster on 10 m data.
- ``cafr_rule``: the DSen2-CR rule detector used by CAFR (``data/cloudmask.py``): clouds
  where the score ≥ 0.2.

Both then mark cloud shadows (value 2, on pixels not already cloud) with DSen2-CR's
shadow test: dark in the near/short-wave infrared (CSI = (B8 + B11) / 2) and in blue, with
thresholds taken over the whole scene (a first pass collects the statistics), so the result
does not depend on the block size. ``shadows=False`` skips that pass.

The scene is processed in blocks with a halo wide enough for every filter of the method,
and each block's window is clipped to the raster, never padded: so the mask equals the one
computed on the whole scene at once, bit for bit (a test checks it). The output has the
input's grid; values 0 clear, 1 cloud, 2 shadow, 255 where the input is nodata.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from . import __version__
from .choices import MASK_METHODS as METHODS
from .data.bands import S2_BANDS
from .errors import Canceled, DependencyError, InputError
from .io.checks import check_destination, estimate_output_bytes
from .io.raster import (
    RasterInfo,
    atomic_output,
    check_readable,
    geotiff_profile,
    invalid_mask,
    raster_info,
    read_window,
)
from .progress import NullProgress, Progress

CLEAR, CLOUD, SHADOW, NODATA = 0, 1, 2, 255
DEFAULT_THRESHOLD = {"s2cloudless": 0.4, "cafr_rule": 0.2}
S2CLOUDLESS_VERSION = "1.7.3"
S2CLOUDLESS_INSTALL = f"python -m pip install s2cloudless=={S2CLOUDLESS_VERSION} 'numpy<2'"
COLOURS = {CLEAR: (0, 0, 0, 0), CLOUD: (255, 255, 255, 255), SHADOW: (60, 60, 160, 255)}
_B = {b: i for i, b in enumerate(S2_BANDS)}
_CAFR_HALO = 8  # closing 5×5 (2 + 2) + 7×7 box (3) = 7; shadow median 5×5 = 2


@dataclass
class MaskResult:
    """What :func:`cloud_mask_scene` did. Fractions are of the valid (non-nodata) pixels."""

    output: Path
    method: str
    blocks: int
    cloud_fraction: float
    shadow_fraction: float
    seconds: float
    warnings: list[str] = field(default_factory=list)


def s2cloudless_disks(pixel_size_m: float) -> tuple[int, int]:
    """(average_over, dilation_size) in pixels for a pixel size in metres.

    s2cloudless recommends 22/11 at 10 m and 4/2 at 60 m: the same ground distances
    (≈220 m and ≈110 m), so scale 22/11 by 10 / pixel size.
    """
    f = 10.0 / max(pixel_size_m, 1e-6)
    return max(1, round(22 * f)), max(1, round(11 * f))


def pixel_size_m(info: RasterInfo) -> float:
    """Pixel size in metres (degrees × 111 320 for geographic CRSs; 10 m when unknown)."""
    res = float(np.mean(info.resolution))
    if info.crs is None:
        return 10.0
    if info.crs.is_geographic:
        return res * 111_320.0
    try:
        return res * float(info.crs.linear_units_factor[1])
    except Exception:
        return res


def _s2cloudless_detector(threshold: float, average_over: int, dilation: int):
    try:
        from s2cloudless import S2PixelCloudDetector
    except ImportError as exc:
        raise DependencyError(
            f"cloud mask method s2cloudless needs the Python package s2cloudless "
            f"(not importable: {exc}). Install it into the Python that runs cloudrm: "
            f"{S2CLOUDLESS_INSTALL}; or choose method cafr_rule"
        ) from exc
    return S2PixelCloudDetector(
        threshold=threshold, all_bands=True, average_over=average_over, dilation_size=dilation
    )


def _block_means(dn: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, h, w) → (C, ⌈h/k⌉, ⌈w/k⌉) means of the valid pixels of each k×k cell, and the cells' validity."""
    c, h, w = dn.shape
    hk, wk = -(-h // k), -(-w // k)
    x = np.zeros((c, hk * k, wk * k), np.float64)
    v = np.zeros((hk * k, wk * k), np.float64)
    x[:, :h, :w] = dn * valid
    v[:h, :w] = valid
    sums = x.reshape(c, hk, k, wk, k).sum(axis=(2, 4))
    counts = v.reshape(hk, k, wk, k).sum(axis=(1, 3))
    return sums / np.maximum(counts, 1), counts > 0


def _s2cloudless_block(detector, dn: np.ndarray, valid: np.ndarray, k: int = 1) -> np.ndarray:
    """(13, h, w) DN → (h, w) uint8 0/1. Nodata pixels get probability 0 (they spread nothing).

    ``k`` > 1: classify k×k means (the window must start on the k grid), repeat the mask back.
    """
    h, w = valid.shape
    if k > 1:
        dn, valid = _block_means(dn, valid, k)
    data = (dn.astype(np.float32) / 10000.0).transpose(1, 2, 0)[None]
    prob = detector.get_cloud_probability_maps(data)
    prob[0][~valid] = 0.0
    mask = detector.get_mask_from_prob(prob)[0].astype(np.uint8)
    if k > 1:
        mask = np.repeat(np.repeat(mask, k, axis=0), k, axis=1)[:h, :w]
    return mask


def _rule_cloud(dn: np.ndarray, threshold: float) -> np.ndarray:
    """(13, h, w) DN → (h, w) bool clouds with the CAFR / DSen2-CR rule of data/cloudmask.py."""
    from .data import cloudmask

    if hasattr(cloudmask, "cafr_cloud_mask"):  # DN entry point
        return np.asarray(cloudmask.cafr_cloud_mask(dn.astype(np.float32), threshold=threshold))
    return np.asarray(cloudmask.cloud_mask(dn.astype(np.float32) / 10000.0, threshold=threshold))


@dataclass
class _ShadowLevels:
    """Scene-wide thresholds of DSen2-CR's shadow test (docs/data.md, "Shadow test")."""

    csi: float  # T3 = min CSI + ¾ (mean CSI − min CSI), CSI = (B8 + B11) / 2
    blue: float  # T4 = min B2 + ⅚ (mean B2 − min B2)


def shadow_levels(csi_min: float, csi_mean: float, blue_min: float, blue_mean: float) -> _ShadowLevels:
    return _ShadowLevels(csi_min + 0.75 * (csi_mean - csi_min), blue_min + 5 / 6 * (blue_mean - blue_min))


def _rule_shadow(dn: np.ndarray, levels: _ShadowLevels, valid: np.ndarray) -> np.ndarray:
    """(13, h, w) DN → (h, w) bool shadows: raw test, then a 5×5 binary median with zero fill.

    Nodata pixels (``valid`` False) never vote for shadow, so dark no-data areas do not spread.
    """
    refl = dn.astype(np.float64) / 10000.0
    csi = (refl[_B["B8"]] + refl[_B["B11"]]) / 2
    raw = (csi < levels.csi) & (refl[_B["B2"]] < levels.blue) & valid
    # 5×5 vote counts (zero fill beyond the array) from a summed-area table: numpy only
    sat = np.pad(raw.astype(np.int32), ((3, 2), (3, 2))).cumsum(0).cumsum(1)
    h, w = raw.shape
    votes = sat[5 : 5 + h, 5 : 5 + w] - sat[:h, 5 : 5 + w] - sat[5 : 5 + h, :w] + sat[:h, :w]
    return votes >= 13  # median of 25 zeros/ones = 1 iff ≥ 13 ones


def _blocks(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) of the core blocks, row-major."""
    return [
        (y, x, min(size, height - y), min(size, width - x))
        for y in range(0, height, size)
        for x in range(0, width, size)
    ]


def _scene_shadow_levels(
    ds: rasterio.io.DatasetReader, info: RasterInfo, blocks: list, tick: Callable[[], None]
) -> _ShadowLevels:
    """First pass: min and mean of CSI and B2 over the valid pixels of the whole scene."""
    lo = [math.inf, math.inf]
    total = [0.0, 0.0]
    count = 0
    for y, x, h, w in blocks:
        dn = read_window(ds, Window(x, y, w, h), what=f"Sentinel-2 L1C raster '{info.name}'")
        ok = ~invalid_mask(dn, info.nodata)
        refl = dn.astype(np.float64) / 10000.0
        csi = ((refl[_B["B8"]] + refl[_B["B11"]]) / 2)[ok]
        blue = refl[_B["B2"]][ok]
        if csi.size:
            lo = [min(lo[0], float(csi.min())), min(lo[1], float(blue.min()))]
            total = [total[0] + float(csi.sum()), total[1] + float(blue.sum())]
            count += int(csi.size)
        tick()
    if not count:
        return _ShadowLevels(-math.inf, -math.inf)  # nothing valid: no shadows
    return shadow_levels(lo[0], total[0] / count, lo[1], total[1] / count)


def cloud_mask_scene(
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    method: str = "s2cloudless",
    progress: Progress | None = None,
    name: str | None = None,
    threshold: float | None = None,
    shadows: bool = True,
    block_size: int = 1024,
    resolution: float | None = None,
) -> MaskResult:
    """Cloud (and shadow) mask of a whole Sentinel-2 L1C scene.

    Args:
        input: GeoTIFF with the 13 L1C bands B1 … B8, B8A, B9 … B12, DN = reflectance × 10000.
        out: output GeoTIFF: 1 band uint8 on the input's grid, 0 clear, 1 cloud, 2 shadow,
            255 nodata (where every input band is nodata/NaN); colour table attached.
            Written atomically: on error or cancel nothing is left behind.
        method: ``s2cloudless`` or ``cafr_rule``.
        progress: receives block counts; asked for cancellation between blocks.
        name: label of the input in messages (a QGIS layer name).
        threshold: cloud threshold; 0.4 (probability) for s2cloudless, 0.2 (score) for cafr_rule.
        shadows: also mark DSen2-CR cloud shadows (value 2) where there is no cloud.
        block_size: core block edge in pixels (memory ≈ 13 × 4 B × (block + 2 halo)²).
        resolution: s2cloudless only: classify at about this pixel size in metres (e.g. 60,
            the package's 60 m setting) using k×k pixel means, k = round(resolution / pixel
            size); the mask is repeated back onto the input grid. None: native resolution.

    Raises:
        InputError: wrong band count, unknown method, output = input.
        DependencyError: s2cloudless (or torch, for cafr_rule) is not installed.
        Canceled: the caller canceled; no output written.
    """
    t0 = time.time()
    warnings: list[str] = []
    prog = progress or NullProgress()
    if method not in METHODS:
        raise InputError(f"unknown cloud mask method {method!r}; choose one of {', '.join(METHODS)}")
    info = raster_info(input, name, role="Sentinel-2 L1C")
    check_destination(out, estimate_output_bytes(info.width, info.height, 1, "uint8"), [info])
    if info.count != len(S2_BANDS):
        raise InputError(
            f"Sentinel-2 L1C raster {info.describe()} has {info.count} bands; cloud masks need the "
            f"13 L1C bands {', '.join(S2_BANDS)} (L2A products lack B10)"
        )
    if block_size < 16:
        raise InputError(f"block size must be ≥ 16 px, got {block_size}")
    check_readable(info, "Sentinel-2 L1C")
    thr = DEFAULT_THRESHOLD[method] if threshold is None else float(threshold)

    k = 1
    if method == "s2cloudless":
        size_m = pixel_size_m(info)
        if resolution:
            k = max(1, round(float(resolution) / size_m))
            block_size = max(k, block_size // k * k)  # blocks and halos stay on the k grid
        avg, dil = s2cloudless_disks(size_m * k)
        detector = _s2cloudless_detector(thr, avg, dil)
        halo = (avg + dil + 1) * k
        prog.info(
            f"s2cloudless {S2CLOUDLESS_VERSION}: threshold {thr}, pixel {size_m * k:g} m"
            + (f" ({k}×{k} means)" if k > 1 else "")
            + f" → average over {avg} px, dilation {dil} px"
        )
    else:
        try:
            import torch  # noqa: F401 - the rule runs on torch pooling ops
        except ImportError as exc:
            raise DependencyError(
                "cloud mask method cafr_rule needs PyTorch (torch); see the README, 'Dependencies'"
            ) from exc
        halo = _CAFR_HALO
        prog.info(f"cafr_rule: cloud score ≥ {thr}")

    blocks = _blocks(info.height, info.width, block_size)
    passes = 2 if shadows else 1
    total = len(blocks) * passes
    done = 0
    counts = np.zeros(3, dtype=np.int64)  # clear, cloud, shadow

    def tick() -> None:
        nonlocal done
        if prog.is_canceled():
            raise Canceled("canceled; no output written")
        done += 1
        prog.update(done, total)

    profile = geotiff_profile(info, 1, "uint8", NODATA)
    profile["predictor"] = 1  # palette values: horizontal differencing gains nothing
    prog.update(0, total)
    with rasterio.open(info.path) as ds:
        levels = _scene_shadow_levels(ds, info, blocks, tick) if passes == 2 else None
        with atomic_output(out) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.set_band_description(1, "cloud mask: 0 clear, 1 cloud, 2 shadow, 255 nodata")
            dst.write_colormap(1, COLOURS)
            dst.update_tags(
                CLOUDRM_MASK_METHOD=method,
                CLOUDRM_MASK_THRESHOLD=str(thr),
                CLOUDRM_MASK_VALUES="0=clear,1=cloud,2=shadow,255=nodata",
                CLOUDRM_INPUT=info.path.name,
                CLOUDRM_VERSION=__version__,
            )
            for y, x, h, w in blocks:
                if prog.is_canceled():
                    raise Canceled("canceled; no output written")
                y0, x0 = max(0, y - halo), max(0, x - halo)
                y1, x1 = min(info.height, y + h + halo), min(info.width, x + w + halo)
                dn = read_window(ds, Window(x0, y0, x1 - x0, y1 - y0), what=f"Sentinel-2 L1C raster '{info.name}'")
                bad = invalid_mask(dn, info.nodata)
                if dn.dtype.kind == "f":
                    dn = np.nan_to_num(dn, nan=0.0)
                dn = np.where(bad[None], 0, dn)  # nodata reads as dark ground: never a cloud
                if method == "s2cloudless":
                    mask = _s2cloudless_block(detector, dn, ~bad, k)
                else:
                    mask = _rule_cloud(dn, thr).astype(np.uint8)
                if levels is not None:
                    mask[_rule_shadow(dn, levels, ~bad) & (mask == CLEAR)] = SHADOW
                mask[bad] = NODATA
                core = mask[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
                counts += np.bincount(core[core != NODATA].ravel(), minlength=3)[:3]
                dst.write(core[None], window=Window(x, y, w, h))
                tick()
    valid = max(int(counts.sum()), 1)
    if counts.sum() == 0:
        warnings.append(f"{info.describe()} has no valid pixel: the mask is all nodata")
        prog.warning(warnings[-1])
    return MaskResult(
        output=Path(out),
        method=method,
        blocks=len(blocks),
        cloud_fraction=float(counts[CLOUD]) / valid,
        shadow_fraction=float(counts[SHADOW]) / valid,
        seconds=time.time() - t0,
        warnings=warnings,
    )
