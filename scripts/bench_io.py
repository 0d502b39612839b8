#!/usr/bin/env python3
"""What one CPU thread spends per tile around the model: reading + scaling, and blending + DN conversion.

    scripts/bench_io.py [--size 2048] [--model glf_cr] [--repeat 3] [--scenes DIR]

On a synthetic scene as ``scripts/bench`` writes it (tiled deflate GeoTIFFs mirrored from the
bundled scene), with the model's default tiles, it times on this thread alone:

- ``read_ms_per_tile``: the pipeline's tile source (optical and SAR read, NaN fill, scaling),
  inside a reader thread's GDAL environment as the pipeline sets it up;
- ``blend_convert_ms_per_tile``: the streaming blender over every tile plus the conversion of
  each finished region to the output's DN (writing to disk is left out: GDAL's worker threads
  do that);

best of ``--repeat``, and prints one JSON line. To compare with an older engine, check it out
with ``git worktree add`` and put a folder with ``cloudrm_engine`` linked to its ``engine/``
first on ``PYTHONPATH``. The pipeline's readers and writer run these in
their own threads; a GPU run keeps up when its forward pass per tile is longer than these
divided by the reader threads (reading) and than the writer's share (blending).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def measure(size: int, model: str, repeat: int, scenes: Path) -> dict[str, float | int | str]:
    import rasterio
    from bench import scenes_for  # scripts/bench.py, beside this script (its folder is on sys.path)

    from cloudrm_engine.api import RunRequest, bundled_checkpoint
    from cloudrm_engine.inference.predictor import (
        Recorder,
        _output_converter,
        _SceneRun,
        _SceneSource,
        check_alignment,
        load_model_checkpoint,
        make_grid,
        optical_fill,
        sar_fill,
        select_optical_bands,
    )
    from cloudrm_engine.inference.tiling import StreamingBlender
    from cloudrm_engine.io.raster import raster_info
    from cloudrm_engine.models import model_card
    from cloudrm_engine.progress import Quiet

    try:
        from cloudrm_engine.io.raster import thread_env
    except ImportError:  # an engine from before per-thread environments (compare with git worktrees)
        def thread_env() -> None:
            pass

    opt_paths, sar_paths = scenes_for(model, size, scenes)
    opt, sar = raster_info(opt_paths[0], role="optical"), raster_info(sar_paths[0], role="SAR")
    card, rec = model_card(model), Recorder(Quiet())
    ckpt_arg = bundled_checkpoint(model)
    if ckpt_arg is None:
        raise SystemExit(f"bench_io: {model} has no bundled checkpoint; use one that has (glf_cr)")
    req = RunRequest(optical=[str(opt.path)], sar=[str(sar.path)], output=str(scenes / "unused.tif"), model=model,
                     checkpoint=str(ckpt_arg))
    grid = make_grid(opt.height, opt.width, req, card.defaults, card.size_multiple, rec, model)
    _, ckpt = load_model_checkpoint(model, str(ckpt_arg))
    in_bands = select_optical_bands(opt, list(ckpt.bands["optical"]), model, Path(ckpt_arg).name)
    run = _SceneRun(opt, sar, card, in_bands, ckpt.normalisation, grid.size,
                    check_alignment(sar, opt, rec, card.sar_resampling), grid=grid)
    with rasterio.open(opt.path) as ds:
        run.opt_fill, run.stats = optical_fill(ds, opt, rec)
    with rasterio.open(sar.path) as ds:
        run.sar_fill = sar_fill(ds, sar, ckpt.normalisation, rec)
    tiles = list(grid)

    reads: list[float] = []

    def read_all() -> None:  # on a fresh thread, as a pipeline reader
        thread_env()
        for _ in range(repeat):
            src = _SceneSource(run)  # fresh handles: GDAL's block cache of the last pass is gone
            try:
                t0 = time.perf_counter()
                for t in tiles:
                    src.read(t)
                reads.append(time.perf_counter() - t0)
            finally:
                src.close()

    th = threading.Thread(target=read_all)
    th.start()
    th.join()

    bands = len(card.output_bands or card.optical_bands)
    convert = _output_converter(opt, float(ckpt.normalisation["optical"]["scale"]),
                                float(ckpt.normalisation["optical"]["clip"][1]), bands)
    rng = np.random.default_rng(0)
    pred = np.concatenate([rng.random((bands, grid.size, grid.size)), np.ones((1, grid.size, grid.size))])
    pred = pred.astype(np.float32)
    blends = []
    for _ in range(repeat):
        blender = StreamingBlender(grid, bands + 1, lambda y, x, block: convert(block))
        t0 = time.perf_counter()
        for t in tiles:
            blender.add(t, pred, grid.weight(t))
        blends.append(time.perf_counter() - t0)
    return {"model": model, "size": size, "tiles": len(tiles), "tile": grid.size, "overlap": grid.overlap,
            "read_ms_per_tile": round(1000 * min(reads) / len(tiles), 2),
            "blend_convert_ms_per_tile": round(1000 * min(blends) / len(tiles), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--model", default="glf_cr")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--scenes", help="folder for the synthetic scenes (kept; default a temporary folder)")
    a = p.parse_args()
    scenes = Path(a.scenes) if a.scenes else Path(tempfile.mkdtemp(prefix="cloudrm-bench-io-"))
    scenes.mkdir(parents=True, exist_ok=True)
    print(json.dumps(measure(a.size, a.model, max(1, a.repeat), scenes)))


if __name__ == "__main__":
    main()
