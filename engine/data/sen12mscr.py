"""SEN12MS-CR reader (Ebel et al., TGRS 2021): (S1, cloud-free S2, cloudy S2) triplets.

Two on-disk layouts, told apart by :func:`detect_layout`:

``seasonal`` — the archives as published (four seasonal seeds)::

    <root>/ROIs1158_spring_s1/s1_<scene>/ROIs1158_spring_s1_<scene>_p<patch>.tif
    <root>/ROIs1158_spring_s2/s2_<scene>/ROIs1158_spring_s2_<scene>_p<patch>.tif
    <root>/ROIs1158_spring_s2_cloudy/s2_cloudy_<scene>/ROIs1158_spring_s2_cloudy_<scene>_p<patch>.tif

(likewise ``ROIs1868_summer``, ``ROIs1970_fall``, ``ROIs2017_winter``). The split is by scene,
the standard one of the SEN12MS-CR(-TS) authors' loaders: :data:`TEST_SCENES`, :data:`VAL_SCENES`,
every other scene trains. Scene folders are matched by their exact name: a substring test
(``s1_1`` inside ``s1_10``) would leak scenes between splits.

``glf_cr`` — the GLF-CR repository's ``data/`` folder: files renamed ``<seed>_<scene>_p<patch>.tif``
in three flat folders and an index ``data.csv`` with rows ``split, s1 folder, cloud-free folder,
cloudy folder, file name`` (no header; split 1 = train, 2 = val, 3 = test)::

    <root>/data.csv  <root>/s1/ROIs1970_fall_139_p839.tif  <root>/s2_cloudfree/…  <root>/s2_cloudy/…

Files: S1 2 bands float32 σ0 dB (VV, VH); S2 13 bands uint16 L1C DN (B1 … B12); 256 × 256 px at
10 m, one geotransform for the three. Scaling follows the model card (GLF-CR family: optical
clip [0, 10000] / 10000, VV [−25, 0] and VH [−32.5, 0] dB → [0, 1], NaN → whole-file mean first).
"""

from __future__ import annotations

import csv
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
    resize,
    scale_optical,
    scale_sar,
    to_tensors,
)
from .coverage import pixel_size

SEEDS = {"spring": "ROIs1158_spring", "summer": "ROIs1868_summer", "fall": "ROIs1970_fall", "winter": "ROIs2017_winter"}
SEASONS = tuple(SEEDS)

TEST_SCENES: dict[str, tuple[str, ...]] = {
    "spring": ("106", "123", "140", "31", "44"), "summer": ("119", "73"), "fall": ("139",), "winter": ("108", "63"),
}
"""Scene folders of the test split per season (10 scenes)."""
VAL_SCENES: dict[str, tuple[str, ...]] = {
    "winter": ("22", "107", "130", "84"), "summer": ("19", "80", "127", "17"), "fall": ("65",), "spring": ("17",),
}
"""Scene folders of the validation split per season (10 scenes)."""
SPLITS = ("train", "val", "test")
CSV_SPLITS = {"1": "train", "2": "val", "3": "test"}
_GLF_NAME = re.compile(r"(?P<seed>ROIs\d{4})_(?P<season>spring|summer|fall|winter)_(?P<scene>\d+)_p(?P<patch>\d+)\.tif")


def scene_split(season: str, scene: str) -> str:
    """``train``, ``val`` or ``test`` for a scene (exact match of the scene number)."""
    if scene in TEST_SCENES.get(season, ()):
        return "test"
    if scene in VAL_SCENES.get(season, ()):
        return "val"
    return "train"


@dataclass(frozen=True)
class Triplet:
    """Paths of one SEN12MS-CR sample."""

    s1: Path
    s2: Path
    s2_cloudy: Path
    season: str
    scene: str
    patch: str

    @property
    def name(self) -> str:
        """``<seed>_<scene>_p<patch>``, the GLF-CR file stem (e.g. ``ROIs1970_fall_139_p839``)."""
        if self.season in SEEDS:
            return f"{SEEDS[self.season]}_{self.scene}_p{self.patch}"
        return self.s2_cloudy.stem


def detect_layout(root: Path) -> str | None:
    """``glf_cr`` (a ``data.csv`` index), ``seasonal`` (``ROIs*_s1`` seed folders) or None."""
    if (root / "data.csv").is_file():
        return "glf_cr"
    if find_dirs(root, r"ROIs\d{4}_(spring|summer|fall|winter)_s1"):
        return "seasonal"
    return None


def _check_seasons(seasons: Sequence[str] | None) -> set[str]:
    if not seasons:
        return set(SEASONS)
    bad = [s for s in seasons if s not in SEASONS]
    if bad:
        raise InputError(f"unknown season(s) {', '.join(bad)}; SEN12MS-CR has {', '.join(SEASONS)}")
    return set(seasons)


def _missing(paths: Sequence[tuple[Path, str]]) -> str | None:
    for p, what in paths:
        if not p.is_file():
            return f"{what} file missing: {p}"
    return None


def find_seasonal(
    root: Path, split: str, seasons: Sequence[str] | None = None, skip_bad: bool = False
) -> tuple[list[Triplet], list[str]]:
    """Triplets of ``split`` in the seasonal layout, naturally sorted; and the skipped ones.

    A patch whose cloud-free or cloudy twin is missing is an error naming the file, or with
    ``skip_bad`` one line in the second list.
    """
    if split not in SPLITS:
        raise InputError(f"SEN12MS-CR split {split!r} unknown (train, val, test)")
    want = _check_seasons(seasons)
    out: list[Triplet] = []
    skipped: list[str] = []
    for s1_seed in find_dirs(root, r"ROIs\d{4}_(spring|summer|fall|winter)_s1"):
        seed = s1_seed.name[: -len("_s1")]
        season = seed.split("_")[1]
        if season not in want:
            continue
        for scene_dir in find_dirs(s1_seed, r"s1_\d+"):
            scene = scene_dir.name[3:]
            if scene_split(season, scene) != split:
                continue
            rx = re.compile(rf"{re.escape(seed)}_s1_{scene}_p(\d+)\.tif")
            files = sorted((f for f in scene_dir.iterdir() if rx.fullmatch(f.name)), key=lambda f: natural_key(f.name))
            for f in files:
                patch = rx.fullmatch(f.name)[1]  # type: ignore[index]
                s2 = root / f"{seed}_s2" / f"s2_{scene}" / f"{seed}_s2_{scene}_p{patch}.tif"
                cl = root / f"{seed}_s2_cloudy" / f"s2_cloudy_{scene}" / f"{seed}_s2_cloudy_{scene}_p{patch}.tif"
                problem = _missing([(s2, "cloud-free S2"), (cl, "cloudy S2")])
                if problem:
                    if not skip_bad:
                        raise SampleError(f"SEN12MS-CR: {problem} (twin of {f})")
                    skipped.append(problem)
                    continue
                out.append(Triplet(f, s2, cl, season, scene, patch))
    return out, skipped


def read_data_csv(
    root: Path, split: str, seasons: Sequence[str] | None = None, skip_bad: bool = False, csv_path: Path | None = None
) -> tuple[list[Triplet], list[str]]:
    """Triplets of ``split`` listed in the GLF-CR ``data.csv`` (file order); and the skipped ones."""
    if split not in SPLITS:
        raise InputError(f"SEN12MS-CR split {split!r} unknown (train, val, test)")
    csv_path = csv_path or root / "data.csv"
    want = _check_seasons(seasons)
    out: list[Triplet] = []
    skipped: list[str] = []
    if not csv_path.is_file():
        raise InputError(f"SEN12MS-CR index not found: {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not any(row) or (n == 1 and not row[0].isdigit()):
                continue  # blank line or a header
            if len(row) != 5 or row[0] not in CSV_SPLITS:
                raise InputError(
                    f"{csv_path} line {n}: expected 'split (1/2/3), s1 folder, cloud-free folder, cloudy folder, "
                    f"file name', got {','.join(row)}"
                )
            if CSV_SPLITS[row[0]] != split:
                continue
            m = _GLF_NAME.fullmatch(row[4])
            season, scene, patch = (m["season"], m["scene"], m["patch"]) if m else ("", "", Path(row[4]).stem)
            if m is None and want != set(SEASONS):
                raise InputError(
                    f"{csv_path} line {n}: cannot tell the season of {row[4]} "
                    "(expected ROIs<seed>_<season>_<scene>_p<patch>.tif)"
                )
            if m is not None and season not in want:
                continue
            t = Triplet(root / row[1] / row[4], root / row[2] / row[4], root / row[3] / row[4], season, scene, patch)
            problem = _missing([(t.s1, "S1"), (t.s2, "cloud-free S2"), (t.s2_cloudy, "cloudy S2")])
            if problem:
                if not skip_bad:
                    raise SampleError(f"SEN12MS-CR ({csv_path.name} line {n}): {problem}")
                skipped.append(problem)
                continue
            out.append(t)
    return out, skipped


def find_triplets(
    root: Path, split: str, seasons: Sequence[str] | None = None, skip_bad: bool = False
) -> tuple[list[Triplet], list[str], str]:
    """Triplets of ``split`` in whichever layout ``root`` has: (triplets, skipped, layout)."""
    layout = detect_layout(root)
    if layout == "glf_cr":
        return (*read_data_csv(root, split, seasons, skip_bad), layout)
    if layout == "seasonal":
        return (*find_seasonal(root, split, seasons, skip_bad), layout)
    raise InputError(
        f"{root} is not a SEN12MS-CR folder: expected ROIs<seed>_<season>_s1/ seed folders (the published "
        "archives) or a GLF-CR style data.csv with s1/, s2_cloudfree/, s2_cloudy/"
    )


class Sen12MSCRDataset(RobustDataset):
    """Training / evaluation samples of SEN12MS-CR for one model.

    Args:
        triplets: from :func:`find_triplets`.
        bands: optical band names the model takes (``B4, B3, B2`` for the RGB models).
        norm: the model card's ``normalisation`` block.
        extent: window choice (random crops for training, centre crop or whole image to score).
        need_mask: also compute CAFR's rule cloud mask (on the raw cloudy DN of the whole patch,
            before any crop) for the loss; otherwise ``mask`` is 0.
        cloud: also return ``cloud``, the engine's default (s2cloudless) mask, for cloud cover.
    """

    def __init__(
        self,
        triplets: Sequence[Triplet],
        bands: Sequence[str],
        norm: Mapping[str, Any],
        extent: Extent,
        seed: int = 7,
        need_mask: bool = False,
        cloud: bool = False,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(skip_bad=skip_bad, seed=seed)
        self.triplets = list(triplets)
        self.idx = band_positions(S2_BANDS, bands, "SEN12MS-CR (13-band L1C)")
        self.norm, self.extent = dict(norm), extent
        self.need_mask, self.cloud = need_mask, cloud

    def __len__(self) -> int:
        return len(self.triplets)

    def name(self, i: int) -> str:
        return self.triplets[i].name

    def load(self, i: int) -> dict[str, Any]:
        t = self.triplets[i]
        ext = self.extent
        whole = self.need_mask or self.cloud or ext.resize > 0
        with open_raster(t.s2_cloudy, "cloudy S2", bands=13) as dc:
            shape = (dc.height, dc.width)
            metres = pixel_size(dc)
            with (
                open_raster(t.s1, "S1", bands=2, shape=shape) as d1,
                open_raster(t.s2, "cloud-free S2", 13, shape) as d2,
            ):
                h, w = (ext.resize, ext.resize) if ext.resize else shape
                win = ext.window(h, w, item_rng(self.seed, self.epoch, i), t.name)
                read = None if whole else win
                fill = self.norm.get("nan_fill") != "zero"
                cloudy_dn = read_window(dc, "cloudy S2", read, fill)
                sar_db = read_window(d1, "S1", read, fill)
                clear_dn = read_window(d2, "cloud-free S2", read, fill)
        out: dict[str, np.ndarray] = {
            "cloudy": scale_optical(cloudy_dn if self.idx is None else cloudy_dn[self.idx], self.norm),
            "sar": scale_sar(sar_db, self.norm),
            "target": scale_optical(clear_dn if self.idx is None else clear_dn[self.idx], self.norm),
        }
        if self.need_mask:
            from .cloudmask import cafr_cloud_mask

            out["mask"] = cafr_cloud_mask(cloudy_dn).astype(np.float32)[None]
        if self.cloud:
            from .coverage import default_cloud_mask

            out["cloud"] = default_cloud_mask(cloudy_dn, metres).astype(np.float32)[None]
        if whole:
            if ext.resize:
                out = {k: resize(v, ext.resize, nearest=k in ("mask", "cloud")) for k, v in out.items()}
                for k in ("mask", "cloud"):
                    if k in out:
                        out[k] = (out[k] > 0.5).astype(np.float32)
            out = {k: crop(v, win) for k, v in out.items()}
        hw = out["cloudy"].shape[-2:]
        out.setdefault("mask", np.zeros((1, *hw), np.float32))
        out["weight"] = np.ones((1, *hw), np.float32)
        return to_tensors(out)
