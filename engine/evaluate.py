"""``cloudrm evaluate``: score a checkpoint on a dataset split the way the papers measure.

Convention (as the official GLF-CR / Planet-CR test scripts): every metric is computed **per
image** on the model's own output in the [0, 1] scale — before any clipping to the DN range or
rounding to integer DN — against the target clipped and scaled as the loaders do (optical
[0, 10000] / 10000), then averaged over images. A batch-pooled PSNR (one MSE over all pixels of
all images, the way the demo training loop's held-out score pools) weights bright, large
errors differently and is not comparable with the papers' tables.

Metrics (``engine/metrics.py``): PSNR with peak 1 (100 where the MSE is 0), SSIM (11 × 11
Gaussian, σ 1.5, per band, zero padding, the official half-pixel-off window centre), SAM in
degrees, MAE and RMSE; Planet-CR adds MAE and SAM per land-cover class (the official test's
per-class definitions; dataset totals are pooled over pixels).

Cloud cover per image: the fraction of cloudy pixels, in the scored window, of the engine's
default cloud mask (s2cloudless as ``cloudrm:cloudmask`` runs it by default) computed on the
whole cloudy image — on the target date for SEN12MS-CR-TS; Planet-CR has 4 bands, so its own
UDM cloud mask is used. Images are grouped in the bins 0–20, 20–40, 40–60, 60–80 and 80–100 %
of the GLF-CR test set.

Extent: the whole image by default (inputs are reflect-padded to the model's size multiple and
the output cropped back); ``crop_center=PX`` scores the centred PX² window — the GLF-CR protocol
is ``crop_center=128`` on the split-3 rows of ``data.csv``, the Planet-CR one ``crop_center=160``.
Planet-CR SAR is fed as the official test does: the 90 × 90 S1 patch nearest-upsampled by array
index, ignoring the 1–2 m offset of the georeferencing.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.common import Extent, collate
from .data.datasets import DataOptions, open_split
from .errors import InputError
from .inference.device import describe_device, resolve_device
from .io.checkpoint import build_model, load_checkpoint
from .metrics import image_scores, landcover_scores
from .models import model_card
from .progress import NullProgress, Progress
from .train.forward import amp_dtype, predict_batch

METRICS = ("psnr", "ssim", "sam", "mae", "rmse")
BINS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))
BIN_LABELS = tuple(f"{round(lo * 100)}-{round(hi * 100)}" for lo, hi in BINS)


def cover_bin(cover: float) -> str:
    """Label of the cloud-cover bin of a fraction in [0, 1] (lower bound inclusive; 1.0 → 80-100)."""
    return BIN_LABELS[min(len(BINS) - 1, max(0, math.floor(cover * len(BINS))))]


@dataclass
class EvalResult:
    """Files written by :func:`evaluate` and the summary it holds."""

    out: Path
    per_image: Path
    summary_path: Path
    report_md: Path
    report_png: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _means(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if r.get(k) is not None and not math.isnan(float(r[k]))]
        out[k] = sum(vals) / len(vals) if vals else None
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over images and per cloud-cover bin (``mean``, ``bins``) of per-image rows."""
    keys = (*METRICS, "cloud_cover")
    bins: dict[str, Any] = {}
    for label in BIN_LABELS:
        sel = [r for r in rows if cover_bin(float(r["cloud_cover"])) == label]
        bins[label] = {"images": len(sel), **_means(sel, keys)}
    return {"images": len(rows), "mean": _means(rows, keys), "bins": bins}


def _rgb_positions(card: Any) -> list[int]:
    bands = list(card.optical_bands)
    want = list(card.rgb_bands) or bands[:3]
    return [bands.index(b) for b in want if b in bands][:3] or [0, 0, 0]


def _rgb(a: torch.Tensor, idx: list[int]) -> np.ndarray:
    return a[idx].float().numpy()


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str = "test",
    crop_center: int | None = None,
    device: str = "auto",
    model: str | None = None,
    resize: int | None = None,
    amp: bool = False,
    skip_bad: bool = False,
    max_images: int | None = None,
    lc_level: str = "1",
    csv: str | None = None,
    coverage: str | None = None,
    examples: int = 4,
    workers: int = 0,
    progress: Progress | None = None,
) -> EvalResult:
    """Score ``checkpoint`` on ``split`` of the dataset in ``data``; write the report into ``out``.

    Writes ``per_image.csv`` (``image``, ``cloud_cover``, ``psnr``, ``ssim``, ``sam``, ``mae``,
    ``rmse``; Planet-CR also ``mae_<class>``, ``sam_<class>``, ``pixels_<class>`` per land-cover
    class), ``summary.json`` (means over images and per cloud-cover bin), ``report.md`` and
    ``report.png`` (metrics per bin, input / output / target of a few images). See the module
    docstring for the conventions.

    Args:
        crop_center: score the centred window of this size (None = the whole image).
        resize: resize whole images first (None = as the checkpoint was trained, e.g. MMCANet's
            128 px; 0 = never).
        max_images: score only the first N images of the split.
        skip_bad: an image with a missing or broken file is logged and left out (listed in the
            summary) instead of stopping the evaluation.
        workers: DataLoader worker processes that read images and compute their cloud masks.
    """
    progress = progress or NullProgress()
    t0 = time.time()
    out = Path(out)
    ckpt = load_checkpoint(checkpoint, model=model)
    card = model_card(ckpt.model)
    if list(ckpt.bands.get("optical", [])) != list(card.optical_bands):
        raise InputError(
            f"{checkpoint}: a {ckpt.model} checkpoint for bands {', '.join(ckpt.bands.get('optical', []))}; "
            f"the dataset readers give {', '.join(card.optical_bands)}"
        )
    trained_cfg = dict(ckpt.training.get("config") or {})
    if resize is None:
        resize = int(trained_cfg.get("resize") or 0)
    if crop_center is not None and crop_center <= 0:
        raise InputError(f"--crop-center must be > 0, got {crop_center}")
    extent = Extent("center", crop_center, resize) if crop_center else Extent("full", 0, resize)
    dev = resolve_device(device)
    dtype = amp_dtype(dev, amp)
    if amp and dtype is None:
        progress.info(f"--amp: mixed precision is for CUDA devices; scoring in float32 on {dev}")
    dates = int((trained_cfg.get("data_options") or {}).get("dates", 3))
    opts = DataOptions(lc_level=lc_level, csv=csv or "", coverage=coverage or "", dates=dates)
    out.mkdir(parents=True, exist_ok=True)
    opened = open_split(data, ckpt.model, split, extent, False, opts, cloud=True, skip_bad=skip_bad, cache_dir=out,
                        progress=progress)
    ds = opened.dataset
    ds.skip_bad = False  # report a bad image (and leave it out below), never score a neighbour instead
    n = min(len(ds), max_images) if max_images else len(ds)
    if n == 0:
        raise InputError(f"split {split!r} of {data} has no images ({opened.describe()})")
    net = build_model(ckpt).to(dev)
    progress.info(f"scoring {ckpt.model} ({Path(checkpoint).name}) on {opened.describe()}, {n} images, "
                  f"{'centre ' + str(crop_center) + ' px' if crop_center else 'whole images'}, {describe_device(dev)}")
    if opened.kind == "sen12mscr_ts":
        recs = [ds.describe(i) for i in range(n)]  # type: ignore[attr-defined]
        (out / f"samples_{split}.json").write_text(json.dumps(recs, indent=1), encoding="utf-8")

    lc_classes: tuple[str, ...] = ()
    if opened.kind == "planet_cr":
        from .data.planet_cr import lc_names

        lc_classes = lc_names(lc_level)
    rgb = _rgb_positions(card)
    rows: list[dict[str, Any]] = []
    pooled = {c: [0.0, 0.0, 0, 0] for c in lc_classes}  # Σ|err|, Σ angle, pixels, images
    skipped = list(opened.skipped)
    shown: dict[str, list[Any]] = {}
    items = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, range(n)), batch_size=None, collate_fn=_as_is, num_workers=max(workers, 0)
    )
    for i, item in enumerate(items):
        if progress.is_canceled():
            from .errors import Canceled

            raise Canceled("evaluation canceled")
        if "error" in item:
            if not skip_bad or not item.get("bad_file"):
                raise InputError(str(item["error"]))
            skipped.append(str(item["error"]))
            progress.warning(f"skipped: {item['error']}")
            continue
        for s in item.get("skipped", ()):
            skipped.append(s)
        batch = collate([item])
        pred = predict_batch(net, batch, dev, card.size_multiple, dtype)[0]
        target = item["target"]
        row: dict[str, Any] = {"image": item["name"], "cloud_cover": float(item["cloud"].float().mean())}
        row.update(image_scores(pred, target))
        if lc_classes:
            per = landcover_scores(pred, target, item["landcover"], len(lc_classes))
            for c, cname in enumerate(lc_classes):
                mae_c, sam_c, px = per.get(c, (None, None, 0))
                row[f"mae_{cname}"], row[f"sam_{cname}"], row[f"pixels_{cname}"] = mae_c, sam_c, px
                if px:
                    p = pooled[cname]
                    assert mae_c is not None and sam_c is not None
                    p[0] += mae_c * px * pred.shape[0]
                    p[1] += sam_c * px
                    p[2] += px
                    p[3] += 1
        rows.append(row)
        label = cover_bin(row["cloud_cover"])
        if examples > 0 and (label not in shown or len(shown) + len(rows) <= examples):
            cloudy = item["cloudy"][-1] if item["cloudy"].ndim == 4 else item["cloudy"]
            shown.setdefault(label, [row["image"], _rgb(cloudy, rgb), _rgb(pred, rgb), _rgb(target, rgb),
                                     row["psnr"], row["cloud_cover"]])
        progress.update(i + 1, n)

    summary = summarise(rows)
    summary.update({
        "checkpoint": str(checkpoint), "model": ckpt.model, "trained_on": ckpt.trained_on, "dataset": opened.title,
        "layout": opened.layout, "data": str(data), "split": split,
        "extent": f"centre {crop_center} px" if crop_center else "whole image",
        "resize": resize or None, "device": describe_device(dev), "seconds": round(time.time() - t0, 1),
        "cloud_mask": "UDM cloud mask of the dataset" if opened.kind == "planet_cr" else
        "engine default (s2cloudless, threshold 0.4, 22/11 px disks at 10 m) on the whole cloudy image",
        "convention": "per-image metrics on the model's raw [0, 1] output (no clipping or DN rounding) against the "
        "loader-scaled target, averaged over images",
        "skipped": skipped,
    })
    if lc_classes:
        summary["land_cover"] = {
            "level": lc_level,
            "pooling": "pixels of all images",
            "classes": {c: {"mae": p[0] / (p[2] * len(card.optical_bands)) if p[2] else None,
                            "sam": p[1] / p[2] if p[2] else None, "pixels": int(p[2]), "images": int(p[3])}
                        for c, p in pooled.items()},
        }
    res = EvalResult(out, out / "per_image.csv", out / "summary.json", out / "report.md", out / "report.png",
                     summary, rows)
    _write_csv(res.per_image, rows, lc_classes)
    res.summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    res.report_md.write_text(_markdown(summary, lc_classes), encoding="utf-8")
    _write_png(res.report_png, summary, [shown[k] for k in BIN_LABELS if k in shown][: max(examples, 0)])
    progress.info(f"mean PSNR {summary['mean']['psnr']:.4f} dB over {len(rows)} images; wrote {out}")
    return res


def _as_is(item: Any) -> Any:
    return item


def _write_csv(path: Path, rows: list[dict[str, Any]], lc_classes: tuple[str, ...]) -> None:
    cols = ["image", "cloud_cover", *METRICS]
    for c in lc_classes:
        cols += [f"mae_{c}", f"sam_{c}", f"pixels_{c}"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(k) is None else (repr(float(r[k])) if isinstance(r[k], float) else r[k])
                        for k in cols])


def _fmt(v: Any, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _markdown(summary: dict[str, Any], lc_classes: tuple[str, ...]) -> str:
    m = summary["mean"]
    lines = [
        f"# Evaluation of {summary['model']} on {summary['dataset']} ({summary['split']})",
        "",
        f"- checkpoint: `{summary['checkpoint']}`",
        f"- trained on: {summary['trained_on']}",
        f"- data: `{summary['data']}` ({summary['layout']}), {summary['images']} images, extent: {summary['extent']}"
        + (f", resized to {summary['resize']} px" if summary.get("resize") else ""),
        f"- cloud cover: {summary['cloud_mask']}",
        f"- convention: {summary['convention']}",
        "",
        "| cloud cover | images | PSNR (dB) | SSIM | SAM (°) | MAE | RMSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, b in summary["bins"].items():
        lines.append(f"| {label} % | {b['images']} | {_fmt(b['psnr'])} | {_fmt(b['ssim'])} | {_fmt(b['sam'])} | "
                     f"{_fmt(b['mae'])} | {_fmt(b['rmse'])} |")
    lines.append(f"| **all** | **{summary['images']}** | **{_fmt(m['psnr'])}** | **{_fmt(m['ssim'])}** | "
                 f"**{_fmt(m['sam'])}** | **{_fmt(m['mae'])}** | **{_fmt(m['rmse'])}** |")
    if lc_classes:
        lines += ["", f"Land cover (level {summary['land_cover']['level']}, pooled over pixels):", "",
                  "| class | pixels | images | MAE | SAM (°) |", "|---|---|---|---|---|"]
        for c, v in summary["land_cover"]["classes"].items():
            lines.append(f"| {c} | {v['pixels']} | {v['images']} | {_fmt(v['mae'])} | {_fmt(v['sam'])} |")
    if summary["skipped"]:
        lines += ["", f"{len(summary['skipped'])} image(s) skipped:", ""] + [f"- {s}" for s in summary["skipped"][:50]]
    lines += ["", "![metrics per cloud-cover bin and examples](report.png)", ""]
    return "\n".join(lines)


def _stretch(imgs: list[np.ndarray]) -> list[np.ndarray]:
    """(3, H, W) arrays → (H, W, 3) in [0, 1] with the 2–98 % stretch of the last one (the target)."""
    ref = imgs[-1].reshape(3, -1)
    lo = np.percentile(ref, 2, axis=1)[:, None, None]
    hi = np.percentile(ref, 98, axis=1)[:, None, None]
    return [np.clip((a - lo) / np.maximum(hi - lo, 1e-6), 0, 1).transpose(1, 2, 0) for a in imgs]


def _write_png(path: Path, summary: dict[str, Any], shown: list[list[Any]]) -> None:
    """Metrics per bin (bars) over a grid of input / output / target examples."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _write_png_plain(path, shown)
        return
    rows = 1 + len(shown)
    fig = plt.figure(figsize=(10, 3.2 * rows))
    labels = list(summary["bins"])
    counts = [summary["bins"][k]["images"] for k in labels]
    for j, (metric, unit) in enumerate((("psnr", "dB"), ("ssim", ""), ("sam", "°"))):
        ax = fig.add_subplot(rows, 3, j + 1)
        vals = [summary["bins"][k][metric] or 0.0 for k in labels]
        ax.bar(range(len(labels)), vals, color="#4477aa")
        ax.set_xticks(range(len(labels)), [f"{k}\n({c})" for k, c in zip(labels, counts, strict=True)], fontsize=7)
        ax.set_title(f"{metric.upper()} {unit}".strip() + " per cloud cover % (images)", fontsize=8)
    for r, (name, cloudy, pred, target, psnr, cover) in enumerate(shown, start=1):
        for j, (img, title) in enumerate(zip(_stretch([cloudy, pred, target]), ("input", "output", "target"),
                                             strict=True)):
            ax = fig.add_subplot(rows, 3, 3 * r + j + 1)
            ax.imshow(img)
            ax.set_axis_off()
            extra = f" — {psnr:.2f} dB" if title == "output" else f" — cloud {cover * 100:.0f} %" if j == 0 else ""
            ax.set_title(f"{name}: {title}{extra}" if j == 0 else f"{title}{extra}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_png_plain(path: Path, shown: list[list[Any]]) -> None:
    from PIL import Image

    tiles = [np.concatenate(_stretch([c, p, t]), axis=1) for _, c, p, t, _, _ in shown] or [np.zeros((8, 24, 3))]
    width = max(t.shape[1] for t in tiles)
    grid = np.concatenate([np.pad(t, ((0, 4), (0, width - t.shape[1]), (0, 0))) for t in tiles], axis=0)
    Image.fromarray((grid * 255 + 0.5).astype(np.uint8)).save(path)
