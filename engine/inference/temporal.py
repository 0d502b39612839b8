"""Tiled prediction over a time series: a temporal model (CA-MTCR) or a weight-free baseline.

Every tile window is read from every date (all on the target optical grid), so memory is
bounded by T × tile size² × bands plus the blender's strip, whatever the scene size. The
output takes the target's grid, dtype and nodata and is written atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch

from ..baselines import choice_index, least_cloudy, mosaicing, tile_choice
from ..data.bands import S2_BANDS
from ..data.cloudmask import cloud_mask
from ..data.normalize import apply_card, fill_invalid
from ..errors import Canceled, CheckpointError, InputError
from ..io.checkpoint import build_model, load_checkpoint
from ..io.raster import file_mean, invalid_mask, read_padded
from ..io.series import Series, load_series, open_series
from ..models import model_card
from ..progress import NullProgress, Progress
from .device import describe_device, resolve_device
from .predictor import _check_sar, _Recorder, blended_geotiff, default_checkpoint, select_optical_bands
from .tiling import TileGrid

METHODS = ("ca_mtcr", "least_cloudy", "mosaicing")
BASELINE_DEFAULTS = {"tile_size": 256, "overlap": 16}
"""Baselines: T × 13 × 256² float64 per tile stays small; a little overlap keeps the cloud mask's 7 px context."""


@dataclass
class SeriesResult:
    """What :func:`predict_series` did."""

    output: Path
    method: str
    target: Path
    dates: list[str | None]
    date_sources: list[str]
    checkpoint: Path | None
    device: str
    tiles: int
    tile_size: int
    overlap: int
    seconds: float
    replaced_fraction: float | None = None
    """Baselines: share of valid target pixels that are cloudy in the target and got a value
    from another date (counted once per pixel)."""
    warnings: list[str] = field(default_factory=list)


def _read_dn(ds, tile, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, size, size) float32 DN and (size, size) invalid mask of one date's tile.

    ``ds.nodata`` is the file's own nodata, or NaN for a resampled (WarpedVRT) date.
    """
    a = read_padded(ds, tile.y, tile.x, size)
    return a.astype(np.float32), invalid_mask(a, ds.nodata)


def _baseline_tile(
    stack: np.ndarray, invalid: np.ndarray, method: str, reducer: str, per: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite of one tile. Returns (C, h, w) DN, (h, w) validity, (h, w) 'replaced' flags.

    ``invalid`` (T, h, w): no data. Cloud comes from the engine's S2 cloud mask on DN / 10000.
    """
    refl = np.nan_to_num(stack / 10000.0, nan=0.0).astype(np.float32)  # the mask wants unclipped reflectance
    cloud = np.asarray(cloud_mask(refl))  # (T, h, w)
    # no data is worse than cloud: a cloudy value beats none at all
    score = cloud.astype(np.float64) + 2.0 * invalid
    unusable = cloud | invalid
    filled = np.nan_to_num(stack, nan=0.0)
    if method == "least_cloudy":
        out = least_cloudy(filled, score, per=per)
        if per == "pixel":
            valid = ~np.take_along_axis(invalid, choice_index(score)[None], axis=0)[0]
        else:
            valid = ~invalid[tile_choice(score)]
    else:
        out = mosaicing(filled, unusable, reducer=reducer)
        valid = (~unusable).any(axis=0) | ~invalid[-1]
    replaced = unusable[-1] & ~invalid[-1] & (~unusable[:-1]).any(axis=0)
    return out, valid, replaced


def predict_series(
    optical: Sequence[str | os.PathLike[str]],
    sar: Sequence[str | os.PathLike[str]] | None,
    out: str | os.PathLike[str],
    method: str = "ca_mtcr",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    overlap: int | None = None,
    dates: Sequence[str] | None = None,
    progress: Progress | None = None,
    reducer: str = "median",
    per: str = "pixel",
    optical_names: Sequence[str | None] | None = None,
    sar_names: Sequence[str | None] | None = None,
) -> SeriesResult:
    """Cloud-free image of the latest acquisition of a series.

    Args:
        optical: optical GeoTIFFs (S2 L1C, 13 bands, DN), any order; sorted by date.
        sar: SAR GeoTIFFs (VV, VH in dB), one per optical raster; needed by ``ca_mtcr`` only.
        out: output GeoTIFF on the target (latest optical) grid, its dtype and nodata.
        method: ``ca_mtcr`` (temporal network, needs SAR and a checkpoint), ``least_cloudy`` or
            ``mosaicing`` (weight-free baselines, see :mod:`engine.baselines`).
        checkpoint: ``ca_mtcr`` weights; the card's bundled checkpoint when None.
        device: ``auto``, ``cpu`` or ``cuda:N`` (``ca_mtcr`` only; baselines run on numpy).
        tile_size, overlap: pixels; model card defaults (baselines: 256/16) when None.
        dates: ISO dates, one per optical raster in the order given; else metadata/file names.
        progress: tile counts, log lines (which date source was used), warnings, cancel.
        reducer: ``median`` or ``mean`` (``mosaicing``).
        per: ``pixel`` or ``tile`` (``least_cloudy``).
        optical_names, sar_names: labels for messages (QGIS layer names).

    Raises:
        InputError, CheckpointError: messages name the rasters; nothing is written.
        Canceled: the partial output is removed.
    """
    rec = _Recorder(progress or NullProgress())
    t0 = time.time()
    if method not in METHODS:
        raise InputError(f"method {method!r} not known: use one of {', '.join(METHODS)}")
    if reducer not in ("mean", "median"):
        raise InputError(f"reducer must be 'mean' or 'median', got {reducer!r}")
    if per not in ("pixel", "tile"):
        raise InputError(f"per must be 'pixel' or 'tile', got {per!r}")
    baseline = method != "ca_mtcr"
    series = load_series(optical, sar if not baseline or sar else None, rec, dates, optical_names, sar_names)
    for it in series.items:
        for info in (it.optical, it.sar):
            if info is not None and Path(out).resolve() == info.path.resolve():
                raise InputError(f"output {out} is the input raster {info.describe()}: choose another file")
    target = series.target
    if baseline:
        if target.count != len(S2_BANDS):
            raise InputError(
                f"{method} needs Sentinel-2 L1C with {len(S2_BANDS)} bands ({', '.join(S2_BANDS)}) for its "
                f"cloud mask; target {target.describe()} has {target.count}"
            )
        if sar:
            rec.info(f"{method} does not use SAR: the SAR rasters are ignored")
        return _run_baseline(series, out, method, tile_size, overlap, reducer, per, rec, t0)
    return _run_model(series, out, checkpoint, device, tile_size, overlap, rec, t0)


def _grid(height: int, width: int, tile_size: int, overlap: int, multiple: int, rec: _Recorder, what: str) -> TileGrid:
    try:
        grid = TileGrid(height, width, tile_size, overlap, multiple)
    except ValueError as exc:
        raise InputError(f"tiling: {exc}") from exc
    if grid.size != tile_size or grid.overlap != overlap:
        rec.info(f"tile size {tile_size}/overlap {overlap} adjusted to {grid.size}/{grid.overlap} ({what})")
    return grid


def _tags(series: Series, method: str) -> dict[str, str]:
    return {
        "CLOUDRM_METHOD": method,
        "CLOUDRM_TARGET": series.target.path.name,
        "CLOUDRM_SERIES": ";".join(i.optical.path.name for i in series.items),
        "CLOUDRM_DATES": ";".join(d or "" for d in series.dates()),
    }


def _band_names(series: Series, n: int) -> list[str | None]:
    desc = list(series.target.descriptions)
    if n == len(S2_BANDS) and not any(desc):
        return list(S2_BANDS)
    return (desc + [None] * n)[:n]


def _run_baseline(
    series: Series, out, method, tile_size, overlap, reducer, per, rec: _Recorder, t0: float
) -> SeriesResult:
    target = series.target
    tile_size = int(tile_size or BASELINE_DEFAULTS["tile_size"])
    overlap = int(BASELINE_DEFAULTS["overlap"] if overlap is None else overlap)
    grid = _grid(target.height, target.width, tile_size, overlap, 1, rec, method)
    dtype = np.dtype(target.dtype)
    clip_hi = float(np.iinfo(dtype).max) if dtype.kind in "iu" else float("inf")
    n_bands = target.count
    what = f"{method} ({reducer})" if method == "mosaicing" else f"{method} (per {per})"
    rec.info(f"{what} over {len(series)} date(s): {grid.describe()}")
    replaced = 0
    tags = {**_tags(series, method), "CLOUDRM_REDUCER": reducer if method == "mosaicing" else per}
    with open_series(series, rec, sar=False) as (opts, _):
        with blended_geotiff(out, target, grid, _band_names(series, n_bands), tags, 1.0, clip_hi) as blender:
            tiles = list(grid)
            rec.update(0, len(tiles))
            for done, t in enumerate(tiles, start=1):
                if rec.is_canceled():
                    raise Canceled("canceled; no output written")
                reads = [_read_dn(ds, t, grid.size) for ds in opts]
                stack = np.stack([r[0] for r in reads])
                invalid = np.stack([r[1] for r in reads])
                comp, valid, rep = _baseline_tile(stack, invalid, method, reducer, per)
                # count each pixel once: only the part of the tile up to the next tile's origin
                ys = min(grid.stride if t.y != grid.ys[-1] else t.h, t.h)
                xs = min(grid.stride if t.x != grid.xs[-1] else t.w, t.w)
                replaced += int(rep[:ys, :xs].sum())
                blender.add(t, np.concatenate([comp, valid[None].astype(np.float64)]), grid.weight(t))
                rec.update(done, len(tiles))
    frac = replaced / float(target.height * target.width)
    rec.info(f"{100 * frac:.1f}% of the target's pixels were cloudy and filled from other dates")
    return SeriesResult(
        output=Path(out), method=method, target=target.path, dates=series.dates(),
        date_sources=[i.date_source for i in series.items], checkpoint=None, device="cpu (numpy)",
        tiles=len(grid), tile_size=grid.size, overlap=grid.overlap, seconds=time.time() - t0,
        replaced_fraction=frac, warnings=rec.warnings,
    )


def _run_model(series: Series, out, checkpoint, device, tile_size, overlap, rec: _Recorder, t0: float) -> SeriesResult:
    name = "ca_mtcr"
    card = model_card(name)
    if not card.temporal:
        raise CheckpointError(f"model {name!r} is not a temporal model (its card lacks `temporal: true`)")
    if not series.has_sar:
        raise InputError(f"method {name} needs one SAR raster (VV, VH in dB) per optical raster; none given")
    ckpt_path = Path(checkpoint) if checkpoint else default_checkpoint(card)
    ckpt = load_checkpoint(ckpt_path, model=name)
    if ckpt.model != name:
        raise CheckpointError(f"checkpoint {ckpt_path} holds model {ckpt.model!r}, not {name!r}")
    want_opt = list(ckpt.bands["optical"])
    in_bands = []  # per date: which bands of its raster feed the model, in the model's order
    for it in series.items:
        in_bands.append(select_optical_bands(it.optical, want_opt, name, ckpt_path.name))
        _check_sar(it.sar, list(ckpt.bands["sar"]), name)  # type: ignore[arg-type]
    dev = resolve_device(device)
    tile_size = int(tile_size or card.defaults.get("tile_size", 256))
    overlap = int(card.defaults.get("overlap", 32) if overlap is None else overlap)
    target = series.target
    grid = _grid(target.height, target.width, tile_size, overlap, card.size_multiple, rec,
                 f"model {name} needs multiples of {card.size_multiple}")
    norm = ckpt.normalisation
    scale = float(norm["optical"]["scale"])
    clip_hi = float(norm["optical"]["clip"][1])
    days = torch.from_numpy(series.days())[None]  # (1, T)
    with open_series(series, rec, sar=True) as (opts, sars):
        # card `nan_fill`: `zero` = 0 after scaling (CA-MTCR, UnCRtainTS), else the file mean before it
        zero_fill = norm.get("nan_fill") == "zero"
        opt_fill, sar_fill = [], []
        for ds, it in zip(opts, series.items, strict=True):
            needs_mean = not zero_fill and (ds.nodata is not None or ds.dtypes[0].startswith("float"))
            opt_fill.append(file_mean(ds) if needs_mean else (np.nan if zero_fill else 0.0))
            with rasterio.open(it.sar.path) as raw:  # type: ignore[union-attr]
                m = file_mean(raw)
            if m > 1.0:
                rec.warning(f"SAR raster '{it.sar.name}' has mean {m:.2f}: expected σ0 in dB (negative values)")  # type: ignore[union-attr]
            sar_fill.append(np.nan if zero_fill else m)
        net = build_model(ckpt).to(dev).eval()
        rec.info(
            f"{name} on {describe_device(dev)}: {len(series)} dates, days {series.days().astype(int).tolist()}, "
            f"{grid.describe()}; checkpoint {ckpt_path.name} ({ckpt.trained_on[:80]})"
        )
        tags = {**_tags(series, name), "CLOUDRM_MODEL": name, "CLOUDRM_CHECKPOINT": ckpt_path.name,
                "CLOUDRM_TRAINED_ON": ckpt.trained_on}
        bands = list(card.output_bands or want_opt)
        with blended_geotiff(out, target, grid, bands, tags, scale, clip_hi) as blender:
            tiles = list(grid)
            rec.update(0, len(tiles))
            for done, t in enumerate(tiles, start=1):
                if rec.is_canceled():
                    raise Canceled("canceled; no output written")
                o_list, s_list, target_bad = [], [], None
                for k in range(len(series)):
                    o = read_padded(opts[k], t.y, t.x, grid.size, bands=in_bands[k])
                    s = read_padded(sars[k], t.y, t.x, grid.size)
                    bad = invalid_mask(o, opts[k].nodata)
                    o = fill_invalid(o, bad, opt_fill[k])
                    s = fill_invalid(s, invalid_mask(s, sars[k].nodata), sar_fill[k])
                    o, s = apply_card(o, s, norm)  # NaN stays NaN through clip and scaling
                    o_list.append(np.nan_to_num(o, nan=0.0))
                    s_list.append(np.nan_to_num(s, nan=0.0))
                    target_bad = bad
                with torch.inference_mode():
                    pred = net(
                        torch.from_numpy(np.stack(o_list))[None].to(dev),
                        torch.from_numpy(np.stack(s_list))[None].to(dev),
                        days.to(dev),
                    )
                p = pred.float().cpu().numpy()[0]
                v = (~target_bad).astype(np.float32)[None]  # type: ignore[operator]
                blender.add(t, np.concatenate([p, v]), grid.weight(t))
                rec.update(done, len(tiles))
    return SeriesResult(
        output=Path(out), method=name, target=target.path, dates=series.dates(),
        date_sources=[i.date_source for i in series.items], checkpoint=ckpt_path, device=describe_device(dev),
        tiles=len(grid), tile_size=grid.size, overlap=grid.overlap, seconds=time.time() - t0,
        warnings=rec.warnings,
    )
