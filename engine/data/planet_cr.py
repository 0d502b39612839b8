"""Planet-CR / M3R-CR reader (Xu et al., TGRS 2024), for training and evaluation.

Layout (the dataset folder holds one folder per split)::

    <root>/train/<kind>_<season>/<kind>_<season>_<aoi>/<kind>_<season>_<aoi>_p_<patch>.<ext>
    <root>/test/…

with kind ∈ {planet_cloudfree, planet_cloudy, S1, landcover, cloudmask}; ext ``tif``, ``npy`` for
the cloud mask. The official CSVs list one sample per row: five paths, in the order cloud-free,
cloudy, S1, land cover, cloud mask, **relative to the split folder** (the official loader joins
them to ``--input_data_folder ./train``). Use them as shipped: :func:`find_csv` looks for them
next to or inside the split folder; without a CSV the split folder is walked.

Files: Planet 300×300×4 uint16 (Blue, Green, Red, NIR; 3 m; nodata 0); S1 90×90×2 float64 dB
(10 m); ESA WorldCover 90×90 uint8 codes 10 … 100; UDM cloud mask 300×300 bool ``.npy``
(True = cloudy).

Reading as the official loader does:

- optical: NaN → the nanmean of the whole image, clip [0, 10000], ÷ 10000, float32;
- S1 and land cover: nearest upsampling 90 → 300 by array index, ignoring the georeferencing
  (GDAL's convention, source index ⌊(i + ½)·90/300⌋: runs of 3, 4, 3 pixels); S1 NaN are filled
  *after* upsampling with the mean of the upsampled array; VV [−25, 0] and VH [−32.5, 0] dB →
  [0, 1]. (The S1 and Planet origins differ by 1–2 m in the real files, so this is not what a
  georeferenced warp gives; the engine's ``predict`` warps users' scenes by georeferencing.)
- land cover: WorldCover codes mapped to classes (:data:`LC_LEVEL1`, the paper's Table 2 groups,
  or :data:`LC_LEVEL2`), float32. Codes outside the table keep their value, as in the official
  mapping — in particular code 0 (no data) stays 0 and so counts as class 0 (forest / trees).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .common import Extent, RobustDataset, SampleError, crop, item_rng, open_raster, read_window, to_tensors

KINDS = ("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask")
BANDS = ("Blue", "Green", "Red", "NIR")

LC_LEVEL1 = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 80: 5, 90: 5, 70: 6, 95: 6, 100: 6}
"""WorldCover code → Table 2 class: forest, rangeland, agriculture, urban, barren, water, unknown."""
LC_LEVEL1_NAMES = ("forest", "rangeland", "agriculture", "urban", "barren", "water", "unknown")
LC_LEVEL2 = {c: i for i, c in enumerate((10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100))}
"""The 11 WorldCover classes → 0..10 in code order."""
LC_LEVEL2_NAMES = (
    "trees", "shrubland", "grassland", "cropland", "built_up", "barren", "snow_ice", "water", "wetland",
    "mangroves", "moss_lichen",
)

OPTICAL_CLIP = (0.0, 10000.0)
SAR_CLIP = ((-25.0, 0.0), (-32.5, 0.0))
TEST_CROP_OFFSET = 70
"""The official test scores the centre 160×160 of each 300×300 patch (offset 70)."""


def lc_names(level: str) -> tuple[str, ...]:
    """Class names of a land-cover level ('1': 7 classes, '2': 11)."""
    if level not in ("1", "2"):
        raise InputError(f"land-cover level {level!r} unknown ('1' or '2')")
    return LC_LEVEL1_NAMES if level == "1" else LC_LEVEL2_NAMES


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

    @property
    def aoi(self) -> str:
        """``<season>_<aoi>``: the unit the dataset is split by."""
        return self.key.rsplit("_p_", 1)[0]


def read_index(csv_path: str | Path, base: str | Path | None = None) -> list[PlanetCRSample]:
    """Samples listed in an official CSV (5 paths per row, relative to ``base``).

    ``base`` is the split folder the rows are relative to (``<root>/train`` for the training
    CSV); it defaults to the CSV's own folder. A header row, if present, is skipped.
    """
    csv_path = Path(csv_path)
    base = Path(base) if base is not None else csv_path.parent
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
            out.append(PlanetCRSample(*(base / c for c in row)))
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

        def path(kind: str, ext: str = "tif", season: str = season, aoi: str = aoi, patch: str = patch) -> Path:
            return base / f"{kind}_{season}" / f"{kind}_{season}_{aoi}" / f"{kind}_{season}_{aoi}_p_{patch}.{ext}"

        out.append(
            PlanetCRSample(path("planet_cloudfree"), cloudy, path("S1"), path("landcover"), path("cloudmask", "npy"))
        )
    if not out:
        raise InputError(f"no Planet-CR samples (planet_cloudy_*/…/*.tif) under {base}")
    return out


def detect(root: Path) -> bool:
    """True when ``root`` has a ``train`` or ``test`` folder with ``planet_cloudy_*`` folders."""
    return any(any((root / s).glob("planet_cloudy_*")) for s in ("train", "test", "val") if (root / s).is_dir())


def find_csv(root: Path, split: str) -> Path | None:
    """The official CSV of ``split``: ``<split>.csv``, ``one_<split>_sample.csv`` or the single
    ``*<split>*.csv`` in ``root`` or ``root/<split>``; None when there is none."""
    for folder in (root, root / split):
        for name in (f"{split}.csv", f"one_{split}_sample.csv", f"{split}_list.csv"):
            if (folder / name).is_file():
                return folder / name
    found = sorted({p for folder in (root, root / split) if folder.is_dir() for p in folder.glob(f"*{split}*.csv")})
    if len(found) > 1:
        raise InputError(
            f"several Planet-CR CSVs for split {split!r}: {', '.join(map(str, found))}; name one with --csv"
        )
    return found[0] if found else None


def check_files(samples: Sequence[PlanetCRSample], skip_bad: bool) -> tuple[list[PlanetCRSample], list[str]]:
    """Samples whose five files exist; a missing one is an error naming it (or skipped with ``skip_bad``)."""
    ok: list[PlanetCRSample] = []
    skipped: list[str] = []
    for s in samples:
        missing = next((f"Planet-CR {k} file missing: {p}" for k, p in zip(KINDS, (s.cloudfree, s.cloudy, s.sar,
                        s.landcover, s.cloudmask), strict=True) if not p.is_file()), None)
        if missing is None:
            ok.append(s)
        elif skip_bad:
            skipped.append(missing)
        else:
            raise SampleError(missing)
    return ok, skipped


def holdout(samples: Sequence[PlanetCRSample], fraction: float) -> tuple[list[PlanetCRSample], list[PlanetCRSample]]:
    """(train, val): every k-th AOI (k = round(1 / fraction), in sorted order, starting with the
    k-th) goes to validation; the paper has no validation split. No AOI is held out when there
    are fewer than k."""
    if fraction <= 0:
        return list(samples), []
    aois = sorted({s.aoi for s in samples})
    k = max(1, round(1 / fraction))
    val_aois = set(aois[k - 1 :: k])
    return [s for s in samples if s.aoi not in val_aois], [s for s in samples if s.aoi in val_aois]


def split_samples(
    root: Path, split: str, csv_path: Path | None = None, val_fraction: float = 0.05, skip_bad: bool = False
) -> tuple[list[PlanetCRSample], list[str]]:
    """Samples of ``split`` (train, val or test) and the skipped ones.

    ``train``/``test``: the official CSV of that split (rows relative to ``root/<split>``) or a
    walk of the folder. ``val``: ``root/val`` when it exists, else the AOIs :func:`holdout` takes
    out of ``train`` (which then no longer trains on them).
    """
    if split not in ("train", "val", "test"):
        raise InputError(f"Planet-CR split {split!r} unknown (train, val, test)")
    if split == "val" and not (root / "val").is_dir():
        train_csv = find_csv(root, "train")
        every = read_index(train_csv, root / "train") if train_csv else discover(root, "train")
        return check_files(holdout(every, val_fraction)[1], skip_bad)
    csv_file = csv_path or find_csv(root, split)
    samples = read_index(csv_file, root / split) if csv_file else discover(root, split)
    if split == "train" and not (root / "val").is_dir():
        samples = holdout(samples, val_fraction)[0]
    return check_files(samples, skip_bad)


def upsample_nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel, GDAL nearest convention: floor((i + 0.5) · n_in / n_out)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


nearest_indices = upsample_nearest_indices


def upsample_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, h, w) or (h, w) → same leading dims on ``shape``, nearest by array index (GDAL convention)."""
    rows = nearest_indices(a.shape[-2], shape[0])
    cols = nearest_indices(a.shape[-1], shape[1])
    return a[..., rows[:, None], cols[None, :]]


def map_landcover(codes: np.ndarray, level: str = "1") -> np.ndarray:
    """WorldCover codes → class ids as float32; codes outside the table keep their value (so 0 → 0)."""
    table = LC_LEVEL1 if level == "1" else LC_LEVEL2
    lc_names(level)
    out = codes.astype(np.float32).copy()
    for code, cls in table.items():
        out[codes == code] = cls
    return out


def _read_all(path: Path, what: str, bands: int | None) -> np.ndarray:
    with open_raster(path, what, bands=bands) as ds:
        return read_window(ds, what, None, fill=False).astype(np.float64)


def load_sample(sample: PlanetCRSample, lc_level: str = "1") -> dict[str, np.ndarray]:
    """One quartet as float32 arrays on the 300×300 Planet grid.

    Returns ``cloudy``, ``target`` (4, H, W) in [0, 1]; ``sar`` (2, H, W) in [0, 1]; ``mask``
    (H, W) float32, 1 = cloudy; ``landcover`` (H, W) float32 class ids (module docstring).
    """
    cloudy = _read_all(sample.cloudy, "Planet-CR cloudy Planet", 4)
    target = _read_all(sample.cloudfree, "Planet-CR cloud-free Planet", 4)
    if target.shape != cloudy.shape:
        raise SampleError(f"{sample.cloudfree}: shape {target.shape} differs from the cloudy patch {cloudy.shape}")
    hw = (cloudy.shape[1], cloudy.shape[2])
    sar = upsample_nearest(_read_all(sample.sar, "Planet-CR S1", 2), hw)
    out = {
        "cloudy": _optical(_nan_fill(cloudy)),
        "target": _optical(_nan_fill(target)),
        "sar": _sar(_nan_fill(sar)),  # filled after upsampling, with the upsampled array's mean
    }
    if not sample.cloudmask.is_file():
        raise SampleError(f"Planet-CR cloud mask file missing: {sample.cloudmask}")
    try:
        mask = np.load(sample.cloudmask, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SampleError(f"Planet-CR cloud mask file unreadable: {sample.cloudmask} ({exc})") from exc
    if mask.shape != hw:
        raise SampleError(f"{sample.cloudmask}: mask shape {mask.shape} does not match the patch {hw}")
    out["mask"] = mask.astype(np.float32)
    lc = _read_all(sample.landcover, "Planet-CR land cover", None)[0]
    out["landcover"] = map_landcover(upsample_nearest(lc, hw), lc_level)
    return out


def _nan_fill(a: np.ndarray) -> np.ndarray:
    bad = np.isnan(a)
    if bad.any():
        a = a.copy()
        a[bad] = np.nanmean(a) if (~bad).any() else 0.0
    return a


def _optical(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, *OPTICAL_CLIP) / OPTICAL_CLIP[1]).astype(np.float32)


def _sar(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, np.float32)
    for i, (lo, hi) in enumerate(SAR_CLIP):
        out[i] = (np.clip(a[i], lo, hi) - lo) / (hi - lo)
    return out


class PlanetCRDataset(RobustDataset):
    """Map-style dataset of Planet-CR crops.

    ``train=True``: random ``crop``² windows, the same offset for every raster (drawn from the
    seed, the epoch and the index, so an epoch is reproducible in any process); ``train=False``:
    the centred window the official test scores (offset 70 for 160 of 300). ``extent`` overrides
    both (e.g. the whole image). Items hold ``cloudy``, ``target`` (4, c, c), ``sar`` (2, c, c),
    ``mask`` and ``cloud`` (1, c, c; the UDM mask), ``weight`` (ones), ``landcover`` (c, c).
    """

    def __init__(
        self,
        samples: Sequence[PlanetCRSample],
        crop: int = 160,
        train: bool = True,
        seed: int = 7,
        lc_level: str = "1",
        extent: Extent | None = None,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(skip_bad=skip_bad, seed=seed)
        self.samples = list(samples)
        self.crop, self.train, self.lc_level = crop, train, lc_level
        self.extent = extent or Extent("random" if train else "center", crop)

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        return self.samples[i].key

    def load(self, i: int) -> dict[str, Any]:
        d = load_sample(self.samples[i], self.lc_level)
        h, w = d["cloudy"].shape[1:]
        win = self.extent.window(h, w, item_rng(self.seed, self.epoch, i), str(self.samples[i].cloudy))
        d["mask"] = d["mask"][None]
        out: dict[str, Any] = to_tensors({k: np.ascontiguousarray(crop(v, win)) for k, v in d.items()})
        out["cloud"] = out["mask"]
        out["weight"] = torch.ones_like(out["mask"])
        out["key"] = self.samples[i].key
        out["offset"] = (win[0], win[1])
        return out
