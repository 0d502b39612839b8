"""``cloudrm`` command line: predict | predict-series | models | train | pretrain-sar | quicklook | info."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import Canceled, CloudrmError


def _predict(args: argparse.Namespace) -> int:
    from .api import predict_scene
    from .progress import TqdmProgress

    bar = TqdmProgress("cloudrm predict")
    try:
        res = predict_scene(
            args.optical, args.sar, args.out, model=args.model, checkpoint=args.checkpoint,
            device=args.device, tile_size=args.tile_size, overlap=args.overlap,
            batch_size=args.batch_size, amp=args.amp, progress=bar,
        )
    finally:
        bar.close()
    print(
        f"wrote {res.output} ({res.model}, {res.tiles} tiles of {res.tile_size} px, overlap "
        f"{res.overlap}, {res.device}, {res.seconds:.1f} s)"
    )
    return 0


def _predict_series(args: argparse.Namespace) -> int:
    from .api import predict_series
    from .progress import TqdmProgress

    bar = TqdmProgress("cloudrm predict-series")
    try:
        res = predict_series(
            args.optical, args.sar, args.out, method=args.method, checkpoint=args.checkpoint,
            device=args.device, tile_size=args.tile_size, overlap=args.overlap, dates=args.dates,
            progress=bar, reducer=args.reducer, per=args.per,
        )
    finally:
        bar.close()
    print(
        f"wrote {res.output} ({res.method}, target {res.target.name}, dates {', '.join(d or '?' for d in res.dates)}, "
        f"{res.tiles} tiles of {res.tile_size} px, {res.device}, {res.seconds:.1f} s)"
    )
    return 0


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
        print(f"{'':<10} bundled checkpoint: {m['default_checkpoint'] or 'none'}")
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

    pr = sub.add_parser("predict", help="remove clouds from a whole scene, write a GeoTIFF")
    pr.add_argument("--optical", required=True, help="cloudy optical GeoTIFF, DN, with the model's bands (S2 L1C 13 bands; RGB models pick B4, B3, B2; align_cr: PlanetScope B, G, R, NIR)")
    pr.add_argument("--sar", required=True, help="SAR GeoTIFF, VV and VH in dB")
    pr.add_argument("--model", default="glf_cr", help="registered model name (see `cloudrm models`)")
    pr.add_argument("--checkpoint", help="weights file (default: the model's bundled checkpoint)")
    pr.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default auto)")
    pr.add_argument("--tile-size", type=int, help="tile size in px (default per model: 256)")
    pr.add_argument("--overlap", type=int, help="tile overlap in px (default per model: 32)")
    pr.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default 1)")
    pr.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    pr.add_argument("--out", required=True, help="output GeoTIFF (on the optical grid)")
    pr.set_defaults(func=_predict)

    ps = sub.add_parser("predict-series", help="cloud-free image of the latest date of a time series")
    ps.add_argument("--optical", required=True, nargs="+", help="optical GeoTIFFs (S2 L1C, 13 bands), any order")
    ps.add_argument("--sar", nargs="+", help="SAR GeoTIFFs (VV, VH in dB), one per optical raster (ca_mtcr)")
    ps.add_argument("--method", default="least_cloudy", choices=["ca_mtcr", "least_cloudy", "mosaicing"],
                    help="temporal model or weight-free baseline (default least_cloudy)")
    ps.add_argument("--dates", nargs="+", help="ISO dates, one per optical raster (default: metadata, file names)")
    ps.add_argument("--checkpoint", help="ca_mtcr weights file")
    ps.add_argument("--device", default="auto", help="auto, cpu or cuda:N (ca_mtcr; default auto)")
    ps.add_argument("--tile-size", type=int, help="tile size in px (default 256)")
    ps.add_argument("--overlap", type=int, help="tile overlap in px (default: ca_mtcr 32, baselines 16)")
    ps.add_argument("--reducer", default="median", choices=["median", "mean"], help="mosaicing reducer")
    ps.add_argument("--per", default="pixel", choices=["pixel", "tile"], help="least_cloudy: per pixel or per tile")
    ps.add_argument("--out", required=True, help="output GeoTIFF (on the latest optical raster's grid)")
    ps.set_defaults(func=_predict_series)

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

    args = build_parser().parse_args(argv)
    try:
        with terminate_as_interrupt():  # SIGTERM unwinds like Ctrl+C: temporary outputs are removed
            return int(args.func(args))
    except Canceled as exc:
        print(f"cloudrm: {exc}", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"cloudrm: {exc}; no output written", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("cloudrm: interrupted; no output written", file=sys.stderr)
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
