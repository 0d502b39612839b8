"""Full-scene, tiled, streamed prediction from GeoTIFF inputs to a GeoTIFF on the optical grid.

:func:`run_scene` runs a single-date :class:`~engine.api.RunRequest`; the time-series path
(:mod:`.temporal`) shares everything here but its tile reader: the checks before the model
loads, device, precision and batch choice, the pipeline (:mod:`.pipeline`), the output
writer with keep-clear (:func:`blended_geotiff`) and the result.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import torch

from .. import __version__
from ..choices import checkpoint_dir
from ..data.bands import S2_BANDS
from ..data.normalize import apply_card, fill_invalid
from ..errors import CheckpointError, InputError
from ..io.align import SarTiles, check_alignment
from ..io.checkpoint import Checkpoint, build_model, load_checkpoint
from ..io.checks import (
    ValueStats,
    check_destination,
    check_not_empty,
    check_optical_dtype,
    estimate_output_bytes,
)
from ..io.raster import (
    RasterInfo,
    atomic_output,
    check_readable,
    geotiff_profile,
    invalid_mask,
    raster_info,
    read_padded,
    scan_statistics,
    thread_env,
)
from ..models import ModelCard, model_card
from ..progress import Progress, Span
from .composite import FILLED_DESCRIPTION, KeepClear, buffer_pixels, describe, mask_for
from .cuda_graph import GraphedForward
from .device import autocast_dtype, describe_device, resolve_device
from .pipeline import PipelineStats, StageProgress, StripWriter, TileData, run_pipeline
from .tiling import StreamingBlender, Tile, TileGrid

if TYPE_CHECKING:
    from ..api import RunRequest, RunResult

BLOCK = 256
"""GeoTIFF block edge of every output (and the strip height the writer completes)."""


def default_checkpoint(card: ModelCard) -> Path:
    """The bundled checkpoint of a model (``$CLOUDRM_CHECKPOINT_DIR`` overrides the folder)."""
    if not card.default_checkpoint:
        raise CheckpointError(
            f"model {card.name!r} has no bundled checkpoint: give one (--checkpoint / CHECKPOINT); "
            "`cloudrm train` makes one"
        )
    path = checkpoint_dir() / card.default_checkpoint
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint given and the bundled checkpoint of {card.name!r} is missing: {path}"
        )
    return path


class Recorder:
    """Forwards to the caller's Progress and keeps warnings and log lines for the result."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def update(self, done: float, total: int) -> None:
        self.inner.update(done, total)

    def is_canceled(self) -> bool:
        return self.inner.is_canceled()

    def info(self, message: str) -> None:
        self.infos.append(message)
        self.inner.info(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self.inner.warning(message)


def select_optical_bands(opt: RasterInfo, want: list[str], model: str, ckpt_name: str) -> list[int]:
    """1-based band indexes of ``opt`` that feed the model, in the model's order.

    By band description when the raster names its bands; else the raster is taken as holding
    exactly the model's bands (same count) or as a full Sentinel-2 L1C stack (13 bands, file
    order B1…B12), from which the model's bands are picked by name (e.g. B4, B3, B2 for RGB
    models).

    Raises:
        InputError: naming the raster, what it has and what the model expects.
    """
    names = [d.strip().upper() if d else "" for d in opt.descriptions]
    if all(w.upper() in names for w in want):
        return [names.index(w.upper()) + 1 for w in want]
    if opt.count == len(want):
        return list(range(1, len(want) + 1))
    if opt.count == len(S2_BANDS) and all(w in S2_BANDS for w in want):
        return [S2_BANDS.index(w) + 1 for w in want]
    s2 = (
        " (or a 13-band Sentinel-2 L1C raster)"
        if len(want) < len(S2_BANDS) and all(w in S2_BANDS for w in want)
        else ""
    )
    raise InputError(
        f"optical raster {opt.describe()} has {opt.count} bands; model {model} ({ckpt_name}) "
        f"expects {len(want)} bands: {', '.join(want)}{s2}"
    )


def check_sar(sar: RasterInfo, want: list[str], model: str) -> None:
    if sar.count != len(want):
        raise InputError(
            f"SAR raster {sar.describe()} has {sar.count} bands; model {model} expects "
            f"{len(want)}: {', '.join(want)} (σ0 in dB)"
        )


def preflight(
    req: RunRequest,
    like: RasterInfo,
    out_bands: int,
    optical: Sequence[RasterInfo],
    others: Sequence[tuple[RasterInfo, str]],
    clip_hi: float,
) -> None:
    """The checks that run before a checkpoint or model loads (cheap: no pixel pass).

    Outputs: GeoTIFF names, writable folders, enough free space, none of them an input.
    Inputs: optical dtypes that hold the model's DN range, every raster readable (block
    tables intact, sample blocks decode).

    Raises:
        InputError: one line naming the file and the problem.
    """
    inputs = [*optical, *(info for info, _ in others)]
    size = estimate_output_bytes(like.width, like.height, out_bands, like.dtype)
    mask_size = estimate_output_bytes(like.width, like.height, 1, "uint8") if req.filled_mask else 0
    check_destination(req.output, size + mask_size, inputs)
    if req.filled_mask:
        if Path(req.filled_mask).resolve() == Path(req.output).resolve():
            raise InputError(f"the filled-pixels mask {req.filled_mask} is the output itself: choose another file")
        check_destination(req.filled_mask, mask_size, inputs)
    for info in optical:
        check_optical_dtype(info, clip_hi, "optical")
    for info in optical:
        check_readable(info, "optical")
    for info, role in others:
        check_readable(info, role)


def optical_fill(ds: Any, info: RasterInfo, rec: Recorder, zero_fill: bool = False) -> tuple[float, ValueStats | None]:
    """(fill value, statistics) of an optical raster: its file mean from one statistics pass when
    pixels can be missing (nodata, float), after refusing a raster without any valid pixel;
    else (0, None) and the caller counts values tile by tile."""
    if info.nodata is None and not info.dtype.startswith("float"):
        return 0.0, None  # nothing can be missing
    stats = scan_statistics(ds, what=f"optical raster '{info.name}'", role="optical",
                            clip=(0.0, 10000.0))
    check_not_empty(stats, info, "optical")
    for line in stats.warnings(info.name):
        rec.warning(line)
    return (float("nan") if zero_fill else stats.mean), stats


def sar_fill(ds: Any, info: RasterInfo, norm: Mapping[str, Any], rec: Recorder) -> float:
    """The SAR fill value (file mean, dB); a raster without any value gets the middle of the
    card's clip ranges, with a warning."""
    stats = scan_statistics(ds, what=f"SAR raster '{info.name}'", role="SAR")
    ranges = norm["sar"]["clip"]
    middle = float(np.mean([(lo + hi) / 2 for lo, hi in ranges]))
    fill = stats.mean if stats.valid else middle
    empty = check_not_empty(stats, info, "SAR", fill=round(fill, 2))
    if empty:
        rec.warning(empty)
    for line in stats.warnings(info.name):
        rec.warning(line)
    return fill


def load_model_checkpoint(name: str, checkpoint: str | None) -> tuple[Path, Checkpoint]:
    """The checkpoint file of a run (the bundled one when None) and its contents, for model ``name``."""
    card = model_card(name)
    path = Path(checkpoint) if checkpoint else default_checkpoint(card)
    ckpt = load_checkpoint(path, model=name)
    if ckpt.model != name:
        raise CheckpointError(f"checkpoint {path} holds model {ckpt.model!r}, not {name!r}")
    return path, ckpt


def make_grid(height: int, width: int, req: RunRequest, defaults: Mapping[str, Any], multiple: int,
              rec: Recorder, what: str) -> TileGrid:
    """The tile grid of a run: the request's tile size and overlap, or the defaults (logged)."""
    tile_size = int(req.tile_size or defaults.get("tile_size", 256))
    overlap = int(req.overlap or defaults.get("overlap", 32))
    if not req.overlap and overlap >= tile_size:
        overlap = tile_size // 4  # the default overlap is meant for the default tile size
    try:
        grid = TileGrid(height, width, tile_size, overlap, multiple)
    except ValueError as exc:
        raise InputError(f"tiling: {exc}") from exc
    source = "requested" if req.tile_size or req.overlap else f"{what} defaults"
    rec.info(f"tiles: {grid.size} px, overlap {grid.overlap} px ({source}); {grid.describe()}")
    if grid.size != tile_size or grid.overlap != overlap:
        rec.info(
            f"tile size {tile_size}/overlap {overlap} adjusted to {grid.size}/{grid.overlap} "
            f"({what} needs multiples of {multiple})"
        )
    return grid


# ---- device, precision, batch ----------------------------------------------------------------


def choose_precision(requested: str, device: torch.device, card: ModelCard | None, rec: Recorder) -> str:
    """``fp32``, ``bf16`` or ``fp16``: mixed precision only on CUDA; ``auto`` takes the card's choice."""
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            rec.info(f"precision {requested} is for CUDA devices: float32 on {device}")
        return "fp32"
    if requested == "auto":
        choice = str((card.defaults if card else {}).get("cuda_precision", "fp32"))
        return choice
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        rec.info(f"{describe_device(device)} has no bfloat16: float16 instead")
        return "fp16"
    return requested


def auto_batch_size(
    forward: Callable[[tuple[torch.Tensor, ...]], torch.Tensor],
    example: tuple[np.ndarray, ...],
    device: torch.device,
    tiles: int,
    rec: Recorder,
    cap: int = 32,
) -> int:
    """Tiles per forward pass: 1 on the CPU; on CUDA as many as ~70 % of the free memory holds,
    measured with one tile (at most ``cap`` and the number of tiles)."""
    if device.type != "cuda":
        return 1
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        forward(tuple(torch.from_numpy(a[None]).to(device) for a in example))
    torch.cuda.synchronize(device)
    per_tile = max(torch.cuda.max_memory_allocated(device) - base, 1)
    free, _ = torch.cuda.mem_get_info(device)
    batch = int(max(1, min(cap, tiles, (0.7 * free) // per_tile)))
    rec.info(
        f"batch size {batch} (automatic: {free / 2**30:.1f} GiB free on {device}, "
        f"about {per_tile / 2**30:.2f} GiB per tile)"
    )
    return batch


def model_forward(
    net: torch.nn.Module, device: torch.device, precision: str, graphs: bool = False,
    note: Callable[[str], None] | None = None,
) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    """The batched call of ``net`` with the run's precision (autocast on CUDA for bf16/fp16).

    With ``graphs`` on CUDA, full batches are replayed from a CUDA graph (:mod:`.cuda_graph`;
    ``note`` gets its log lines). Autocast's cache of cast weights is off then: a graph must
    not keep pointers to a cache that is freed when the autocast region ends.
    """
    dtype = autocast_dtype(precision)
    graphed = graphs and device.type == "cuda"

    def forward(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if dtype is not None and device.type == "cuda":
            with torch.autocast("cuda", dtype=dtype, cache_enabled=not graphed):
                return net(*inputs)
        return net(*inputs)

    return GraphedForward(forward, note) if graphed else forward


def use_cuda_graphs(device: torch.device, card: ModelCard | None) -> bool:
    """CUDA graphs for this run: on CUDA where the model card's ``cuda_graphs`` says so (set
    where ``scripts/bench``'s ``graph_check`` measured them faster and equal)."""
    return device.type == "cuda" and bool((card.defaults if card else {}).get("cuda_graphs", False))


# ---- output -------------------------------------------------------------------------------


def _output_converter(like: RasterInfo, scale: float, clip_hi: float, bands: int) -> Callable[[np.ndarray], np.ndarray]:
    """Function (C+1, h, w) float64 [prediction…, validity] → (C, h, w) in the output dtype.

    The output keeps the optical input's dtype and DN scaling; pixels invalid in the input
    become nodata, and a valid result that would read as nodata is nudged by one DN (as
    CNES decloud does), so no real pixel disappears.
    """
    dtype = np.dtype(like.dtype)
    nodata = like.nodata
    integer = dtype.kind in "iu"

    def convert(block: np.ndarray) -> np.ndarray:
        dn = block[:bands] * scale
        # in place, as maximum/minimum: the same values as np.clip (NaN stays NaN) in one buffer
        np.maximum(dn, 0.0, out=dn)
        np.minimum(dn, clip_hi, out=dn)
        invalid = block[bands] < 0.5
        if integer:
            np.rint(dn, out=dn)
            if nodata is not None and not math.isnan(nodata):
                hit = (dn == nodata) & ~invalid
                dn[hit] = nodata + 1 if nodata + 1 <= clip_hi else nodata - 1
        if invalid.any():
            fill = nodata if nodata is not None else (np.nan if not integer else 0)
            dn[:, invalid] = fill
        return dn.astype(dtype)

    return convert


@dataclass
class OutputStats:
    """Counts the writer gathered."""

    peak_pending_bytes: int = 0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def blended_geotiff(
    out: str | os.PathLike[str],
    like: RasterInfo,
    grid: TileGrid,
    bands: Sequence[str | None],
    tags: Mapping[str, str],
    scale: float,
    clip_hi: float,
    keep: KeepClear | None = None,
    filled_mask: str | os.PathLike[str] | None = None,
) -> Iterator[StreamingBlender]:
    """An atomic GeoTIFF on ``like``'s grid (dtype, nodata) fed through a :class:`StreamingBlender`.

    Tiles added to the yielded blender are (len(bands) + 1, h, w) float arrays: the values in
    the model's [0, 1] scale (``scale`` turns them into DN), then a validity channel (see
    :func:`_output_converter`). With ``keep``, every finished block is composited with the
    input (keep-clear); ``filled_mask`` then also gets the uint8 filled-pixels flags. Blocks
    are written as whole full-width strips as soon as they are complete. An exception in the
    body (a cancel) leaves neither file.
    """
    convert = _output_converter(like, scale, clip_hi, len(bands))
    profile = {**geotiff_profile(like, len(bands), like.dtype, like.nodata), "num_threads": "ALL_CPUS"}
    mask_profile = {**geotiff_profile(like, 1, "uint8", None), "predictor": 2, "num_threads": "ALL_CPUS"}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_output(out))
        tmp_mask = stack.enter_context(atomic_output(filled_mask)) if filled_mask else None
        dst = stack.enter_context(rasterio.open(tmp, "w", **profile))
        mdst = stack.enter_context(rasterio.open(tmp_mask, "w", **mask_profile)) if tmp_mask else None
        for i, name in enumerate(bands, start=1):
            if name:
                dst.set_band_description(i, name)
        dst.update_tags(**tags, CLOUDRM_VERSION=__version__)
        if mdst is not None:
            mdst.set_band_description(1, FILLED_DESCRIPTION)
            mdst.update_tags(CLOUDRM_FILLED_MASK_OF=Path(out).name, CLOUDRM_VERSION=__version__)

        def write_out(y0: int, y1: int, a: np.ndarray) -> None:
            dst.write(a, window=((y0, y1), (0, like.width)))

        def write_mask(y0: int, y1: int, a: np.ndarray) -> None:
            mdst.write(a, window=((y0, y1), (0, like.width)))  # type: ignore[union-attr]

        strips = StripWriter(like.height, like.width, BLOCK, write_out)
        mask_strips = StripWriter(like.height, like.width, BLOCK, write_mask) if mdst is not None else None

        def emit(y: int, x: int, block: np.ndarray) -> None:
            dn = convert(block)
            if keep is not None:
                dn, filled = keep.composite(y, x, dn)
                if mask_strips is not None:
                    mask_strips.add(y, x, filled[None])
            strips.add(y, x, dn)

        blender = StreamingBlender(grid, len(bands) + 1, emit)
        yield blender
        if not (blender.done and strips.done):  # pragma: no cover - a bug, not a user error
            raise RuntimeError("tiling left pixels unwritten")


def readers_for(device: torch.device) -> int:
    """Reader threads: one on the CPU (the model needs the cores), up to 4 feeding a GPU."""
    if device.type != "cuda":
        return 1
    return max(1, min(4, (os.cpu_count() or 2) - 1))


# ---- single date ------------------------------------------------------------------------------


class _SceneSource:
    """Reads one tile of optical and SAR (on the tile's grid), fills and normalises them."""

    def __init__(self, run: _SceneRun) -> None:
        self.run = run
        self.opt = rasterio.open(run.opt.path)
        self.sar = SarTiles(run.sar, run.opt, None, run.card.sar_resampling, resample=run.sar_resample)

    def read(self, tile: Tile) -> TileData:
        r = self.run
        if r.keep is not None and not r.keep.needed(tile.y, tile.x, tile.h, tile.w):
            return TileData(tile, skip=True)
        o = read_padded(self.opt, tile.y, tile.x, r.size, bands=r.in_bands, what=f"optical raster '{r.opt.name}'")
        s = self.sar.read(tile.y, tile.x, r.size)
        bad = invalid_mask(o, r.opt.nodata)
        if r.stats is not None:  # no statistics pass was needed: count values as they come
            h, w = r.owned(tile)
            block = ValueStats(role="optical", dtype=r.opt.dtype, nodata=r.opt.nodata, clip=(0.0, 10000.0))
            block.add(o[:, :h, :w], ~bad[:h, :w])
            with r.lock:
                r.stats.merge(block)
        o = fill_invalid(o, bad, r.opt_fill)
        s = fill_invalid(s, invalid_mask(s, r.sar.nodata), r.sar_fill)
        o, s = apply_card(o, s, r.norm)
        return TileData(tile, (o, s), ~bad)

    def close(self) -> None:
        self.opt.close()
        self.sar.close()


@dataclass
class _SceneRun:
    opt: RasterInfo
    sar: RasterInfo
    card: ModelCard
    in_bands: list[int]
    norm: Mapping[str, Any]
    size: int
    sar_resample: bool
    opt_fill: float = 0.0
    sar_fill: float = 0.0
    keep: KeepClear | None = None
    stats: ValueStats | None = None
    """Value counts gathered tile by tile (each pixel once) when no statistics pass ran."""
    grid: TileGrid | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def owned(self, tile: Tile) -> tuple[int, int]:
        """Rows and columns of ``tile`` up to the next tile's origin: each pixel counted once."""
        g = self.grid
        assert g is not None
        ys = tile.h if tile.y == g.ys[-1] else min(g.stride, tile.h)
        xs = tile.w if tile.x == g.xs[-1] else min(g.stride, tile.w)
        return ys, xs


def keep_clear_plan(req: RunRequest, opt: RasterInfo, same_bands: bool, rec: Recorder) -> bool:
    """Whether keep-clear runs; says why not when it cannot."""
    if not req.keep_clear:
        if req.mask:
            rec.info("the mask raster is not used: keep-clear is off")
        return False
    if not same_bands:
        rec.info("keep-clear is off: the model returns other bands than it reads")
        return False
    if req.mask is None and opt.count != len(S2_BANDS):
        rec.info(
            f"keep-clear is off: its cloud mask needs the {len(S2_BANDS)} Sentinel-2 L1C bands and optical raster "
            f"{opt.describe()} has {opt.count}; give a mask raster (MASK / --mask) to keep clear pixels"
        )
        return False
    return True


@contextlib.contextmanager
def keep_clear_for(
    req: RunRequest, opt: RasterInfo, in_bands: list[int], active: bool, rec: Recorder, share: float
) -> Iterator[tuple[KeepClear | None, Recorder | Span]]:
    """(KeepClear or None, the progress for the prediction stage). Computing the mask takes the
    first ``share`` of the progress bar; with a mask raster or without keep-clear, all of it."""
    if not active:
        if req.filled_mask:  # no keep-clear: every valid pixel is the model's
            with KeepClear(opt, None, in_bands, 0, 0, rec) as everything:
                yield everything, rec
        else:
            yield None, rec
        return
    span_mask = Span(rec, 0.0, share) if req.mask is None else None
    with mask_for(opt, req.mask, req.mask_method, span_mask or rec, None) as mask_info:
        buffer_px = buffer_pixels(opt, req.mask_buffer_m)
        rec.info(
            f"keep-clear: {describe(req.mask, req.mask_method, req.mask_buffer_m, req.feather_px)} "
            f"({buffer_px} px on this grid)"
        )
        with KeepClear(opt, mask_info, in_bands, buffer_px, req.feather_px, rec) as keep:
            yield keep, (Span(rec, share, 1.0) if span_mask is not None else rec)


def run_scene(req: RunRequest, progress: Progress) -> RunResult:
    """Run a single-date request (see :func:`engine.api.run`)."""
    from ..api import RunResult

    rec = Recorder(progress)
    t0 = time.time()
    card = model_card(req.model)
    if card.temporal:
        raise InputError(
            f"model {req.model} is multi-temporal: give a series (predict-series / cloudrm:removecloudsmultitemporal)"
        )
    opt = raster_info(req.optical[0], (req.optical_names or [None])[0], role="optical")
    sar = raster_info(req.sar[0], (req.sar_names or [None])[0], role="SAR")
    mask = raster_info(req.mask, role="mask") if req.mask else None
    out_count = len(card.output_bands or card.optical_bands)
    others = [(sar, "SAR")] + ([(mask, "mask")] if mask else [])
    preflight(req, opt, out_count, [opt], others, float(card.normalisation["optical"]["clip"][1]))
    ckpt_path, ckpt = load_model_checkpoint(req.model, req.checkpoint)
    in_bands = select_optical_bands(opt, list(ckpt.bands["optical"]), req.model, ckpt_path.name)
    check_sar(sar, list(ckpt.bands["sar"]), req.model)
    out_bands = list(card.output_bands) or list(ckpt.bands["optical"])
    dev = resolve_device(req.device)
    grid = make_grid(opt.height, opt.width, req, card.defaults, card.size_multiple, rec, f"model {req.model}")
    norm = ckpt.normalisation
    scale, clip_hi = float(norm["optical"]["scale"]), float(norm["optical"]["clip"][1])
    precision = choose_precision(req.precision, dev, card, rec)
    keep_on = keep_clear_plan(req, opt, out_bands == list(ckpt.bands["optical"]), rec)
    sar_resample = check_alignment(sar, opt, rec, card.sar_resampling)
    run = _SceneRun(opt, sar, card, in_bands, norm, grid.size, sar_resample, grid=grid)
    with rasterio.open(opt.path) as ds:
        run.opt_fill, scanned = optical_fill(ds, opt, rec)
    if scanned is None:
        run.stats = ValueStats(role="optical", dtype=opt.dtype, nodata=opt.nodata, clip=(0.0, 10000.0))
    with rasterio.open(sar.path) as ds:
        run.sar_fill = sar_fill(ds, sar, norm, rec)
    with keep_clear_for(req, opt, in_bands, keep_on, rec, share=0.15) as (keep, stage):
        run.keep = keep
        net = build_model(ckpt).to(dev)
        forward = model_forward(net, dev, precision)
        example = (np.zeros((len(in_bands), grid.size, grid.size), np.float32),
                   np.zeros((sar.count, grid.size, grid.size), np.float32))
        batch = req.batch_size or auto_batch_size(forward, example, dev, len(grid), rec)
        if use_cuda_graphs(dev, card):  # after the batch size: a graph is captured for that batch's shape
            forward = model_forward(net, dev, precision, graphs=True, note=rec.info)
        rec.info(
            f"{req.model} on {describe_device(dev)}, {precision}, batch {batch}; checkpoint {ckpt_path.name} "
            f"({ckpt.trained_on[:80]}{'…' if len(ckpt.trained_on) > 80 else ''})"
        )
        tags = {
            "CLOUDRM_MODEL": req.model,
            "CLOUDRM_CHECKPOINT": ckpt_path.name,
            "CLOUDRM_TRAINED_ON": ckpt.trained_on,
            "CLOUDRM_OPTICAL": opt.path.name,
            "CLOUDRM_SAR": sar.path.name,
        }
        if keep_on:
            tags["CLOUDRM_KEEP_CLEAR"] = describe(req.mask, req.mask_method, req.mask_buffer_m, req.feather_px)
        stats = _predict(grid, lambda: _SceneSource(run), forward, dev, batch, stage, net, req, opt, out_bands,
                         tags, scale, clip_hi, keep)
    if run.stats is not None:
        for line in run.stats.warnings(opt.name):
            rec.warning(line)
    return _result(RunResult, req, ckpt_path, dev, grid, stats, precision, keep, rec, t0, opt.path)


def _predict(
    grid: TileGrid,
    source: Callable[[], Any],
    forward: Callable[[tuple[torch.Tensor, ...]], torch.Tensor],
    dev: torch.device,
    batch: int,
    stage: Progress,
    net: torch.nn.Module,
    req: RunRequest,
    like: RasterInfo,
    out_bands: Sequence[str | None],
    tags: Mapping[str, str],
    scale: float,
    clip_hi: float,
    keep: KeepClear | None,
) -> PipelineStats:
    """The pipeline into the output GeoTIFF (and filled-pixels mask), with stage progress on the CPU."""
    hooks = StageProgress(net, stage, len(grid)) if dev.type == "cpu" else None
    try:
        with rasterio.Env(GDAL_CACHEMAX=block_cache_bytes(like, len(out_bands), grid.size)), \
                blended_geotiff(req.output, like, grid, out_bands, tags, scale, clip_hi, keep,
                                req.filled_mask if keep is not None else None) as blender:
            return run_pipeline(grid, source, forward, blender, dev, batch, stage, readers_for(dev), hooks,
                                reader_init=thread_env)
    finally:
        if hooks is not None:
            hooks.remove()


def block_cache_bytes(like: RasterInfo, out_bands: int, tile: int) -> int:
    """GDAL's block cache for a run: a few output strips and the input rows tiles read.

    GDAL keeps written blocks in this cache until it is full (its default: 5 % of the RAM)
    and compresses whatever is left when the file closes: on a whole Sentinel-2 tile that was
    gigabytes held and minutes of single-threaded compression at the end. A cache of a few
    strips makes finished blocks go to disk (compressed by GDAL's worker threads) while the
    model runs, and memory no longer grows with the scene's height.
    """
    item = np.dtype(like.dtype).itemsize
    out_strip = out_bands * BLOCK * like.width * item
    in_rows = like.count * 2 * BLOCK * like.width * item  # the block rows a row of tiles reads
    return int(min(max(2 * out_strip + in_rows, 16 * 2**20), 2 * 2**30))


def _result(
    cls: type[RunResult],
    req: RunRequest,
    ckpt_path: Path | None,
    dev: torch.device | str,
    grid: TileGrid,
    stats: PipelineStats,
    precision: str,
    keep: KeepClear | None,
    rec: Recorder,
    t0: float,
    target: Path,
    **extra: Any,
) -> RunResult:
    if stats.skipped:
        rec.info(f"{stats.skipped} of {stats.tiles} tiles skipped: keep-clear keeps all their pixels")
    seconds = time.time() - t0
    stages = {"setup": round(max(stats.started - t0, 0.0), 3), **stats.stage_seconds()}
    stages["finish"] = round(max(seconds - stages["setup"] - stages["loop"], 0.0), 3)
    rec.info(
        f"time: set-up {stages['setup']:.1f} s, tiles {stages['loop']:.1f} s (model's thread waited "
        f"{stages['read_wait']:.1f} s for reads and {stages['write_wait']:.1f} s for the writer; the writer waited "
        f"{stages['device_wait']:.1f} s for the device and blended and wrote {stages['blend_write']:.1f} s), "
        f"finishing {stages['finish']:.1f} s"
    )
    masked = keep is not None and keep.mask is not None
    if keep is not None and keep.mask is not None:
        rec.info(
            f"keep clear pixels: {keep.cloudy} of {keep.valid} valid pixels masked "
            f"({100 * keep.cloudy / max(keep.valid, 1):.1f} %), {keep.filled} filled by the model"
        )
    return cls(
        output=Path(req.output),
        model=req.model,
        checkpoint=ckpt_path,
        device=describe_device(dev) if isinstance(dev, torch.device) else dev,
        tiles=len(grid),
        tile_size=grid.size,
        overlap=grid.overlap,
        batch_size=stats.batch_size,
        precision=precision,
        seconds=seconds,
        stage_seconds=stages,
        skipped_tiles=stats.skipped,
        filled_mask=Path(req.filled_mask) if req.filled_mask and keep is not None else None,
        cloudy_fraction=keep.cloudy / max(keep.valid, 1) if keep is not None and masked else None,
        filled_fraction=keep.filled / max(keep.valid, 1) if keep is not None else None,
        target=target,
        warnings=rec.warnings,
        infos=rec.infos,
        **extra,
    )
