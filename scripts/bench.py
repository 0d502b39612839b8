#!/usr/bin/env python3
"""Benchmark the whole-scene pipeline against the bare model, per model, device and scene size.

    scripts/bench [--models mmcanet,glf_cr] [--sizes 512,1024] [--device auto] [--tile 0]
                  [--repeat 1] [--json] [--scenes DIR]

For every model and size it writes (or reuses, with ``--scenes``) a synthetic scene the way a
user's data looks: tiled, deflate-compressed GeoTIFFs, 13-band uint16 Sentinel-2 L1C (4-band
PlanetScope for align_cr) and a 2-band float32 Sentinel-1 raster in dB, made by mirroring the
bundled real scene. Then, in a fresh process per (model, size) so that peak memory is that
run's alone, it measures (nothing is asserted; a benchmark prints ratios):

- ``forward_ms``: milliseconds per tile of the model alone, inputs already on the device, for
  float32 and bfloat16 (CUDA only), batch 1 and the automatic batch;
- ``pipeline_s``: ``engine.api.run`` end to end (keep-clear off: the model's prediction for
  every pixel), automatic batch and precision;
- ``stage_seconds``: where the pipeline's time went (set-up, the tile loop, the model's thread
  waiting for the readers / for the writer, the writer waiting for the device / working,
  finishing): which stage to work on next;
- ``model_only_s``: forward passes for the same tiles, batch and precision without reading,
  copying or writing, and ``overhead_ratio`` = pipeline / model-only;
- ``peak_rss_mb`` (the process's peak resident memory) and ``peak_cuda_mb``;
- ``floor_s`` and ``floor_ms_per_tile``: the same run with the network replaced by a copy of its
  input, i.e. what the pipeline itself costs; no device makes a run faster than this;
- per model and device, ``memory_growth_ratio`` = peak RSS at the largest size ÷ at the smallest;
- on CUDA, once per model, ``bf16_check``: the PSNR on the bundled sample's held-out set in fp32
  and bf16 (engine/inference/precision_check.py), ``delta_db``, the bf16 speed-up at the
  automatic batch and ``bf16_fair_default`` (faster and < 0.05 dB lost: the rule for a model
  card's ``cuda_precision``);
- on CUDA, once per model, ``graph_check``: the forward pass replayed from a CUDA graph at the
  run's batch and precision against the eager pass (ms per tile, ``speedup``, ``max_abs_diff`` on
  the same inputs), the whole run again with graphs on (``pipeline_s``, ``overhead_ratio``) and
  ``graphs_fair_default`` (> 2 % faster and equal within 1e-4 in fp32: the rule for a card's
  ``cuda_graphs``).

Models get random weights (speed does not depend on them); temporal models (ca_mtcr) a
3-date series of the same scene.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
S2 = REPO / "resources/sample/ROIs1868_summer_s2_cloudy_19_p30.tif"
S1 = REPO / "resources/sample/ROIs1868_summer_s1_19_p30.tif"
PLANET = ("Blue", "Green", "Red", "NIR")
PLANET_FROM_S2 = (2, 3, 4, 8)  # 1-based B2, B3, B4, B8


def mirrored(a: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """(C, h, w) window at (y0, x0) of ``a`` repeated with mirroring: an endless seamless scene."""
    _, ah, aw = a.shape
    ys = np.arange(y0, y0 + h) % (2 * ah)
    xs = np.arange(x0, x0 + w) % (2 * aw)
    ys = np.where(ys < ah, ys, 2 * ah - 1 - ys)
    xs = np.where(xs < aw, xs, 2 * aw - 1 - xs)
    return a[:, ys][:, :, xs]


def write_scene(path: Path, src: Path, size: int, bands: tuple[int, ...] | None = None,
                names: tuple[str, ...] | None = None) -> Path:
    """A size² tiled deflate GeoTIFF mirrored from ``src`` (written strip by strip)."""
    import rasterio
    from rasterio.transform import Affine

    if path.is_file():
        return path
    with rasterio.open(src) as ds:
        a = ds.read(list(bands) if bands else None)
        crs, t = ds.crs, ds.transform
        nodata = ds.nodata
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": a.shape[0], "dtype": a.dtype.name,
        "crs": crs, "transform": Affine(t.a, 0, t.c, 0, t.e, t.f), "nodata": nodata, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER", "num_threads": "ALL_CPUS",
    }
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y in range(0, size, 1024):
            h = min(1024, size - y)
            dst.write(mirrored(a, y, 0, h, size), window=((y, y + h), (0, size)))
        for i, n in enumerate(names or (), start=1):
            dst.set_band_description(i, n)
    tmp.rename(path)
    return path


def scenes_for(model: str, size: int, folder: Path) -> tuple[list[str], list[str]]:
    """(optical paths, SAR paths) of the synthetic scene a model needs."""
    from cloudrm_engine.api import method_info

    info = method_info(model)
    sar = write_scene(folder / f"s1_{size}.tif", S1, size)
    if info.optical_bands == PLANET:
        opt = write_scene(folder / f"planet_{size}.tif", S2, size, PLANET_FROM_S2, PLANET)
    else:
        opt = write_scene(folder / f"s2_{size}.tif", S2, size)
    n = 3 if info.temporal else 1
    return [str(opt)] * n, [str(sar)] * n


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def forward_ms(net: Any, inputs: tuple[Any, ...], dev: Any, batch: int, precision: str, repeat: int,
               graphs: bool = False) -> float:
    """Median milliseconds per tile of ``net`` on device-resident random inputs (``graphs``: replayed
    from a CUDA graph, as a run does where the card's ``cuda_graphs`` is on)."""
    import torch

    from cloudrm_engine.inference.predictor import model_forward

    fwd = model_forward(net, dev, precision, graphs=graphs)
    xs = tuple(t.repeat(batch, *([1] * (t.dim() - 1))) for t in inputs)
    times = []
    with torch.inference_mode():
        for _ in range(3 if graphs else 1):  # warm-up; a graph is captured at the third call
            fwd(xs)
        for _ in range(repeat):
            _sync(dev)
            t0 = time.perf_counter()
            fwd(xs)
            _sync(dev)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / batch


def bf16_check(model: str, net: Any, dev: Any, fw: dict[str, float | None]) -> dict[str, Any]:
    """Is bf16 a fair CUDA default for ``model``? Faster at the automatic batch, and < 0.05 dB of
    PSNR lost on the sample's held-out set (the demo checkpoint for glf_cr; random weights else)."""
    from cloudrm_engine.api import bundled_checkpoint
    from cloudrm_engine.inference.precision_check import precision_effect
    from cloudrm_engine.io.checkpoint import build_model, load_checkpoint

    demo = bundled_checkpoint(model)
    weights = build_model(load_checkpoint(demo)).to(dev) if demo else net
    effect = precision_effect(weights, model, dev)
    fp32, bf16 = fw.get("fp32_batchauto"), fw.get("bf16_batchauto")
    speedup = round(fp32 / bf16, 3) if fp32 and bf16 else None
    return {**effect, "weights": Path(demo).name if demo else "random", "speedup_batch_auto": speedup,
            "bf16_fair_default": bool(speedup and speedup > 1.0 and abs(effect["delta_db"]) < 0.05)}


def graph_check(net: Any, req: Any, inputs: tuple[Any, ...], dev: Any, res: dict[str, Any], out: Path,
                repeat: int, eager_ms: float | None = None) -> dict[str, Any]:
    """Are CUDA graphs a fair default for this model (a card's ``cuda_graphs``)? The forward pass
    replayed from a graph at the run's batch and precision against the eager pass: speed-up,
    largest difference on the same inputs, and the whole run again with graphs on.
    ``eager_ms``: the eager pass's ms per tile at that batch and precision, if already measured."""
    import dataclasses

    import torch

    from cloudrm_engine.api import run
    from cloudrm_engine.inference.predictor import model_forward
    from cloudrm_engine.models import model_card
    from cloudrm_engine.progress import Quiet

    batch, precision = res["batch"], res["precision"]
    xs = tuple(t.repeat(batch, *([1] * (t.dim() - 1))) for t in inputs)
    xs = (torch.rand_like(xs[0]), *xs[1:])  # tiles that differ within the batch
    notes: list[str] = []
    graphed = model_forward(net, dev, precision, graphs=True, note=notes.append)
    with torch.inference_mode():
        want = model_forward(net, dev, precision)(xs).float().clone()
        for _ in range(3):
            got = graphed(xs).float().clone()
    captured = getattr(graphed, "replays", 0) > 0
    if captured:
        graphed.release()  # type: ignore[attr-defined]  # its memory pool, before the next graph
    if eager_ms is None:
        eager_ms = forward_ms(net, inputs, dev, batch, precision, max(repeat, 1))
    graph_ms = forward_ms(net, inputs, dev, batch, precision, max(repeat, 1), graphs=True)
    defaults = model_card(res["model"]).defaults
    before = dict(defaults)
    defaults["cuda_graphs"] = True  # the card is shared in this process: put back below
    try:
        t0 = time.perf_counter()
        run(dataclasses.replace(req, output=str(out)), Quiet())
        pipeline_s = round(time.perf_counter() - t0, 3)
    finally:
        defaults.clear()
        defaults.update(before)
    diff = float((got - want).abs().max())
    speedup = round(eager_ms / graph_ms, 3)
    return {"captured": captured, "notes": notes, "batch": batch, "precision": precision,
            "eager_ms_per_tile": round(eager_ms, 3), "graph_ms_per_tile": round(graph_ms, 3), "speedup": speedup,
            "max_abs_diff": diff, "pipeline_s": pipeline_s,
            "overhead_ratio": round(pipeline_s / (graph_ms / 1000 * res["tiles"]), 3),
            "graphs_fair_default": bool(captured and speedup > 1.02 and diff < (1e-4 if precision == "fp32" else 1e-2))}


def worker(a: argparse.Namespace) -> dict[str, Any]:
    """One (model, size) measurement in this process."""
    import torch

    from cloudrm_engine.api import RunRequest, run
    from cloudrm_engine.inference.device import describe_device, resolve_device
    from cloudrm_engine.inference.predictor import (
        Recorder,
        auto_batch_size,
        make_grid,
        model_forward,
        use_cuda_graphs,
    )
    from cloudrm_engine.io.checkpoint import Checkpoint, build_model, save_checkpoint
    from cloudrm_engine.models import create_model, model_card
    from cloudrm_engine.progress import Quiet

    dev = resolve_device(a.device)
    card = model_card(a.model)
    torch.manual_seed(0)
    net0 = create_model(a.model)
    tmp = Path(tempfile.mkdtemp(prefix="cloudrm-bench-"))
    ckpt = save_checkpoint(tmp / f"{a.model}.pt", Checkpoint(
        model=a.model, config={}, state_dict=net0.state_dict(),
        bands={"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
        normalisation=card.normalisation, trained_on="benchmark: random weights"))
    net = build_model(Checkpoint(model=a.model, config={}, state_dict=net0.state_dict(),
                                 bands={"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
                                 normalisation=card.normalisation)).to(dev)
    opt, sar = scenes_for(a.model, a.size, Path(a.scenes))
    req = RunRequest(optical=opt, sar=sar, output=str(tmp / "out.tif"), model=a.model, checkpoint=str(ckpt),
                     device=a.device, tile_size=a.tile, keep_clear=False,
                     dates=["2020-01-01", "2020-01-11", "2020-01-21"] if card.temporal else None)
    # the run's own grid (tile size, default overlap, the model's size multiple)
    grid = make_grid(a.size, a.size, req, card.defaults, card.size_multiple, Recorder(Quiet()), a.model)
    t = grid.size
    lead = (3,) if card.temporal else ()
    inputs = [torch.rand(1, *lead, len(card.optical_bands), t, t, device=dev),
              torch.rand(1, *lead, len(card.sar_bands), t, t, device=dev)]
    if card.temporal:
        inputs.append(torch.tensor([[-20.0, -10.0, 0.0]], device=dev))
    inputs_t = tuple(inputs)
    example = tuple(x[0].cpu().numpy() for x in inputs_t)
    auto = auto_batch_size(model_forward(net, dev, "fp32"), example, dev, len(grid), Recorder(Quiet()))
    res: dict[str, Any] = {"model": a.model, "device": describe_device(dev), "size": a.size, "tile": t,
                           "overlap": grid.overlap, "tiles": len(grid), "batch_auto": auto}
    fw: dict[str, float | None] = {}
    for prec in ("fp32", "bf16"):
        for label, b in (("1", 1), ("auto", auto)):
            fw[f"{prec}_batch{label}"] = (forward_ms(net, inputs_t, dev, b, prec, a.repeat)
                                          if dev.type == "cuda" or prec == "fp32" else None)
    res["forward_ms"] = fw
    if dev.type == "cuda" and a.check_precision:
        res["bf16_check"] = bf16_check(a.model, net, dev, fw)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    result = run(req, Quiet())
    res["pipeline_s"] = round(time.perf_counter() - t0, 3)
    res["batch"], res["precision"] = result.batch_size, result.precision
    res["stage_seconds"] = result.stage_seconds
    graphed = use_cuda_graphs(dev, card)
    per_tile = forward_ms(net, inputs_t, dev, result.batch_size, result.precision, max(a.repeat, 1),
                          graphs=graphed) / 1000
    res["model_only_s"] = round(per_tile * len(grid), 3)
    res["overhead_ratio"] = round(res["pipeline_s"] / res["model_only_s"], 3)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None
    res["threads"] = torch.get_num_threads()
    if dev.type == "cuda" and a.check_precision:
        res["graph_check"] = graph_check(net, req, inputs_t, dev, res, tmp / "graphs.tif", a.repeat,
                                         eager_ms=None if graphed else 1000 * per_tile)
    res["floor_s"] = floor_seconds(req, tmp / "floor.tif")
    res["floor_ms_per_tile"] = round(1000 * res["floor_s"] / len(grid), 2)
    return res


def floor_seconds(req: Any, out: Path) -> float:
    """The same run with the network replaced by a copy of its optical input: what reading,
    normalising, copying, blending and writing cost on their own. Whatever the device, a run
    cannot be faster than this; when the model's own time is below it, the overhead ratio
    exceeds 1 by the difference."""
    import dataclasses

    from cloudrm_engine.api import run
    from cloudrm_engine.inference import predictor, temporal
    from cloudrm_engine.progress import Quiet

    def null_forward(net: Any, device: Any, precision: str, **_: Any) -> Any:
        def forward(inputs: tuple[Any, ...]) -> Any:
            x = inputs[0]
            return (x[:, -1] if x.dim() == 5 else x).clone()  # (B, [T,] C, S, S): the target date

        return forward

    modules = (predictor, temporal)  # both build the forward call of their runs
    real = [m.model_forward for m in modules]
    for m in modules:
        m.model_forward = null_forward
    try:
        t0 = time.perf_counter()
        run(dataclasses.replace(req, output=str(out)), Quiet())
        return round(time.perf_counter() - t0, 3)
    finally:
        for m, f in zip(modules, real, strict=True):
            m.model_forward = f


def document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document: every run, and per model and device the peak-RSS growth ratio."""
    growth = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and "error" not in r]
        if not mine:
            continue
        lo, hi = min(mine, key=lambda r: r["size"]), max(mine, key=lambda r: r["size"])
        growth[f"{model} {lo['device']}"] = round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3)
    return {"runs": rows, "memory_growth_ratio": growth}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mmcanet", help="comma-separated registry names")
    p.add_argument("--sizes", default="512,1024", help="comma-separated scene edges in px")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", type=int, default=0, help="tile size; 0 = each model's default")
    p.add_argument("--repeat", type=int, default=1, help="timed repeats of each forward measurement")
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p.add_argument("--scenes", help="folder for the synthetic scenes (kept; default a temporary folder)")
    p.add_argument("--out", help="also write the JSON document here, rewritten after every run (partial results "
                                 "survive a time limit)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--check-precision", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    scenes = Path(a.scenes) if a.scenes else Path(tempfile.mkdtemp(prefix="cloudrm-bench-scenes-"))
    scenes.mkdir(parents=True, exist_ok=True)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    sizes = sorted(int(s) for s in a.sizes.split(",") if s.strip())
    rows = []
    for model in models:
        for size in sizes:
            t0 = time.time()
            scenes_for(model, size, scenes)
            write_s = time.time() - t0
            cmd = [sys.executable, __file__, "--worker", "--model", model, "--size", str(size), "--device", a.device,
                   "--tile", str(a.tile), "--repeat", str(a.repeat), "--scenes", str(scenes)]
            cmd += ["--check-precision"] if size == sizes[0] else []  # once per model (CUDA only)
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:  # recorded; the other models still run
                print(r.stderr[-3000:], file=sys.stderr)
                lines = r.stderr.strip().splitlines()
                rows.append({"model": model, "size": size, "error": lines[-1] if lines else f"exit {r.returncode}"})
                continue
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row["scene_write_s"] = round(write_s, 1)
            rows.append(row)
            if a.out:
                Path(a.out).write_text(json.dumps(document(rows), indent=2))
            if not a.json:
                fw = row["forward_ms"]
                print(f"{model:<9} {row['device']:<24} {size:>6}² {row['tiles']:>5} tiles of {row['tile']} "
                      f"(batch {row['batch']}, {row['precision']}): forward {fw['fp32_batch1']:.0f} ms/tile, "
                      f"pipeline {row['pipeline_s']:.1f} s, model-only {row['model_only_s']:.1f} s, "
                      f"overhead {row['overhead_ratio']:.2f}, peak RSS {row['peak_rss_mb']:.0f} MB, "
                      f"floor {row['floor_ms_per_tile']:.0f} ms/tile", flush=True)
    doc = document(rows)
    if a.json:
        print(json.dumps(doc, indent=2))
    else:
        for k, v in doc["memory_growth_ratio"].items():
            print(f"memory_growth_ratio {k}: {v:.3f} (peak RSS at {sizes[-1]}² ÷ at {sizes[0]}²)")
    failed = [f"{r['model']} at {r['size']}²: {r['error']}" for r in rows if "error" in r]
    if failed:
        raise SystemExit("bench worker failed for " + "; ".join(failed))


if __name__ == "__main__":
    main()
