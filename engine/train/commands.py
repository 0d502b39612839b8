"""``cloudrm train`` and ``cloudrm evaluate``: argument parsing and handlers (called by ``cli.py``).

``train`` has two forms:

- ``cloudrm train --model NAME --data DIR [--config FILE] [flags] --out RUN_DIR`` (or
  ``--resume RUN_DIR``): epoch-based training on a dataset (``runner.py``), the model's paper
  settings as defaults;
- ``cloudrm train --config FILE`` where FILE is a step-based demo config (its ``data:`` is a
  mapping with a ``kind``, e.g. ``engine/configs/train/glf_cr_demo.yaml``): the synthetic-cloud
  demo loop (``loop.py``), as before; ``--steps`` and ``--out`` (a checkpoint file) apply.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml


def _is_demo_config(path: str | None) -> bool:
    if not path or not Path(path).is_file():
        return False
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return isinstance(raw, dict) and isinstance(raw.get("data"), dict)


def _progress(desc: str, unit: str) -> Any:
    from ..progress import NullProgress, TqdmProgress

    return TqdmProgress(desc, unit=unit) if int(os.environ.get("RANK", "0")) == 0 else NullProgress()


def _seasons(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [] if text.strip().lower() == "all" else [s.strip() for s in text.split(",") if s.strip()]


def _train_demo(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .config import TrainConfig
    from .loop import train

    dataset_only = ("epochs", "max_steps", "crop", "batch_size", "lr", "workers", "amp", "skip_bad", "loss")
    extra = [f"--{k.replace('_', '-')}" for k in dataset_only if getattr(args, k) not in (None, False)]
    if extra:
        raise InputError(f"{args.config} is a step-based demo config (data: with a kind); {', '.join(extra)} "
                         "apply to dataset runs (--model NAME --data DIR)")
    bar = _progress("cloudrm train", "step")
    try:
        cfg = TrainConfig.from_yaml(
            args.config, steps=args.steps, out=args.out, device=args.device, threads=args.threads
        )
        path, record = train(cfg, bar)
    finally:
        getattr(bar, "close", lambda: None)()
    print(f"wrote {path}")
    print(json.dumps({k: record[k] for k in ("steps", "seconds", "held_out_before", "held_out_after")}, indent=2))
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``cloudrm train``."""
    from ..api import build_config, train_run
    from ..errors import InputError

    if _is_demo_config(args.config) and not args.model and not args.data and not args.resume:
        return _train_demo(args)
    if args.steps is not None:
        raise InputError(
            "--steps belongs to the demo configs; dataset runs count epochs (--epochs) or steps (--max-steps)"
        )
    out = args.out or args.resume
    if not out:
        raise InputError("training needs a run folder: --out RUN_DIR (or --resume RUN_DIR)")
    data_options: dict[str, Any] = {}
    for key in ("coverage", "csv", "lc_level"):
        if getattr(args, key) is not None:
            data_options[key] = getattr(args, key)
    seasons = _seasons(args.seasons)
    if seasons is not None:
        data_options["seasons"] = seasons
    cfg = build_config(
        model=args.model, config=args.config, resume=args.resume, data=args.data, epochs=args.epochs,
        max_steps=args.max_steps, crop=args.crop, batch_size=args.batch_size, lr=args.lr, device=args.device,
        amp=True if args.amp else None, workers=args.workers, loss=args.loss, seed=args.seed, threads=args.threads,
        skip_bad=True if args.skip_bad else None, val_max=args.val_max, val_every=args.val_every,
        val_crop=args.val_crop, resize=args.resize, sar_encoder=args.sar_encoder, log_every=args.log_every,
    )
    if data_options:
        cfg.data_options = {**cfg.data_options, **data_options}
        cfg.__post_init__()
    bar = _progress("cloudrm train", "step")
    try:
        res = train_run(cfg, out, resume=bool(args.resume), progress=bar)
    finally:
        getattr(bar, "close", lambda: None)()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder {res.out}: {res.epochs} epoch(s), {res.steps} steps, {res.seconds:.1f} s"
              + (" (stopped by --max-steps)" if res.stopped else ""))
        print(f"wrote {res.last}" + (f" and {res.best} (best validation PSNR {res.best_psnr:.2f} dB, epoch "
                                     f"{res.best_epoch})" if res.best and res.best_psnr is not None else ""))
        if res.skipped:
            print(f"skipped {len(res.skipped)} bad sample(s); see {res.out / 'summary.json'}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``cloudrm evaluate``."""
    from ..api import evaluate

    bar = _progress("cloudrm evaluate", "image")
    try:
        res = evaluate(
            args.checkpoint, args.data, args.out, split=args.split, crop_center=args.crop_center, device=args.device,
            model=args.model, resize=args.resize, amp=args.amp, skip_bad=args.skip_bad, max_images=args.max_images,
            lc_level=args.lc_level, csv=args.csv, coverage=args.coverage, examples=args.examples,
            workers=args.workers or 0, progress=bar,
        )
    finally:
        getattr(bar, "close", lambda: None)()
    m = res.summary["mean"]
    print(f"{res.summary['images']} images: PSNR {m['psnr']:.4f} dB, SSIM {m['ssim']:.4f}, SAM {m['sam']:.4f}°, "
          f"MAE {m['mae']:.4f}, RMSE {m['rmse']:.4f}")
    print(f"wrote {res.per_image}, {res.summary_path}, {res.report_md}, {res.report_png}")
    return 0


def add_commands(sub: Any) -> None:
    """Add the ``train`` and ``evaluate`` sub-commands to ``cloudrm``'s sub-parsers."""
    t = sub.add_parser(
        "train", help="train a model on SEN12MS-CR, SEN12MS-CR-TS or Planet-CR (paper settings), or a demo config",
        description="Dataset runs: --model NAME --data DIR --out RUN_DIR (paper settings; flags override). "
        "Demo runs: --config engine/configs/train/glf_cr_demo.yaml [--steps N] [--out FILE]. "
        "Several GPUs: torchrun --standalone --nproc_per_node=N -m cloudrm_engine.cli train ...",
    )
    t.add_argument("--model", help="registered model (cloudrm models); paper settings are the defaults")
    t.add_argument("--data", help="dataset folder: SEN12MS-CR (seasonal or GLF-CR data.csv), SEN12MS-CR-TS, Planet-CR")
    t.add_argument("--config", help="YAML of training options (over the paper settings), or a demo config")
    t.add_argument("--epochs", type=int, help="number of epochs")
    t.add_argument("--max-steps", type=int, help="stop after N optimiser steps in total (writes last.pt)")
    t.add_argument("--crop", type=int, help="random training crop in px")
    t.add_argument("--batch-size", type=int, help="samples per step per process")
    t.add_argument("--lr", type=float, help="learning rate (other parameter groups keep their ratio)")
    t.add_argument("--loss", help="l1, l1_ssim, cafr, align_cr or ca_mtcr")
    t.add_argument("--device", help="auto, cpu or cuda:N (torchrun: each process takes its local GPU)")
    t.add_argument("--amp", action="store_true", help="mixed precision on CUDA (ignored on the CPU)")
    t.add_argument("--workers", type=int, help="DataLoader worker processes per training process")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--seed", type=int, help="random seed")
    t.add_argument("--seasons", help="SEN12MS-CR seasons, comma-separated, or 'all'")
    t.add_argument("--resize", type=int, help="resize whole images to this size before cropping (0 = off)")
    t.add_argument("--val-max", type=int, help="score at most N validation samples (0 = all)")
    t.add_argument("--val-every", type=int, help="validate every N epochs")
    t.add_argument("--val-crop", type=int, help="validation centre crop in px (0 = whole image)")
    t.add_argument("--log-every", type=int, help="steps between loss lines")
    t.add_argument("--skip-bad", action="store_true", help="log and skip samples with missing or broken files")
    t.add_argument("--sar-encoder", help="CA-MTCR: pretrained SAR encoder from `cloudrm pretrain-sar`")
    t.add_argument("--coverage", help="SEN12MS-CR-TS: precomputed coverage (cloudrm_coverage.csv or UnCRtainTS .npy)")
    t.add_argument("--csv", help="Planet-CR: CSV of the training split (rows relative to the split folder)")
    t.add_argument("--lc-level", choices=["1", "2"], help="Planet-CR land-cover classes")
    t.add_argument("--resume", help="continue the run in this folder exactly (its config.yaml, last.pt)")
    t.add_argument("--out", help="run folder (demo configs: checkpoint file)")
    t.add_argument("--steps", type=int, help="demo configs only: number of steps")
    t.set_defaults(func=run_train)

    e = sub.add_parser(
        "evaluate", help="score a checkpoint on a dataset split: per-image CSV, summary, report",
        description="GLF-CR protocol: --crop-center 128 on the split-3 rows of data.csv (--split test). "
        "Planet-CR official test extent: --crop-center 160.",
    )
    e.add_argument("--checkpoint", required=True, help="cloudrm checkpoint (or official weights with --model)")
    e.add_argument("--data", required=True, help="dataset folder (as for train)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to score (default test)")
    e.add_argument("--crop-center", type=int, help="score the centred PX × PX window (default: the whole image)")
    e.add_argument("--resize", type=int, help="resize whole images first (default: as the checkpoint was trained)")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    e.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    e.add_argument("--model", help="model of a bare/official state dict")
    e.add_argument("--max-images", type=int, help="score only the first N images")
    e.add_argument("--skip-bad", action="store_true", help="log and skip images with missing or broken files")
    e.add_argument("--lc-level", default="1", choices=["1", "2"], help="Planet-CR land-cover classes (default 1)")
    e.add_argument("--csv", help="Planet-CR: CSV of the split (rows relative to the split folder)")
    e.add_argument("--coverage", help="SEN12MS-CR-TS: precomputed coverage file")
    e.add_argument("--examples", type=int, default=4, help="images shown in report.png (default 4)")
    e.add_argument("--workers", type=int, help="DataLoader worker processes (reading, cloud masks)")
    e.add_argument("--out", required=True, help="output folder")
    e.set_defaults(func=run_evaluate)
