#!/usr/bin/env python3
"""Benchmark: seconds per tile per model and the whole-scene pipeline's overhead, as ratios.

    .venv/bin/python scripts/bench.py [--device auto] [--tile 256] [--repeat 3]
        [--models glf_cr,align_cr] [--no-pipeline]

Prints (nothing is asserted):
  - for each model in --models: forward seconds per tile² on the device (random weights: the
    speed does not depend on them; temporal models with T = 3) and the ratio to GLF-CR;
  - GLF-CR GMAC/s (analytic 249.9 GMAC per 256² tile, glf_cr.md §2.5);
  - pipeline / model time on the bundled scene (reading, scaling, blending, writing overhead);
  - tiled (tile/2, overlap tile/8) / one-tile time on the same scene.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cloudrm_engine.inference.device import describe_device, resolve_device
from cloudrm_engine.api import predict_scene
from cloudrm_engine.io.checkpoint import build_model, load_checkpoint
from cloudrm_engine.models import create_model, model_card

REPO = Path(__file__).resolve().parent.parent
S2 = REPO / "resources/sample/ROIs1868_summer_s2_cloudy_19_p30.tif"
S1 = REPO / "resources/sample/ROIs1868_summer_s1_19_p30.tif"
CKPT = REPO / "resources/checkpoints/glf_cr_demo.pt"
GMAC_256 = 249.9


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def model_seconds(name: str, tile: int, dev: torch.device, repeat: int) -> float:
    """Median forward seconds of ``name`` (random weights) on one tile² (T = 3 if temporal)."""
    card = model_card(name)
    torch.manual_seed(0)
    model = create_model(name).to(dev).eval()
    lead = (1, 3) if card.temporal else (1,)
    x = torch.rand(*lead, len(card.optical_bands), tile, tile, device=dev)
    s = torch.rand(*lead, len(card.sar_bands), tile, tile, device=dev)
    with torch.inference_mode():
        model(x, s)  # warm-up
        return timed(lambda: model(x, s), repeat)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--models", default="glf_cr,align_cr", help="comma-separated registry names")
    p.add_argument("--no-pipeline", action="store_true", help="only the per-model forward times")
    a = p.parse_args()
    dev = resolve_device(a.device)
    print(f"device: {describe_device(dev)}, torch threads {torch.get_num_threads()}")
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    base = None
    for name in names:
        t = model_seconds(name, a.tile, dev, a.repeat)
        base = t if name == "glf_cr" else base
        ratio = f"; {name} / glf_cr = {t / base:.2f}" if base and name != "glf_cr" else ""
        print(f"{name} forward: {t:.3f} s per {a.tile}² tile on {dev.type}{ratio}", flush=True)
    if a.no_pipeline:
        return
    model = build_model(load_checkpoint(CKPT)).to(dev)
    x = torch.rand(1, 13, a.tile, a.tile, device=dev)
    s = torch.rand(1, 2, a.tile, a.tile, device=dev)
    with torch.inference_mode():
        model(x, s)  # warm-up
        t_model = timed(lambda: model(x, s), a.repeat)
    gmac = GMAC_256 * (a.tile / 256) ** 2
    print(f"glf_cr (demo checkpoint) forward: {t_model:.3f} s per {a.tile}² tile, {gmac / t_model:.1f} GMAC/s")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o.tif"
        t_one = timed(lambda: predict_scene(S2, S1, out, checkpoint=CKPT, device=str(dev), tile_size=256, overlap=32), a.repeat)
        t_tiled = timed(lambda: predict_scene(S2, S1, out, checkpoint=CKPT, device=str(dev), tile_size=128, overlap=32), a.repeat)
    t_model_256 = t_model * (256 / a.tile) ** 2
    print(f"pipeline on the 256² sample, one tile: {t_one:.3f} s; pipeline / model = {t_one / t_model_256:.2f}")
    print(f"tiled 128 px / overlap 32 (9 tiles): {t_tiled:.3f} s; tiled / one-tile = {t_tiled / t_one:.2f}")


if __name__ == "__main__":
    main()
