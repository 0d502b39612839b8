#!/usr/bin/env python3
"""Before/after benchmark of the networks' fast paths (issue 11, model part), as ratios.

    .venv/bin/python scripts/bench_layers.py [--ref 65fb2c4] [--models glf_cr,mmcanet]
        [--sizes 128,256] [--batch 1] [--repeat 3] [--threads 2] [--clock wall|cpu]
        [--device cpu] [--no-layers] [--no-models]

The "before" code is the engine at git revision --ref (default: the last commit before the
fast paths), extracted to a temporary folder and imported as a second package next to the
working tree's ``cloudrm_engine``; both get the same random weights and inputs. For every
model and tile size, and for the changed layers, it prints ms per tile before and after
(best of --repeat, runs interleaved so that load from other processes hits both alike), the
before/after ratio and the largest absolute output difference; for models with a
``channels_last`` switch also what that switch alone buys (both runs on the new code). Nothing is asserted: the
equality checks are tests/engine/test_fast_paths.py.

``--clock cpu`` measures the process's CPU time instead of wall time: on a machine shared
with other jobs it is far steadier (use it with ``--threads 1``; with more threads it also
counts the time threads spend waiting for each other).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import cloudrm_engine
from cloudrm_engine.models import create_model, model_card

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REF = "65fb2c4"  # last commit before the fast paths
REF_PACKAGE = "cloudrm_engine_ref"


def load_reference(rev: str) -> ModuleType:
    """The engine at ``rev`` as package ``cloudrm_engine_ref`` (its imports are all relative)."""
    blob = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "engine"], check=True, capture_output=True
    ).stdout
    root = Path(tempfile.mkdtemp(prefix="bench_layers_"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(root)  # our own repository's archive
    spec = importlib.util.spec_from_file_location(
        REF_PACKAGE, root / "engine" / "__init__.py", submodule_search_locations=[str(root / "engine")]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[REF_PACKAGE] = package
    spec.loader.exec_module(package)
    return package


def sub(name: str, ref: bool) -> ModuleType:
    """Module ``name`` (e.g. ``models.glf_cr``) of the reference or the current engine."""
    return importlib.import_module(f"{REF_PACKAGE if ref else cloudrm_engine.__name__}.{name}")


def best_ms(fns: list[Callable[[], Any]], repeat: int, device: torch.device, clock: str) -> list[float]:
    """Best time of each function in ms, runs interleaved, one warm-up each."""
    now = time.process_time if clock == "cpu" else time.perf_counter

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns:
        fn()
    sync()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = now()
            fn()
            sync()
            best[i] = min(best[i], now() - t0)
    return [b * 1e3 for b in best]


def max_diff(a: Any, b: Any) -> float:
    if isinstance(a, tuple | list):
        return max(max_diff(x, y) for x, y in zip(a, b, strict=True))
    return float((a.float() - b.float()).abs().max())


def report(label: str, before: Callable[[], Any], after: Callable[[], Any], args: argparse.Namespace,
           per: int = 1) -> None:
    diff = max_diff(before(), after())
    t_before, t_after = best_ms([before, after], args.repeat, args.device, args.clock)
    print(
        f"{label:<44} before {t_before / per:9.1f} ms  after {t_after / per:9.1f} ms  "
        f"ratio {t_before / t_after:5.2f}×  max|Δ| {diff:.1e}",
        flush=True,
    )


def model_inputs(name: str, size: int, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    card = model_card(name)
    g = torch.Generator().manual_seed(0)
    lead = (batch, 3) if card.temporal else (batch,)
    opt = torch.rand(*lead, len(card.optical_bands), size, size, generator=g) * 0.6
    sar = torch.rand(*lead, len(card.sar_bands), size, size, generator=g)
    return opt.to(device), sar.to(device)


def bench_models(args: argparse.Namespace) -> None:
    ref_models = sub("models", ref=True)
    for name in args.models:
        torch.manual_seed(0)
        new = create_model(name).to(args.device).eval()
        old = ref_models.create_model(name).to(args.device).eval()
        old.load_state_dict(new.state_dict())
        for size in args.sizes:
            bench_model(f"{name} {size}² batch {args.batch} (per tile)", old, new,
                        model_inputs(name, size, args.batch, args.device), args)


def bench_model(label: str, old: Any, new: Any, x: tuple[torch.Tensor, ...],
                args: argparse.Namespace) -> None:
    with torch.inference_mode():
        report(label, lambda: old(*x), lambda: new(*x), args, per=args.batch)
    if hasattr(new, "channels_last"):  # what channels-last alone buys, both runs on the new code
        def run(flag: bool) -> torch.Tensor:
            new.channels_last = flag
            try:
                return new(*x)
            finally:
                new.channels_last = True

        with torch.inference_mode():
            report("  of which channels-last (off → on)", lambda: run(False), lambda: run(True), args,
                   per=args.batch)


def twin(module: str, cls: str, *init: Any) -> tuple[Any, Any]:
    """(before, after) instances of ``module.cls(*init)`` with the same random weights, eval mode."""
    torch.manual_seed(0)
    new = getattr(sub(module, False), cls)(*init).eval()
    old = getattr(sub(module, True), cls)(*init).eval()
    old.load_state_dict(new.state_dict())
    return old, new


def bench_layers(args: argparse.Namespace) -> None:
    for size in args.sizes:
        bench_layers_at(size, args)


def bench_layers_at(size: int, args: argparse.Namespace) -> None:
    """The changed layers at the shapes a size² tile gives them (GLF-CR blocks run at size/2)."""
    dev = args.device
    g = torch.Generator().manual_seed(1)
    hs = size // 2
    windows = sub("layers.windows", ref=False)
    mask = windows.shifted_window_mask(hs, hs, 8, 4, dev)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(dev)

    def cl(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last)

    # Window attention of a shifted layer (bias + mask), GLF-CR and CAFR-repository order.
    x = windows.window_partition(rand(1, hs, hs, 48), 8)
    s = windows.window_partition(rand(1, hs, hs, 48), 8)
    old, new = twin("models.glf_cr", "DualWindowAttention", 48, 8, 8)
    with torch.inference_mode():
        report(f"DualWindowAttention {size}² tile, shifted", lambda: old(x, s, mask), lambda: new(x, s, mask), args)
    old_r, new_r = twin("models.cafr", "RepoOrderWindowAttention", 48, 8, 8)
    with torch.inference_mode():
        report(f"RepoOrderWindowAttention {size}² tile, shifted", lambda: old_r(x, s, mask),
               lambda: new_r(x, s, mask), args)
    # One dense Swin layer: conv, shift, windows, attention, MLP, concat (inputs channels-last
    # after, as the model gives them).
    old_l, new_l = twin("models.glf_cr", "DenseSTLLayer", 192, 48, 8, 8, 4, 2.0, 0.0)
    f, fs = rand(1, 192, hs, hs), rand(1, 192, hs, hs)
    with torch.inference_mode():
        report(f"DenseSTLLayer 192→240 {size}² tile, shifted", lambda: old_l(f, fs, mask),
               lambda: new_l(cl(f), cl(fs), mask), args)
    # DFG (three 3×3 stages, 1×1 conv 96 → 2400 + LeakyReLU) and the dynamic filter.
    dfg_old, dfg_new = twin("models.glf_cr", "DFG", 192, 5)
    filt_old = sub("layers.dynamic_filter", True).dynamic_filter
    o, r = rand(1, 96, hs, hs), rand(1, 96, hs, hs)
    with torch.inference_mode():
        report(f"DFG + dynamic filter {size}² tile", lambda: filt_old(r, dfg_old(o, r), 5),
               lambda: dfg_new.filter(cl(r), cl(o), cl(r)), args)
    # Align-CR's DCN at the finest pyramid level, with real (non-zero, fractional) offsets.
    dcn_old, dcn_new = twin("layers.deform", "DCNv2Pack", 96, 96, 3, 1, 8)
    offset_weight = torch.randn(dcn_new.conv_offset.weight.shape, generator=g) * 0.02
    with torch.no_grad():
        for dcn in (dcn_old, dcn_new):
            dcn.conv_offset.weight.copy_(offset_weight)
    feat, guide = rand(1, 96, hs, hs), rand(1, 96, hs, hs)
    with torch.inference_mode():
        report(f"DCNv2Pack 96→96 {size}² tile", lambda: dcn_old(feat, guide), lambda: dcn_new(feat, guide), args)
    # KBA of an MMCANet full-resolution block (C = 32, 32 bases, 3×3, groups of 4).
    kba_old, kba_new = sub("layers.kbnet", True).kba, sub("layers.kbnet", False).kba_unfolded
    u, att = rand(1, 32, size, size), rand(1, 32, size, size)
    w, b = rand(32, 32 * 4 * 9, scale=0.05), rand(32, 32, scale=0.05)
    with torch.inference_mode():
        report(f"KBA C=32 {size}² tile", lambda: kba_old(u, att, w, b, 3, 4, 8),
               lambda: kba_new(u, att, w, b, 3, 4), args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", default=DEFAULT_REF, help="git revision of the 'before' engine")
    p.add_argument("--models", default="glf_cr,cafr,align_cr,mmcanet,mpir1,ca_mtcr")
    p.add_argument("--sizes", default="128,256")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-layers", action="store_true", help="models only")
    p.add_argument("--no-models", action="store_true", help="layers only")
    args = p.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    load_reference(args.ref)
    print(
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"before = {args.ref}"
    )
    if not args.no_layers:
        bench_layers(args)
    if not args.no_models:
        bench_models(args)


if __name__ == "__main__":
    main()
