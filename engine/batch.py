"""Many scenes in one command (``cloudrm predict-batch``), restartable, sharded over processes.

A CSV lists the scenes (columns ``optical``, ``sar`` and optionally ``out``; relative paths are
relative to the CSV). Each scene is one :func:`engine.api.run` of the same request template;
outputs that already exist complete (a readable GeoTIFF written by cloudrm: outputs are
renamed into place only when finished) are skipped, so a killed batch is restarted by running
the same command again. One failing scene is logged and the others go on.

Under ``torchrun --nproc_per_node=N`` (environment ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)
process *r* takes scenes *r*, *r + N*, … and, with ``--device auto`` and CUDA, the GPU
``cuda:LOCAL_RANK``. Every process appends to the same ``batch_log.csv`` under a file lock.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Canceled, CloudrmError, InputError

LOG_FIELDS = ("scene", "optical", "sar", "out", "seconds", "status", "message", "rank")


@dataclass
class BatchSummary:
    """What one process of :func:`run_batch` did."""

    scenes: int
    done: int
    skipped: int
    failed: int
    log: Path


def read_scene_list(path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows ``{scene, optical, sar, out}`` with absolute paths; a clear error for a bad CSV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scene list {path}: file not found")
    base = path.resolve().parent
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "optical" not in fields or "sar" not in fields:
            raise InputError(f"scene list {path}: needs the columns optical and sar (found: {', '.join(fields)})")
        rows = []
        for i, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            if not row.get("optical") or not row.get("sar"):
                raise InputError(f"scene list {path}, line {i}: optical and sar must both be given")
            optical = (base / row["optical"]).resolve()
            out = row.get("out") or f"{optical.stem}_cloudfree.tif"
            out_path = Path(out) if Path(out).is_absolute() else Path(out_dir) / out
            rows.append({"scene": optical.stem, "optical": str(optical), "sar": str((base / row["sar"]).resolve()),
                         "out": str(out_path.resolve())})
    return rows


def complete(out: str | os.PathLike[str]) -> bool:
    """True when ``out`` is a readable GeoTIFF that cloudrm finished (it carries CLOUDRM_VERSION)."""
    if not Path(out).is_file():
        return False
    try:
        import rasterio

        with rasterio.open(out) as ds:
            return "CLOUDRM_VERSION" in ds.tags()
    except Exception:
        return False


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def _log(path: Path, row: dict[str, Any]) -> None:
    """Append one row; several processes share the file under an exclusive lock on the file itself."""
    with path.open("a", newline="", encoding="utf-8") as f:
        with contextlib.suppress(ImportError):  # Windows: no flock; one process per machine there
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        new = f.tell() == 0
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in LOG_FIELDS})


def run_batch(scene_list: str | os.PathLike[str], out_dir: str | os.PathLike[str], template: Any,
              progress_factory: Any = None) -> BatchSummary:
    """Run ``template`` (a :class:`~engine.api.RunRequest` without inputs) on every scene of this process."""
    from .api import run
    from .progress import NullProgress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_scene_list(scene_list, out_dir)
    rank, world, local = distributed()
    device = template.device
    if world > 1 and (device or "auto") == "auto":
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{local % torch.cuda.device_count()}"
    mine = rows[rank::world]
    log = out_dir / "batch_log.csv"
    done = skipped = failed = 0
    for row in mine:
        t0 = time.time()
        entry = {**row, "rank": rank}
        if complete(row["out"]):
            skipped += 1
            _log(log, {**entry, "seconds": 0, "status": "skipped", "message": "output exists and is complete"})
            continue
        req = dataclasses.replace(template, optical=[row["optical"]], sar=[row["sar"]], output=row["out"],
                                  device=device, filled_mask=None)
        try:
            prog = progress_factory(row["scene"]) if progress_factory else NullProgress()
            res = run(req, prog)
            done += 1
            _log(log, {**entry, "seconds": f"{time.time() - t0:.1f}", "status": "done",
                       "message": f"{res.tiles} tiles, {res.device}"})
        except (KeyboardInterrupt, Canceled):
            _log(log, {**entry, "seconds": f"{time.time() - t0:.1f}", "status": "interrupted", "message": ""})
            raise
        except Exception as exc:  # one broken scene must not stop the batch
            failed += 1
            text = " ".join(str(exc).split())
            message = text if isinstance(exc, CloudrmError) else f"{type(exc).__name__}: {text}"
            print(f"cloudrm: error: scene {row['scene']}: {message}", file=sys.stderr)
            _log(log, {**entry, "seconds": f"{time.time() - t0:.1f}", "status": "failed", "message": message})
    return BatchSummary(scenes=len(mine), done=done, skipped=skipped, failed=failed, log=log)
