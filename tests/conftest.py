"""Shared fixtures: the real SEN12MS-CR sample, GeoTIFF makers, small checkpoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "resources" / "sample"
S2_SAMPLE = SAMPLE / "ROIs1868_summer_s2_cloudy_19_p30.tif"
S1_SAMPLE = SAMPLE / "ROIs1868_summer_s1_19_p30.tif"
DEMO_CKPT = REPO / "resources" / "checkpoints" / "glf_cr_demo.pt"
VENV_BIN = Path(sys.executable).parent

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device visible to torch")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def write_geotiff(
    path: Path,
    array: np.ndarray,
    crs: str | None = "EPSG:32631",
    transform: Affine | None = None,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
) -> Path:
    """Write (C, H, W) ``array`` as a GeoTIFF with the given georeferencing."""
    c, h, w = array.shape
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": c, "dtype": array.dtype.name,
        "crs": crs, "transform": transform or Affine(10, 0, 712354.29, 0, -10, 1288830.13),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def crop_sample(tmp: Path, y: int, x: int, size: int, tag: str = "crop") -> tuple[Path, Path]:
    """A size×size window of the real sample (both rasters) with correct georeferencing."""
    out = []
    for src_path, name in ((S2_SAMPLE, f"{tag}_s2.tif"), (S1_SAMPLE, f"{tag}_s1.tif")):
        with rasterio.open(src_path) as src:
            win = rasterio.windows.Window(x, y, size, size)
            a = src.read(window=win)
            t = src.window_transform(win)
            out.append(write_geotiff(tmp / name, a, src.crs.to_string(), t, src.nodata))
    return out[0], out[1]


@pytest.fixture(scope="session")
def sample() -> tuple[Path, Path]:
    """(optical, SAR) paths of the bundled real scene."""
    return S2_SAMPLE, S1_SAMPLE


@pytest.fixture(scope="session")
def identity_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GLF-CR with random weights but a zeroed last conv: output == input exactly (global residual)."""
    import torch

    from cloudrm_engine.io.checkpoint import Checkpoint, save_checkpoint
    from cloudrm_engine.models import create_model, model_card

    torch.manual_seed(0)
    m = create_model("glf_cr")
    with torch.no_grad():
        m.UPNet[2].weight.zero_()
        m.UPNet[2].bias.zero_()
    card = model_card("glf_cr")
    ckpt = Checkpoint(
        model="glf_cr", config={}, state_dict=m.state_dict(),
        bands={"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
        normalisation=card.normalisation, trained_on="test: identity (zeroed last conv)",
    )
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "identity.pt", ckpt, half=True)


class RecordingProgress:
    """Progress that records everything and can cancel after N updates."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.updates: list[tuple[int, int]] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.cancel_after = cancel_after

    def update(self, done: int, total: int) -> None:
        self.updates.append((done, total))

    def is_canceled(self) -> bool:
        return self.cancel_after is not None and len(self.updates) > self.cancel_after

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def make_checkpoint(name: str, path: Path, seed: int = 0, zero: str | None = None, **config) -> Path:
    """An untrained checkpoint of registry model ``name`` (random init, seeded).

    ``zero``: dotted name of a module whose weight and bias are zeroed (e.g. the last conv of a
    residual model, so the output equals the input).
    """
    import torch

    from cloudrm_engine.io.checkpoint import Checkpoint, save_checkpoint
    from cloudrm_engine.models import create_model, model_card

    torch.manual_seed(seed)
    m = create_model(name, **config)
    if zero:
        mod = m.get_submodule(zero)
        with torch.no_grad():
            mod.weight.zero_()
            if getattr(mod, "bias", None) is not None:
                mod.bias.zero_()
    card = model_card(name)
    ckpt = Checkpoint(
        model=name, config=dict(config), state_dict=m.state_dict(),
        bands={"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
        normalisation=card.normalisation, trained_on=f"test: untrained {name} (seed {seed})",
    )
    return save_checkpoint(path, ckpt)
