"""Tiled prediction over a time series: a temporal model (CA-MTCR) or a weight-free baseline.

Every tile window is read from every date (all on the target optical grid), so memory is
bounded by T × tile size² × bands plus the writer's strips, whatever the scene size. The
output takes the target's grid, dtype and nodata and is written atomically. The pipeline,
keep-clear and the output writer are the single-date path's (:mod:`.predictor`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..baselines import choice_index, least_cloudy, mosaicing, tile_choice
from ..choices import BASELINE_DEFAULTS, BASELINES
from ..data.bands import S2_BANDS
from ..data.cloudmask import cloud_mask
from ..data.normalize import apply_card, fill_invalid
from ..errors import InputError
from ..io.raster import invalid_mask, read_padded
from ..io.series import Series, load_series, open_series
from ..models import model_card
from ..progress import Progress, Quiet
from .device import describe_device, resolve_device
from .pipeline import PipelineStats, TileData
from .predictor import (
    Recorder,
    _predict,
    _result,
    auto_batch_size,
    check_sar,
    choose_precision,
    describe,
    keep_clear_for,
    keep_clear_plan,
    load_model_checkpoint,
    make_grid,
    model_forward,
    optical_fill,
    preflight,
    sar_fill,
    select_optical_bands,
    use_cuda_graphs,
)
from .tiling import Tile

if TYPE_CHECKING:
    from ..api import RunRequest, RunResult

METHODS = ("ca_mtcr", *BASELINES)


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


def baseline_tile(
    stack: np.ndarray, invalid: np.ndarray, method: str, reducer: str, per: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite of one tile. Returns (C, h, w) DN, (h, w) validity, (h, w) 'replaced' flags.

    ``stack`` (T, C, h, w) DN, ``invalid`` (T, h, w): no data. Cloud comes from the engine's S2
    cloud mask on DN / 10000.
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


@dataclass
class _SeriesRun:
    series: Series
    size: int
    stride: int
    grid_last: tuple[int, int]
    method: str
    reducer: str = "median"
    per: str = "pixel"
    in_bands: list[list[int]] = field(default_factory=list)
    norm: dict[str, Any] = field(default_factory=dict)
    opt_fill: list[float] = field(default_factory=list)
    sar_fill: list[float] = field(default_factory=list)
    keep: Any = None
    replaced: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _SeriesSource:
    """Reads one tile of every date (on the target grid); baselines composite it right here."""

    def __init__(self, run: _SeriesRun) -> None:
        self.run = run
        self.stack = contextlib.ExitStack()
        baseline = run.method in BASELINES
        self.opts, self.sars = self.stack.enter_context(open_series(run.series, Quiet(), sar=not baseline))

    def read(self, tile: Tile) -> TileData:
        r = self.run
        if r.keep is not None and not r.keep.needed(tile.y, tile.x, tile.h, tile.w):
            return TileData(tile, skip=True)
        if r.method in BASELINES:
            return self._baseline(tile)
        o_list, s_list, target_bad = [], [], None
        for k in range(len(r.series)):
            o = read_padded(self.opts[k], tile.y, tile.x, r.size, bands=r.in_bands[k])
            s = read_padded(self.sars[k], tile.y, tile.x, r.size)
            bad = invalid_mask(o, self.opts[k].nodata)
            o = fill_invalid(o, bad, r.opt_fill[k])
            s = fill_invalid(s, invalid_mask(s, self.sars[k].nodata), r.sar_fill[k])
            o, s = apply_card(o, s, r.norm)  # NaN stays NaN through clip and scaling
            o_list.append(np.nan_to_num(o, nan=0.0))
            s_list.append(np.nan_to_num(s, nan=0.0))
            target_bad = bad
        days = r.series.days()
        return TileData(tile, (np.stack(o_list), np.stack(s_list), days), ~target_bad)  # type: ignore[operator]

    def _baseline(self, tile: Tile) -> TileData:
        r = self.run
        reads = [read_padded(ds, tile.y, tile.x, r.size) for ds in self.opts]
        stack = np.stack([a.astype(np.float32) for a in reads])
        invalid = np.stack([invalid_mask(a, ds.nodata) for a, ds in zip(reads, self.opts, strict=True)])
        comp, valid, rep = baseline_tile(stack, invalid, r.method, r.reducer, r.per)
        # count each pixel once: only the part of the tile up to the next tile's origin
        ys = min(r.stride if tile.y != r.grid_last[0] else tile.h, tile.h)
        xs = min(r.stride if tile.x != r.grid_last[1] else tile.w, tile.w)
        with r.lock:
            r.replaced += int(rep[:ys, :xs].sum())
        return TileData(tile, (comp.astype(np.float32),), valid)

    def close(self) -> None:
        self.stack.close()


def _identity(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return inputs[0]


def run_series(req: RunRequest, progress: Progress) -> RunResult:
    """Run a time-series request (see :func:`engine.api.run`)."""
    from ..api import RunResult

    rec = Recorder(progress)
    t0 = time.time()
    method = req.model
    baseline = method in BASELINES
    if not baseline and not model_card(method).temporal:
        raise InputError(f"model {method} is single-date: give one optical and one SAR raster")
    series = load_series(req.optical, req.sar or None, rec, req.dates, req.optical_names, req.sar_names)
    if baseline and req.sar:
        rec.info(f"{method} does not use SAR: the SAR rasters are ignored")
    mask = None
    if req.mask:
        from ..io.raster import raster_info

        mask = raster_info(req.mask, role="mask")
    target = series.target
    card_norm = model_card(method).normalisation if not baseline else {"optical": {"clip": [0, 10000]}}
    out_count = target.count if baseline else len(model_card(method).output_bands or model_card(method).optical_bands)
    others = [(i.sar, "SAR") for i in series.items if i.sar is not None and not baseline]
    preflight(req, target, out_count, [i.optical for i in series.items], others + ([(mask, "mask")] if mask else []),
              float(card_norm["optical"]["clip"][1]))
    run_kw: dict[str, Any] = {}
    if baseline:
        if target.count != len(S2_BANDS):
            raise InputError(
                f"{method} needs Sentinel-2 L1C with {len(S2_BANDS)} bands ({', '.join(S2_BANDS)}) for its "
                f"cloud mask; target {target.describe()} has {target.count}"
            )
        grid = make_grid(target.height, target.width, req, BASELINE_DEFAULTS, 1, rec, method)
        ckpt_path, dev, precision = None, torch.device("cpu"), "fp32"
        in_bands = list(range(1, target.count + 1))
        out_bands = _band_names(series, target.count)
        scale, clip_hi = 1.0, _dtype_max(target.dtype)
        what = f"{method} ({req.reducer})" if method == "mosaicing" else f"{method} (per {req.per})"
        rec.info(f"{what} over {len(series)} date(s)")
        tags = {**_tags(series, method), "CLOUDRM_REDUCER": req.reducer if method == "mosaicing" else req.per}
        run = _SeriesRun(series, grid.size, grid.stride, (grid.ys[-1], grid.xs[-1]), method, req.reducer, req.per)
        same_bands = True
    else:
        card = model_card(method)
        if not series.has_sar:
            raise InputError(f"method {method} needs one SAR raster (VV, VH in dB) per optical raster; none given")
        ckpt_path, ckpt = load_model_checkpoint(method, req.checkpoint)
        want_opt = list(ckpt.bands["optical"])
        run_bands = []  # per date: which bands of its raster feed the model, in the model's order
        for it in series.items:
            run_bands.append(select_optical_bands(it.optical, want_opt, method, ckpt_path.name))
            check_sar(it.sar, list(ckpt.bands["sar"]), method)  # type: ignore[arg-type]
        dev = resolve_device(req.device)
        grid = make_grid(target.height, target.width, req, card.defaults, card.size_multiple, rec, f"model {method}")
        norm = ckpt.normalisation
        scale, clip_hi = float(norm["optical"]["scale"]), float(norm["optical"]["clip"][1])
        precision = choose_precision(req.precision, dev, card, rec)
        in_bands = run_bands[-1]
        out_bands = list(card.output_bands or want_opt)
        same_bands = out_bands == want_opt
        tags = {**_tags(series, method), "CLOUDRM_MODEL": method, "CLOUDRM_CHECKPOINT": ckpt_path.name,
                "CLOUDRM_TRAINED_ON": ckpt.trained_on}
        run = _SeriesRun(series, grid.size, grid.stride, (grid.ys[-1], grid.xs[-1]), method,
                         in_bands=run_bands, norm=dict(norm))
        # card `nan_fill`: `zero` = 0 after scaling (CA-MTCR, UnCRtainTS), else the file mean before it
        zero_fill = norm.get("nan_fill") == "zero"
        with open_series(series, Quiet(), sar=True) as (opts, sars):
            for ds, sds, it in zip(opts, sars, series.items, strict=True):
                fill, _ = optical_fill(ds, it.optical, rec, zero_fill)
                run.opt_fill.append(float("nan") if zero_fill else fill)
                m = sar_fill(sds, it.sar, norm, rec)  # type: ignore[arg-type]
                run.sar_fill.append(np.nan if zero_fill else m)
        run_kw["ckpt"] = ckpt
    with open_series(series, rec, sar=not baseline):
        pass  # warns once about dates on other grids; the readers open their own quietly
    keep_on = keep_clear_plan(req, target, same_bands, rec)
    with keep_clear_for(req, target, in_bands, keep_on, rec, share=0.15) as (keep, stage):
        run.keep = keep
        if keep_on:
            tags["CLOUDRM_KEEP_CLEAR"] = describe(req.mask, req.mask_method, req.mask_buffer_m, req.feather_px)
        net: torch.nn.Module
        forward: Callable[[tuple[torch.Tensor, ...]], torch.Tensor]
        if baseline:
            net = torch.nn.Identity()
            forward = _identity
            batch = req.batch_size or 1
        else:
            from ..io.checkpoint import build_model

            net = build_model(run_kw["ckpt"]).to(dev).eval()
            forward = model_forward(net, dev, precision)
            t = len(series)
            example = (np.zeros((t, len(in_bands), grid.size, grid.size), np.float32),
                       np.zeros((t, 2, grid.size, grid.size), np.float32), series.days())
            batch = req.batch_size or auto_batch_size(forward, example, dev, len(grid), rec)
            if use_cuda_graphs(dev, card):
                forward = model_forward(net, dev, precision, graphs=True, note=rec.info)
            rec.info(
                f"{method} on {describe_device(dev)}, {precision}, batch {batch}: {len(series)} dates, days "
                f"{series.days().astype(int).tolist()}; checkpoint {ckpt_path.name} "  # type: ignore[union-attr]
                f"({run_kw['ckpt'].trained_on[:80]})"
            )
        stats: PipelineStats = _predict(grid, lambda: _SeriesSource(run), forward, dev, batch, stage, net, req,
                                        target, out_bands, tags, scale, clip_hi, keep)
    extra: dict[str, Any] = {"dates": series.dates(), "date_sources": [i.date_source for i in series.items]}
    if baseline:
        frac = run.replaced / float(target.height * target.width)
        rec.info(f"{100 * frac:.1f}% of the target's pixels were cloudy and filled from other dates")
        extra["replaced_fraction"] = frac
    return _result(RunResult, req, ckpt_path, "cpu (numpy)" if baseline else dev, grid, stats, precision, keep,
                   rec, t0, target.path, **extra)


def _dtype_max(dtype: str) -> float:
    d = np.dtype(dtype)
    return float(np.iinfo(d).max) if d.kind in "iu" else float("inf")

