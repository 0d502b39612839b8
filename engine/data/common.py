"""Pieces every dataset reader shares: checked raster reads, sample windows, scaling, robust items.

A reader turns one sample into a dict of float32 tensors in the model's [0, 1] scale:

- ``cloudy``: (C, h, w) — or (T, C, h, w) for time series — the cloudy optical input;
- ``sar``: (2, h, w) or (T, 2, h, w), VV and VH;
- ``target``: (C, h, w), the cloud-free reference;
- ``mask``: (1, h, w), 1 = cloudy (the loss mask: CAFR's rule mask, Planet-CR's UDM, else 0);
- ``weight``: (1, h, w), 1 where the target is trustworthy (all ones for real datasets);
- ``days``: (T,) for time series; ``cloud``: (1, h, w) the engine's default cloud mask when asked for;
- ``name`` (str) and ``index`` (int).

Errors never escape a DataLoader worker as a bare traceback: :class:`RobustDataset` turns a
missing, unreadable or wrongly shaped file into a marker that the training loop reports as one
clear message naming the file, or — with ``skip_bad`` — logs, counts and replaces with the next
good sample (so every process still sees full batches).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from ..errors import CloudrmError, InputError
from .normalize import normalize_optical, normalize_sar


class SampleError(InputError):
    """One sample's file is missing, unreadable or has the wrong shape; the message names the file."""


def natural_key(s: str) -> list[Any]:
    """Sort key that orders ``p2`` before ``p10`` (digits compared as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


@contextlib.contextmanager
def open_raster(
    path: Path, what: str, bands: int | None = None, shape: tuple[int, int] | None = None
) -> Iterator[rasterio.io.DatasetReader]:
    """Open ``path`` for reading; a missing or unreadable file, another band count or another
    height × width than ``shape`` is a :class:`SampleError` naming the file."""
    if not path.is_file():
        raise SampleError(f"{what} file missing: {path}")
    try:
        ds = rasterio.open(path)
    except Exception as exc:  # rasterio raises several unrelated types for broken files
        raise SampleError(f"{what} file unreadable: {path} ({type(exc).__name__}: {exc})") from exc
    try:
        if bands is not None and ds.count != bands:
            raise SampleError(f"{what} file {path} has {ds.count} band(s); expected {bands}")
        if shape is not None and (ds.height, ds.width) != tuple(shape):
            raise SampleError(f"{what} file {path} is {ds.height}×{ds.width} px; expected {shape[0]}×{shape[1]}")
        yield ds
    finally:
        ds.close()


def read_window(
    ds: rasterio.io.DatasetReader, what: str, window: tuple[int, int, int, int] | None = None, fill: bool = True
) -> np.ndarray:
    """(C, h, w) float32 of the window (y, x, h, w) — or the whole file — with NaN replaced by the
    nanmean of the *whole file* (all bands), as the official GLF-CR / Planet-CR loaders do
    (``fill=False`` keeps NaN: cards with ``nan_fill: zero`` zero them after scaling).

    The whole file is read a second time only when the window holds a NaN, so windowed reads of
    clean files stay cheap and still equal a whole-file read followed by a crop.
    """
    try:
        a = ds.read(window=Window(window[1], window[0], window[3], window[2]) if window else None)
        a = a.astype(np.float32)
        bad = np.isnan(a)
        if fill and bad.any():
            full = a if window is None else ds.read().astype(np.float32)
            a[bad] = np.float32(np.nanmean(full)) if not np.isnan(full).all() else np.float32(0.0)
    except CloudrmError:
        raise
    except Exception as exc:
        raise SampleError(f"{what} file unreadable: {ds.name} ({type(exc).__name__}: {exc})") from exc
    return a


@dataclass(frozen=True)
class Extent:
    """Which part of a sample a reader returns.

    ``mode``: ``random`` (a ``size``² window at an offset drawn from (seed, epoch, index): the
    same offset for every raster of the sample), ``center`` (the centred ``size``² window, offset
    (H − size) // 2 as the official test scripts) or ``full`` (the whole image). ``resize`` > 0:
    the whole image is first resized to ``resize``² (antialiased bilinear, MMCANet's protocol)
    and the window is taken from the resized image.
    """

    mode: str = "full"
    size: int = 0
    resize: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("random", "center", "full"):
            raise InputError(f"unknown extent mode {self.mode!r} (random, center, full)")
        if self.mode != "full" and self.size <= 0:
            raise InputError(f"extent {self.mode} needs a size > 0")

    def window(self, h: int, w: int, rng: np.random.Generator | None, what: str = "") -> tuple[int, int, int, int]:
        """(y, x, height, width) of the window in an h × w image."""
        if self.mode == "full":
            return 0, 0, h, w
        s = self.size
        if s > min(h, w):
            raise SampleError(f"window {s} px is larger than the image {h}×{w} px{f' ({what})' if what else ''}")
        if self.mode == "center":
            return (h - s) // 2, (w - s) // 2, s, s
        assert rng is not None
        return int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1)), s, s


def scale_optical(dn: np.ndarray, norm: Mapping[str, Any]) -> np.ndarray:
    """Optical DN → the card's [0, 1] scale; ``nan_fill: zero`` cards also zero NaN afterwards."""
    o = norm["optical"]
    out = normalize_optical(dn, o["clip"], o["scale"])
    return np.nan_to_num(out, nan=0.0) if norm.get("nan_fill") == "zero" else out


def scale_sar(db: np.ndarray, norm: Mapping[str, Any]) -> np.ndarray:
    """SAR dB → [0, 1] with the card's per-band ranges (NaN → 0 for ``nan_fill: zero`` cards)."""
    out = normalize_sar(db, norm["sar"]["clip"])
    return np.nan_to_num(out, nan=0.0) if norm.get("nan_fill") == "zero" else out


def resize(a: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(..., H, W) float array → (..., size, size): antialiased bilinear (or nearest for masks)."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    lead = t.shape[:-2]
    t = t.reshape(1, -1, *t.shape[-2:])
    if nearest:
        t = F.interpolate(t, size=(size, size), mode="nearest-exact")
    else:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.reshape(*lead, size, size).numpy()


def crop(a: np.ndarray, win: tuple[int, int, int, int]) -> np.ndarray:
    y, x, h, w = win
    return a[..., y : y + h, x : x + w]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one sample in one epoch: the same in every process and worker, so
    crops do not depend on how samples are spread over GPUs (torchrun) or DataLoader workers."""
    return np.random.default_rng((seed, epoch, index))


class RobustDataset(torch.utils.data.Dataset):
    """Map-style dataset whose items never raise: see the module docstring. Errors other than a
    :class:`SampleError` (a window larger than the image, say) are never skipped.

    Subclasses implement :meth:`load` (one sample, may raise) and :meth:`name` (its label).
    """

    max_tries = 16

    def __init__(self, skip_bad: bool = False, seed: int = 7) -> None:
        self.skip_bad = skip_bad
        self.seed = seed
        self.epoch = 0
        self.discovery_skipped: list[str] = []
        """Samples left out when the file list was built (``skip_bad``): one message each."""

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def load(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        skipped: list[str] = []
        j = i
        for _ in range(min(self.max_tries, len(self))):
            try:
                item = self.load(j)
            except SampleError as exc:
                if not self.skip_bad:
                    hint = "use --skip-bad to log and skip such samples"
                    return {"error": f"{exc} ({hint})", "index": i, "bad_file": True}
                skipped.append(str(exc))
                j = (j + 1) % len(self)
                continue
            except CloudrmError as exc:  # not the file's fault (e.g. a window larger than the image)
                return {"error": str(exc), "index": i}
            item["index"] = j
            item["name"] = self.name(j)
            item["skipped"] = skipped
            return item
        return {"error": f"{len(skipped)} bad samples in a row from #{i}; last: {skipped[-1]}", "index": i}


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of a list of items; ``name``/``index`` become lists, ``skipped`` one flat
    list, and items with an ``error`` are collected under ``errors`` (the batch then holds no data)."""
    errors = [str(it["error"]) for it in items if "error" in it]
    skipped = [s for it in items for s in it.get("skipped", ())]
    if errors:
        return {"errors": errors, "skipped": skipped}
    out: dict[str, Any] = {
        "skipped": skipped, "name": [it["name"] for it in items], "index": [it["index"] for it in items]
    }
    for k, v in items[0].items():
        if isinstance(v, torch.Tensor):
            out[k] = torch.stack([it[k] for it in items])
    return out


def to_tensors(d: Mapping[str, Any]) -> dict[str, Any]:
    """numpy arrays → contiguous torch tensors (other values unchanged)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in d.items()}


def band_positions(available: Sequence[str], wanted: Sequence[str], what: str) -> list[int] | None:
    """Positions of ``wanted`` in ``available`` (None when they are identical)."""
    if list(available) == list(wanted):
        return None
    missing = [b for b in wanted if b not in available]
    if missing:
        raise InputError(f"{what} has bands {', '.join(available)}; the model needs {', '.join(missing)}")
    return [list(available).index(b) for b in wanted]


def find_dirs(root: Path, pattern: str) -> list[Path]:
    """Sub-folders of ``root`` whose name fully matches the regex ``pattern``, naturally sorted."""
    rx = re.compile(pattern)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and rx.fullmatch(p.name)), key=lambda p: natural_key(p.name))


def relpath(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (the form cache files and JSON store)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
