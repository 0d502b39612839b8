"""``cloudrm evaluate``: per-image rows equal metrics computed independently here (numpy/torch, own
SSIM, s2cloudless called directly) on the same arrays, per cloud-cover bin as well; the GLF-CR
protocol; Planet-CR land-cover columns; SEN12MS-CR-TS samples."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from cloudrm_engine.cli import main as cli_main
from cloudrm_engine.evaluate import evaluate
from cloudrm_engine.io.checkpoint import Checkpoint, save_checkpoint
from cloudrm_engine.models import create_model, model_card
from tests.conftest import make_checkpoint

from .layouts import write_planet_cr, write_sen12mscr_glf, write_sen12mscr_ts

OFFSET = 0.3


def offset_checkpoint(name: str, path: Path, offset: float = OFFSET) -> Path:
    """A residual model whose last conv is zero with bias ``offset``: output = input + offset,
    which leaves [0, 1] on bright clouds (the metrics must not clip it)."""
    torch.manual_seed(0)
    m = create_model(name)
    last = m.end if name.startswith("mmcanet") else m.UPNet[2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(offset)
    card = model_card(name)
    ckpt = Checkpoint(model=name, config={}, state_dict=m.state_dict(),
                      bands={"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
                      normalisation=card.normalisation, trained_on="test: input + 0.3")
    return save_checkpoint(path, ckpt)


# -- independent reference implementations --------------------------------------------------------

def ref_psnr(p: np.ndarray, t: np.ndarray) -> float:
    mse = float(np.mean((p.astype(np.float64) - t) ** 2))
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


def ref_ssim(p: np.ndarray, t: np.ndarray) -> float:
    """11×11 Gaussian σ 1.5 centred at 5.5 (the official code's 11 / 2), zero padding, per band."""
    g = np.exp(-((np.arange(11) - 5.5) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    w = torch.from_numpy(np.outer(g, g))[None, None].repeat(p.shape[0], 1, 1, 1)
    x, y = torch.from_numpy(p.astype(np.float64))[None], torch.from_numpy(t.astype(np.float64))[None]

    def blur(a):
        return F.conv2d(a, w, padding=5, groups=p.shape[0])

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def ref_angles(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    eps = np.finfo(np.float16).eps
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    cos = (p32 * t32).sum(0) / np.sqrt(np.maximum((p32**2).sum(0), eps) * np.maximum((t32**2).sum(0), eps))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def ref_cover(dn: np.ndarray, window: tuple[slice, slice]) -> float:
    from s2cloudless import S2PixelCloudDetector

    det = S2PixelCloudDetector(threshold=0.4, average_over=22, dilation_size=11, all_bands=True)
    mask = det.get_cloud_masks((dn.astype(np.float32) / 10000).transpose(1, 2, 0)[None])[0]
    return float(mask[window].mean())


def ref_row(
    cloudy_path: Path, clear_path: Path, window: tuple[slice, slice], bands: list[int] | None = None,
    offset: float = OFFSET,
) -> dict[str, float]:
    """Metrics of input + offset against the target, cloud cover of the whole cloudy image's mask."""
    with rasterio.open(cloudy_path) as a, rasterio.open(clear_path) as b:
        dn, clear = a.read().astype(np.float64), b.read().astype(np.float64)
    idx = bands or list(range(13))
    inp = np.clip(dn, 0, 10000)[(idx, *window)] / 10000
    target = np.clip(clear, 0, 10000)[(idx, *window)] / 10000
    pred = (inp.astype(np.float32) + np.float32(offset)).astype(np.float64)
    return {"cloud_cover": ref_cover(dn, window), "psnr": ref_psnr(pred, target), "ssim": ref_ssim(pred, target),
            "sam": float(ref_angles(pred, target).mean()), "mae": float(np.abs(pred - target).mean()),
            "rmse": math.sqrt(float(np.mean((pred - target) ** 2))), "max": float(pred.max())}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# -- tests --------------------------------------------------------------------------------------------

def test_rows_and_bins_equal_an_independent_computation(tmp_path):
    root = tmp_path / "data"
    names = [f"ROIs1970_fall_139_p{i}" for i in range(5)]
    # blob sizes that put the default cloud mask's coverage (about 0, 0.23, 0.97, 0.49, 0.70) in
    # each of the five bins; MMCANet (RGB) keeps the CPU time low
    write_sen12mscr_glf(root, [(3, n) for n in names], size=48, covers=[0.0, 0.08, 0.3, 0.1, 0.15])
    ck = offset_checkpoint("mmcanet", tmp_path / "ck.pt", 0.5)
    res = evaluate(ck, root, tmp_path / "ev", split="test", device="cpu", workers=1)
    rows = read_rows(tmp_path / "ev" / "per_image.csv")
    assert list(rows[0]) == ["image", "cloud_cover", "psnr", "ssim", "sam", "mae", "rmse"]
    assert [r["image"] for r in rows] == names
    full = (slice(None), slice(None))
    refs = [ref_row(root / "s2_cloudy" / f"{n}.tif", root / "s2_cloudfree" / f"{n}.tif", full, [3, 2, 1], 0.5)
            for n in names]
    assert max(r["max"] for r in refs) > 1.0  # scored unclipped where input + 0.5 leaves [0, 1]
    for r, ref in zip(rows, refs, strict=True):
        for k in ("cloud_cover", "psnr", "ssim", "sam", "mae", "rmse"):
            assert float(r[k]) == pytest.approx(ref[k], rel=1e-5, abs=1e-6), (r["image"], k)
    bins = {"0-20": [], "20-40": [], "40-60": [], "60-80": [], "80-100": []}
    for ref in refs:
        bins[["0-20", "20-40", "40-60", "60-80", "80-100"][min(4, int(ref["cloud_cover"] * 5))]].append(ref)
    assert all(bins.values())  # the test spans every bin
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary == res.summary and summary["images"] == 5 and summary["extent"] == "whole image"
    for label, refs_in in bins.items():
        b = summary["bins"][label]
        assert b["images"] == len(refs_in)
        for k in ("psnr", "ssim", "sam", "mae", "rmse", "cloud_cover"):
            if refs_in:
                assert b[k] == pytest.approx(np.mean([x[k] for x in refs_in]), rel=1e-5, abs=1e-6)
            else:
                assert b[k] is None
    assert summary["mean"]["psnr"] == pytest.approx(np.mean([x["psnr"] for x in refs]), rel=1e-6)
    # a batch-pooled PSNR is another number: the README's point
    pooled = 10 * math.log10(1 / np.mean([10 ** (-x["psnr"] / 10) for x in refs]))
    assert abs(pooled - summary["mean"]["psnr"]) > 0.05
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "| 0-20 % | " in md and f"**{summary['mean']['psnr']:.4f}**" in md
    png = (tmp_path / "ev" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_glf_cr_protocol_centre_128_on_split_3(tmp_path, capsys):
    """The GLF-CR test protocol (centre 128 px of the split-3 rows of data.csv) is one command; the
    protocol is the extent and the rows, so a cheaper RGB model stands in for GLF-CR on the CPU."""
    root = tmp_path / "data"
    write_sen12mscr_glf(root, [(1, "ROIs2017_winter_112_p797"), (3, "ROIs1970_fall_139_p839"),
                               (2, "ROIs1868_summer_19_p30")], size=256)
    ck = offset_checkpoint("mmcanet", tmp_path / "ck.pt", 0.5)
    code = cli_main(["evaluate", "--checkpoint", str(ck), "--data", str(root), "--crop-center", "128",
                     "--device", "cpu", "--out", str(tmp_path / "ev")])
    assert code == 0
    assert "1 images: PSNR" in capsys.readouterr().out
    (row,) = read_rows(tmp_path / "ev" / "per_image.csv")
    assert row["image"] == "ROIs1970_fall_139_p839"  # only the split-3 row
    win = (slice(64, 192), slice(64, 192))
    n = "ROIs1970_fall_139_p839"
    ref = ref_row(root / "s2_cloudy" / f"{n}.tif", root / "s2_cloudfree" / f"{n}.tif", win, [3, 2, 1], 0.5)
    assert ref.pop("max") > 1.0
    for k, v in ref.items():
        assert float(row[k]) == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["extent"] == "centre 128 px"


def test_planet_cr_land_cover_breakdown(tmp_path):
    root = tmp_path / "planet"
    write_planet_cr(root, train=0, test=2, size=100)
    ck = offset_checkpoint("align_cr", tmp_path / "ck.pt", 0.05)
    evaluate(ck, root, tmp_path / "ev", split="test", crop_center=32, device="cpu")
    rows = read_rows(tmp_path / "ev" / "per_image.csv")
    assert [r["image"] for r in rows] == ["fall_1_p_10", "fall_2_p_11"]
    assert {"mae_forest", "sam_forest", "pixels_forest", "mae_water", "pixels_unknown"} <= set(rows[0])
    sums = {"forest": [0.0, 0.0, 0], "water": [0.0, 0.0, 0]}

    def path(kind, key, ext="tif"):
        aoi = key.rsplit("_p_", 1)[0]
        return root / "test" / f"{kind}_fall" / f"{kind}_{aoi}" / f"{kind}_{key}.{ext}"

    for r in rows:
        key = r["image"]
        with rasterio.open(path("planet_cloudy", key)) as a, rasterio.open(path("planet_cloudfree", key)) as b:
            inp = np.clip(a.read().astype(np.float64), 0, 1e4)[:, 34:66, 34:66] / 1e4
            tgt = np.clip(b.read().astype(np.float64), 0, 1e4)[:, 34:66, 34:66] / 1e4
        pred = (inp.astype(np.float32) + np.float32(0.05)).astype(np.float64)
        # the land cover of the writer: forest left of column 15 of the 30 × 30 raster, water right
        cols = np.floor((np.arange(34, 66) + 0.5) * 30 / 100).astype(int)
        lc = np.broadcast_to(np.where(cols < 15, 0, 5), (32, 32))
        ang = ref_angles(pred, tgt)
        err = np.abs(pred - tgt)
        for name, c in (("forest", 0), ("water", 5)):
            m = lc == c
            assert int(r[f"pixels_{name}"]) == m.sum()
            assert float(r[f"mae_{name}"]) == pytest.approx(err[:, m].sum() / (m.sum() * 4), rel=1e-5)
            assert float(r[f"sam_{name}"]) == pytest.approx(ang[m].mean(), rel=1e-4)
            sums[name][0] += err[:, m].sum()
            sums[name][1] += ang[m].sum()
            sums[name][2] += m.sum()
        assert r["pixels_urban"] == "0" and r["mae_urban"] == ""
        assert float(r["psnr"]) == pytest.approx(ref_psnr(pred, tgt), rel=1e-6)
        udm = np.load(path("cloudmask", key, "npy"))
        assert float(r["cloud_cover"]) == pytest.approx(udm[34:66, 34:66].mean())
    lcs = json.loads((tmp_path / "ev" / "summary.json").read_text())["land_cover"]["classes"]
    for name, (e, a, n) in sums.items():  # pooled over the pixels of both images
        assert lcs[name]["mae"] == pytest.approx(e / (n * 4), rel=1e-5)
        assert lcs[name]["sam"] == pytest.approx(a / n, rel=1e-4) and lcs[name]["pixels"] == n


def test_time_series_evaluation_records_its_samples(tmp_path):
    root = tmp_path / "ts"
    write_sen12mscr_ts(root, [("ROIs1158", "106")], [1, 2], [True, True, False, True, True])
    ck = make_checkpoint("ca_mtcr", tmp_path / "ck.pt")
    res = evaluate(ck, root, tmp_path / "ev", split="test", device="cpu")
    assert [r["image"] for r in res.rows] == ["ROIs1158_106_patch_1", "ROIs1158_106_patch_2"]
    assert all(r["cloud_cover"] == 1.0 for r in res.rows)  # the reconstructed (target) date is cloudy
    recs = json.loads((tmp_path / "ev" / "samples_test.json").read_text())
    assert recs[0]["reference"].startswith("ROIs1158/106/S2/2/") and len(recs[0]["inputs"]) == 3
    assert res.summary["bins"]["80-100"]["images"] == 2


def test_evaluate_refuses_a_checkpoint_for_other_bands(tmp_path):
    from cloudrm_engine.errors import InputError

    root = tmp_path / "data"
    write_sen12mscr_glf(root, [(3, "ROIs1970_fall_139_p839")])
    ck = make_checkpoint("glf_cr", tmp_path / "ck4.pt", optical_bands=4)
    blob = torch.load(ck, weights_only=True)
    blob["bands"]["optical"] = ["Blue", "Green", "Red", "NIR"]
    torch.save(blob, ck)
    with pytest.raises(InputError, match="checkpoint for bands Blue, Green, Red, NIR"):
        evaluate(ck, root, tmp_path / "ev", device="cpu")
