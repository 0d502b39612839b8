"""The tile pipeline every model and method shares: read → model → blend → write, overlapped.

The GPU (or the CPU's math threads) should never wait for the disk, so the three stages run
concurrently:

- **readers**: a thread pool reads, normalises and (for SAR on another grid) warps the tiles
  ahead of the model, each thread with its own dataset handles (GDAL handles are not
  thread-safe; GDAL releases the GIL while decoding, so reads really run in parallel);
- **the model**: batches on the device, in the calling thread; it reports progress from
  forward hooks on the model's blocks and is asked for cancellation between blocks on the
  CPU, where one tile can take many seconds. On CUDA a batch is stacked straight into pinned
  memory and its predictions come back by a non-blocking copy, so this thread launches the
  next batch while the GPU still works on the last one;
- **the writer**: one thread waits for each batch's copy, blends the overlapping tiles
  (:class:`StreamingBlender`), converts to the output's DN, applies keep-clear and writes whole block rows
  (:class:`StripWriter`) so the GeoTIFF driver compresses and frees them as they complete
  instead of all at once when the file closes.

A CUDA out-of-memory error halves the batch and retries it (down to one tile); nothing that
was finished is lost.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import Canceled, InputError
from ..io.per_thread import PerThread
from ..progress import Progress
from .device import is_oom
from .tiling import StreamingBlender, Tile, TileGrid


@dataclass
class TileData:
    """One tile read for the model.

    ``inputs`` are the model's inputs for this tile (float32 arrays without the batch axis,
    e.g. optical (C, S, S) and SAR (2, S, S), already normalised); ``valid`` (S, S) bool marks
    pixels that have data. ``skip``: keep-clear keeps every pixel of this tile, so the model
    is not run on it (``inputs`` is empty then).
    """

    tile: Tile
    inputs: tuple[np.ndarray, ...] = ()
    valid: np.ndarray | None = None
    skip: bool = False


class TileSource(Protocol):
    """Reads tiles; one instance per reader thread."""

    def read(self, tile: Tile) -> TileData: ...

    def close(self) -> None: ...


Forward = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]
"""Batched model call: inputs (B, …) on the device → prediction (B, C, S, S) in [0, 1]."""


class StageProgress:
    """Forward hooks on a model's blocks: progress inside a batch, and cancel between blocks.

    The first forward pass counts how many block calls a pass makes; later passes report
    ``done + calls / per_pass × batch`` tiles. Checks are throttled (every ``every`` s), so
    the hooks cost microseconds per block.
    """

    def __init__(self, model: torch.nn.Module, progress: Progress, total: int, every: float = 0.2) -> None:
        self.progress, self.total, self.every = progress, total, every
        self.calls = 0
        self.per_pass = sum(1 for _ in self._blocks(model)) or 1
        self.counted = False
        self.done = 0.0
        self.batch = 0
        self.last = time.monotonic()
        self.handles = [m.register_forward_hook(self._hook) for m in self._blocks(model)]

    @staticmethod
    def _blocks(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Modules with parameters directly: convs, norms, attention projections, …"""
        for m in model.modules():
            if any(True for _ in m.parameters(recurse=False)):
                yield m

    def start(self, done: float, batch: int) -> None:
        self.done, self.batch, self.calls = done, batch, 0

    def finish(self) -> None:
        if not self.counted and self.calls:
            self.per_pass, self.counted = self.calls, True

    def _hook(self, *_: Any) -> None:
        self.calls += 1
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        if self.progress.is_canceled():
            raise Canceled("canceled; no output written")
        frac = min(self.calls / self.per_pass, 0.999)
        self.progress.update(self.done + frac * self.batch, self.total)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class StripWriter:
    """Collects emitted rectangles into full-width strips of ``rows`` rows and writes each strip
    once it is complete, so every GeoTIFF block is written whole, exactly once.

    ``write(y0, y1, array)`` receives (C, y1 − y0, width) arrays.
    """

    def __init__(self, height: int, width: int, rows: int, write: Callable[[int, int, np.ndarray], None]) -> None:
        self.height, self.width, self.rows, self.write = height, width, rows, write
        self.strips: dict[int, tuple[np.ndarray, int]] = {}

    def add(self, y: int, x: int, block: np.ndarray) -> None:
        """Place (C, h, w) ``block`` at (y, x); writes every strip it completes."""
        h = block.shape[1]
        row = y
        while row < y + h:
            k = row // self.rows
            s0, s1 = k * self.rows, min((k + 1) * self.rows, self.height)
            r1 = min(y + h, s1)
            if k in self.strips:
                buf, filled = self.strips[k]
            else:
                buf, filled = np.empty((block.shape[0], s1 - s0, self.width), dtype=block.dtype), 0
            part = block[:, row - y : r1 - y]
            buf[:, row - s0 : r1 - s0, x : x + part.shape[2]] = part
            filled += part.shape[1] * part.shape[2]
            if filled == (s1 - s0) * self.width:
                self.strips.pop(k, None)
                self.write(s0, s1, buf)
            else:
                self.strips[k] = (buf, filled)
            row = r1

    @property
    def pending_bytes(self) -> int:
        return sum(b.nbytes for b, _ in self.strips.values())

    @property
    def done(self) -> bool:
        return not self.strips


@dataclass
class _Predicted:
    """One forward pass's predictions on their way to the host.

    ``host`` (B, C, S, S) float32 on the CPU holds them once ``ready`` (a CUDA event recorded
    after the non-blocking copy) has completed; ``ready`` is None when they are there already.
    ``valid`` are the tiles' (S, S) validity masks (None: all valid).
    """

    tiles: list[Tile]
    valid: list[np.ndarray | None]
    host: torch.Tensor
    ready: Any = None


class _Writer(threading.Thread):
    """Blends and writes in the background; the first error is kept and re-raised by :meth:`finish`.

    It also finishes the batches' device-to-host copies (waits for their events and adds the
    validity channel), so the calling thread can launch the next batch while the GPU works.
    """

    def __init__(self, blender: StreamingBlender, grid: TileGrid, depth: int) -> None:
        super().__init__(name="cloudrm-writer", daemon=True)
        self.blender, self.grid = blender, grid
        self.queue: queue.Queue[tuple[Tile, np.ndarray] | _Predicted | None] = queue.Queue(maxsize=max(depth, 1))
        self.error: BaseException | None = None
        self.seconds_device_wait = 0.0
        self.seconds_busy = 0.0
        self.start()

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain: the producer learns of the error at its next put
            t0 = time.perf_counter()
            try:
                if isinstance(item, _Predicted):
                    self._add_batch(item)
                else:
                    tile, values = item
                    self.blender.add(tile, values, self.grid.weight(tile))
            except BaseException as exc:
                self.error = exc
            self.seconds_busy += time.perf_counter() - t0

    def _add_batch(self, done: _Predicted) -> None:
        if done.ready is not None:
            t0 = time.perf_counter()
            done.ready.synchronize()  # waits for the copy (and the forward pass before it)
            self.seconds_device_wait += time.perf_counter() - t0
        values = done.host.numpy()
        for pred, tile, valid in zip(values, done.tiles, done.valid, strict=True):
            v = valid.astype(np.float32)[None] if valid is not None else np.ones((1, *pred.shape[1:]), np.float32)
            self.blender.add(tile, np.concatenate([pred, v]), self.grid.weight(tile))

    def put(self, item: tuple[Tile, np.ndarray] | _Predicted) -> float:
        """Queue one tile's (C + 1, S, S) values or a batch of predictions; returns the seconds
        spent waiting for room in the queue."""
        self.check()
        t0 = time.perf_counter()
        self.queue.put(item)
        return time.perf_counter() - t0

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        self.check()

    def abort(self) -> None:
        with self.queue.mutex:
            self.queue.queue.clear()
        self.queue.put(None)
        self.join()


@dataclass
class PipelineStats:
    """What :func:`run_pipeline` did."""

    tiles: int = 0
    skipped: int = 0
    batch_size: int = 1
    oom_retries: int = 0
    seconds_forward: float = 0.0
    """Time in the model calls; on CUDA only launching them (the GPU runs on asynchronously)."""
    notes: list[str] = field(default_factory=list)
    started: float = 0.0
    """``time.time()`` when the tile loop began (what came before is the run's set-up)."""
    seconds_loop: float = 0.0
    """The tile loop, first read to the last strip written."""
    seconds_read_wait: float = 0.0
    """The model's thread waiting for tiles from the readers: reading limits the run."""
    seconds_write_wait: float = 0.0
    """The model's thread waiting for room in the writer's queue, and for the writer to finish
    after the last batch: the writer (or the device it waits for) limits the run."""
    seconds_device_wait: float = 0.0
    """The writer waiting for batches' results to reach the host (CUDA: the GPU still computing)."""
    seconds_blend_write: float = 0.0
    """The writer blending, converting, compositing and writing."""

    def stage_seconds(self) -> dict[str, float]:
        """Where the loop's time went (rounded to ms), for logs and ``scripts/bench``."""
        return {k: round(v, 3) for k, v in (
            ("loop", self.seconds_loop), ("read_wait", self.seconds_read_wait),
            ("forward", self.seconds_forward), ("write_wait", self.seconds_write_wait),
            ("device_wait", self.seconds_device_wait), ("blend_write", self.seconds_blend_write))}


def run_pipeline(
    grid: TileGrid,
    source: Callable[[], TileSource],
    forward: Forward,
    blender: StreamingBlender,
    device: torch.device,
    batch_size: int,
    progress: Progress,
    readers: int = 1,
    hooks: StageProgress | None = None,
    reader_init: Callable[[], None] | None = None,
) -> PipelineStats:
    """Run every tile of ``grid`` through ``forward`` into ``blender``.

    Args:
        grid: the tiles, in row-major order (the blender emits rows as they complete).
        source: makes one :class:`TileSource` per reader thread.
        forward: the batched model call (see :data:`Forward`).
        blender: receives (C + 1, S, S) arrays: the prediction, then the validity channel.
        device: where ``forward`` runs; inputs are copied there (pinned, non-blocking on CUDA).
        batch_size: tiles per forward pass; halved on CUDA out-of-memory.
        progress: tile counts (fractional inside a batch when ``hooks`` are given), cancel.
        readers: reader threads (≥ 1); reads run ahead by two batches per reader.
        hooks: :class:`StageProgress` on the model, for progress and cancel inside a batch.
        reader_init: run once on each reader thread when it starts (the raster I/O's
            per-thread set-up; the threads end with this call).

    Raises:
        Canceled: between batches or, with ``hooks``, between blocks; nothing is left half done
            (the caller's atomic output removes the file).
        InputError: a single tile does not fit on the device.
    """
    tiles = list(grid)
    total = len(tiles)
    stats = PipelineStats(tiles=total, batch_size=batch_size, started=time.time())
    loop_t0 = time.perf_counter()
    pin = device.type == "cuda"
    readers_of_thread: PerThread[TileSource] = PerThread(source, lambda src: src.close())

    def read(tile: Tile) -> TileData:
        return readers_of_thread.get().read(tile)

    pool = ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="cloudrm-read", initializer=reader_init)
    # queued items are batches (or single skipped tiles): a few of them keep the writer fed
    # while bounding the host memory they hold
    writer = _Writer(blender, grid, depth=4)
    ahead = max(2, 2 * readers) * batch_size
    pending: collections.deque[Future[TileData]] = collections.deque()
    nxt = 0
    done = 0
    progress.update(0, total)
    try:
        while done < total:
            while nxt < total and len(pending) < ahead:
                pending.append(pool.submit(read, tiles[nxt]))
                nxt += 1
            if progress.is_canceled():
                raise Canceled("canceled; no output written")
            batch: list[TileData] = []
            while pending and len(batch) < stats.batch_size:  # smaller after an out-of-memory
                t_read = time.perf_counter()
                item = pending.popleft().result()
                stats.seconds_read_wait += time.perf_counter() - t_read
                if item.skip:
                    stats.seconds_write_wait += writer.put(
                        (item.tile, np.zeros((blender.channels, grid.size, grid.size), np.float32)))
                    stats.skipped += 1
                    done += 1
                    continue
                batch.append(item)
            if not batch:
                progress.update(done, total)
                continue
            t0 = time.perf_counter()
            chunks = _forward_batch(batch, forward, device, pin, hooks, done, progress, stats)
            stats.seconds_forward += time.perf_counter() - t0
            for chunk in chunks:
                stats.seconds_write_wait += writer.put(chunk)
            done += len(batch)
            progress.update(done, total)
        t_drain = time.perf_counter()
        writer.finish()
        stats.seconds_write_wait += time.perf_counter() - t_drain
        stats.seconds_loop = time.perf_counter() - loop_t0
        stats.seconds_device_wait = writer.seconds_device_wait
        stats.seconds_blend_write = writer.seconds_busy - writer.seconds_device_wait
    except BaseException:
        for f in pending:
            f.cancel()
        writer.abort()
        raise
    finally:
        pool.shutdown(wait=True)
        readers_of_thread.close()
    return stats


def _stacked(arrays: list[np.ndarray], pin: bool) -> torch.Tensor:
    """``arrays`` stacked on a new first axis; with ``pin`` straight into pinned host memory
    (one copy instead of a stack and then a pinned copy)."""
    if not pin:
        return torch.from_numpy(np.stack(arrays))
    first = torch.from_numpy(arrays[0])
    t = torch.empty((len(arrays), *first.shape), dtype=first.dtype, pin_memory=True)
    np.stack(arrays, out=t.numpy())
    return t


def _forward_batch(
    batch: list[TileData],
    forward: Forward,
    device: torch.device,
    pin: bool,
    hooks: StageProgress | None,
    done: int,
    progress: Progress,
    stats: PipelineStats,
) -> list[_Predicted]:
    """The predictions for ``batch``, in one or more chunks; on out-of-memory the batch is split
    in halves and ``stats.batch_size`` (the size later batches take) shrinks with it.

    With ``pin`` (CUDA) the inputs are stacked straight into pinned host memory and copied
    without blocking, and the predictions come back the same way: this returns as soon as the
    work is queued on the GPU, and the writer thread waits for each chunk's copy.
    """
    size = len(batch)
    while True:
        try:
            out: list[_Predicted] = []
            for start in range(0, len(batch), size):
                chunk = batch[start : start + size]
                tensors = [_stacked([it.inputs[k] for it in chunk], pin).to(device, non_blocking=pin)
                           for k in range(len(chunk[0].inputs))]
                if hooks is not None:
                    hooks.start(done + start, len(chunk))
                with torch.inference_mode():
                    pred = forward(tuple(tensors)).float()
                    if pin:
                        host = torch.empty(pred.shape, dtype=torch.float32, pin_memory=True)
                        host.copy_(pred, non_blocking=True)
                        ready = torch.cuda.Event()
                        ready.record()
                    else:
                        host, ready = pred.cpu(), None
                if hooks is not None:
                    hooks.finish()
                out.append(_Predicted([it.tile for it in chunk], [it.valid for it in chunk], host, ready))
            return out
        except Canceled:
            raise
        except RuntimeError as exc:
            if not is_oom(exc):
                raise
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
            if size == 1:
                raise InputError(
                    f"one tile of {batch[0].inputs[0].shape[-1]} px does not fit in the memory of {device}: "
                    "choose a smaller tile size (e.g. half of it) or another device"
                ) from exc
            size = max(1, size // 2)
            stats.batch_size = min(stats.batch_size, size)
            stats.oom_retries += 1
            stats.notes.append(f"out of memory on {device}: batch size reduced to {size}, the batch is retried")
            progress.warning(stats.notes[-1])
