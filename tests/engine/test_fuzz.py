"""Bounded fuzzing (issue 14): corrupted bytes of a small GeoTIFF and of a small checkpoint end in
our own error types or in success, never in another exception (a GDAL, torch or KeyError
traceback). ~40 examples each, no deadline; a few seconds in all. A handful of corrupted inputs
and checkpoints also go through the front door (engine.api.run, a whole run of a small model):
our one-line error or a complete output, never a temporary file or a partial output left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine
from rasterio.windows import Window

from cloudrm_engine.api import RunRequest, run
from cloudrm_engine.errors import CheckpointError, CloudrmError, InputError
from cloudrm_engine.io.checkpoint import load_checkpoint
from cloudrm_engine.io.raster import check_readable, raster_info, read_window, tiff_extent
from cloudrm_engine.models import model_card
from tests.conftest import RecordingProgress, make_checkpoint

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_PIXELS = 4_000_000  # a corrupted header can claim any size: read whole rasters only when small


@pytest.fixture(scope="module")
def tiff_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "seed.tif"
    a = np.random.default_rng(0).integers(0, 10000, (3, 96, 96), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint16", crs="EPSG:32631",
                       transform=Affine(10, 0, 600000, 0, -10, 5000000), tiled=True, blockxsize=32, blockysize=32,
                       compress="deflate", nodata=0) as dst:
        dst.write(a)
    return path.read_bytes()


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "seed.pt"
    card = model_card("glf_cr")
    torch.save({
        "format": "cloudrm-checkpoint", "format_version": 1, "model": "glf_cr", "config": {},
        "bands": {"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
        "normalisation": card.normalisation, "trained_on": "fuzz seed", "training": {"steps": 1},
        "state_dict": {"a.weight": torch.arange(12.0).reshape(3, 4), "a.bias": torch.zeros(3)},
    }, path)
    return path.read_bytes()


def mutate(data: bytes, edits: list[tuple[float, int]], cut: float | None) -> bytes:
    """Overwrite bytes at relative positions, then optionally cut the file at a relative length."""
    b = bytearray(data)
    for pos, value in edits:
        b[min(int(pos * len(b)), len(b) - 1)] = value
    if cut is not None:
        b = b[: int(cut * len(b))]
    return bytes(b)


EDITS = st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.integers(0, 255)), max_size=12)
CUT = st.none() | st.floats(0, 1, allow_nan=False)
HEADER_EDITS = st.lists(st.tuples(st.floats(0, 0.02, allow_nan=False), st.integers(0, 255)), min_size=1, max_size=6)


def exercise_raster(path: Path) -> None:
    """What the engine does with an input before and during a run; only InputError may escape."""
    try:
        info = raster_info(path, role="optical")
        tiff_extent(path)  # never raises, whatever the bytes
        check_readable(info, "optical")
        if info.width * info.height <= MAX_PIXELS:
            with rasterio.open(path) as ds:
                read_window(ds, Window(0, 0, ds.width, ds.height), what="optical raster 'fuzz.tif'")
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)


@FUZZ
@given(edits=EDITS, cut=CUT)
def test_corrupted_geotiff_bytes_give_input_errors_only(tmp_path, tiff_bytes, edits, cut):
    path = tmp_path / "fuzz.tif"
    path.write_bytes(mutate(tiff_bytes, edits, cut))
    exercise_raster(path)


@FUZZ
@given(edits=HEADER_EDITS)
def test_corrupted_geotiff_headers_give_input_errors_only(tmp_path, tiff_bytes, edits):
    """Edits in the first 2 % of the file: the header, directory and block tables."""
    path = tmp_path / "fuzz.tif"
    path.write_bytes(mutate(tiff_bytes, edits, None))
    exercise_raster(path)


@FUZZ
@given(edits=EDITS, cut=CUT)
def test_corrupted_checkpoint_bytes_give_checkpoint_errors_only(tmp_path, ckpt_bytes, edits, cut):
    path = tmp_path / "fuzz.pt"
    path.write_bytes(mutate(ckpt_bytes, edits, cut))
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        text = str(exc)
        assert "\n" not in text and str(path) in text and "weights_only" not in text, text
    except CloudrmError as exc:  # pragma: no cover - reported as a failure with its message
        pytest.fail(f"not a CheckpointError: {type(exc).__name__}: {exc}")
    else:
        assert ckpt.model == "glf_cr" and all(isinstance(v, torch.Tensor) for v in ckpt.state_dict.values())


# ---- through the front door -------------------------------------------------------------------

FRONT_DOOR = settings(FUZZ, max_examples=20)
T0 = Affine(10, 0, 600000, 0, -10, 5000000)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, object]:
    """A 64×64 3-band optical (tiled 32, deflate) and SAR pair, and a narrowed untrained MMCANet."""
    d = tmp_path_factory.mktemp("fuzz-run")
    rng = np.random.default_rng(1)
    prof = {"driver": "GTiff", "width": 64, "height": 64, "crs": "EPSG:32631", "transform": T0, "tiled": True,
            "blockxsize": 32, "blockysize": 32, "compress": "deflate"}
    with rasterio.open(d / "opt.tif", "w", count=3, dtype="uint16", **prof) as dst:
        dst.write(rng.integers(0, 8000, (3, 64, 64), dtype=np.uint16))
    with rasterio.open(d / "sar.tif", "w", count=2, dtype="float32", **prof) as dst:
        dst.write(rng.uniform(-25, 0, (2, 64, 64)).astype(np.float32))
    ckpt = make_checkpoint("mmcanet", d / "ckpt.pt", width=8, enc_blocks=[1, 1, 1, 1], dec_blocks=[1, 1])
    return {"opt": (d / "opt.tif").read_bytes(), "sar": d / "sar.tif", "ckpt": ckpt, "ckpt_bytes": ckpt.read_bytes()}


def run_front_door(folder: Path, optical: Path, sar: Path, ckpt: Path, named: Path) -> None:
    """One run of the engine's front door; only our one-line error may escape, naming ``named``."""
    out = folder / "out" / "result.tif"
    try:
        run(RunRequest(optical=[str(optical)], sar=[str(sar)], output=str(out), model="mmcanet",
                       checkpoint=str(ckpt), tile_size=32, keep_clear=False), RecordingProgress())
    except CloudrmError as exc:
        text = str(exc)
        assert "\n" not in text and str(named) in text and "weights_only" not in text, text
        assert not out.parent.exists(), "a failed run left its output folder"
    else:
        with rasterio.open(out) as ds:
            assert (ds.count, ds.width, ds.height) == (3, 64, 64)
        assert sorted(p.name for p in out.parent.iterdir()) == ["result.tif"]
        out.unlink()
        out.parent.rmdir()


@pytest.fixture
def one_thread():
    """One torch thread: tiny convolutions on 2 threads crawl when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@FRONT_DOOR
@given(edits=EDITS, cut=CUT)
def test_corrupted_optical_through_the_front_door(tmp_path_factory, scene, one_thread, edits, cut):
    d = tmp_path_factory.mktemp("fuzz-opt")
    opt = d / "fuzz.tif"
    opt.write_bytes(mutate(scene["opt"], edits, cut))  # type: ignore[arg-type]
    run_front_door(d, opt, scene["sar"], scene["ckpt"], opt)  # type: ignore[arg-type]


@FRONT_DOOR
@given(edits=EDITS, cut=CUT)
def test_corrupted_checkpoint_through_the_front_door(tmp_path_factory, scene, one_thread, edits, cut):
    d = tmp_path_factory.mktemp("fuzz-ckpt")
    ckpt = d / "fuzz.pt"
    ckpt.write_bytes(mutate(scene["ckpt_bytes"], edits, cut))  # type: ignore[arg-type]
    opt = d / "opt.tif"
    opt.write_bytes(scene["opt"])  # type: ignore[arg-type]
    run_front_door(d, opt, scene["sar"], ckpt, ckpt)  # type: ignore[arg-type]
