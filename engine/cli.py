"""``cloudrm`` command line.

predict | predict-series | predict-batch | models | train | pretrain-sar | quicklook | info.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import Canceled, CloudrmError


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options every prediction command shares (one :class:`~engine.api.RunRequest` each)."""
    from .api import DEFAULT_MASK_BUFFER_M, DEFAULT_MASK_METHOD, MASK_METHODS, PRECISIONS

    p.add_argument("--checkpoint", help="weights file (default: the model's bundled checkpoint, if it has one)")
    p.add_argument("--device", default="auto", help="auto (CUDA when torch sees one, else CPU), cpu or cuda:N")
    p.add_argument("--tile-size", type=int, default=0, help="tile edge in px; 0 = the model's default")
    p.add_argument("--overlap", type=int, default=0, help="tile overlap in px; 0 = the model's default")
    p.add_argument("--batch-size", type=int, default=0,
                   help="tiles per forward pass; 0 = automatic (1 on the CPU, from free memory on CUDA)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto (float32 on the CPU; the model's measured choice on CUDA), fp32, bf16, fp16")
    p.add_argument("--amp", action="store_true", help="same as --precision bf16 (mixed precision on CUDA)")
    kc = p.add_mutually_exclusive_group()
    kc.add_argument("--keep-clear", dest="keep_clear", action="store_true", default=True,
                    help="keep the input wherever it is clear (default)")
    kc.add_argument("--no-keep-clear", dest="keep_clear", action="store_false",
                    help="write the model's value for every pixel")
    p.add_argument("--filled-mask", help="also write this uint8 GeoTIFF: 1 = pixel from the model, 0 = input kept")
    p.add_argument("--mask-method", default=DEFAULT_MASK_METHOD, choices=MASK_METHODS,
                   help=f"cloud/shadow mask for keep-clear (default {DEFAULT_MASK_METHOD}; needs 13-band S2 L1C)")
    p.add_argument("--mask-buffer", type=float, default=DEFAULT_MASK_BUFFER_M,
                   help=f"grow the mask by this many metres (default {DEFAULT_MASK_BUFFER_M:g})")
    p.add_argument("--mask", help="mask raster to use instead (non-zero = replace with the model's value)")


def request_from_args(args: argparse.Namespace, optical: list[str], sar: list[str], out: str, model: str) -> Any:
    """The :class:`~engine.api.RunRequest` of a prediction command's options."""
    from .api import RunRequest

    return RunRequest(
        optical=optical, sar=sar, output=out, model=model, checkpoint=args.checkpoint, device=args.device,
        tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
        precision="bf16" if args.amp and args.precision == "auto" else args.precision,
        keep_clear=args.keep_clear, filled_mask=args.filled_mask, mask_method=args.mask_method,
        mask_buffer_m=args.mask_buffer, mask=args.mask,
        dates=getattr(args, "dates", None), reducer=getattr(args, "reducer", "median"),
        per=getattr(args, "per", "pixel"),
    )


def _run(request: Any, label: str) -> Any:
    from .api import run
    from .progress import TqdmProgress

    bar = TqdmProgress(label)
    try:
        return run(request, bar)
    finally:
        bar.close()


def _summary(res: Any) -> str:
    parts = [res.model, f"{res.tiles} tiles of {res.tile_size} px, overlap {res.overlap}"]
    if res.skipped_tiles:
        parts.append(f"{res.skipped_tiles} skipped (clear)")
    parts += [res.device, f"batch {res.batch_size}", res.precision, f"{res.seconds:.1f} s"]
    if res.filled_fraction is not None:
        parts.append(f"{100 * res.filled_fraction:.1f} % of the pixels filled by the model")
    return ", ".join(parts)


def _predict(args: argparse.Namespace) -> int:
    res = _run(request_from_args(args, [args.optical], [args.sar], args.out, args.model), "cloudrm predict")
    print(f"wrote {res.output} ({_summary(res)})")
    if res.filled_mask:
        print(f"wrote {res.filled_mask} (filled-pixels mask)")
    return 0


def _predict_series(args: argparse.Namespace) -> int:
    req = request_from_args(args, args.optical, args.sar or [], args.out, args.method)
    res = _run(req, "cloudrm predict-series")
    dates = ", ".join(d or "?" for d in res.dates)
    print(f"wrote {res.output} (target {res.target.name}, dates {dates}; {_summary(res)})")
    if res.filled_mask:
        print(f"wrote {res.filled_mask} (filled-pixels mask)")
    return 0


def _predict_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    template = request_from_args(args, [], [], "", args.model)
    summary = run_batch(args.list, args.out_dir, template)
    print(
        f"{summary.done} done, {summary.skipped} skipped (already complete), {summary.failed} failed "
        f"of {summary.scenes} scene(s) for this process; log: {summary.log}"
    )
    return 0 if summary.failed == 0 else 3


def _models(args: argparse.Namespace) -> int:
    from .api import describe_models

    models = describe_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for m in models:
        print(f"{m['name']:<10} {m['parameters']:>12,d} parameters  {m['title']}")
        print(f"{'':<10} optical: {', '.join(m['optical_bands'])}")
        print(f"{'':<10} SAR: {', '.join(m['sar_bands'])} (dB); H, W multiples of {m['size_multiple']}")
        bundled = m["default_checkpoint"] if m["bundled_weights"] else "none (give --checkpoint)"
        print(f"{'':<10} bundled checkpoint: {bundled}")
    return 0


def _pretrain_sar(args: argparse.Namespace) -> int:
    from .progress import TqdmProgress
    from .train.sar_pretrain import pretrain_sar

    bar = TqdmProgress("cloudrm pretrain-sar", unit="step")
    try:
        path = pretrain_sar(
            args.config, progress=bar, steps=args.steps, out=args.out, device=args.device, threads=args.threads
        )
    finally:
        bar.close()
    print(f"wrote {path}")
    return 0


def _quicklook(args: argparse.Namespace) -> int:
    from .api import side_by_side

    print(side_by_side(args.before, args.after, args.out))
    return 0


def _info(args: argparse.Namespace) -> int:
    from .io.checkpoint import load_checkpoint

    c = load_checkpoint(args.checkpoint, model=args.model)
    print(json.dumps({
        "model": c.model, "config": c.config, "bands": c.bands, "normalisation": c.normalisation,
        "trained_on": c.trained_on, "training": c.training, "created": c.created, "software": c.software,
    }, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cloudrm", description="SAR-optical cloud removal (Sentinel-1 + Sentinel-2).")
    sub = p.add_subparsers(dest="command", required=True)

    from .api import method_names

    pr = sub.add_parser("predict", help="remove clouds from a whole scene, write a GeoTIFF")
    pr.add_argument("--optical", required=True, help="cloudy optical GeoTIFF, DN, with the model's bands (S2 L1C "
                    "13 bands; RGB models pick B4, B3, B2; align_cr: PlanetScope B, G, R, NIR)")
    pr.add_argument("--sar", required=True, help="SAR GeoTIFF, VV and VH in dB")
    pr.add_argument("--model", default="glf_cr", choices=method_names(temporal=False),
                    help="single-date model (see `cloudrm models`; default glf_cr)")
    pr.add_argument("--out", required=True, help="output GeoTIFF (.tif, on the optical grid)")
    add_run_options(pr)
    pr.set_defaults(func=_predict)

    ps = sub.add_parser("predict-series", help="cloud-free image of the latest date of a time series")
    ps.add_argument("--optical", required=True, nargs="+", help="optical GeoTIFFs (S2 L1C, 13 bands), any order")
    ps.add_argument("--sar", nargs="+", help="SAR GeoTIFFs (VV, VH in dB), one per optical raster (ca_mtcr)")
    ps.add_argument("--method", default="least_cloudy", choices=method_names(temporal=True),
                    help="temporal model or weight-free baseline (default least_cloudy)")
    ps.add_argument("--dates", nargs="+", help="ISO dates, one per optical raster (default: metadata, file names)")
    ps.add_argument("--reducer", default="median", choices=["median", "mean"], help="mosaicing reducer")
    ps.add_argument("--per", default="pixel", choices=["pixel", "tile"], help="least_cloudy: per pixel or per tile")
    ps.add_argument("--out", required=True, help="output GeoTIFF (.tif, on the latest optical raster's grid)")
    add_run_options(ps)
    ps.set_defaults(func=_predict_series)

    pb = sub.add_parser(
        "predict-batch",
        help="run `predict` over a CSV of scenes (restartable; several GPUs with torchrun)",
        description="LIST.csv has columns optical, sar and optionally out (paths relative to the CSV). "
        "Outputs that exist complete are skipped; DIR/batch_log.csv gets one row per scene. Under "
        "torchrun --nproc_per_node=N each process takes every N-th scene, on its own GPU.",
    )
    pb.add_argument("list", help="CSV of scenes: optical, sar[, out]")
    pb.add_argument("--out-dir", required=True, help="folder for the outputs and batch_log.csv")
    pb.add_argument("--model", default="glf_cr", choices=method_names(temporal=False),
                    help="single-date model (default glf_cr)")
    add_run_options(pb)
    pb.set_defaults(func=_predict_batch)

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("--json", action="store_true", help="machine-readable list")
    m.set_defaults(func=_models)

    from .train.commands import add_commands  # train (dataset runs and demo configs), evaluate

    add_commands(sub)

    sp = sub.add_parser("pretrain-sar", help="pretrain CA-MTCR's SAR encoder (VQ-VAE, Noise2Noise) from YAML")
    sp.add_argument("--config", required=True, help="YAML file, e.g. engine/configs/train/ca_mtcr_sar_pretrain.yaml")
    sp.add_argument("--steps", type=int, help="override the number of steps")
    sp.add_argument("--out", help="override the encoder file path")
    sp.add_argument("--device", help="auto, cpu or cuda:N")
    sp.add_argument("--threads", type=int, help="torch CPU threads")
    sp.set_defaults(func=_pretrain_sar)

    q = sub.add_parser("quicklook", help="true-colour PNG of two rasters side by side")
    q.add_argument("--before", required=True)
    q.add_argument("--after", required=True)
    q.add_argument("--out", required=True)
    q.set_defaults(func=_quicklook)

    i = sub.add_parser("info", help="print a checkpoint's metadata")
    i.add_argument("checkpoint")
    i.add_argument("--model", help="model of a bare/official state dict (default glf_cr)")
    i.set_defaults(func=_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from .errors import Terminated
    from .io.signals import terminate_as_interrupt

    left = "no output written"
    try:
        args = build_parser().parse_args(argv)
        # what an interruption leaves: nothing of a prediction; a training run keeps its finished epochs
        if args.command in ("train", "pretrain-sar"):
            left = "checkpoints of finished epochs are kept"
        with terminate_as_interrupt():  # SIGTERM unwinds like Ctrl+C: temporary outputs are removed
            return int(args.func(args))
    except Canceled as exc:
        print(f"cloudrm: {exc}", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"cloudrm: {exc}; {left}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"cloudrm: interrupted; {left}", file=sys.stderr)
        return 130
    except CloudrmError as exc:
        print(f"cloudrm: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not a user error: one line unless asked for the traceback
        if os.environ.get("CLOUDRM_DEBUG", "") not in ("", "0"):
            raise
        print(
            f"cloudrm: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(set CLOUDRM_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
