"""Pretraining of CA-MTCR's SAR encoder: a VQ-VAE trained with Noise2Noise.

Described in docs/models/ca_mtcr.md, "SAR encoder pretraining".

Data: pairs of co-located S1 GeoTIFFs (VV, VH in dB, same grid) of the same place at two
dates; random crops, y1 → y2 with the pair order swapped at random. Only the encoder is
written, in a small weights-only file that :func:`load_sar_encoder` loads into CA-MTCR.

The paper's settings are 50 epochs, lr 2e-4, α = 1, β = 0.1, batch 16 of 256 px tiles; the
defaults here keep lr, α, β and the batch, and count optimiser steps instead of epochs.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import yaml
from rasterio.windows import Window

from .. import __version__
from ..errors import CheckpointError, InputError
from ..inference.device import describe_device, resolve_device, torch_threads
from ..io.checkpoint import read_weights_file
from ..models.sar_vqvae import SARVQVAE, vqvae_loss
from ..progress import NullProgress, Progress

FORMAT = "cloudrm-sar-encoder"
FORMAT_VERSION = 1
SAR_CLIP = [[-25.0, 0.0], [-25.0, 0.0]]  # CA-MTCR's (UnCRtainTS) scaling: both bands [-25, 0] dB


@dataclass
class SARPretrainConfig:
    """One pretraining run; every field can come from YAML (``pretrain_sar``)."""

    pairs: list[list[str]] = field(default_factory=list)
    """[[path_a, path_b], ...]: co-located S1 GeoTIFFs (band 1 VV, band 2 VH, dB) on one grid."""
    crop: int = 64
    """Square random crop in pixels (paper: 256 px tiles)."""
    batch_size: int = 16
    steps: int = 200
    lr: float = 2e-4
    alpha: float = 1.0
    """Weight of the codebook term ‖sg[z_e] − e‖² (Eq. 9)."""
    beta: float = 0.1
    """Weight of the commitment term ‖z_e − sg[e]‖² (Eq. 9)."""
    codebook_size: int = 512
    codebook_init: str = "uniform"
    """``uniform``: U(−1/K, 1/K) (our default); ``data``: K encoder vectors of the first
    batch (avoids early codebook collapse, where all pixels use one code)."""
    width: int = 128
    """Feature width; must equal CA-MTCR's (128) for the encoder to load into it."""
    restart_after: int = 0
    """> 0: a code that no pixel picked for this many steps is moved onto a random encoder
    vector of the current batch (dead-code restart); 0 = off (the paper mentions none)."""
    swap: bool = True
    """Swap y1 and y2 at random per sample (our choice; the paper does not say)."""
    speckle_looks: float = 0.0
    """> 0: multiply each side of each crop by independent gamma speckle with this many looks
    (in linear power). Turns one image paired with itself into a Noise2Noise pair; for smoke
    runs and demos only (real pairs are two acquisitions)."""
    sar_clip: list[list[float]] = field(default_factory=lambda: [list(c) for c in SAR_CLIP])
    seed: int = 0
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""
    device: str = "auto"
    log_every: int = 10
    out: str = "sar_encoder.pt"
    trained_on: str = ""
    """One honest sentence stored in the file (what data, how long)."""

    def __post_init__(self) -> None:
        for name in ("crop", "batch_size", "steps", "log_every", "codebook_size", "width"):
            if int(getattr(self, name)) <= 0:
                raise InputError(f"SAR pretraining config: {name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"SAR pretraining config: lr must be > 0, got {self.lr}")
        if self.codebook_init not in ("uniform", "data"):
            raise InputError(
                f"SAR pretraining config: codebook_init must be uniform or data, got {self.codebook_init!r}"
            )
        if not self.pairs:
            raise InputError("SAR pretraining config: pairs is empty (expected [[path_a, path_b], ...])")
        for p in self.pairs:
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise InputError(f"SAR pretraining config: each pair must be [path_a, path_b], got {p!r}")
        if len(self.sar_clip) != 2 or any(len(c) != 2 or c[1] <= c[0] for c in self.sar_clip):
            raise InputError(f"SAR pretraining config: sar_clip must be [[lo, hi], [lo, hi]], got {self.sar_clip}")

    @classmethod
    def from_source(cls, config: dict[str, Any] | str | os.PathLike[str], **overrides: Any) -> SARPretrainConfig:
        """From a dict or a YAML file; relative pair paths are tried against the current
        directory, then the YAML file's folder. Non-None ``overrides`` replace fields."""
        base = None
        if isinstance(config, dict):
            raw = dict(config)
        else:
            path = Path(config)
            if not path.is_file():
                raise InputError(f"SAR pretraining config not found: {path}")
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            base = path.resolve().parent
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"SAR pretraining config: unknown option(s) {', '.join(sorted(unknown))}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        if base is not None and "pairs" in raw:
            raw["pairs"] = [[_resolve(p, base) for p in pair] for pair in raw["pairs"]]
        return cls(**raw)


def _resolve(p: str, base: Path) -> str:
    q = Path(p)
    if q.is_absolute() or q.exists() or not (base / q).exists():
        return str(q)
    return str(base / q)


class PairSampler:
    """Random co-located crops from pairs of SAR rasters, scaled to [0, 1] (NaN → 0 after scaling)."""

    def __init__(self, cfg: SARPretrainConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.pairs = []
        for a, b in cfg.pairs:
            ds = []
            for p in (a, b):
                if not Path(p).is_file():
                    raise InputError(f"SAR pretraining: raster not found: {p}")
                d = rasterio.open(p)
                if d.count < 2:
                    raise InputError(f"SAR pretraining: {p} has {d.count} band(s); expected VV, VH (dB)")
                ds.append(d)
            same_size = (ds[0].width, ds[0].height) == (ds[1].width, ds[1].height)
            if not same_size or not ds[0].transform.almost_equals(ds[1].transform):
                raise InputError(
                    f"SAR pretraining: {a} and {b} are not on the same grid "
                    f"({ds[0].width}×{ds[0].height} vs {ds[1].width}×{ds[1].height}); co-register them first"
                )
            if min(ds[0].width, ds[0].height) < cfg.crop:
                raise InputError(
                    f"SAR pretraining: {a} ({ds[0].width}×{ds[0].height}) is smaller than crop {cfg.crop}"
                )
            self.pairs.append(ds)

    def close(self) -> None:
        for pair in self.pairs:
            for d in pair:
                d.close()

    def _scale(self, db: np.ndarray, nodata: float | None) -> np.ndarray:
        x = db.astype(np.float32)
        if nodata is not None and not np.isnan(nodata):
            x[x == nodata] = np.nan
        if self.cfg.speckle_looks > 0:
            looks = self.cfg.speckle_looks
            x = x + 10.0 * np.log10(self.rng.gamma(looks, 1.0 / looks, size=x.shape)).astype(np.float32)
        out = np.empty_like(x)
        for i, (lo, hi) in enumerate(self.cfg.sar_clip):
            out[i] = (np.clip(x[i], lo, hi) - lo) / (hi - lo)
        return np.nan_to_num(out, nan=0.0)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(y1, y2), each (batch, 2, crop, crop) float32 in [0, 1]."""
        c = self.cfg.crop
        y1, y2 = [], []
        for _ in range(self.cfg.batch_size):
            da, db = self.pairs[int(self.rng.integers(len(self.pairs)))]
            y = int(self.rng.integers(da.height - c + 1))
            x = int(self.rng.integers(da.width - c + 1))
            win = Window(x, y, c, c)
            a = self._scale(da.read([1, 2], window=win), da.nodata)
            b = self._scale(db.read([1, 2], window=win), db.nodata)
            if self.cfg.swap and self.rng.random() < 0.5:
                a, b = b, a
            y1.append(a)
            y2.append(b)
        return torch.from_numpy(np.stack(y1)), torch.from_numpy(np.stack(y2))


def _save(path: Path, blob: dict[str, Any]) -> Path:
    """torch.save to a temp file beside ``path``, then rename (no half-written file on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def pretrain_sar(
    config: dict[str, Any] | str | os.PathLike[str], progress: Progress | None = None, **overrides: Any
) -> Path:
    """Train the SAR VQ-VAE (Noise2Noise, Eq. 9) and write its encoder; returns the file path.

    Args:
        config: a dict or YAML path with :class:`SARPretrainConfig` fields.
        progress: receives ``update(step, steps)``, log lines, and may cancel (nothing is written).
        overrides: non-None values replace config fields (e.g. ``steps``, ``out``, ``device``).
    """
    cfg = SARPretrainConfig.from_source(config, **overrides)
    with torch_threads(cfg.threads):
        return _pretrain(cfg, progress or NullProgress())


def _pretrain(cfg: SARPretrainConfig, progress: Progress) -> Path:
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    sampler = PairSampler(cfg, rng)
    model = SARVQVAE(2, cfg.width, cfg.codebook_size).to(device).train()
    if cfg.codebook_init == "data":
        y1, _ = sampler.batch()
        model.init_codebook_from(model.encoder(y1.to(device)), torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    progress.info(
        f"SAR VQ-VAE pretraining on {describe_device(device)}: {len(cfg.pairs)} pair(s), {cfg.steps} steps"
    )
    history: list[dict[str, float]] = []
    idle = torch.zeros(cfg.codebook_size, dtype=torch.int64)  # steps since each code was last used
    gen = torch.Generator().manual_seed(cfg.seed)
    restarted = 0
    t0 = time.time()
    try:
        for step in range(1, cfg.steps + 1):
            if progress.is_canceled():
                raise InputError("SAR pretraining canceled; nothing written")
            y1, y2 = sampler.batch()
            out = model(y1.to(device))
            loss, terms = vqvae_loss(out, y2.to(device), cfg.alpha, cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.restart_after > 0:
                used = torch.bincount(out.indices.reshape(-1).cpu(), minlength=cfg.codebook_size) > 0
                idle = torch.where(used, torch.zeros_like(idle), idle + 1)
                dead = idle >= cfg.restart_after
                restarted += model.restart_codes(dead.to(device), out.z_e.detach(), gen)
                idle[dead] = 0
            terms["total"] = float(loss.detach())
            terms["codes_used"] = int(out.indices.unique().numel())
            history.append(terms)
            progress.update(step, cfg.steps)
            if step % cfg.log_every == 0 or step == cfg.steps:
                progress.info(
                    f"step {step}/{cfg.steps} loss {terms['total']:.5f} "
                    f"(rec {terms['reconstruction']:.5f}, codes used {terms['codes_used']})"
                )
    finally:
        sampler.close()

    def mean(key: str, part: list[dict[str, float]]) -> float:
        return round(sum(h[key] for h in part) / len(part), 6)

    head, tail = history[:10], history[-10:]
    record = {
        "steps": cfg.steps,
        "seconds": round(time.time() - t0, 1),
        "device": describe_device(device),
        "config": asdict(cfg),
        "loss_first_10": mean("total", head),
        "loss_last_10": mean("total", tail),
        "reconstruction_last_10": mean("reconstruction", tail),
        "codes_used_last_10": mean("codes_used", tail),
        "codes_restarted": restarted,
    }
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "ca_mtcr",
        "part": "sar_encoder",
        "config": {"sar_channels": 2, "width": cfg.width},
        "normalisation": {"sar": {"clip": [list(map(float, c)) for c in cfg.sar_clip]}},
        "trained_on": " ".join(cfg.trained_on.split()) or "unspecified",
        "training": record,
        "created": _dt.date.today().isoformat(),
        "software": f"cloudrm {__version__}, torch {torch.__version__}",
        "state_dict": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
    }
    path = _save(Path(cfg.out), blob)
    progress.info(f"wrote SAR encoder {path}")
    return path


def load_sar_encoder(model: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Initialise ``model.sar_encoder`` (CA-MTCR) from a :func:`pretrain_sar` file; strict keys.

    Raises :class:`CheckpointError` naming the file and the missing / unexpected / mis-shaped
    keys. Returns ``model``.
    """
    path = Path(path)
    target = getattr(model, "sar_encoder", None)
    if target is None:
        raise CheckpointError(
            f"{type(model).__name__} has no SAR encoder (built with use_sar=False?); cannot load {path}"
        )
    if not path.is_file():
        raise CheckpointError(f"SAR encoder file not found: {path}")
    blob = read_weights_file(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format", "no 'format' key") if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(
            f"{path} is not a CA-MTCR SAR encoder file (format {found!r}, expected {FORMAT!r}; "
            "make one with `cloudrm pretrain-sar`)"
        )
    if int(blob.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {blob['format_version']} is newer than this cloudrm")
    given = blob["state_dict"]
    own = target.state_dict()
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in given and given[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes[:3])}")
        raise CheckpointError(f"{path} does not fit CA-MTCR's SAR encoder: {', '.join(parts)}")
    target.load_state_dict({k: v.to(own[k].dtype) for k, v in given.items()}, strict=True)
    return model
