"""Time-series inputs: lists of optical (and SAR) rasters, their dates, one common grid.

- Dates come from, in this order: an explicit list (ISO ``YYYY-MM-DD``, one per optical
  raster), else the file's metadata (GDAL tags such as ``ACQUISITION_DATE``,
  ``DATATAKE_1_DATATAKE_SENSING_START``, ``TIFFTAG_DATETIME``), else the file name
  (``YYYYMMDD`` or ``YYYY-MM-DD``). Each file's source is reported.
- The series is sorted by date (stable); the **target** is the last (latest) acquisition.
  With no dates at all the given order is kept.
- SAR rasters pair with optical rasters by position after sorting: sorted by their own
  dates when every SAR file has one, else taken in the optical rasters' given order.
- Every raster is read on the target optical grid: as is when the grids match, else
  through a ``WarpedVRT`` (resampled on the fly, with a warning).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import Progress
from .align import check_grid, open_sar_on_grid, warped_onto
from .raster import RasterInfo, open_raster, raster_info, reading

DATE_TAGS: tuple[str, ...] = (
    "ACQUISITION_DATE",
    "ACQUISITIONDATE",
    "DATATAKE_1_DATATAKE_SENSING_START",
    "SENSING_TIME",
    "SENSING_START",
    "PRODUCT_START_TIME",
    "DATE_ACQUIRED",
    "ACQUISITION_START_TIME",
    "TIFFTAG_DATETIME",  # last: often the file's creation time, not the acquisition
)
"""GDAL metadata items (default domain) read for an acquisition date, first match wins."""

_ISO = re.compile(r"(?<!\d)(\d{4})[-:](\d{2})[-:](\d{2})(?!\d)")
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")


@dataclass(frozen=True)
class SeriesItem:
    """One acquisition: its optical raster, the paired SAR raster, its date and where it came from."""

    optical: RasterInfo
    sar: RasterInfo | None
    date: dt.date | None
    date_source: str  # "parameter", "metadata <TAG>", "file name" or "none"


@dataclass(frozen=True)
class Series:
    """Acquisitions sorted by date; the last is the target whose grid the output takes."""

    items: tuple[SeriesItem, ...]

    @property
    def target(self) -> RasterInfo:
        return self.items[-1].optical

    @property
    def has_sar(self) -> bool:
        return all(i.sar is not None for i in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def days(self) -> np.ndarray:
        """(T,) float32 days relative to the target (≤ 0 for history); zeros without dates."""
        last = self.items[-1].date
        if last is None:
            return np.zeros(len(self.items), dtype=np.float32)
        return np.array([(i.date - last).days for i in self.items], dtype=np.float32)  # type: ignore[operator]

    def dates(self) -> list[str | None]:
        return [i.date.isoformat() if i.date else None for i in self.items]


def parse_date(text: str) -> dt.date | None:
    """First valid calendar date in ``text`` (``YYYY-MM-DD``, ``YYYY:MM:DD`` or ``YYYYMMDD``), else None.

    The separated form is tried first, so ``2023-01-05T10:34:21Z`` and GDAL's
    ``2023:01:05 10:34:21`` parse; years outside 1950–2100 are ignored (not a date).
    """
    for rx in (_ISO, _COMPACT):
        for m in rx.finditer(text):
            y, mo, d = (int(g) for g in m.groups())
            if not 1950 <= y <= 2100:
                continue
            try:
                return dt.date(y, mo, d)
            except ValueError:
                continue
    return None


def date_from_metadata(path: str | os.PathLike[str]) -> tuple[dt.date, str] | None:
    """(date, tag) from the raster's default-domain GDAL metadata, or None."""
    with open_raster(path) as ds:
        tags = {k.upper(): v for k, v in ds.tags().items()}
    for key in DATE_TAGS:
        if key in tags:
            d = parse_date(str(tags[key]))
            if d is not None:
                return d, key
    return None


def date_from_name(path: str | os.PathLike[str]) -> dt.date | None:
    """Date in the file name (``YYYY-MM-DD`` or ``YYYYMMDD``), or None."""
    return parse_date(Path(path).name)


def _resolve_date(info: RasterInfo) -> tuple[dt.date | None, str]:
    meta = date_from_metadata(info.path)
    if meta is not None:
        return meta[0], f"metadata {meta[1]}"
    d = date_from_name(info.path)
    return (d, "file name") if d is not None else (None, "none")


def _explicit_dates(dates: Sequence[str | dt.date], n: int) -> list[dt.date]:
    if len(dates) != n:
        raise InputError(f"{len(dates)} date(s) given for {n} optical raster(s): give one date per optical raster")
    out = []
    for d in dates:
        if isinstance(d, dt.date):
            out.append(d)
            continue
        try:
            out.append(dt.date.fromisoformat(str(d).strip()[:10]))
        except ValueError:
            raise InputError(f"date {d!r} is not an ISO date (YYYY-MM-DD)") from None
    return out


def _labels(names: Sequence[str | None] | None, n: int) -> list[str | None]:
    names = list(names or [])
    return names + [None] * (n - len(names))


def _warn_duplicate_dates(
    ordered: Sequence[tuple[RasterInfo, dt.date | None, str]], progress: Progress
) -> None:
    """One warning per date held by several optical rasters (``ordered``: sorted by date).

    Equal dates keep the order given; when the latest date is shared, the last one given is
    the target, and the warning says so.
    """
    groups: dict[dt.date, list[tuple[RasterInfo, str]]] = {}
    for info, d, source in ordered:
        if d is not None:
            groups.setdefault(d, []).append((info, source))
    latest = max(groups) if groups else None
    for d, items in groups.items():
        if len(items) < 2:
            continue
        names = " and ".join(f"'{i.name}' ({i.path})" for i, _ in items)
        sources = sorted({src for _, src in items})
        if d == latest:
            others = "the others" if len(items) > 2 else "the other"
            use = f"'{items[-1][0].name}' (the last given) is the target, {others} history"
        else:
            use = "all are used, in the order given"
        progress.warning(
            f"optical rasters {names} have the same acquisition date {d.isoformat()} "
            f"(from {', '.join(sources)}): {use}; give the dates explicitly if that is wrong"
        )


def load_series(
    optical: Sequence[str | os.PathLike[str]],
    sar: Sequence[str | os.PathLike[str]] | None,
    progress: Progress,
    dates: Sequence[str | dt.date] | None = None,
    optical_names: Sequence[str | None] | None = None,
    sar_names: Sequence[str | None] | None = None,
) -> Series:
    """Describe, date, sort and pair the rasters of a series (reads headers only).

    Raises:
        InputError: no optical raster, SAR count ≠ optical count, a file unreadable, band
            counts that differ, or some rasters dated and others not (all named).
    """
    if not optical:
        raise InputError("no optical rasters given: a series needs at least one")
    labels = _labels(optical_names, len(optical))
    opt = [raster_info(p, n, role="optical") for p, n in zip(optical, labels, strict=True)]
    sars: list[RasterInfo] | None = None
    if sar:
        if len(sar) != len(optical):
            raise InputError(
                f"{len(sar)} SAR raster(s) for {len(optical)} optical raster(s): give one SAR raster per "
                "optical raster (paired by date order), or none"
            )
        sars = [raster_info(p, n, role="SAR") for p, n in zip(sar, _labels(sar_names, len(sar)), strict=True)]
    counts = {i.count for i in opt}
    if len(counts) > 1:
        raise InputError(
            "optical rasters have different band counts: " + ", ".join(f"{i.describe()}" for i in opt)
        )

    found = [(d, "parameter") for d in _explicit_dates(dates, len(opt))] if dates else [_resolve_date(i) for i in opt]
    undated = [i for i, (d, _) in zip(opt, found, strict=True) if d is None]
    if undated and len(undated) < len(opt):
        raise InputError(
            "no acquisition date found for optical raster(s) "
            + ", ".join(f"'{i.name}' ({i.path})" for i in undated)
            + " (neither in the metadata nor in the file name) while the others have one: "
            "give the dates explicitly (one ISO date per optical raster)"
        )
    if undated:
        order = list(range(len(opt)))
        progress.warning("no acquisition dates found (metadata or file names): keeping the given order, last = target")
    else:
        # stable: equal dates keep their order; every date is set in this branch
        order = sorted(range(len(opt)), key=lambda k: found[k][0] or dt.date.min)
        _warn_duplicate_dates([(opt[k], found[k][0], found[k][1]) for k in order], progress)

    sar_order = order
    if sars is not None:
        sar_dates = [_resolve_date(s) for s in sars]
        if all(d is not None for d, _ in sar_dates):
            sar_order = sorted(range(len(sars)), key=lambda k: sar_dates[k][0] or dt.date.min)
            for k_opt, k_sar in zip(order, sar_order, strict=True):
                d_opt, d_sar = found[k_opt][0], sar_dates[k_sar][0]
                if d_opt is not None and abs((d_opt - d_sar).days) > 15:  # type: ignore[operator]
                    progress.warning(
                        f"SAR raster '{sars[k_sar].name}' ({d_sar}) is paired with optical raster "
                        f"'{opt[k_opt].name}' ({d_opt}), {abs((d_opt - d_sar).days)} days apart"  # type: ignore[operator]
                    )
        else:
            progress.info("SAR rasters have no dates: paired with the optical rasters in the order given")

    items = tuple(
        SeriesItem(opt[k], sars[s] if sars is not None else None, found[k][0], found[k][1])
        for k, s in zip(order, sar_order, strict=True)
    )
    for n, it in enumerate(items, start=1):
        role = "target" if n == len(items) else f"{n}/{len(items)}"
        pair = f" + SAR '{it.sar.name}'" if it.sar else ""
        progress.info(
            f"series {role}: {it.date.isoformat() if it.date else 'undated'} "
            f"(date from {it.date_source}) '{it.optical.name}'{pair}"
        )
    return Series(items)


@contextlib.contextmanager
def open_optical_on_grid(info: RasterInfo, target: RasterInfo, progress: Progress) -> Iterator[Any]:
    """Yield a readable dataset with ``info`` on the ``target`` grid (WarpedVRT if needed).

    Resampled rasters read as float32 with NaN where there is no data.
    """
    moved = check_grid(
        info, target, progress, "optical", "the target",
        "resampling it onto the target grid on the fly (bilinear)",
        "pixels outside it count as missing for that date",
    )
    if not moved:
        with reading(info.path) as ds:  # reader threads open it, the main thread closes it
            yield ds
        return
    with warped_onto(info.path, target, "bilinear") as vrt:
        yield vrt


@contextlib.contextmanager
def open_series(series: Series, progress: Progress, sar: bool = True) -> Iterator[tuple[list[Any], list[Any]]]:
    """Yield ([optical datasets], [SAR datasets]) all on the target grid, in series order.

    The SAR list is empty when ``sar`` is False or the series has no SAR.
    """
    target = series.target
    with contextlib.ExitStack() as stack:
        opts = [stack.enter_context(open_optical_on_grid(i.optical, target, progress)) for i in series.items]
        sars = []
        if sar and series.has_sar:
            sars = [stack.enter_context(open_sar_on_grid(i.sar, target, progress)) for i in series.items]  # type: ignore[arg-type]
        yield opts, sars
