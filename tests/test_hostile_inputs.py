"""Issue 14 end to end: one table of hostile inputs, each run through the front doors.

Every row of :data:`CASES` says how to build its inputs in a fresh folder, the command (the
``cloudrm`` CLI as a subprocess: predict, predict-series, predict-batch, info, quicklook; for the
representative subset also ``qgis_process run cloudrm:…`` in a fresh QGIS profile; the cloud
mask, which has no CLI command, through :func:`engine.api.cloud_mask` in-process), whether it is
an error, a warning or a clean run, and a regex the one-line message must match. Each run
asserts (:func:`check_outcome`):

- errors: exit code ≠ 0 (the expected one where the row gives it); the last line on stderr is
  the message (one line, naming the file and the problem); no file at the output path (or the
  existing one untouched); nothing new in the output folder;
- warnings: exit code 0, a ``warning:`` line matching the regex, the output written;
- clean runs: exit code 0, no ``warning:`` line, the output written;
- always: no ``Traceback`` in stdout or stderr (on the CLI no Python warning and no raw GDAL
  ``ERROR 1:`` line either), no ``.*.part*`` temporary file left in the folder or the output's
  (but a live writer's is kept), the inputs' bytes unchanged (SHA-256 before and after). Under
  ``qgis_process`` QGIS itself saves the statistics of the layers it loads beside them
  (``<input>.aux.xml``): those side files are its, and tolerated.

Rows marked xfail (strict) are real defects in files of other owners; the reason says which.

The subprocesses of all selected rows run a few at a time while the module starts (each row in
its own folder), then each test checks its row; running one row (``-k``) runs only that row.
Cheap inputs: 32×32 crops of the bundled scene and an untrained, narrowed MMCANet (8 channels).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from tests.conftest import VENV_BIN, RecordingProgress, crop_sample, make_checkpoint
from tests.plugin.conftest import QGIS_PROCESS, qgis_env, qgis_profile  # noqa: F401 - the profile fixture

CLOUDRM = VENV_BIN / "cloudrm"
WORKERS = 3
"""Subprocesses at a time: they mostly wait for imports; the machine has 2 shared cores."""
PART = re.compile(r"^\..*\.(part|probe)")
"""Temporary files of the engine's writers (atomic_output) and destination probe (check_destination)."""


# ------------------------------------------------------------------------------ the table


@dataclass
class Kit:
    """What the rows share: the untrained checkpoint and a place for cleanups (mounts)."""

    ckpt: Path
    cleanups: list[Callable[[], object]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_teardown(self, fn: Callable[[], object]) -> None:
        with self.lock:
            self.cleanups.append(fn)


@dataclass
class Setup:
    """One built row for one front end."""

    folder: Path
    cli: list[Any] | None = None
    """``cloudrm`` arguments."""
    qgis: list[Any] | None = None
    """``qgis_process run`` arguments: the algorithm, ``--``, then KEY=VALUE."""
    api: Callable[[RecordingProgress], Any] | None = None
    """In-process engine call."""
    output: Path | None = None
    inputs: list[Path] = field(default_factory=list)
    allowed: set[str] = field(default_factory=set)
    """Names that may newly appear in ``folder`` besides the output (e.g. a batch log)."""
    keep: set[str] = field(default_factory=set)
    """Temporary-looking files that must still be there afterwards (a live writer's)."""
    check: Callable[[Setup, Result], None] | None = None
    """Further assertions after the run."""
    runner: Callable[[Setup, list[str], dict[str, str]], Result] | None = None
    """Instead of running the command to completion (e.g. SIGTERM it half-way)."""
    skip: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables of the command."""


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    exc: BaseException | None = None
    progress: RecordingProgress | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    id: str
    item: str
    """Issue 14's item (1–7) or "n" for the obvious neighbours."""
    build: Callable[[Path, Kit], Setup]
    kind: str
    """error | warning | ok"""
    message: str = ""
    """Regex the message line must match (re.search); naming the file and the problem."""
    fronts: tuple[str, ...] = ("cli",)
    """cli (subprocess), qgis (qgis_process), api (in-process engine)."""
    rc: int | None = None
    """Expected exit code of an error on the CLI (None: any non-zero)."""
    xfail: str | None = None
    slow: bool = False


# ---- input makers ---------------------------------------------------------------------------


def pair(d: Path, tag: str, size: int = 32, y: int = 0, x: int = 0) -> tuple[Path, Path]:
    """(optical 13-band uint16, SAR 2-band float32 dB) crops of the bundled scene: tag_s2.tif, tag_s1.tif."""
    return crop_sample(d, y, x, size, tag)


def rewrite(
    src: Path, dst: Path, fn: Callable[[np.ndarray], np.ndarray] | None = None, **profile: Any
) -> Path:
    """Copy of ``src`` (georeferencing kept) with its array through ``fn`` and profile changes."""
    with rasterio.open(src) as ds:
        a, p = ds.read(), ds.profile
    if fn is not None:
        a = fn(a)
    p.update(dtype=a.dtype.name, count=a.shape[0], **profile)
    with rasterio.open(dst, "w", **p) as out:
        out.write(a)
    return dst


TILED: dict[str, Any] = {"tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate"}


def truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def corrupt_block(path: Path, bx: int, by: int) -> Path:
    """Garbage inside tile (bx, by)'s deflate stream (a block the cheap read check does not sample)."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    off = int(band.GetMetadataItem(f"BLOCK_OFFSET_{bx}_{by}", "TIFF"))
    size = int(band.GetMetadataItem(f"BLOCK_SIZE_{bx}_{by}", "TIFF"))
    ds = None
    data = bytearray(path.read_bytes())
    data[off + 4 : off + size - 4] = np.random.default_rng(1).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def ckpt_blob(kit: Kit) -> dict[str, Any]:
    return torch.load(kit.ckpt, map_location="cpu", weights_only=True)


def save_blob(path: Path, blob: Any) -> Path:
    torch.save(blob, path)
    return path


class RunsCode:
    """Pickles as a call of os.system: a checkpoint carrying code (never unpickled by cloudrm)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def mount_tmpfs(d: Path, kit: Kit, options: str) -> str | None:
    """Mount a tmpfs on ``d``; the reason it cannot be done, else None (unmounted at teardown)."""
    if shutil.which("mount") is None:
        return "no mount command"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): needs root with CAP_SYS_ADMIN"
    kit.on_teardown(lambda: subprocess.run(["umount", "-l", str(d)], capture_output=True))
    return None


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# ---- commands -------------------------------------------------------------------------------

QGIS_LABEL = r"(\.tif)?"  # QGIS names a layer after the file without its suffix


def predict(
    d: Path, kit: Kit, opt: Path, sar: Path, out: Path | None = None, ckpt: Path | None = None,
    model: str = "mmcanet", tile: int | None = 32, cli: tuple[Any, ...] = (), qgis: tuple[Any, ...] = (),
) -> Setup:
    """``cloudrm predict`` and ``cloudrm:removeclouds`` of one optical/SAR pair, keep-clear off."""
    out = out if out is not None else d / "out.tif"
    ck = ckpt if ckpt is not None else kit.ckpt
    tiles = ["--tile-size", str(tile)] if tile is not None else []
    return Setup(
        folder=out.parent if out.parent.is_dir() and not str(out).startswith("/proc") else d,
        cli=["predict", "--optical", opt, "--sar", sar, "--model", model, "--checkpoint", ck, "--out", out,
             *tiles, "--no-keep-clear", *cli],
        qgis=["cloudrm:removeclouds", "--", f"OPTICAL={opt}", f"SAR={sar}", f"MODEL={model}", f"CHECKPOINT={ck}",
              f"TILE_SIZE={tile or 0}", "KEEP_CLEAR=false", f"OUTPUT={out}", *qgis],
        output=out,
        inputs=[p for p in (opt, sar, ck) if p.is_file()],
    )


def series(d: Path, optical: list[Path], out: Path | None = None, method: str = "least_cloudy",
           cli: tuple[Any, ...] = ()) -> Setup:
    """``cloudrm predict-series`` and ``cloudrm:removecloudsmultitemporal`` (a weight-free baseline)."""
    out = out or d / "out.tif"
    return Setup(
        folder=d,
        cli=["predict-series", "--optical", *optical, "--method", method, "--out", out, "--no-keep-clear", *cli],
        qgis=["cloudrm:removecloudsmultitemporal", "--", *(f"OPTICAL_SERIES={p}" for p in optical),
              f"METHOD={method}", "KEEP_CLEAR=false", f"OUTPUT={out}"],
        output=out,
        inputs=[p for p in optical if p.is_file()],
    )


def cloudmask(d: Path, src: Path, out: Path | None = None) -> Setup:
    """The cloud mask (no CLI command): in-process engine call and ``cloudrm:cloudmask``."""
    out = out or d / "mask.tif"

    def call(progress: RecordingProgress) -> Any:
        from cloudrm_engine.api import cloud_mask

        return cloud_mask(src, out, method="cafr_rule", progress=progress)

    return Setup(folder=d, api=call, qgis=["cloudrm:cloudmask", "--", f"INPUT={src}", "METHOD=cafr_rule",
                                           f"OUTPUT={out}"], output=out, inputs=[src] if src.is_file() else [])


def info(d: Path, ckpt: Path) -> Setup:
    return Setup(folder=d, cli=["info", ckpt], inputs=[ckpt] if ckpt.is_file() else [])


# ---- the rows -------------------------------------------------------------------------------


def b_dtype(dtype: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        opt, sar = pair(d, "c")
        return predict(d, kit, rewrite(opt, d / f"{dtype}_s2.tif", lambda a: fn(a).astype(dtype)), sar)

    return build


def b_out(make: Callable[[Path], Path]) -> Callable[[Path, Kit], Setup]:
    """A valid pair and the output path ``make(d)`` returns."""

    def build(d: Path, kit: Kit) -> Setup:
        opt, sar = pair(d, "c")
        return predict(d, kit, opt, sar, out=make(d))

    return build


def out_parent_is_file(d: Path) -> Path:
    (d / "notes.txt").write_text("a file, not a folder\n")
    return d / "notes.txt" / "out.tif"


def out_is_folder(d: Path) -> Path:
    (d / "result.tif").mkdir()
    return d / "result.tif"


def b_read_only(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c")
    ro = d / "ro"
    ro.mkdir()
    s = predict(d, kit, opt, sar, out=ro / "out.tif")
    s.folder = d
    s.skip = mount_tmpfs(ro, kit, "ro,size=1m")
    return s


def b_no_space(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c")
    small = d / "small"
    small.mkdir()
    s = predict(d, kit, opt, sar, out=small / "out.tif")
    s.folder = d
    s.skip = mount_tmpfs(small, kit, "size=16k")  # a 32×32×3 uint16 output needs ~70 KB by the estimate
    return s


def b_out_is_input(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c")
    return predict(d, kit, opt, sar, out=opt)


def b_truncated(role: str) -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        opt, sar = pair(d, "c", size=64)
        if role == "optical":
            opt = truncate(rewrite(opt, d / "cut_s2.tif", **TILED), 0.6)
        else:
            sar = truncate(rewrite(sar, d / "cut_s1.tif", **TILED), 0.6)
        return predict(d, kit, opt, sar)

    return build


def b_corrupt_middle(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c", size=128)
    bad = corrupt_block(rewrite(opt, d / "mid_s2.tif", **TILED), 1, 0)  # 64 blocks; 1 is not sampled
    return predict(d, kit, bad, sar)


def b_stale_sidecar(d: Path, kit: Kit) -> Setup:
    """An existing output with cached statistics (gdalinfo -stats) of other data."""
    opt, sar = pair(d, "c")
    out = d / "out.tif"
    rewrite(opt, out, lambda a: np.full((3, *a.shape[1:]), 7, np.uint16))
    subprocess.run(["gdalinfo", "-stats", str(out)], check=True, capture_output=True)
    assert "STATISTICS_MEAN\">7" in Path(f"{out}.aux.xml").read_text()
    s = predict(d, kit, opt, sar, out=out)

    def check(s: Setup, r: Result) -> None:
        from osgeo import gdal

        with rasterio.open(out) as ds:
            a = ds.read(1).astype(np.float64)
        side = Path(f"{out}.aux.xml")
        assert not side.exists() or "STATISTICS_MEAN\">7<" not in side.read_text()
        ds = gdal.Open(str(out))
        mean = ds.GetRasterBand(1).GetStatistics(0, 1)[2]  # cached statistics first, else computed
        ds = None
        assert mean == pytest.approx(a.mean(), rel=1e-6) and abs(mean - 7) > 1

    s.check = check
    s.allowed = {"out.tif.aux.xml"}  # gdal's GetStatistics in the check may write it again
    return s


def big_pair(d: Path, n: int) -> tuple[Path, Path]:
    """An n×n synthetic scene (3-band uint16 optical, 2-band dB SAR): the model runs for seconds."""
    rng = np.random.default_rng(0)
    t = Affine(10, 0, 600000.0, 0, -10, 5000000.0)
    prof = {"driver": "GTiff", "width": n, "height": n, "crs": "EPSG:32631", "transform": t}
    opt, sar = d / "big_s2.tif", d / "big_s1.tif"
    with rasterio.open(opt, "w", count=3, dtype="uint16", **prof) as ds:
        ds.write(rng.integers(0, 4000, (3, n, n), dtype=np.uint16))
    with rasterio.open(sar, "w", count=2, dtype="float32", **prof) as ds:
        ds.write(rng.uniform(-25, 0, (2, n, n)).astype(np.float32))
    return opt, sar


def when_writing(act: Callable[[subprocess.Popen[str]], None]) -> Callable[[Setup, list[str], dict[str, str]], Result]:
    """A runner that calls ``act`` on the process once its output's .part file exists."""

    def run(s: Setup, argv: list[str], env: dict[str, str]) -> Result:
        assert s.output is not None
        folder, prefix = s.output.parent, f".{s.output.stem}."
        t0 = time.time()
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = None
        while p.poll() is None and time.time() - t0 < 240:
            parts = [f.name for f in folder.iterdir() if f.name.startswith(prefix) and ".part" in f.name]
            if parts:
                seen = parts[0]
                act(p)
                break
            time.sleep(0.05)
        out, err = p.communicate(timeout=300)
        return Result(p.returncode, out, err, time.time() - t0, notes={"part": seen, "pid": p.pid})

    return run


def part_was_seen(s: Setup, r: Result) -> None:
    """The act happened while the output was being written (else the row tested nothing)."""
    assert r.notes["part"] is not None, "the run ended before its .part file was seen: make it slower"
    assert re.fullmatch(rf"\.out\.{r.notes['pid']}\.\w+\.part\.tif", r.notes["part"]), r.notes


def b_signal(sig: signal.Signals) -> Callable[[Path, Kit], Setup]:
    """A signal half a second into writing the output (well inside the tile loop)."""

    def build(d: Path, kit: Kit) -> Setup:
        s = predict(d, kit, *big_pair(d, 1024), tile=32)

        def act(p: subprocess.Popen[str]) -> None:
            time.sleep(0.5)
            p.send_signal(sig)

        s.runner, s.check = when_writing(act), part_was_seen
        return s

    return build


def b_disk_fills(written: int, n: int) -> Callable[[Path, Kit], Setup]:
    """The destination check passes, then another program fills the disk once the output's
    temporary file holds more than ``written`` bytes (GDAL's block cache set to 1 MB, so blocks
    reach the disk while the model runs, as they do for a real scene); an n×n scene."""

    def build(d: Path, kit: Kit) -> Setup:
        disk = d / "disk"
        disk.mkdir()
        s = predict(d, kit, *big_pair(d, n), out=disk / "out.tif", tile=128)
        s.folder, s.env = d, {"GDAL_CACHEMAX": "1"}
        s.skip = mount_tmpfs(disk, kit, f"size={2 * n * n * 6 // 1024}k")  # twice the estimate of the output

        at_fill: list[int] = []

        def fill(p: subprocess.Popen[str]) -> None:
            t0 = time.time()
            while p.poll() is None and time.time() - t0 < 120:
                part = [f for f in disk.iterdir() if f.name.startswith(".out.")]
                if part and part[0].stat().st_size > written:
                    at_fill.append(part[0].stat().st_size)
                    break
                time.sleep(0.02)
            try:
                with open(disk / "filler.bin", "wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
            except OSError:  # no space left on device: full
                pass

        def check(s: Setup, r: Result) -> None:
            part_was_seen(s, r)
            assert at_fill and at_fill[0] > written, f"the disk was filled at {at_fill} bytes written"

        s.runner, s.check = when_writing(fill), check
        return s

    return build


def b_new_folders(d: Path, kit: Kit) -> Setup:
    """A run that fails half-way (a corrupt block) into an output in folders that did not exist."""
    s = b_corrupt_middle(d, kit)
    out = d / "new" / "sub" / "out.tif"
    return predict(d, kit, s.inputs[0], s.inputs[1], out=out)


def b_corrupt_sar_middle(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c", size=128)
    return predict(d, kit, opt, corrupt_block(rewrite(sar, d / "mid_s1.tif", **TILED), 1, 0))


def b_mask_truncated(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c", size=64)
    mask = d / "cut_mask.tif"
    rewrite(opt, mask, lambda a: (a[:1] > 3000).astype(np.uint8), **TILED)
    truncate(mask, 0.5)
    s = predict(d, kit, opt, sar, cli=("--mask", mask))
    s.inputs.append(mask)
    return s


def b_not_georeferenced(d: Path, kit: Kit) -> Setup:
    """Optical and SAR without CRS or transform, on the same pixel grid."""
    from osgeo import gdal, gdal_array

    def bare(src: Path, dst: Path) -> Path:  # through GDAL: rasterio would warn in this process
        with rasterio.open(src) as ds:
            a = ds.read()
        out = gdal.GetDriverByName("GTiff").Create(
            str(dst), a.shape[2], a.shape[1], a.shape[0], gdal_array.NumericTypeCodeToGDALTypeCode(a.dtype))
        for i, band in enumerate(a, start=1):
            out.GetRasterBand(i).WriteArray(band)
        out = None
        return dst

    opt, sar = pair(d, "c")
    return predict(d, kit, bare(opt, d / "bare_s2.tif"), bare(sar, d / "bare_s1.tif"))


def b_batch_nan_sar(d: Path, kit: Kit) -> Setup:
    """A scene list whose scene has an all-NaN SAR raster: the warning must reach the user."""
    opt, sar = pair(d, "c")
    nan = rewrite(sar, d / "nan_s1.tif", lambda a: np.full_like(a, np.nan))
    (d / "scenes.csv").write_text(f"optical,sar\n{opt.name},{nan.name}\n")
    return Setup(
        folder=d,
        cli=["predict-batch", d / "scenes.csv", "--out-dir", d, "--model", "mmcanet", "--checkpoint", kit.ckpt,
             "--tile-size", "32", "--no-keep-clear"],
        output=d / "c_s2_cloudfree.tif", inputs=[opt, nan, kit.ckpt, d / "scenes.csv"],
        allowed={"batch_log.csv"},
    )


def b_stale_temps(d: Path, kit: Kit) -> Setup:
    """A dead writer's temporary file (and its side file) is removed, a live writer's is kept."""
    opt, sar = pair(d, "c")
    dead, live = dead_pid(), os.getpid()  # this pytest process is alive and is not the writer
    for name in (f".out.{dead}.abc123.part.tif", f".out.{dead}.abc123.part.tif.aux.xml",
                 f".out.{live}.def456.part.tif", f".other.{dead}.ghi789.part.tif"):
        (d / name).write_bytes(b"partial")
    s = predict(d, kit, opt, sar)
    s.keep = {f".out.{live}.def456.part.tif", f".other.{dead}.ghi789.part.tif"}  # other output: not ours

    def check(s: Setup, r: Result) -> None:
        assert not (d / f".out.{dead}.abc123.part.tif").exists()
        assert not (d / f".out.{dead}.abc123.part.tif.aux.xml").exists()

    s.check = check
    return s


def b_ckpt(make: Callable[[Path, Kit], Path], command: str = "predict") -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        ck = make(d, kit)
        if command == "info":
            return info(d, ck)
        opt, sar = pair(d, "c")
        return predict(d, kit, opt, sar, ckpt=ck)

    return build


def ck_no_state_dict(d: Path, kit: Kit) -> Path:
    blob = ckpt_blob(kit)
    del blob["state_dict"]
    return save_blob(d / "nostate.pt", blob)


def ck_random(d: Path, kit: Kit) -> Path:
    data = bytearray(np.random.default_rng(7).bytes(4096))
    data[0] = 0x13  # neither "PK" nor a pickle opcode
    (d / "random.pt").write_bytes(bytes(data))
    return d / "random.pt"


def ck_empty(d: Path, kit: Kit) -> Path:
    (d / "empty.pt").write_bytes(b"")
    return d / "empty.pt"


def ck_text(d: Path, kit: Kit) -> Path:
    (d / "notes.pt").write_text("model: mmcanet\nweights: see the wiki\n")
    return d / "notes.pt"


def ck_code_pickle(d: Path, kit: Kit) -> Path:
    (d / "code.pt").write_bytes(pickle.dumps(RunsCode(d / "pwned"), protocol=2))
    return d / "code.pt"


def ck_code_zip(d: Path, kit: Kit) -> Path:
    blob = ckpt_blob(kit)
    blob["training"] = {"hook": RunsCode(d / "pwned")}
    return save_blob(d / "codezip.pt", blob)


def ck_truncated(d: Path, kit: Kit) -> Path:
    (d / "half.pt").write_bytes(kit.ckpt.read_bytes()[: kit.ckpt.stat().st_size // 2])
    return d / "half.pt"


def ck_other_model(d: Path, kit: Kit) -> Path:
    return save_blob(d / "other.pt", {**ckpt_blob(kit), "model": "mmcanet_l"})


def ck_misfit(d: Path, kit: Kit) -> Path:
    blob = ckpt_blob(kit)
    return save_blob(d / "misfit.pt", {**blob, "config": {**blob["config"], "width": 16}})


def ck_folder(d: Path, kit: Kit) -> Path:
    (d / "weights.pt").mkdir()
    return d / "weights.pt"


def no_code_ran(s: Setup, r: Result) -> None:
    assert not (s.folder / "pwned").exists(), "the checkpoint's code ran"


def b_values(fn: Callable[[np.ndarray], np.ndarray], name: str, role: str = "optical",
             **profile: Any) -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        opt, sar = pair(d, "c")
        if role == "optical":
            opt = rewrite(opt, d / name, fn, **profile)
        else:
            sar = rewrite(sar, d / name, fn, **profile)
        return predict(d, kit, opt, sar)

    return build


def with_inf(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    a[0, :8, :] = np.inf
    a[1, 8:12, :] = -np.inf
    return a


def b_png(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c")
    return predict(d, kit, opt, sar, out=d / "out.png")


def b_no_overlap(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c")
    with rasterio.open(sar) as ds:
        t = ds.transform
    far = rewrite(sar, d / "far_s1.tif", transform=Affine(t.a, t.b, t.c + 50_000, t.d, t.e, t.f))
    return predict(d, kit, opt, far)


def b_input(make: Callable[[Path], Path], role: str = "optical") -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        opt, sar = pair(d, "c")
        bad = make(d)
        return predict(d, kit, bad, sar) if role == "optical" else predict(d, kit, opt, bad)

    return build


def notes_tif(d: Path) -> Path:
    (d / "notes.tif").write_text("not a raster\n")
    return d / "notes.tif"


def folder_tif(d: Path) -> Path:
    (d / "scene.tif").mkdir()
    return d / "scene.tif"


def b_args(*cli: Any, tile: int | None = 32, size: int = 32) -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        opt, sar = pair(d, "c", size=size)
        return predict(d, kit, opt, sar, tile=tile, cli=cli)

    return build


def b_filled_mask_folder(d: Path, kit: Kit) -> Setup:
    opt, sar = pair(d, "c")
    (d / "filled.tif").mkdir()
    return predict(d, kit, opt, sar, cli=("--filled-mask", d / "filled.tif"))


def b_series(kind: str) -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        a, _ = pair(d, "a")
        b, _ = pair(d, "b")  # the same grid: the series needs no resampling
        first, second = d / "s2_20200105_a.tif", d / "s2_20200105_b.tif"
        a.rename(first)
        b.rename(second)
        if kind == "duplicate":
            return series(d, [first, second])
        if kind == "int8":
            rewrite(second, d / "s2_20200110_c.tif", lambda x: (x // 100).astype("int8"))
            return series(d, [first, d / "s2_20200110_c.tif"])
        if kind == "truncated":
            truncate(rewrite(second, d / "s2_20200110_c.tif", **TILED), 0.6)
            return series(d, [first, d / "s2_20200110_c.tif"])
        if kind == "missing":
            return series(d, [first, d / "s2_20200110_gone.tif"])
        if kind == "dates":
            return series(d, [first, second], cli=("--dates", "2020-01-05"))
        if kind == "bad-date":
            return series(d, [first, second], cli=("--dates", "2020-01-05", "2020-13-45"))
        raise AssertionError(kind)

    return build


def b_batch(d: Path, kit: Kit) -> Setup:
    """A scene list whose only scene has an int8 optical raster."""
    opt, sar = pair(d, "c")
    bad = rewrite(opt, d / "int8_s2.tif", lambda a: (a // 100).astype("int8"))
    (d / "scenes.csv").write_text(f"optical,sar\n{bad.name},{sar.name}\n")
    out = d / "int8_s2_cloudfree.tif"
    return Setup(
        folder=d,
        cli=["predict-batch", d / "scenes.csv", "--out-dir", d, "--model", "mmcanet", "--checkpoint", kit.ckpt,
             "--tile-size", "32", "--no-keep-clear"],
        output=out, inputs=[bad, sar, kit.ckpt, d / "scenes.csv"], allowed={"batch_log.csv"},
    )


def b_quicklook(kind: str) -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        opt, _ = pair(d, "c")
        before, out = opt, d / "look.png"
        if kind == "non-raster":
            before = notes_tif(d)
        elif kind == "not-png":
            out = d / "look.tif"
        elif kind == "missing":
            before = d / "gone.tif"
        return Setup(folder=d, cli=["quicklook", "--before", before, "--after", opt, "--out", out], output=out,
                     inputs=[p for p in (before, opt) if p.is_file()])

    return build


def b_cloudmask(kind: str) -> Callable[[Path, Kit], Setup]:
    def build(d: Path, kit: Kit) -> Setup:
        opt, _ = pair(d, "c", size=128 if kind == "middle" else 64)
        if kind == "truncated":
            return cloudmask(d, truncate(rewrite(opt, d / "cut_s2.tif", **TILED), 0.6))
        if kind == "middle":
            return cloudmask(d, corrupt_block(rewrite(opt, d / "mid_s2.tif", **TILED), 1, 0))
        if kind == "bands":
            return cloudmask(d, rewrite(opt, d / "rgb_s2.tif", lambda a: a[[3, 2, 1]]))
        if kind == "folder":
            (d / "mask.tif").mkdir()
            return cloudmask(d, opt, out=d / "mask.tif")
        if kind == "proc":
            return cloudmask(d, opt, out=Path("/proc/cloudrm_hostile_mask.tif"))
        if kind == "png":
            return cloudmask(d, opt, out=d / "mask.png")
        raise AssertionError(kind)

    return build


def ok_output(bands: int = 3, size: int = 32) -> Callable[[Setup, Result], None]:
    def check(s: Setup, r: Result) -> None:
        assert s.output is not None
        with rasterio.open(s.output) as ds:
            assert (ds.count, ds.width, ds.height) == (bands, size, size)
            assert np.isfinite(ds.read().astype(np.float64)).all()

    return check


def said(pattern: str) -> Callable[[Setup, Result], None]:
    def check(s: Setup, r: Result) -> None:
        assert re.search(pattern, r.stderr), r.stderr[-2000:]

    return check


def keep_clear(build: Callable[[Path, Kit], Setup]) -> Callable[[Path, Kit], Setup]:
    """``build`` with keep-clear on (the default of every front end): the cloud mask reads the optical first."""

    def wrapped(d: Path, kit: Kit) -> Setup:
        s = build(d, kit)
        s.cli = [a for a in s.cli or [] if a != "--no-keep-clear"]
        s.qgis = [("KEEP_CLEAR=true" if a == "KEEP_CLEAR=false" else a) for a in s.qgis or []]
        return s

    return wrapped


def then(build: Callable[[Path, Kit], Setup], *checks: Callable[[Setup, Result], None]) -> Callable[[Path, Kit], Setup]:
    """``build`` with further checks after the run."""

    def wrapped(d: Path, kit: Kit) -> Setup:
        s = build(d, kit)
        previous = s.check

        def check(s: Setup, r: Result) -> None:
            if previous is not None:
                previous(s, r)
            for c in checks:
                c(s, r)

        s.check = check
        return s

    return wrapped


NOT_TORCH_ADVICE = r"(?!.*weights_only)"
CKPT_BAD = r"is not a readable weights-only PyTorch checkpoint: "

CASES: list[Case] = [
    # 1. optical dtypes that cannot hold the DN range
    Case("int8-optical", "1", b_dtype("int8", lambda a: a // 100), "error",
         r"optical raster 'int8_s2(\.tif)?' \(.*/int8_s2\.tif\) has data type int8, which cannot hold values up to "
         r"10000 \(its maximum is 127\): expected reflectance × 10000 \(0–10000\), e.g. uint16", ("cli", "qgis"), rc=2),
    Case("uint8-optical", "1", b_dtype("uint8", lambda a: a // 100), "error",
         r"optical raster 'uint8_s2.tif' \(.*/uint8_s2\.tif\) has data type uint8, which cannot hold values up to "
         r"10000 \(its maximum is 255\)", rc=2),
    Case("float32-optical-ok", "1", then(b_dtype("float32", lambda a: a), ok_output()), "ok"),
    Case("int16-optical-ok", "1", then(b_dtype("int16", lambda a: a), ok_output()), "ok"),
    # 2. output locations
    Case("out-parent-is-file", "2", b_out(out_parent_is_file), "error",
         r"cannot write output .*/notes\.txt/out\.tif: .*/notes\.txt is a file, not a folder$", rc=2),
    Case("out-under-proc", "2", b_out(lambda d: Path("/proc/cloudrm_hostile_out.tif")), "error",
         r"cannot write output /proc/cloudrm_hostile_out\.tif: cannot create a file in its folder: the folder does "
         r"not accept new files", rc=2),
    Case("out-read-only-fs", "2", b_read_only, "error",
         r"cannot write output .*/ro/out\.tif: cannot create a file in its folder: read-only file system$", rc=2),
    Case("disk-full-before-first-block", "2", b_disk_fills(-1, 256), "error",
         r"cannot write output .*/disk/out\.tif: the file written is incomplete, nothing was written \(0 bytes\); "
         r"0 bytes free in .*/disk: is the disk full\?", rc=2),
    Case("disk-fills-mid-write", "2", b_disk_fills(65_536, 768), "error",
         r"cannot write output .*/disk/out\.tif: the file written is incomplete, (its image data runs|\d+ of its "
         r"\d+ blocks were not written|its TIFF header).*: is the disk full\?", rc=2),
    Case("out-no-free-space", "2", b_no_space, "error",
         r"not enough free space for output .*/small/out\.tif: about .* needed \(uncompressed estimate\), .* free",
         rc=2),
    Case("out-is-folder", "2", b_out(out_is_folder), "error",
         r"output .*/result\.tif is an existing folder: give a file name inside it", ("cli", "qgis"), rc=2),
    Case("out-is-input", "n", b_out_is_input, "error",
         r"output .*/c_s2\.tif is the input raster 'c_s2(\.tif)?' \(.*/c_s2\.tif\): choose another file", rc=2),
    Case("out-png", "7", b_png, "error",
         r"output .*/out\.png: outputs are GeoTIFF files \(\.tif/\.tiff\); name it e\.g\. out\.tif$", rc=2),
    Case("out-no-suffix", "7", b_out(lambda d: d / "result"), "error",
         r"output .*/result: outputs are GeoTIFF files", rc=2),
    Case("filled-mask-is-folder", "2", b_filled_mask_folder, "error",
         r"output .*/filled\.tif is an existing folder", rc=2),
    # 3. truncated or corrupt GeoTIFFs
    Case("truncated-optical", "3", b_truncated("optical"), "error",
         r"optical raster 'cut_s2(\.tif)?' \(.*/cut_s2\.tif\) is truncated: its image data runs to byte \d+ but the "
         r"file has \d+ bytes; an interrupted download or copy\? Get the file again$", ("cli", "qgis"), rc=2),
    Case("truncated-sar", "3", b_truncated("sar"), "error",
         r"SAR raster 'cut_s1.tif' \(.*/cut_s1\.tif\) is truncated", rc=2),
    Case("corrupt-middle-block", "3", b_corrupt_middle, "error",
         r"cannot read rows \d+–\d+, columns \d+–\d+ of optical raster 'mid_s2.tif' \(.*/mid_s2\.tif\): the file "
         r"is truncated or corrupt", rc=2),
    Case("corrupt-middle-block-keep-clear", "3", keep_clear(b_corrupt_middle), "error",
         r"cannot read rows \d+–\d+, columns \d+–\d+ of (optical|Sentinel-2 L1C) raster 'mid_s2.tif' "
         r"\(.*/mid_s2\.tif\): the file is truncated or corrupt", rc=2),
    Case("sar-corrupt-middle-block", "3", b_corrupt_sar_middle, "error",
         r"cannot read rows \d+–\d+, columns \d+–\d+ of SAR raster 'mid_s1.tif' \(.*/mid_s1\.tif\): the file "
         r"is truncated or corrupt", rc=2),
    Case("mask-truncated", "3", b_mask_truncated, "error",
         r"mask raster 'cut_mask\.tif' \(.*/cut_mask\.tif\) is truncated", rc=2),
    Case("cloudmask-truncated", "3", b_cloudmask("truncated"), "error",
         r"Sentinel-2 L1C raster 'cut_s2(\.tif)?' \(.*/cut_s2\.tif\) is truncated", ("api", "qgis")),
    Case("cloudmask-corrupt-middle-block", "3", b_cloudmask("middle"), "error",
         r"cannot read rows .* of Sentinel-2 L1C raster 'mid_s2.tif' \(.*/mid_s2\.tif\): the file is truncated or "
         r"corrupt", ("api",)),
    # 4. overwriting replaces the old side files
    Case("stale-aux-xml-replaced", "4", b_stale_sidecar, "ok"),
    # 5. SIGTERM and temporary files
    Case("sigterm-mid-run", "5", b_signal(signal.SIGTERM), "error",
         r"^cloudrm: terminated by SIGTERM; no output written$", rc=143),
    Case("sigint-mid-run", "5", b_signal(signal.SIGINT), "error", r"^cloudrm: interrupted; no output written$",
         rc=130),
    Case("failed-run-removes-new-folders", "5", b_new_folders, "error",
         r"cannot read rows .* of optical raster 'mid_s2.tif' \(.*/mid_s2\.tif\): the file is truncated or corrupt",
         rc=2),
    Case("stale-temp-of-dead-pid-removed", "5", then(b_stale_temps, ok_output()), "ok"),
    # 6. malformed checkpoints (predict and info)
    Case("ckpt-no-state-dict", "6", b_ckpt(ck_no_state_dict), "error",
         r".*/nostate\.pt is not a valid cloudrm checkpoint: 'state_dict' missing", ("cli", "qgis"), rc=2),
    Case("info-no-state-dict", "6", b_ckpt(ck_no_state_dict, "info"), "error",
         r".*/nostate\.pt is not a valid cloudrm checkpoint: 'state_dict' missing", rc=2),
    Case("ckpt-random-bytes", "6", b_ckpt(ck_random), "error",
         NOT_TORCH_ADVICE + r".*/random\.pt " + CKPT_BAD + "it is neither a zip archive nor a pickle", rc=2),
    Case("info-random-bytes", "6", b_ckpt(ck_random, "info"), "error",
         NOT_TORCH_ADVICE + r".*/random\.pt " + CKPT_BAD + "it is neither a zip archive nor a pickle", rc=2),
    Case("ckpt-empty", "6", b_ckpt(ck_empty), "error", r".*/empty\.pt " + CKPT_BAD + r"it is empty \(0 bytes\)",
         rc=2),
    Case("info-text-file", "6", b_ckpt(ck_text, "info"), "error",
         r".*/notes\.pt " + CKPT_BAD + "it is neither a zip archive nor a pickle", rc=2),
    Case("ckpt-code-pickle", "6", then(b_ckpt(ck_code_pickle), no_code_ran), "error",
         NOT_TORCH_ADVICE + r".*/code\.pt " + CKPT_BAD + r"it contains objects that weights-only loading refuses "
         r"\((posix|os)\.system\)", rc=2),
    Case("info-code-in-zip", "6", then(b_ckpt(ck_code_zip, "info"), no_code_ran), "error",
         NOT_TORCH_ADVICE + r".*/codezip\.pt " + CKPT_BAD + r"it contains objects that weights-only loading refuses",
         rc=2),
    Case("ckpt-truncated", "6", b_ckpt(ck_truncated), "error",
         NOT_TORCH_ADVICE + r".*/half\.pt " + CKPT_BAD + "the zip archive is truncated or corrupt", rc=2),
    Case("ckpt-other-model", "6", b_ckpt(ck_other_model), "error",
         r"checkpoint .*/other\.pt holds model 'mmcanet_l', not 'mmcanet'", rc=2),
    Case("ckpt-does-not-fit", "6", b_ckpt(ck_misfit), "error",
         r".*/misfit\.pt does not fit model 'mmcanet' .* with another shape", rc=2),
    Case("ckpt-folder", "6", b_ckpt(ck_folder), "error", r"checkpoint .*/weights\.pt is a folder, not a checkpoint",
         rc=2),
    Case("info-missing", "6", b_ckpt(lambda d, k: d / "gone.pt", "info"), "error",
         r"checkpoint file not found: .*/gone\.pt", rc=2),
    Case("quicklook-non-raster", "6", b_quicklook("non-raster"), "error",
         r"before raster 'notes\.tif' cannot be read as a raster \(.*/notes\.tif\)", rc=2),
    Case("quicklook-missing", "6", b_quicklook("missing"), "error", r"before raster 'gone\.tif': file not found", rc=2),
    Case("quicklook-not-png", "6", b_quicklook("not-png"), "error",
         r"output .*/look\.tif: outputs are \.png files \(\.png\); name it e\.g\. look\.png", rc=2),
    # 7. silent acceptance: errors and warnings
    Case("all-nan-sar", "7", then(b_values(lambda a: np.full_like(a, np.nan), "nan_s1.tif", role="sar"), ok_output()),
         "warning", r"SAR raster 'nan_s1(\.tif)?' \(.*/nan_s1\.tif\) has no valid value \(all NaN\): filled with "
         r"-?[\d.]+ dB, so the result relies on the optical data alone", ("cli", "qgis")),
    Case("all-nodata-optical", "7", b_values(lambda a: np.zeros_like(a), "nodata_s2.tif", nodata=0), "error",
         r"optical raster 'nodata_s2(\.tif)?' \(.*/nodata_s2\.tif\) has no valid pixel \(all nodata\): nothing to "
         r"remove clouds from", ("cli", "qgis"), rc=2),
    Case("all-nan-optical", "7", b_values(lambda a: np.full(a.shape, np.nan, np.float32), "nan_s2.tif"), "error",
         r"optical raster 'nan_s2.tif' \(.*/nan_s2\.tif\) has no valid pixel \(all NaN\)", rc=2),
    Case("saturated-65535", "7", then(b_values(lambda a: np.full_like(a, 65535), "sat_s2.tif"), ok_output()),
         "warning", r"optical raster 'sat_s2.tif': 100\.0 % of pixels are saturated \(65535, the uint16 maximum\)"),
    Case("above-10000", "7", b_values(lambda a: np.full_like(a, 20000), "high_s2.tif"), "warning",
         r"optical raster 'high_s2.tif': 100\.0 % of pixels exceed 10000 \(max 20000\); they are clipped to 10000"),
    Case("negative-float", "7", b_values(lambda a: a.astype(np.float32) - 5000, "neg_s2.tif"), "warning",
         r"optical raster 'neg_s2.tif': [\d.]+ % of pixels have negative values \(min -?\d+\); reflectance cannot "
         r"be negative"),
    Case("inf-float", "7", then(b_values(with_inf, "inf_s2.tif"), ok_output()), "warning",
         r"optical raster 'inf_s2.tif': 37\.5 % of pixels hold ±inf in some band; they are clipped into 0–10000"),
    Case("inf-float-keep-clear", "7", then(keep_clear(b_values(with_inf, "inf_s2.tif")), ok_output()), "warning",
         r"optical raster 'inf_s2.tif': 37\.5 % of pixels hold ±inf in some band"),
    Case("reflectance-0-1", "7", b_values(lambda a: a.astype(np.float32) / 10000, "refl_s2.tif"), "warning",
         r"optical raster 'refl_s2.tif' has values .*: this looks like reflectance 0–1, .* multiply by 10000"),
    Case("linear-sar", "7", b_values(lambda a: (10 ** (a / 10)).astype(np.float32), "lin_s1.tif", role="sar"),
         "warning", r"SAR raster 'lin_s1.tif' has no negative value \(min .*\): expected σ0 in dB"),
    Case("duplicate-dates", "7", then(b_series("duplicate"), ok_output(13)), "warning",
         r"optical rasters 's2_20200105_a(\.tif)?' \(.*/s2_20200105_a\.tif\) and 's2_20200105_b(\.tif)?' "
         r"\(.*/s2_20200105_b\.tif\) have the same acquisition date 2020-01-05 \(from file name\): "
         r"'s2_20200105_b(\.tif)?' \(the last given\) is the target", ("cli", "qgis")),
    # the obvious neighbours
    Case("missing-optical", "n", b_input(lambda d: d / "gone_s2.tif"), "error",
         r"optical raster 'gone_s2\.tif': file not found: .*/gone_s2\.tif", rc=2),
    Case("optical-is-folder", "n", b_input(folder_tif), "error",
         r"optical raster 'scene\.tif' \(.*/scene\.tif\) is a folder, not a raster file", rc=2),
    Case("optical-not-a-raster", "n", b_input(notes_tif), "error",
         r"optical raster 'notes\.tif' cannot be read as a raster \(.*/notes\.tif\): .*not recognized", rc=2),
    Case("sar-one-band", "n", b_values(lambda a: a[:1], "one_s1.tif", role="sar"), "error",
         r"SAR raster 'one_s1\.tif' \(32×32 px, 1 bands, EPSG:\d+\) has 1 bands; model mmcanet expects 2: VV, VH",
         rc=2),
    Case("optical-two-bands", "n", b_values(lambda a: a[:2], "two_s2.tif"), "error",
         r"optical raster 'two_s2\.tif' \(32×32 px, 2 bands, .*\) has 2 bands; model mmcanet \(ckpt\.pt\) expects 3 "
         r"bands: B4, B3, B2", rc=2),
    Case("sar-does-not-overlap", "n", b_no_overlap, "error",
         r"SAR raster 'far_s1\.tif' \(.*\) does not overlap optical raster 'c_s2\.tif'", rc=2),
    Case("unknown-model", "n", b_args("--model", "nope"), "error",
         r"cloudrm predict: error: argument --model: invalid choice: 'nope'", rc=2),
    Case("unknown-device", "n", b_args("--device", "tpu"), "error",
         r"device 'tpu' not understood: use auto, cpu or cuda:N", rc=2),
    Case("negative-tile-size", "n", b_args("--tile-size", "-8"), "error",
         r"tile size must be ≥ 0 \(0 = default\), got -8", rc=2),
    Case("tile-below-model-multiple", "n", b_args("--tile-size", "4"), "error",
         r"tiling: tile size 4 is smaller than the model's multiple 8", rc=2),
    Case("tile-larger-than-scene", "n", then(b_args("--tile-size", "256", "--overlap", "16"), ok_output()), "ok"),
    Case("tile-size-0-is-default", "n",
         then(b_args("--tile-size", "0", size=64), ok_output(size=64), said(r"\(model mmcanet defaults\)")), "ok"),
    Case("series-int8-member", "1", b_series("int8"), "error",
         r"optical raster 's2_20200110_c(\.tif)?' \(.*/s2_20200110_c\.tif\) has data type int8", ("cli", "qgis"),
         rc=2),
    Case("series-truncated-member", "3", b_series("truncated"), "error",
         r"optical raster 's2_20200110_c\.tif' \(.*/s2_20200110_c\.tif\) is truncated", rc=2),
    Case("series-missing-member", "n", b_series("missing"), "error",
         r"optical raster 's2_20200110_gone\.tif': file not found", rc=2),
    Case("series-date-count", "n", b_series("dates"), "error",
         r"1 date\(s\) given for 2 optical raster\(s\): give one date per optical raster", rc=2),
    Case("series-bad-date", "n", b_series("bad-date"), "error",
         r"date '2020-13-45' is not an ISO date \(YYYY-MM-DD\)", rc=2),
    Case("cloudmask-three-bands", "n", b_cloudmask("bands"), "error",
         r"Sentinel-2 L1C raster 'rgb_s2\.tif' \(.*\) has 3 bands; cloud masks need the 13 L1C bands", ("api",)),
    Case("cloudmask-out-is-folder", "2", b_cloudmask("folder"), "error",
         r"output .*/mask\.tif is an existing folder", ("api",)),
    Case("cloudmask-out-under-proc", "2", b_cloudmask("proc"), "error",
         r"cannot write output /proc/cloudrm_hostile_mask\.tif: cannot create a file in its folder: the folder does "
         r"not accept new files", ("api",)),
    Case("cloudmask-png-output", "7", b_cloudmask("png"), "error",
         r"output .*/mask\.png: outputs are GeoTIFF files", ("api",)),
    Case("not-georeferenced", "n", then(b_not_georeferenced, ok_output()), "ok"),
    Case("batch-nan-sar-warns", "7", then(b_batch_nan_sar, ok_output()), "warning",
         r"SAR raster 'nan_s1\.tif' \(.*/nan_s1\.tif\) has no valid value \(all NaN\)"),
    Case("batch-int8-scene", "1", b_batch, "error",
         r"int8_s2\.tif.* has data type int8, which cannot hold values up to 10000", rc=3),
]

README_ROWS: dict[str, str] = {
    "int8-optical": "which cannot hold values up to 10000", "uint8-optical": "which cannot hold values up to 10000",
    "series-int8-member": "which cannot hold values up to 10000", "batch-int8-scene": "batch_log.csv",
    "out-parent-is-file": "is a file, not a folder", "out-under-proc": "the folder does not accept new files",
    "out-read-only-fs": "read-only file system", "out-no-free-space": "not enough free space for output",
    "disk-full-before-first-block": "the file written is incomplete",
    "disk-fills-mid-write": "the file written is incomplete",
    "out-is-folder": "is an existing folder", "filled-mask-is-folder": "is an existing folder",
    "cloudmask-out-is-folder": "is an existing folder", "out-is-input": "is the input raster",
    "cloudmask-out-under-proc": "the folder does not accept new files", "cloudmask-png-output": "outputs are GeoTIFF",
    "out-png": "outputs are GeoTIFF files", "out-no-suffix": "outputs are GeoTIFF files",
    "quicklook-not-png": "outputs are .png files",
    "truncated-optical": "is truncated: its image data runs to byte", "truncated-sar": "is truncated",
    "mask-truncated": "is truncated", "cloudmask-truncated": "is truncated", "series-truncated-member": "is truncated",
    "corrupt-middle-block": "cannot read rows a–b", "corrupt-middle-block-keep-clear": "cannot read rows a–b",
    "sar-corrupt-middle-block": "cannot read rows a–b", "cloudmask-corrupt-middle-block": "cannot read rows a–b",
    "failed-run-removes-new-folders": "any folder it created for the output",
    "sigterm-mid-run": "terminated by SIGTERM; no output written", "sigint-mid-run": "interrupted; no output written",
    "ckpt-no-state-dict": "'state_dict' missing", "info-no-state-dict": "'state_dict' missing",
    "ckpt-random-bytes": "it is neither a zip archive nor a pickle", "info-random-bytes": "neither a zip archive",
    "info-text-file": "neither a zip archive", "ckpt-empty": "it is empty (0 bytes)",
    "ckpt-code-pickle": "weights-only loading refuses", "info-code-in-zip": "weights-only loading refuses",
    "ckpt-truncated": "the zip archive is truncated or corrupt", "ckpt-other-model": "holds model 'a', not 'b'",
    "ckpt-does-not-fit": "does not fit model", "ckpt-folder": "is a folder, not a checkpoint file",
    "info-missing": "checkpoint file not found", "quicklook-non-raster": "cannot be read as a raster",
    "quicklook-missing": "file not found", "missing-optical": "file not found",
    "series-missing-member": "file not found",
    "optical-is-folder": "is a folder, not a raster file", "optical-not-a-raster": "cannot be read as a raster",
    "all-nan-sar": "has no valid value (all NaN)", "batch-nan-sar-warns": "has no valid value (all NaN)",
    "all-nodata-optical": "has no valid pixel (all nodata)", "all-nan-optical": "(`all NaN`)",
    "saturated-65535": "are saturated (65535, the uint16 maximum)", "above-10000": "exceed 10000",
    "negative-float": "have negative values", "inf-float": "hold ±inf in some band",
    "inf-float-keep-clear": "hold ±inf in some band", "reflectance-0-1": "this looks like reflectance 0–1",
    "linear-sar": "has no negative value", "duplicate-dates": "have the same acquisition date",
    "sar-one-band": "has 1 bands; model m expects 2", "optical-two-bands": "has 2 bands; model m",
    "cloudmask-three-bands": "cloud masks need the 13 L1C bands", "sar-does-not-overlap": "does not overlap",
    "unknown-model": "invalid choice", "unknown-device": "not understood: use auto, cpu or cuda:N",
    "negative-tile-size": "tile size must be ≥ 0", "tile-below-model-multiple": "smaller than the model's multiple",
    "series-date-count": "date(s) given for", "series-bad-date": "is not an ISO date",
}
"""Per error/warning row: the words of its row in the README's "When something goes wrong" table."""

SLOW_BUILDS = {"b_signal", "b_disk_fills"}  # (qualified names of the builders)
"""Builders of the rows that run longest (a big scene): started first."""

PARAMS = [
    pytest.param(
        case, front, id=f"{case.id}-{front}",
        marks=[*([pytest.mark.slow] if case.slow else []),
               *([pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [])],
    )
    for case in CASES
    for front in case.fronts
]


# ------------------------------------------------------------------------------ running


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CLOUDRM_DEBUG", None)
    return env


def run_setup(case: Case, front: str, s: Setup, profile: Path | None) -> Result:
    if front == "api":
        assert s.api is not None
        progress = RecordingProgress()
        t0 = time.time()
        try:
            s.api(progress)
        except Exception as exc:  # checked in the test: our error types only
            return Result(1, "", "", time.time() - t0, exc=exc, progress=progress)
        return Result(0, "", "", time.time() - t0, progress=progress)
    if front == "cli":
        assert s.cli is not None
        argv, env = [str(CLOUDRM), *map(str, s.cli)], {**cli_env(), **s.env}
    else:
        assert s.qgis is not None and profile is not None
        argv, env = [QGIS_PROCESS, "run", *map(str, s.qgis)], {**qgis_env(profile), "OMP_NUM_THREADS": "1", **s.env}
    if s.runner is not None:
        return s.runner(s, argv, env)
    t0 = time.time()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    return Result(r.returncode, r.stdout, r.stderr, time.time() - t0)


@dataclass
class Outcome:
    setup: Setup
    before: set[str]
    hashes: dict[Path, str]
    result: Result | None = None
    error: BaseException | None = None


def execute(case: Case, front: str, folder: Path, kit: Kit, profile: Path | None) -> Outcome:
    s = case.build(folder, kit)
    out = Outcome(s, {p.name for p in s.folder.iterdir()}, {p: digest(p) for p in s.inputs})
    if s.skip:
        return out
    try:
        out.result = run_setup(case, front, s, profile)
    except BaseException as exc:  # reported by the row's test
        out.error = exc
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    d = tmp_path_factory.mktemp("hostile-kit")
    k = Kit(make_checkpoint("mmcanet", d / "ckpt.pt", width=8, enc_blocks=[1, 1, 1, 1], dec_blocks=[1, 1]))
    yield k
    for fn in reversed(k.cleanups):
        fn()


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build and run every selected row (a few subprocesses at a time); keyed by test id."""
    jobs: list[tuple[Case, str]] = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and "case" in params:
            jobs.append((params["case"], params["front"]))
    profile = request.getfixturevalue("qgis_profile") if any(f == "qgis" for _, f in jobs) else None
    # slowest first: the rows that act on a running process, then qgis_process; api rows run
    # in this (main) thread while the pool runs the subprocesses
    jobs.sort(key=lambda j: (j[0].build.__qualname__.split(".")[0] not in SLOW_BUILDS, j[1] != "qgis"))
    results: dict[str, Any] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {
            f"{c.id}-{f}": pool.submit(execute, c, f, tmp_path_factory.mktemp(f"{c.id}-{f}"), kit, profile)
            for c, f in jobs if f != "api"
        }
        for c, f in jobs:
            if f == "api":
                results[f"{c.id}-{f}"] = execute(c, f, tmp_path_factory.mktemp(f"{c.id}-{f}"), kit, profile)
        for key, fut in futures.items():
            results[key] = fut.result()
    return results


# ------------------------------------------------------------------------------ checks


def lines(text: str) -> list[str]:
    return [ln for ln in re.split(r"[\r\n]+", text) if ln.strip()]


def check_outcome(case: Case, front: str, o: Outcome) -> None:
    s, r = o.setup, o.result
    assert r is not None
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text[-4000:]
    if front == "cli":  # only our own lines: no Python warning, no raw GDAL message
        noise = re.findall(r"^.*:\d+: \w*Warning: .*$|^(?:ERROR|Warning) \d+: .*$", r.stderr, re.M)
        assert not noise, noise
    where = f"rc={r.rc}\nstdout: {r.stdout[-1500:]}\nstderr: {r.stderr[-3000:]}"
    if front == "api":
        if case.kind == "error":
            assert r.exc is not None, "no error raised"
            from cloudrm_engine.errors import CloudrmError

            assert isinstance(r.exc, CloudrmError), repr(r.exc)
            message = str(r.exc)
            assert "\n" not in message and re.search(case.message, message), message
        else:
            assert r.exc is None, repr(r.exc)
            assert r.progress is not None
            if case.kind == "warning":
                assert any(re.search(case.message, w) for w in r.progress.warnings), r.progress.warnings
    elif case.kind == "error":
        assert r.rc != 0, where
        if front == "cli":
            if case.rc is not None:
                assert r.rc == case.rc, where
            said = [ln for ln in lines(r.stderr) if re.match(r"cloudrm[\w -]*: (error: |terminated|interrupted)", ln)]
            assert any(re.search(case.message, ln) for ln in said), where
            if s.cli and s.cli[0] != "predict-batch":  # one scene: the message is the last line, whole
                assert said and said[-1] == lines(r.stderr)[-1] and re.search(case.message, said[-1]), where
        else:
            errors = [ln for ln in lines(text) if ln.startswith("ERROR:")]
            assert errors and all(re.search(case.message, ln) for ln in errors), where
    else:
        assert r.rc == 0, where
        warned = [ln for ln in lines(r.stderr + (r.stdout if front == "qgis" else "")) if
                  re.match(r"(cloudrm[\w -]*: )?warning: |WARNING:", ln)]
        if case.kind == "warning":
            assert any(re.search(case.message, ln) for ln in warned), where
        else:
            assert not warned, where
    # files: the output, the folder, temporary files, the inputs
    after = {p.name for p in s.folder.iterdir()}
    new = after - o.before
    if front == "qgis":  # QGIS itself (GDAL's PAM) saves the statistics of the layers it loads beside them
        new -= {f"{p.name}.aux.xml" for p in o.hashes}
    if case.kind == "error":
        if s.output is None or s.output in o.hashes:
            pass  # no output, or an input given as output: its bytes are checked below
        elif s.output.parent == s.folder and s.output.name in o.before:  # an existing folder given as output
            assert s.output.is_dir() and not any(s.output.iterdir()), s.output
        else:
            assert not s.output.exists(), s.output
        assert new <= s.allowed, f"left behind: {sorted(new)}"
    else:
        assert s.output is not None and s.output.is_file()
        assert new <= {s.output.name, *s.allowed}, f"left behind: {sorted(new)}"
    folders = {s.folder} | ({s.output.parent} if s.output is not None and s.output.parent.is_dir() else set())
    temps = {n for f in folders for n in os.listdir(f) if PART.match(n)}
    assert temps == s.keep, f"temporary files: {sorted(temps)} (expected {sorted(s.keep)})"
    for p, h in o.hashes.items():
        assert p.is_file() and digest(p) == h, f"input {p} changed"
    if s.check is not None:
        s.check(s, r)


@pytest.mark.parametrize(("case", "front"), PARAMS)
def test_hostile_input(case: Case, front: str, outcomes: dict[str, Any]) -> None:
    o = outcomes[f"{case.id}-{front}"]
    if o.setup.skip:
        pytest.skip(o.setup.skip)
    if o.error is not None:
        raise o.error
    check_outcome(case, front, o)


def test_the_readme_explains_every_message_of_the_table() -> None:
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = " ".join(readme.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0].split())
    for case in CASES:
        if case.kind != "ok":
            assert case.id in README_ROWS, f"{case.id}: no README row named"
            assert README_ROWS[case.id] in section, f"{case.id}: {README_ROWS[case.id]!r} not in the README table"


def test_the_table_covers_every_item_of_the_issue() -> None:
    """Items 1–7 each have rows, ids are unique, and the representative qgis_process subset is there."""
    assert {c.item for c in CASES} >= {"1", "2", "3", "4", "5", "6", "7", "n"}
    assert len({c.id for c in CASES}) == len(CASES)
    qgis = {c.id for c in CASES if "qgis" in c.fronts}
    assert {"int8-optical", "out-is-folder", "truncated-optical", "ckpt-no-state-dict", "all-nodata-optical",
            "cloudmask-truncated"} <= qgis
    assert sys.executable  # the CLI runs from the same environment (tests/conftest.VENV_BIN)
