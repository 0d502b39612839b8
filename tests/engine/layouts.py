"""Tiny fake datasets in the real on-disk layouts, written as real GeoTIFFs.

Content comes from the bundled real SEN12MS-CR scene: cloud-free windows of it are the
targets (so s2cloudless calls them clear), the cloudy input is the same window under a bright
synthetic cloud blob, and SAR is the matching window of the real S1 raster. A model can learn
to remove such clouds, so a few optimiser steps lower the training loss.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from tests.conftest import S1_SAMPLE, S2_SAMPLE, write_geotiff

CLEAR_WINDOWS = [(64, 128), (64, 160), (80, 192), (96, 128), (96, 160), (112, 112), (48, 144), (64, 208)]
"""Top-left corners of 32 px windows of the real scene that the default cloud mask calls clear."""
CLOUD_DN = np.array([6000, 6200, 6300, 6400, 6500, 6600, 6700, 6800, 6800, 3000, 80, 4500, 3500], np.float32)
"""A bright, flat cloud spectrum (B1 … B12) that s2cloudless flags."""
SEEDS = {"spring": "ROIs1158_spring", "summer": "ROIs1868_summer", "fall": "ROIs1970_fall", "winter": "ROIs2017_winter"}


@cache
def _scene() -> tuple[np.ndarray, np.ndarray, str]:
    with rasterio.open(S2_SAMPLE) as a, rasterio.open(S1_SAMPLE) as b:
        return a.read().astype(np.float32), b.read().astype(np.float32), a.crs.to_string()


def clear_patch(k: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(13, size, size) uint16 DN and (2, size, size) float32 dB of clear window ``k`` (mod 8)."""
    s2, s1, _ = _scene()
    y, x = CLEAR_WINDOWS[k % len(CLEAR_WINDOWS)]
    if size > 32:
        y, x = min(y, 256 - size), min(x, 256 - size)
    return s2[:, y : y + size, x : x + size].astype(np.uint16), s1[:, y : y + size, x : x + size].copy()


def cloud_blob(size: int, seed: int, cover: float = 0.4) -> np.ndarray:
    """(size, size) opacity in [0, 1]: a soft disc covering about ``cover`` of the patch."""
    rng = np.random.default_rng(seed)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    r = np.sqrt(cover * size * size / np.pi)
    yy, xx = np.mgrid[0:size, 0:size]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / 3.0 + 0.5, 0, 1).astype(np.float32)


def cloudy_of(clear: np.ndarray, seed: int, cover: float = 0.4) -> np.ndarray:
    """``clear`` DN under a synthetic cloud (uint16)."""
    a = cloud_blob(clear.shape[-1], seed, cover)[None]
    return np.round(clear * (1 - a) + CLOUD_DN[:, None, None] * a).astype(np.uint16)


def _transform(k: int) -> Affine:
    return Affine(10, 0, 500000 + 1000 * k, 0, -10, 4000000)


def write_triplet(s1: Path, s2: Path, cloudy: Path, k: int, size: int = 32, cover: float = 0.4) -> None:
    clear, sar = clear_patch(k, size)
    crs = _scene()[2]
    for p in (s1, s2, cloudy):
        p.parent.mkdir(parents=True, exist_ok=True)
    write_geotiff(s1, sar, crs, _transform(k))
    write_geotiff(s2, clear, crs, _transform(k))
    write_geotiff(cloudy, cloudy_of(clear, k, cover) if cover > 0 else clear, crs, _transform(k))


def write_sen12mscr_seasonal(root: Path, scenes: Sequence[tuple[str, str, Sequence[int]]], size: int = 32) -> list[str]:
    """The published layout: ``scenes`` = [(season, scene, [patch numbers])]; returns the sample names."""
    names = []
    k = 0
    for season, scene, patches in scenes:
        seed = SEEDS[season]
        for p in patches:
            write_triplet(
                root / f"{seed}_s1" / f"s1_{scene}" / f"{seed}_s1_{scene}_p{p}.tif",
                root / f"{seed}_s2" / f"s2_{scene}" / f"{seed}_s2_{scene}_p{p}.tif",
                root / f"{seed}_s2_cloudy" / f"s2_cloudy_{scene}" / f"{seed}_s2_cloudy_{scene}_p{p}.tif",
                k, size,
            )
            names.append(f"{seed}_{scene}_p{p}")
            k += 1
    return names


def write_sen12mscr_glf(
    root: Path, rows: Sequence[tuple[int, str]], size: int = 32, covers: Sequence[float] | None = None
) -> Path:
    """GLF-CR layout: ``rows`` = [(split id 1/2/3, 'ROIs1970_fall_139_p839')]; returns data.csv.
    ``covers``: blob size per row (fraction of the patch; 0 = no cloud)."""
    lines = []
    for k, (split, name) in enumerate(rows):
        f = f"{name}.tif"
        cover = 0.4 if covers is None else covers[k]
        write_triplet(root / "s1" / f, root / "s2_cloudfree" / f, root / "s2_cloudy" / f, k, size, cover)
        lines.append([str(split), "s1", "s2_cloudfree", "s2_cloudy", f])
    with (root / "data.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(lines)
    return root / "data.csv"


def write_sen12mscr_ts(
    root: Path, rois: Sequence[tuple[str, str]], patches: Sequence[int], cloudy_steps: Sequence[bool], size: int = 32
) -> None:
    """SEN12MS-CR-TS layout with ``len(cloudy_steps)`` dates 12 days apart (2018-01-01 + 12 t);
    step t carries a synthetic cloud when ``cloudy_steps[t]`` (S1 three days before S2)."""
    import datetime as dt

    crs = _scene()[2]
    for r, (seed, roi) in enumerate(rois):
        for j, n in enumerate(patches):
            clear, sar = clear_patch(r * len(patches) + j, size)
            for t, cloudy in enumerate(cloudy_steps):
                d2 = dt.date(2018, 1, 1) + dt.timedelta(days=12 * t)
                d1 = d2 - dt.timedelta(days=3)
                gain = 1.0 - 0.01 * t  # the ground changes a little over the year
                img = np.clip(clear * gain, 0, 65535).astype(np.uint16)
                if cloudy:
                    img = cloudy_of(img, 100 * t + j)
                for mod, arr, d in (("S2", img, d2), ("S1", sar.astype(np.float64), d1)):
                    p = root / seed / roi / mod / str(t) / f"{mod.lower()}_{seed}_{roi}_ImgNo_{t}_{d}_patch_{n}.tif"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    write_geotiff(p, arr, crs, _transform(j))


def write_planet_sample(
    root: Path, split: str = "train", season: str = "fall", aoi: str = "1", patch: str = "457", seed: int = 0,
    size: int = 300, sar_nan: bool = True,
) -> list[str]:
    """One Planet-CR quartet (+ UDM mask) in the official layout; returns the 5 paths relative to
    the split folder, as the official CSVs list them.

    Content: the cloud-free image is smooth random texture, the cloudy one the same under a
    bright blob (the UDM mask marks it); S1 (90 × 90 float64 dB, origin 1.5 m off the Planet
    grid as in the real files) encodes the column in VV and the row in VH; land cover is forest
    on the left half and water on the right, with code 0 (no data) in the top-left 3 × 3 cells.
    """
    rng = np.random.default_rng(seed)
    rel = {}

    def path(kind: str, ext: str = "tif") -> Path:
        p = root / split / f"{kind}_{season}" / f"{kind}_{season}_{aoi}" / f"{kind}_{season}_{aoi}_p_{patch}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        rel[kind] = p.relative_to(root / split).as_posix()
        return p

    t3 = Affine(3, 0, 600000, 0, -3, 3000000)
    t10 = Affine(10, 0, 600001.5, 0, -10, 2999998.0)
    small = rng.uniform(500, 3000, (4, 10, 10))
    clear = np.kron(small, np.ones((1, size // 10 + 1, size // 10 + 1)))[:, :size, :size]
    blob = cloud_blob(size, seed, 0.3)
    cloudy = clear * (1 - blob) + 7000 * blob
    write_geotiff(path("planet_cloudfree"), clear.astype(np.uint16), "EPSG:32646", t3, 0)
    write_geotiff(path("planet_cloudy"), cloudy.astype(np.uint16), "EPSG:32646", t3, 0)
    n10 = round(size * 0.3)
    r10, c10 = np.mgrid[0:n10, 0:n10]
    sar = np.stack([-c10 * 0.25, -r10 * 0.25]).astype(np.float64)
    if sar_nan:
        sar[0, 0, 0] = np.nan
    sar[1, 5, 5] = 11.0  # positive dB values occur; they are clipped
    write_geotiff(path("S1"), sar, "EPSG:32646", t10)
    lc = np.full((1, n10, n10), 10, np.uint8)
    lc[0, :, n10 // 2 :] = 80
    lc[0, :3, :3] = 0
    write_geotiff(path("landcover"), lc, "EPSG:32646", t10)
    np.save(path("cloudmask", "npy"), blob > 0.5)
    return [rel[k] for k in ("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask")]


def write_planet_cr(root: Path, train: int = 4, test: int = 2, size: int = 300, csv_names: bool = True) -> None:
    """A Planet-CR folder: ``train`` and ``test`` samples (one AOI each) and, when ``csv_names``,
    the official-style CSVs ``train.csv`` / ``test.csv`` at the root (rows relative to the split)."""
    for split, n in (("train", train), ("test", test)):
        rows = [write_planet_sample(root, split, "fall", str(i + 1), str(10 + i), seed=i, size=size) for i in range(n)]
        if csv_names and n:
            with (root / f"{split}.csv").open("w", newline="") as fh:
                csv.writer(fh).writerows(rows)
