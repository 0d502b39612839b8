"""One entry point to the dataset readers: detect a folder's dataset, open a split for a model.

Known datasets (``kind``) and the models they feed:

- ``sen12mscr`` — SEN12MS-CR, seasonal or GLF-CR ``data.csv`` layout (``sen12mscr.py``):
  the single-date Sentinel-2 models (GLF-CR, CAFR, MMCANet, MMCANet_l, MPIR1-4; RGB models get
  B4, B3, B2);
- ``sen12mscr_ts`` — SEN12MS-CR-TS (``sen12mscr_ts.py``): temporal models (CA-MTCR);
- ``planet_cr`` — Planet-CR / M3R-CR (``planet_cr.py``): PlanetScope models (Align-CR).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import planet_cr, sen12mscr, sen12mscr_ts
from .bands import S2_BANDS
from .common import Extent, RobustDataset, relpath

KINDS = ("sen12mscr", "sen12mscr_ts", "planet_cr")
TITLES = {"sen12mscr": "SEN12MS-CR", "sen12mscr_ts": "SEN12MS-CR-TS", "planet_cr": "Planet-CR / M3R-CR"}


def detect(root: str | os.PathLike[str]) -> tuple[str, str]:
    """(kind, layout) of the dataset in ``root``; a clear error describes the layouts otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    layout = sen12mscr.detect_layout(root)
    if layout is not None:
        return "sen12mscr", layout
    if sen12mscr_ts.detect(root):
        return "sen12mscr_ts", "ROIs<seed>/<roi>/S1|S2/<t>"
    if planet_cr.detect(root):
        return "planet_cr", "<split>/<kind>_<season>/…"
    raise InputError(
        f"{root}: no known dataset layout. Expected one of: SEN12MS-CR (ROIs1158_spring_s1/s1_<scene>/… seed "
        "folders, or a GLF-CR data.csv with s1/, s2_cloudfree/, s2_cloudy/); SEN12MS-CR-TS "
        "(ROIs<seed>/<roi>/S1|S2/<t>/…); Planet-CR / M3R-CR (train/ and test/ with planet_cloudy_<season>/ …)"
    )


def kind_for_model(model: str) -> str:
    """The dataset kind a model trains on (from its card: temporal, S2 bands or Planet bands)."""
    from ..models import model_card

    card = model_card(model)
    if card.temporal:
        return "sen12mscr_ts"
    if tuple(card.optical_bands) == planet_cr.BANDS:
        return "planet_cr"
    if all(b in S2_BANDS for b in card.optical_bands):
        return "sen12mscr"
    raise InputError(f"model {model} takes bands {', '.join(card.optical_bands)}: no dataset reader provides them")


@dataclass
class DataOptions:
    """How a dataset folder is read (the ``data_options`` of a run; every field has a default)."""

    seasons: list[str] = field(default_factory=list)
    """SEN12MS-CR: only these seasons (spring, summer, fall, winter); empty = all."""
    lc_level: str = "1"
    """Planet-CR land-cover classes: '1' (7 groups of the paper's Table 2) or '2' (11 WorldCover classes)."""
    val_fraction: float = 0.05
    """Planet-CR without a val/ folder: every round(1 / val_fraction)-th training AOI validates."""
    csv: str = ""
    """Planet-CR: the CSV of the split being opened (default: found next to the split folder)."""
    coverage: str = ""
    """SEN12MS-CR-TS: a coverage CSV (``path,coverage``) or an UnCRtainTS ``generic_*.npy``."""
    dates: int = 3
    """SEN12MS-CR-TS: input dates per sample (T), the target date included."""


@dataclass
class Split:
    """An opened split: the dataset and what it is."""

    dataset: RobustDataset
    kind: str
    layout: str
    split: str
    root: Path
    skipped: list[str]

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    def describe(self) -> str:
        """One line: dataset, layout, split and size."""
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"{self.title} ({self.layout}) split {self.split}: {len(self.dataset)} samples{extra}"


def _coverage_table(
    root: Path,
    series: Sequence[sen12mscr_ts.Series],
    opts: DataOptions,
    cache_dir: Path | None,
    workers: int,
    progress: Any,
    shard: tuple[int, int],
    gather: Callable[[dict[str, float]], dict[str, float]] | None,
) -> dict[str, float]:
    """Coverage of every S2 file of ``series``: from the caches / an imported file, the rest computed
    (this process's share when ``shard`` = (rank, world) spreads the work, merged by ``gather``)."""
    from . import coverage as cov

    known: dict[str, float] = {}
    for p in [root / cov.CACHE_NAME, *([cache_dir / cov.CACHE_NAME] if cache_dir else [])]:
        known.update(cov.read_cache(p))
    if opts.coverage:
        f = Path(opts.coverage)
        known.update(cov.read_uncrtaints_npy(f) if f.suffix == ".npy" else cov.read_cache(f))
    paths = [st.s2 for s in series for st in s.steps]
    todo = [p for p in paths if cov.lookup(known, relpath(p, root)) is None]
    if todo:
        rank, world = shard
        if progress is not None and rank == 0:
            progress.info(f"cloud coverage of {len(todo)} S2 files with the default mask (s2cloudless); cached")
        new = cov.compute_missing(root, todo[rank::world], known, workers, progress if rank == 0 else None)
        if gather is not None:
            new = gather(new)
        known.update(new)
        if rank == 0:
            merged = {**cov.read_cache(root / cov.CACHE_NAME), **new}
            try:
                cov.write_cache(root / cov.CACHE_NAME, merged)
            except OSError:
                if cache_dir is not None:
                    cache_dir.mkdir(parents=True, exist_ok=True)
                    cov.write_cache(cache_dir / cov.CACHE_NAME, {**cov.read_cache(cache_dir / cov.CACHE_NAME), **new})
    return known


def open_split(
    root: str | os.PathLike[str],
    model: str,
    split: str,
    extent: Extent,
    train: bool,
    opts: DataOptions | None = None,
    seed: int = 7,
    need_mask: bool = False,
    cloud: bool = False,
    skip_bad: bool = False,
    cache_dir: Path | None = None,
    workers: int = 0,
    progress: Any = None,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[dict[str, float]], dict[str, float]] | None = None,
) -> Split:
    """Open ``split`` (train, val, test) of the dataset in ``root`` for ``model``.

    Args:
        extent: window choice (random crops to train, centre crop or whole image to score).
        train: training behaviour (random sample construction of SEN12MS-CR-TS).
        need_mask: the loss needs a cloud mask (SEN12MS-CR: CAFR's rule mask).
        cloud: return ``cloud`` (the cloud mask cloud cover is measured with).
        cache_dir: where a coverage cache goes when the dataset folder is read-only.
        shard, gather: (rank, world size) and a merge function, to share coverage work between
            processes of a torchrun job.
    """
    from ..models import model_card

    root = Path(root)
    opts = opts or DataOptions()
    kind, layout = detect(root)
    want = kind_for_model(model)
    if kind != want:
        raise InputError(f"{root} holds {TITLES[kind]}; model {model} trains on {TITLES[want]}")
    card = model_card(model)
    norm = card.normalisation
    ds: RobustDataset
    if kind == "sen12mscr":
        triplets, skipped, layout = sen12mscr.find_triplets(root, split, opts.seasons or None, skip_bad)
        ds = sen12mscr.Sen12MSCRDataset(triplets, card.optical_bands, norm, extent, seed, need_mask, cloud, skip_bad)
        layout = "GLF-CR data.csv layout" if layout == "glf_cr" else "seasonal layout"
    elif kind == "sen12mscr_ts":
        series, skipped, unlisted = sen12mscr_ts.find_series(root, split, skip_bad)
        if unlisted and progress is not None:
            progress.warning(f"SEN12MS-CR-TS ROI folders outside every split, ignored: {', '.join(unlisted)}")
        table = _coverage_table(root, series, opts, cache_dir, workers, progress, shard, gather)
        ds = sen12mscr_ts.Sen12MSCRTSDataset(
            series, root, table, card.optical_bands, norm, extent, train, seed, opts.dates, cloud, skip_bad
        )
    else:
        samples, skipped = planet_cr.split_samples(
            root, split, Path(opts.csv) if opts.csv else None, opts.val_fraction, skip_bad
        )
        ds = planet_cr.PlanetCRDataset(samples, extent.size, train, seed, opts.lc_level, extent, skip_bad)
        layout = "official CSV" if (opts.csv or planet_cr.find_csv(root, "train" if split == "val" else split)) else (
            "folder walk"
        )
    ds.discovery_skipped = list(skipped)
    return Split(ds, kind, layout, split, root, list(skipped))
