"""SEN12MS-CR-TS reader (Ebel et al. 2022): 30-date S1/S2 series, samples for CA-MTCR.

Layout (the train and test archives merged into one tree)::

    <root>/ROIs<seed>/<roi>/S1/<t>/s1_ROIs<seed>_<roi>_ImgNo_<t>_<YYYY-MM-DD>_patch_<n>.tif
    <root>/ROIs<seed>/<roi>/S2/<t>/s2_ROIs<seed>_<roi>_ImgNo_<t>_<YYYY-MM-DD>_patch_<n>.tif

``t`` = 0 … 29 in date order; the date is the sixth ``_``-separated token of the file name (S1
and S2 of one ``t`` differ by a few days). Patch ``n`` at every ``t`` forms one series; S1 and S2
pair by ``t`` and ``n``. S2: 13 bands uint16 L1C DN; S1: 2 bands dB (float64 in the archives).

Splits are by ROI (:data:`ROI_SPLITS`, 35 / 5 / 13 ROIs, the authors' loader lists).

A sample, as CA-MTCR builds it (T = 3):

- a cloud-free step ``t_cf`` (coverage ≤ 1e-3) next to a cloudy one ``t_N`` (coverage > 1e-3):
  the cloudy step is the date to reconstruct, the cloud-free neighbour the reference (target).
  When several pairs qualify, one is drawn at random for training and the first is taken for
  validation and test (and of two cloudy neighbours, the earlier);
- no such pair: ``t_cf`` = the least cloudy step and ``t_N`` its cloudier neighbour;
- two auxiliary steps drawn uniformly from the remaining ones (re-drawn every epoch for
  training, fixed with seed 0 for validation and test), sorted by date, then ``t_N`` last;
- ``days`` = S2 date of each step minus that of ``t_N`` (≤ 0 for earlier dates).

Coverage comes from the engine's default cloud mask (``data/coverage.py``), cached per file.
Scaling follows the CA-MTCR card: optical clip [0, 10000] / 10000, both SAR bands [−25, 0] dB
→ [0, 1], NaN → 0 after scaling.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .bands import S2_BANDS
from .common import (
    Extent,
    RobustDataset,
    SampleError,
    band_positions,
    crop,
    find_dirs,
    item_rng,
    natural_key,
    open_raster,
    read_window,
    relpath,
    scale_optical,
    scale_sar,
    to_tensors,
)
from .coverage import pixel_size

ROI_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "test": {
        "ROIs1868": ("119", "73", "100", "142"), "ROIs1970": ("139", "132", "20"),
        "ROIs2017": ("108", "63", "32", "103", "140"), "ROIs1158": ("106",),
    },
    "val": {"ROIs2017": ("22", "117"), "ROIs1970": ("65",), "ROIs1868": ("127", "17")},
    "train": {
        "ROIs1868": ("36", "56", "85", "114", "121", "126", "139", "143"),
        "ROIs1970": ("21", "35", "40", "57", "71", "82", "83", "91", "112", "116", "119", "128", "133", "135", "142",
                     "144", "149"),
        "ROIs2017": ("8", "25", "49", "61", "69", "75", "115", "116", "130", "146"),
    },
}
CLEAR = 1e-3
"""A step with coverage ≤ this is cloud free (the authors' loader threshold)."""
_NAME = re.compile(
    r"(?P<mod>s1|s2)_(?P<seed>ROIs\d{4})_(?P<roi>\d+)_ImgNo_(?P<t>\d+)_(?P<date>\d{4}-\d{2}-\d{2})_patch_(?P<n>\d+)\.tif"
)


@dataclass(frozen=True)
class Step:
    """One date of a series."""

    t: int
    s1: Path
    s2: Path
    s1_date: dt.date
    s2_date: dt.date


@dataclass(frozen=True)
class Series:
    """One patch location through time."""

    seed: str
    roi: str
    patch: str
    steps: tuple[Step, ...]

    @property
    def name(self) -> str:
        return f"{self.seed}_{self.roi}_patch_{self.patch}"


def detect(root: Path) -> bool:
    """True when ``root`` holds ``ROIs<seed>/<roi>/S2`` folders."""
    return any((roi / "S2").is_dir() for seed in find_dirs(root, r"ROIs\d{4}") for roi in find_dirs(seed, r"\d+"))


def _parse(f: Path, what: str) -> re.Match[str]:
    m = _NAME.fullmatch(f.name)
    if m is None:
        raise SampleError(
            f"{what} file name not understood: {f} (expected <mod>_ROIs<seed>_<roi>_ImgNo_<t>_<date>_patch_<n>.tif)"
        )
    return m


def find_series(root: Path, split: str, skip_bad: bool = False) -> tuple[list[Series], list[str], list[str]]:
    """Series of the ROIs of ``split``: (series, skipped, ROI folders on disk outside every split).

    Every patch must exist for every step in S1 and S2; otherwise the error names the missing
    file (with ``skip_bad`` the patch location is skipped and reported in the second list).
    """
    if split not in ROI_SPLITS:
        raise InputError(f"SEN12MS-CR-TS split {split!r} unknown (train, val, test)")
    known = {(s, r) for sp in ROI_SPLITS.values() for s, rs in sp.items() for r in rs}
    unlisted: list[str] = []
    out: list[Series] = []
    skipped: list[str] = []
    for seed_dir in find_dirs(root, r"ROIs\d{4}"):
        for roi_dir in find_dirs(seed_dir, r"\d+"):
            key = (seed_dir.name, roi_dir.name)
            if key not in known:
                unlisted.append(f"{seed_dir.name}/{roi_dir.name}")
                continue
            if roi_dir.name not in ROI_SPLITS[split].get(seed_dir.name, ()):
                continue
            found, bad = _roi_series(roi_dir, seed_dir.name, roi_dir.name, skip_bad)
            out.extend(found)
            skipped.extend(bad)
    return out, skipped, unlisted


def _roi_series(roi_dir: Path, seed: str, roi: str, skip_bad: bool) -> tuple[list[Series], list[str]]:
    steps = sorted(int(d.name) for d in find_dirs(roi_dir / "S2", r"\d+"))
    if not steps:
        raise SampleError(f"SEN12MS-CR-TS ROI {roi_dir} has no S2/<t> folders")
    files: dict[str, dict[int, dict[str, Path]]] = {}
    for t in steps:
        for mod in ("S1", "S2"):
            folder = roi_dir / mod / str(t)
            if not folder.is_dir():
                raise SampleError(f"SEN12MS-CR-TS folder missing: {folder}")
            for f in folder.iterdir():
                if f.suffix.lower() != ".tif":
                    continue
                m = _parse(f, mod)
                files.setdefault(m["n"], {}).setdefault(t, {})[mod] = f
    out: list[Series] = []
    skipped: list[str] = []
    for n in sorted(files, key=natural_key):
        problem = None
        for t in steps:
            for mod in ("S1", "S2"):
                if mod not in files[n].get(t, {}):
                    name = f"{mod.lower()}_{seed}_{roi}_ImgNo_{t}_*_patch_{n}.tif"
                    problem = f"{mod} file missing: {roi_dir / mod / str(t) / name}"
                    break
            if problem:
                break
        if problem:
            if not skip_bad:
                raise SampleError(f"SEN12MS-CR-TS: {problem}")
            skipped.append(problem)
            continue
        series = []
        for t in steps:
            s1, s2 = files[n][t]["S1"], files[n][t]["S2"]
            d1, d2 = (dt.date.fromisoformat(_parse(f, m)["date"]) for f, m in ((s1, "S1"), (s2, "S2")))
            series.append(Step(t, s1, s2, d1, d2))
        out.append(Series(seed, roi, n, tuple(series)))
    return out, skipped


def select_pair(cov: Sequence[float], rng: np.random.Generator | None) -> tuple[int, int]:
    """(position of the cloudy target step ``t_N``, position of its cloud-free reference ``t_cf``).

    ``rng`` None = the deterministic choice of validation and test (first pair, earlier neighbour).
    """
    n = len(cov)
    pairs = []
    for t in range(n):
        if cov[t] <= CLEAR:
            nbrs = [u for u in (t - 1, t + 1) if 0 <= u < n and cov[u] > CLEAR]
            if nbrs:
                pairs.append((t, nbrs))
    if pairs:
        t_cf, nbrs = pairs[int(rng.integers(len(pairs)))] if rng is not None else pairs[0]
        t_n = nbrs[int(rng.integers(len(nbrs)))] if rng is not None else nbrs[0]
        return t_n, t_cf
    t_cf = int(np.argmin(np.asarray(cov)))
    nbrs = [u for u in (t_cf - 1, t_cf + 1) if 0 <= u < n]
    t_n = max(nbrs, key=lambda u: (cov[u], -u))  # the cloudier neighbour (the earlier on a tie)
    return t_n, t_cf


def select_sample(
    cov: Sequence[float], rng_pair: np.random.Generator | None, rng_aux: np.random.Generator, aux: int = 2
) -> tuple[list[int], int]:
    """(input step positions in model order — auxiliary steps by date, then ``t_N`` last —, ``t_cf``)."""
    t_n, t_cf = select_pair(cov, rng_pair)
    rest = [t for t in range(len(cov)) if t not in (t_n, t_cf)]
    if len(rest) < aux:
        raise InputError(
            f"a series of {len(cov)} steps is too short for {aux} auxiliary dates plus target and reference"
        )
    picked = sorted(int(t) for t in rng_aux.choice(rest, size=aux, replace=False))
    return [*picked, t_n], t_cf


class Sen12MSCRTSDataset(RobustDataset):
    """T-date samples of SEN12MS-CR-TS (module docstring) for a temporal model.

    Args:
        series: from :func:`find_series`.
        root: dataset root (keys of ``coverage`` are relative to it).
        coverage: {relative S2 path: coverage} for every step of every series.
        bands, norm, extent: as for the SEN12MS-CR reader.
        train: random pair and auxiliary steps per epoch; else the fixed choice.
        dates: T (input dates, the target date included).
        cloud: also return ``cloud``, the default cloud mask of the target date's cloudy image.
    """

    def __init__(
        self,
        series: Sequence[Series],
        root: Path,
        coverage: Mapping[str, float],
        bands: Sequence[str],
        norm: Mapping[str, Any],
        extent: Extent,
        train: bool,
        seed: int = 7,
        dates: int = 3,
        cloud: bool = False,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(skip_bad=skip_bad, seed=seed)
        self.series, self.root = list(series), root
        self.idx = band_positions(S2_BANDS, bands, "SEN12MS-CR-TS (13-band L1C)")
        self.norm, self.extent, self.train, self.dates, self.cloud = dict(norm), extent, train, dates, cloud
        self.cov: list[list[float]] = []
        from .coverage import lookup

        for s in self.series:
            row = []
            for st in s.steps:
                c = lookup(dict(coverage), relpath(st.s2, root))
                if c is None:
                    raise InputError(f"no cloud coverage for {st.s2}")
                row.append(c)
            self.cov.append(row)

    def __len__(self) -> int:
        return len(self.series)

    def name(self, i: int) -> str:
        return self.series[i].name

    def selection(self, i: int) -> tuple[list[int], int]:
        """(input step positions, reference position) of sample ``i`` in the current epoch."""
        if self.train:
            rng = item_rng(self.seed, self.epoch, i)
            return select_sample(self.cov[i], rng, rng, self.dates - 1)
        return select_sample(self.cov[i], None, np.random.default_rng((0, i)), self.dates - 1)

    def describe(self, i: int) -> dict[str, Any]:
        """JSON-ready record of sample ``i`` (committed with runs and evaluations)."""
        s = self.series[i]
        inputs, ref = self.selection(i)
        return {
            "name": s.name,
            "inputs": [relpath(s.steps[t].s2, self.root) for t in inputs],
            "reference": relpath(s.steps[ref].s2, self.root),
            "coverage": [round(self.cov[i][t], 6) for t in inputs],
            "reference_coverage": round(self.cov[i][ref], 6),
        }

    def load(self, i: int) -> dict[str, Any]:
        s = self.series[i]
        inputs, ref = self.selection(i)
        fill = self.norm.get("nan_fill") != "zero"
        opt, sar = [], []
        target_dn: np.ndarray | None = None
        with open_raster(s.steps[inputs[-1]].s2, "S2", bands=13) as ds:
            shape = (ds.height, ds.width)
            metres = pixel_size(ds)
        win = self.extent.window(*shape, item_rng(self.seed, self.epoch, i), s.name)
        read = None if self.cloud else win
        for t in inputs:
            st = s.steps[t]
            with open_raster(st.s2, "S2", 13, shape) as d2, open_raster(st.s1, "S1", 2, shape) as d1:
                dn = read_window(d2, "S2", read, fill)
                opt.append(dn)
                sar.append(read_window(d1, "S1", read, fill))
        with open_raster(s.steps[ref].s2, "cloud-free S2", 13, shape) as d2:
            target_dn = read_window(d2, "cloud-free S2", read, fill)
        pick = (lambda a: a) if self.idx is None else (lambda a: a[self.idx])
        out: dict[str, np.ndarray] = {
            "cloudy": np.stack([scale_optical(pick(a), self.norm) for a in opt]),
            "sar": np.stack([scale_sar(a, self.norm) for a in sar]),
            "target": scale_optical(pick(target_dn), self.norm),
        }
        if self.cloud:
            from .coverage import default_cloud_mask

            out["cloud"] = default_cloud_mask(opt[-1], metres).astype(np.float32)[None]
            out = {k: crop(v, win) for k, v in out.items()}
        hw = out["target"].shape[-2:]
        target_day = s.steps[inputs[-1]].s2_date
        out["days"] = np.array([(s.steps[t].s2_date - target_day).days for t in inputs], np.float32)
        out["mask"] = np.zeros((1, *hw), np.float32)
        out["weight"] = np.ones((1, *hw), np.float32)
        return to_tensors(out)
