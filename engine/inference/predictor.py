"""Full-scene, tiled, streamed prediction from GeoTIFF inputs to a GeoTIFF on the optical grid."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch

from .. import __version__
from ..data.bands import S2_BANDS
from ..data.normalize import apply_card, fill_invalid
from ..errors import Canceled, CheckpointError, InputError
from ..io.align import SarTiles
from ..io.checkpoint import build_model, load_checkpoint
from ..io.raster import (
    RasterInfo,
    atomic_output,
    file_mean,
    geotiff_profile,
    invalid_mask,
    raster_info,
    read_padded,
)
from ..models import ModelCard, model_card
from ..progress import NullProgress, Progress
from .device import autocast, describe_device, resolve_device
from .tiling import StreamingBlender, TileGrid

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
"""``resources/`` beside ``engine/``: the repo root, or the installed plugin folder."""


def default_checkpoint(card: ModelCard) -> Path:
    """The bundled checkpoint of a model (``$CLOUDRM_CHECKPOINT_DIR`` overrides the folder)."""
    if not card.default_checkpoint:
        raise CheckpointError(f"model {card.name!r} has no bundled checkpoint: pass one explicitly")
    folder = Path(os.environ.get("CLOUDRM_CHECKPOINT_DIR") or RESOURCES / "checkpoints")
    path = folder / card.default_checkpoint
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint given and the bundled checkpoint of {card.name!r} is missing: {path}"
        )
    return path


@dataclass
class PredictResult:
    """What :func:`predict_scene` did."""

    output: Path
    model: str
    checkpoint: Path
    device: str
    tiles: int
    tile_size: int
    overlap: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


class _Recorder:
    """Forwards to the caller's Progress and keeps the warnings for the result."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.warnings: list[str] = []

    def update(self, done: int, total: int) -> None:
        self.inner.update(done, total)

    def is_canceled(self) -> bool:
        return self.inner.is_canceled()

    def info(self, message: str) -> None:
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


def _check_sar(sar: RasterInfo, want: list[str], model: str) -> None:
    if sar.count != len(want):
        raise InputError(
            f"SAR raster {sar.describe()} has {sar.count} bands; model {model} expects "
            f"{len(want)}: {', '.join(want)} (σ0 in dB)"
        )


def _output_converter(opt: RasterInfo, scale: float, clip_hi: float, bands: int):
    """Function (C+1, h, w) float64 [prediction…, validity] → (C, h, w) in the output dtype.

    The output keeps the optical input's dtype and DN scaling; pixels invalid in the input
    become nodata, and a valid result that would read as nodata is nudged by one DN (as
    CNES decloud does), so no real pixel disappears.
    """
    dtype = np.dtype(opt.dtype)
    nodata = opt.nodata
    integer = dtype.kind in "iu"

    def convert(block: np.ndarray) -> np.ndarray:
        dn = np.clip(block[:bands] * scale, 0.0, clip_hi)
        invalid = block[bands] < 0.5
        if integer:
            dn = np.rint(dn)
            if nodata is not None and not math.isnan(nodata):
                hit = (dn == nodata) & ~invalid
                dn[hit] = nodata + 1 if nodata + 1 <= clip_hi else nodata - 1
        if invalid.any():
            fill = nodata if nodata is not None else (np.nan if not integer else 0)
            dn[:, invalid] = fill
        return dn.astype(dtype)

    return convert


@contextlib.contextmanager
def blended_geotiff(
    out: str | os.PathLike[str],
    like: RasterInfo,
    grid: TileGrid,
    bands: Sequence[str | None],
    tags: Mapping[str, str],
    scale: float,
    clip_hi: float,
) -> Iterator[StreamingBlender]:
    """An atomic GeoTIFF on ``like``'s grid (dtype, nodata) fed through a :class:`StreamingBlender`.

    Tiles added to the yielded blender are (len(bands) + 1, h, w) float arrays: the values in
    the model's [0, 1] scale, then a validity channel (see :func:`_output_converter`). Blocks
    are written as soon as they are complete. An exception in the body (a cancel) leaves no file.
    """
    convert = _output_converter(like, scale, clip_hi, len(bands))
    profile = geotiff_profile(like, len(bands), like.dtype, like.nodata)
    with atomic_output(out) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, name in enumerate(bands, start=1):
            if name:
                dst.set_band_description(i, name)
        dst.update_tags(**tags, CLOUDRM_VERSION=__version__)

        def emit(y: int, x: int, block: np.ndarray) -> None:
            dst.write(convert(block), window=((y, y + block.shape[1]), (x, x + block.shape[2])))

        blender = StreamingBlender(grid, len(bands) + 1, emit)
        yield blender
        if not blender.done:  # pragma: no cover - a bug, not a user error
            raise RuntimeError("tiling left pixels unwritten")


def predict_scene(
    optical: str | os.PathLike[str],
    sar: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: str = "glf_cr",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 1,
    amp: bool = False,
    progress: Progress | None = None,
    optical_name: str | None = None,
    sar_name: str | None = None,
) -> PredictResult:
    """Remove clouds from a whole optical scene with the help of SAR.

    Args:
        optical: cloudy optical GeoTIFF (S2 L1C: 13 bands, DN = reflectance × 10000).
        sar: SAR GeoTIFF, σ0 in dB (VV, VH); resampled onto the optical grid if needed.
        out: output GeoTIFF; written on exactly the optical grid, same dtype and nodata.
        model: registry name; must match the checkpoint's model.
        checkpoint: weights file; the model's bundled checkpoint when None.
        device: ``auto``, ``cpu`` or ``cuda:N``.
        tile_size, overlap: pixels; model card defaults when None. Rounded to the model's
            size multiple (see :class:`TileGrid`).
        batch_size: tiles per forward pass.
        amp: mixed precision (CUDA only).
        progress: receives tile counts, log lines, warnings; asked for cancellation.
        optical_name, sar_name: labels for messages (QGIS layer names).

    Raises:
        InputError, CheckpointError: with messages naming the rasters; nothing is written.
        Canceled: the caller canceled; the partial output is removed.
    """
    rec = _Recorder(progress or NullProgress())
    t0 = time.time()
    card = model_card(model)
    opt_info = raster_info(optical, optical_name, role="optical")
    sar_info = raster_info(sar, sar_name, role="SAR")
    for info in (opt_info, sar_info):
        if Path(out).resolve() == info.path.resolve():
            raise InputError(f"output {out} is the input raster {info.describe()}: choose another file")
    ckpt_path = Path(checkpoint) if checkpoint else default_checkpoint(card)
    ckpt = load_checkpoint(ckpt_path, model=model)
    if ckpt.model != model:
        raise CheckpointError(f"checkpoint {ckpt_path} holds model {ckpt.model!r}, not {model!r}")
    if card.temporal:
        raise InputError(f"model {model} is multi-temporal: use predict_series (cloudrm:removecloudsmultitemporal)")
    in_bands = select_optical_bands(opt_info, list(ckpt.bands["optical"]), model, ckpt_path.name)
    _check_sar(sar_info, list(ckpt.bands["sar"]), model)
    out_bands = list(card.output_bands) or list(ckpt.bands["optical"])
    if batch_size < 1:
        raise InputError(f"batch size must be ≥ 1, got {batch_size}")
    dev = resolve_device(device)
    tile_size = int(tile_size or card.defaults.get("tile_size", 256))
    overlap = int(card.defaults.get("overlap", 32) if overlap is None else overlap)
    try:
        grid = TileGrid(opt_info.height, opt_info.width, tile_size, overlap, card.size_multiple)
    except ValueError as exc:
        raise InputError(f"tiling: {exc}") from exc
    if grid.size != tile_size or grid.overlap != overlap:
        rec.info(
            f"tile size {tile_size}/overlap {overlap} adjusted to {grid.size}/{grid.overlap} "
            f"(model {model} needs multiples of {card.size_multiple})"
        )
    norm = ckpt.normalisation
    scale = float(norm["optical"]["scale"])
    clip_hi = float(norm["optical"]["clip"][1])

    with rasterio.open(opt_info.path) as opt_ds, SarTiles(sar_info, opt_info, rec, card.sar_resampling) as sar_tiles:
        opt_fill = file_mean(opt_ds) if (opt_info.nodata is not None or opt_info.dtype.startswith("float")) else 0.0
        with rasterio.open(sar_info.path) as raw_sar:
            sar_fill = file_mean(raw_sar)
        if sar_fill > 1.0:
            rec.warning(f"SAR raster '{sar_info.name}' has mean {sar_fill:.2f}: expected σ0 in dB (negative values)")
        model_net = build_model(ckpt).to(dev)
        rec.info(
            f"{model} on {describe_device(dev)}: {grid.describe()}, batch {batch_size}; "
            f"checkpoint {ckpt_path.name} ({ckpt.trained_on[:80]}{'…' if len(ckpt.trained_on) > 80 else ''})"
        )
        tags = {
            "CLOUDRM_MODEL": model,
            "CLOUDRM_CHECKPOINT": ckpt_path.name,
            "CLOUDRM_TRAINED_ON": ckpt.trained_on,
            "CLOUDRM_OPTICAL": opt_info.path.name,
            "CLOUDRM_SAR": sar_info.path.name,
        }
        with blended_geotiff(out, opt_info, grid, out_bands, tags, scale, clip_hi) as blender:
            tiles = list(grid)
            done = 0
            rec.update(0, len(tiles))
            for start in range(0, len(tiles), batch_size):
                if rec.is_canceled():
                    raise Canceled("canceled; no output written")
                batch = tiles[start : start + batch_size]
                opts, sars, valids = [], [], []
                for t in batch:
                    o = read_padded(opt_ds, t.y, t.x, grid.size, bands=in_bands)
                    s = sar_tiles.read(t.y, t.x, grid.size)
                    bad = invalid_mask(o, opt_info.nodata)
                    o = fill_invalid(o, bad, opt_fill)
                    s = fill_invalid(s, invalid_mask(s, sar_info.nodata), sar_fill)
                    o, s = apply_card(o, s, norm)
                    opts.append(o)
                    sars.append(s)
                    valids.append((~bad).astype(np.float32)[None])
                with torch.inference_mode(), autocast(dev, amp):
                    pred = model_net(
                        torch.from_numpy(np.stack(opts)).to(dev), torch.from_numpy(np.stack(sars)).to(dev)
                    )
                pred_np = pred.float().cpu().numpy()
                for t, p, v in zip(batch, pred_np, valids, strict=True):
                    blender.add(t, np.concatenate([p, v]), grid.weight(t))
                done += len(batch)
                rec.update(done, len(tiles))
    return PredictResult(
        output=Path(out),
        model=model,
        checkpoint=ckpt_path,
        device=describe_device(dev),
        tiles=len(grid),
        tile_size=grid.size,
        overlap=grid.overlap,
        seconds=time.time() - t0,
        warnings=rec.warnings,
    )
