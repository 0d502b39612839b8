"""Training loop (L1 loss, Adam) that writes a cloudrm checkpoint with honest metadata."""

from __future__ import annotations

import datetime as _dt
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from .. import __version__
from ..data.normalize import apply_card, fill_invalid
from ..errors import InputError
from ..inference.device import describe_device, resolve_device
from ..io.checkpoint import Checkpoint, save_checkpoint
from ..io.raster import file_mean, invalid_mask
from ..models import create_model, model_card
from ..progress import NullProgress, Progress
from .config import TrainConfig
from .synthetic import SceneSampler, score


def read_scene(optical: str | Path, sar: str | Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Whole (small) scene, NaN/nodata filled with the file mean and scaled per the model card."""
    arrays = []
    for path, role in ((optical, "optical"), (sar, "SAR")):
        if not Path(path).is_file():
            raise InputError(f"training {role} raster not found: {path}")
        with rasterio.open(path) as ds:
            a = ds.read()
            arrays.append(fill_invalid(a, invalid_mask(a, ds.nodata), file_mean(ds)))
    return apply_card(arrays[0], arrays[1], model_card(model).normalisation)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Scores of the cloudy input and of the model output on a fixed evaluation set."""
    was_training = model.training
    model.eval()
    pred = model(data["cloudy"].to(device), data["sar"].to(device)).float().cpu()
    model.train(was_training)
    return {"input": score(data["cloudy"], data), "model": score(pred, data)}


def train(cfg: TrainConfig, progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Run ``cfg``; returns the checkpoint path and the training record stored in it."""
    progress = progress or NullProgress()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    card = model_card(cfg.model)
    if cfg.crop % card.size_multiple:
        raise InputError(f"crop {cfg.crop} is not a multiple of {card.size_multiple} ({cfg.model})")

    optical, sar = read_scene(cfg.data["optical"], cfg.data["sar"], cfg.model)
    sampler = SceneSampler(optical, sar, tuple(cfg.data["train_columns"]))
    eval_data = sampler.eval_set(tuple(cfg.data["eval_columns"]), cfg.crop, seed=cfg.seed + 1)

    model = create_model(cfg.model, **cfg.model_config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    before = evaluate(model, eval_data, device)
    progress.info(f"training {cfg.model} on {describe_device(device)}; held-out before: {before}")

    losses: list[float] = []
    t0 = time.time()
    for step in range(1, cfg.steps + 1):
        if progress.is_canceled():
            raise InputError("training canceled")  # nothing has been written yet
        b = sampler.batch(cfg.batch_size, cfg.crop, gen)
        pred = model(b["cloudy"].to(device), b["sar"].to(device))
        w = b["weight"].to(device)
        loss = ((pred - b["target"].to(device)).abs() * w).sum() / (w.sum() * pred.shape[1]).clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        progress.update(step, cfg.steps)
        if step % cfg.log_every == 0:
            recent = sum(losses[-cfg.log_every :]) / cfg.log_every
            progress.info(f"step {step}/{cfg.steps} L1 {recent:.5f} ({time.time() - t0:.0f} s)")
    seconds = time.time() - t0
    after = evaluate(model, eval_data, device)
    progress.info(f"held-out after: {after}")

    record = {
        "steps": cfg.steps,
        "seconds": round(seconds, 1),
        "device": describe_device(device),
        "config": cfg.to_dict(),
        "loss_first_10": sum(losses[:10]) / min(10, len(losses)),
        "loss_last_10": sum(losses[-10:]) / min(10, len(losses)),
        "held_out_before": before,
        "held_out_after": after,
    }
    ckpt = Checkpoint(
        model=cfg.model,
        config=dict(cfg.model_config),
        state_dict=model.state_dict(),
        bands={"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
        normalisation=card.normalisation,
        trained_on=" ".join(cfg.trained_on.split()) or "unspecified",
        training=record,
        created=_dt.date.today().isoformat(),
        software=f"cloudrm {__version__}, torch {torch.__version__}",
    )
    return save_checkpoint(cfg.out, ckpt, half=cfg.half), record
