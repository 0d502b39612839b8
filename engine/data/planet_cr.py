"""Planet-CR / M3R-CR reader (align_cr.md §5, datasets.md §4), for training and evaluation.

Layout: ``<split>/<kind>_<season>/<kind>_<season>_<aoi>/<kind>_<season>_<aoi>_p_<patch>.<ext>``
with kind ∈ {planet_cloudfree, planet_cloudy, S1, landcover, cloudmask}; a CSV row lists five
relative paths in that order (cloudfree, cloudy, S1, landcover, cloudmask). Planet patches are
300×300×4 uint16 (B, G, R, NIR; 3 m); S1 is 90×90×2 float64 dB (10 m); WorldCover 90×90 uint8;
the UDM cloud mask a 300×300 bool ``.npy`` (True = cloudy).

SAR and land cover are brought to the Planet grid with nearest neighbour in the GDAL
convention (source index floor((i + 0.5)·90/300): runs of 3, 4, 3), as the model was trained.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from ..errors import InputError
from .normalize import normalize_optical, normalize_sar

KINDS = ("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask")

LC_LEVEL1 = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 80: 5, 90: 5, 70: 6, 95: 6, 100: 6}
"""WorldCover code → Table 2 class: forest, rangeland, agriculture, urban, barren, water, unknown."""
LC_LEVEL1_NAMES = ("forest", "rangeland", "agriculture", "urban", "barren", "water", "unknown")
LC_LEVEL2 = {c: i for i, c in enumerate((10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100))}
"""The 11 WorldCover classes → 0..10 in code order."""

OPTICAL_CLIP = (0.0, 10000.0)
SAR_CLIP = ((-25.0, 0.0), (-32.5, 0.0))
TEST_CROP_OFFSET = 70
"""The official test scores the centre 160×160 of each 300×300 patch (align_cr.md §6)."""


@dataclass(frozen=True)
class PlanetCRSample:
    """Paths of one quartet (plus the UDM mask)."""

    cloudfree: Path
    cloudy: Path
    sar: Path
    landcover: Path
    cloudmask: Path

    @property
    def key(self) -> str:
        """``<season>_<aoi>_p_<patch>``, shared by the five files."""
        return self.cloudy.stem.removeprefix("planet_cloudy_")


def read_index(csv_path: str | Path, root: str | Path | None = None) -> list[PlanetCRSample]:
    """Samples listed in an official CSV (5 relative paths per row, relative to ``root``).

    ``root`` defaults to the CSV's folder. A header row, if present, is skipped.
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    if not csv_path.is_file():
        raise InputError(f"Planet-CR index not found: {csv_path}")
    out = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row if c.strip()]
            if not row or (n == 1 and not row[0].lower().endswith((".tif", ".npy"))):
                continue
            if len(row) != 5:
                raise InputError(f"{csv_path} line {n}: expected 5 paths ({', '.join(KINDS)}), got {len(row)}")
            out.append(PlanetCRSample(*(root / c for c in row)))
    if not out:
        raise InputError(f"Planet-CR index {csv_path} lists no samples")
    return out


_NAME = re.compile(r"^planet_cloudy_(?P<season>[A-Za-z]+)_(?P<aoi>\w+?)_p_(?P<patch>\d+)\.tif$")


def discover(root: str | Path, split: str = "train") -> list[PlanetCRSample]:
    """Samples found by walking ``root/<split>`` (when no CSV is at hand), sorted by key."""
    base = Path(root) / split
    if not base.is_dir():
        raise InputError(f"Planet-CR split folder not found: {base}")
    out = []
    for cloudy in sorted(base.glob("planet_cloudy_*/planet_cloudy_*/planet_cloudy_*_p_*.tif")):
        m = _NAME.match(cloudy.name)
        if not m:
            continue
        season, aoi, patch = m["season"], m["aoi"], m["patch"]

        def path(kind: str, ext: str = "tif") -> Path:
            return base / f"{kind}_{season}" / f"{kind}_{season}_{aoi}" / f"{kind}_{season}_{aoi}_p_{patch}.{ext}"

        out.append(
            PlanetCRSample(path("planet_cloudfree"), cloudy, path("S1"), path("landcover"), path("cloudmask", "npy"))
        )
    if not out:
        raise InputError(f"no Planet-CR samples (planet_cloudy_*/…/*.tif) under {base}")
    return out


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel, GDAL nearest convention: floor((i + 0.5) · n_in / n_out)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def upsample_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, h, w) or (h, w) → same leading dims on ``shape``, nearest in the GDAL convention."""
    rows = nearest_indices(a.shape[-2], shape[0])
    cols = nearest_indices(a.shape[-1], shape[1])
    return a[..., rows[:, None], cols[None, :]]


def _read(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"Planet-CR {what} file missing: {path}")
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float64)


def _nan_fill(a: np.ndarray) -> np.ndarray:
    bad = np.isnan(a)
    if bad.any():
        a = a.copy()
        a[bad] = np.nanmean(a) if (~bad).any() else 0.0
    return a


def load_sample(sample: PlanetCRSample, lc_level: str = "1") -> dict[str, np.ndarray]:
    """One quartet as float32 arrays on the 300×300 Planet grid.

    Returns ``cloudy``, ``target`` (4, H, W) in [0, 1]; ``sar`` (2, H, W) in [0, 1]; ``mask``
    (H, W) float32, 1 = cloudy; ``landcover`` (H, W) int64 class ids (-1 = unmapped code).
    """
    cloudy = _read(sample.cloudy, "cloudy Planet")
    target = _read(sample.cloudfree, "cloud-free Planet")
    sar = _read(sample.sar, "S1")
    if cloudy.shape[0] != 4 or target.shape != cloudy.shape:
        raise InputError(f"{sample.cloudy}: expected two 4-band Planet patches of one size, got {cloudy.shape}/{target.shape}")
    if sar.shape[0] != 2:
        raise InputError(f"{sample.sar}: expected 2 S1 bands (VV, VH), got {sar.shape[0]}")
    hw = cloudy.shape[1:]
    out = {
        "cloudy": normalize_optical(_nan_fill(cloudy), OPTICAL_CLIP, 10000.0),
        "target": normalize_optical(_nan_fill(target), OPTICAL_CLIP, 10000.0),
        "sar": normalize_sar(upsample_nearest(_nan_fill(sar), hw), SAR_CLIP),
    }
    if not sample.cloudmask.is_file():
        raise InputError(f"Planet-CR cloud mask file missing: {sample.cloudmask}")
    mask = np.load(sample.cloudmask, allow_pickle=False)
    if mask.shape != hw:
        raise InputError(f"{sample.cloudmask}: mask shape {mask.shape} does not match the patch {hw}")
    out["mask"] = mask.astype(np.float32)
    if sample.landcover.is_file():
        table = LC_LEVEL1 if lc_level == "1" else LC_LEVEL2
        codes = upsample_nearest(_read(sample.landcover, "land cover")[0].astype(np.int64), hw)
        lut = np.full(256, -1, dtype=np.int64)
        for code, cls in table.items():
            lut[code] = cls
        out["landcover"] = lut[np.clip(codes, 0, 255)]
    return out


class PlanetCRDataset:
    """Map-style dataset (works as a ``torch.utils.data.Dataset``) of Planet-CR crops.

    ``train=True``: random ``crop``² windows, the same offset for every raster (seeded by
    ``seed`` and the index, so an epoch is reproducible); ``train=False``: the centre crop the
    official test scores (offset 70 for 160 of 300).
    """

    def __init__(
        self,
        samples: Sequence[PlanetCRSample],
        crop: int = 160,
        train: bool = True,
        seed: int = 7,
        lc_level: str = "1",
    ) -> None:
        self.samples = list(samples)
        self.crop, self.train, self.seed, self.lc_level = crop, train, seed, lc_level
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, object]:
        import torch

        d = load_sample(self.samples[i], self.lc_level)
        h, w = d["cloudy"].shape[1:]
        c = self.crop
        if c > min(h, w):
            raise InputError(f"crop {c} is larger than the patch {h}×{w} ({self.samples[i].cloudy})")
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        else:
            y, x = (h - c) // 2, (w - c) // 2
        item: dict[str, object] = {k: torch.from_numpy(np.ascontiguousarray(v[..., y : y + c, x : x + c])) for k, v in d.items()}
        item["key"] = self.samples[i].key
        item["offset"] = (y, x)
        return item
