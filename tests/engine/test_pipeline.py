"""The shared tile pipeline: strips written whole, out-of-memory batches retried, progress and
cancel inside a forward pass, writer errors surfacing in the caller's thread."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from cloudrm_engine.errors import Canceled, InputError
from cloudrm_engine.inference.pipeline import (
    StageProgress,
    StripWriter,
    TileData,
    _Predicted,
    _Writer,
    run_pipeline,
)
from cloudrm_engine.inference.tiling import StreamingBlender, TileGrid
from tests.conftest import RecordingProgress, crop_sample, make_checkpoint


def test_strip_writer_writes_every_row_once_in_whole_strips():
    grid = TileGrid(300, 200, 64, 16, 16)
    img = np.random.default_rng(0).random((2, 300, 200))
    writes: list[tuple[int, int]] = []
    out = np.full((2, 300, 200), np.nan)

    def write(y0: int, y1: int, a: np.ndarray) -> None:
        writes.append((y0, y1))
        assert a.shape == (2, y1 - y0, 200)  # always the full width
        out[:, y0:y1] = a

    strips = StripWriter(300, 200, 64, write)
    blender = StreamingBlender(grid, 2, lambda y, x, block: strips.add(y, x, block))
    for t in grid:
        blender.add(t, img[:, t.y : t.y + grid.size, t.x : t.x + grid.size], grid.weight(t)[: t.h, : t.w])
    assert writes == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)]
    assert strips.done and blender.done
    np.testing.assert_allclose(out, img)


class _Source:
    def __init__(self, img: np.ndarray, size: int) -> None:
        self.img, self.size = img, size

    def read(self, tile):
        a = np.zeros((1, self.size, self.size), np.float32)
        a[:, : tile.h, : tile.w] = self.img[:, tile.y : tile.y + tile.h, tile.x : tile.x + tile.w]
        return TileData(tile, (a,), np.ones((self.size, self.size), bool))

    def close(self) -> None:
        pass


def _run(grid, img, forward, batch, progress, hooks=None):
    out = np.zeros((1, grid.height, grid.width))

    def emit(y: int, x: int, block: np.ndarray) -> None:
        out[:, y : y + block.shape[1], x : x + block.shape[2]] = block[:1]

    blender = StreamingBlender(grid, 2, emit)
    stats = run_pipeline(grid, lambda: _Source(img, grid.size), forward, blender, torch.device("cpu"), batch,
                         progress, readers=2, hooks=hooks)
    return out, stats


def test_out_of_memory_halves_the_batch_and_loses_nothing():
    grid = TileGrid(96, 96, 32, 0, 16)  # 9 tiles
    img = np.random.default_rng(1).random((1, 96, 96)).astype(np.float32)
    calls: list[int] = []

    def forward(inputs):
        calls.append(inputs[0].shape[0])
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return inputs[0] * 2

    prog = RecordingProgress()
    out, stats = _run(grid, img, forward, 4, prog)
    np.testing.assert_allclose(out, img * 2, rtol=1e-6)
    assert calls[:3] == [4, 2, 2] and stats.oom_retries == 1 and stats.batch_size == 2
    assert any("out of memory on cpu: batch size reduced to 2" in w for w in prog.warnings)
    assert prog.updates[-1] == (9, 9)


def test_one_tile_that_does_not_fit_is_a_clear_error():
    grid = TileGrid(64, 64, 32, 0, 16)

    def forward(inputs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(InputError, match="one tile of 32 px does not fit in the memory of cpu: choose a smaller tile"):
        _run(grid, np.zeros((1, 64, 64), np.float32), forward, 1, RecordingProgress())


def test_oom_through_the_front_door(tmp_path, monkeypatch):
    """api.run with batch 4: a forward that raises OutOfMemoryError once gives the same output."""
    import rasterio

    from cloudrm_engine.api import predict_scene
    from cloudrm_engine.inference import predictor

    opt, sar = crop_sample(tmp_path, 0, 0, 64)
    ckpt = make_checkpoint("mpir4", tmp_path / "m.pt")
    common = dict(model="mpir4", checkpoint=ckpt, device="cpu", tile_size=32, overlap=16)
    predict_scene(opt, sar, tmp_path / "ref.tif", batch_size=2, **common)  # what is left after the halving
    real = predictor.model_forward

    def flaky(net, device, precision):
        fwd = real(net, device, precision)
        state = {"raised": False}

        def forward(inputs):
            if not state["raised"] and inputs[0].shape[0] > 1:
                state["raised"] = True
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            return fwd(inputs)

        return forward

    monkeypatch.setattr(predictor, "model_forward", flaky)
    res = predict_scene(opt, sar, tmp_path / "oom.tif", batch_size=4, **common)
    assert res.batch_size == 2 and any("batch size reduced to 2" in w for w in res.warnings)
    with rasterio.open(tmp_path / "ref.tif") as a, rasterio.open(tmp_path / "oom.tif") as b:
        assert a.read().tobytes() == b.read().tobytes()


class _Slow(torch.nn.Module):
    """Ten blocks of 50 ms each: a forward pass of 0.5 s with real module boundaries."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Conv2d(1, 1, 1) for _ in range(10))
        self.ran = 0  # blocks entered, to tell where a cancel stopped without timing it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            self.ran += 1
            time.sleep(0.05)
            x = b(x)
        return x


class _CancelAt(RecordingProgress):
    def __init__(self, at: float) -> None:
        super().__init__()
        self.at = at
        self.t0 = time.monotonic()

    def is_canceled(self) -> bool:
        return time.monotonic() - self.t0 > self.at


def test_progress_moves_inside_a_forward_pass_from_the_model_blocks():
    net = _Slow()
    grid = TileGrid(64, 32, 32, 0, 16)  # 2 tiles, one per batch
    prog = RecordingProgress()
    hooks = StageProgress(net, prog, len(grid), every=0.0)
    _run(grid, np.zeros((1, 64, 32), np.float32), lambda ins: net(ins[0]), 1, prog, hooks)
    fractions = [d for d, _ in prog.updates if 0 < d < 1]
    assert len(fractions) >= 5 and fractions == sorted(fractions)  # the bar moves within the first tile
    assert any(1 < d < 2 for d, _ in prog.updates) and prog.updates[-1] == (2, 2)
    hooks.remove()


def test_cancel_stops_between_blocks_not_after_the_tile():
    net = _Slow()
    grid = TileGrid(32, 32, 32, 0, 16)  # one tile: no batch boundary to wait for
    prog = _CancelAt(0.12)
    hooks = StageProgress(net, prog, len(grid), every=0.0)
    with pytest.raises(Canceled):
        _run(grid, np.zeros((1, 32, 32), np.float32), lambda ins: net(ins[0]), 1, prog, hooks)
    assert 1 <= net.ran < 10  # stopped inside the forward pass, not after its tenth block
    hooks.remove()


def test_the_writer_reads_a_batch_only_after_its_copy_has_completed():
    """On CUDA the predictions come back by a non-blocking copy that a CUDA event marks done; the
    writer must wait for the event before it reads the host buffer. A stand-in event fills
    the buffer only when waited on."""
    grid = TileGrid(64, 64, 32, 0, 16)  # 4 tiles
    img = np.random.default_rng(1).random((1, 64, 64)).astype(np.float32)
    tiles = list(grid)
    truth = torch.from_numpy(np.stack([img[:, t.y : t.y + 32, t.x : t.x + 32] for t in tiles]))
    host = torch.zeros_like(truth)  # what the buffer holds before the copy lands

    class CopyLands:
        waited = 0

        def synchronize(self) -> None:
            host.copy_(truth)
            self.waited += 1

    event = CopyLands()
    out = np.zeros((1, 64, 64))
    valid = np.ones((32, 32), bool)
    valid[0, 0] = False  # the validity channel travels with the batch

    def emit(y: int, x: int, block: np.ndarray) -> None:
        out[:, y : y + block.shape[1], x : x + block.shape[2]] = block[:1]
        assert block[1, 0, 0] == 0.0 and block[1].sum() == 32 * 32 - 1  # one tile per block here

    writer = _Writer(StreamingBlender(grid, 2, emit), grid, depth=4)
    writer.put(_Predicted(tiles, [valid] * 4, host, event))
    writer.finish()
    assert event.waited == 1
    np.testing.assert_array_equal(out, img)


def test_a_writer_error_surfaces_and_stops_the_run():
    grid = TileGrid(128, 32, 32, 0, 16)  # 4 tiles

    def emit(y: int, x: int, block: np.ndarray) -> None:
        raise OSError("disk full (simulated)")

    blender = StreamingBlender(grid, 2, emit)
    with pytest.raises(OSError, match="disk full"):
        run_pipeline(grid, lambda: _Source(np.zeros((1, 128, 32), np.float32), 32), lambda ins: ins[0], blender,
                     torch.device("cpu"), 1, RecordingProgress())


class _SlowSource(_Source):
    def read(self, tile):
        time.sleep(0.05)
        return super().read(tile)


@pytest.mark.parametrize("slow", ["reads", "writer"])
def test_stage_seconds_show_which_stage_held_the_model_back(slow):
    """A run's ``stage_seconds`` say whether the readers or the writer limited it (on a GPU the
    next step is chosen from these): 16 tiles, one of the two sides sleeping 50 ms per tile."""
    grid = TileGrid(128, 128, 32, 0, 16)  # 16 tiles
    img = np.random.default_rng(3).random((1, 128, 128)).astype(np.float32)
    out = np.zeros((1, 128, 128))

    def emit(y: int, x: int, block: np.ndarray) -> None:
        if slow == "writer":
            time.sleep(0.05 * block.shape[1] * block.shape[2] / 32**2)  # 50 ms per tile's worth of pixels
        out[:, y : y + block.shape[1], x : x + block.shape[2]] = block[:1]

    source = _SlowSource if slow == "reads" else _Source
    stats = run_pipeline(grid, lambda: source(img, grid.size), lambda inputs: inputs[0] * 1.0,
                         StreamingBlender(grid, 2, emit), torch.device("cpu"), 1, RecordingProgress(), readers=1)
    np.testing.assert_allclose(out, img)
    s = stats.stage_seconds()
    assert set(s) == {"loop", "read_wait", "forward", "write_wait", "device_wait", "blend_write"}
    assert s["device_wait"] == 0.0  # CPU: results are on the host at once
    slept = 16 * 0.05
    if slow == "reads":
        assert s["read_wait"] >= 0.6 * slept and s["write_wait"] < s["read_wait"] / 2, s
    else:
        # the model's thread was held by the full writer queue and then waited for it to drain
        assert s["blend_write"] >= slept * 0.95 and s["write_wait"] >= 0.6 * slept, s
        assert s["read_wait"] < s["write_wait"] / 2, s
    assert s["loop"] >= slept and s["forward"] < s["loop"]
