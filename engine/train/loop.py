"""Training loop (Adam, a named loss) that writes a cloudrm checkpoint with honest metadata.

Data: synthetic clouds on one real scene (demo) or the Planet-CR / M3R-CR dataset. Models
with ``forward_stages`` (MPIR) are trained with the loss summed over their stages.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from .. import __version__
from ..data.bands import S2_BANDS
from ..data.normalize import apply_card, fill_invalid
from ..errors import InputError
from ..inference.device import describe_device, resolve_device, torch_threads
from ..io.checkpoint import Checkpoint, save_checkpoint
from ..io.raster import file_mean, invalid_mask
from ..models import create_model, model_card
from ..progress import NullProgress, Progress
from .config import TrainConfig
from .objectives import objective, staged
from .synthetic import SceneSampler, score


def read_scene(optical: str | Path, sar: str | Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Whole (small) scene, NaN/nodata filled with the file mean and scaled per the model card.

    All optical bands are returned (cloud detection needs them); see :func:`model_bands`.
    """
    arrays = []
    for path, role in ((optical, "optical"), (sar, "SAR")):
        if not Path(path).is_file():
            raise InputError(f"training {role} raster not found: {path}")
        with rasterio.open(path) as ds:
            a = ds.read()
            arrays.append(fill_invalid(a, invalid_mask(a, ds.nodata), file_mean(ds)))
    return apply_card(arrays[0], arrays[1], model_card(model).normalisation)


def model_bands(model: str, count: int) -> tuple[int, ...] | None:
    """0-based bands of a ``count``-band S2 scene that ``model`` sees; None = all of them."""
    want = model_card(model).optical_bands
    if len(want) == count:
        return None
    if count == len(S2_BANDS) and all(b in S2_BANDS for b in want):
        return tuple(S2_BANDS.index(b) for b in want)
    raise InputError(f"training scene has {count} optical bands; model {model} needs {', '.join(want)}")


class PlanetSampler:
    """Random batches and a fixed evaluation set from Planet-CR (engine/data/planet_cr.py)."""

    def __init__(self, data: dict[str, Any], crop: int, seed: int) -> None:
        from ..data.planet_cr import PlanetCRDataset, discover, read_index

        root = Path(data["root"])

        def samples(spec: str) -> list:
            return read_index(root / spec, root) if str(spec).endswith(".csv") else discover(root, spec)

        lc = str(data.get("lc_level", "1"))
        self.train = PlanetCRDataset(samples(data["train"]), crop=crop, train=True, seed=seed, lc_level=lc)
        ev = samples(data["eval"])[: int(data.get("eval_samples", 8))]
        self.eval = PlanetCRDataset(ev, crop=crop, train=False, lc_level=lc)

    @staticmethod
    def _stack(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = {k: torch.stack([it[k] for it in items]) for k in ("cloudy", "sar", "target")}
        out["mask"] = torch.stack([it["mask"] for it in items])  # items hold (1, H, W)
        out["alpha"] = out["mask"]
        out["weight"] = torch.ones_like(out["mask"])
        return out

    def batch(self, n: int, size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(self.train), (n,), generator=gen).tolist()
        self.train.epoch += 1  # fresh crop offsets every draw, reproducible from the seed
        return self._stack([self.train[i] for i in idx])

    def eval_set(self) -> dict[str, torch.Tensor]:
        return self._stack([self.eval[i] for i in range(len(self.eval))])


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def run_model(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Forward pass; temporal models (batch has ``days``) also get the acquisition days."""
    if "days" in b:
        return model(b["cloudy"], b["sar"], b["days"])
    return model(b["cloudy"], b["sar"])


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: dict[str, torch.Tensor], device: torch.device
) -> dict[str, dict[str, float]]:
    """Scores of the cloudy input (target date) and of the model output on a fixed evaluation set."""
    was_training = model.training
    model.eval()
    pred = run_model(model, {k: v.to(device) for k, v in data.items()}).float().cpu()
    model.train(was_training)
    cloudy = data["cloudy"][:, -1] if "days" in data else data["cloudy"]
    return {"input": score(cloudy, data), "model": score(pred, data)}


def train(cfg: TrainConfig, progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Run ``cfg``; returns the checkpoint path and the training record stored in it."""
    with torch_threads(cfg.threads):
        return _train(cfg, progress or NullProgress())


def _train(cfg: TrainConfig, progress: Progress) -> tuple[Path, dict[str, Any]]:
    gen = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    card = model_card(cfg.model)
    if cfg.crop % card.size_multiple:
        raise InputError(f"crop {cfg.crop} is not a multiple of {card.size_multiple} ({cfg.model})")

    if cfg.data["kind"] == "planet_cr":
        sampler: Any = PlanetSampler(cfg.data, cfg.crop, cfg.seed)
        eval_data = sampler.eval_set()
    else:
        optical, sar = read_scene(cfg.data["optical"], cfg.data["sar"], cfg.model)
        dates = int(cfg.data.get("dates", 3)) if card.temporal else 1
        sampler = SceneSampler(
            optical, sar, tuple(cfg.data["train_columns"]), bands=model_bands(cfg.model, len(optical)), dates=dates
        )
        eval_data = sampler.eval_set(tuple(cfg.data["eval_columns"]), cfg.crop, seed=cfg.seed + 1)
        eval_data["mask"] = (eval_data["alpha"] > 0.1).float()

    model = create_model(cfg.model, **cfg.model_config).to(device).train()
    groups = getattr(importlib.import_module(f"..models.{card.module}", __package__), "param_groups", None)
    opt = torch.optim.Adam(groups(model, lr=cfg.lr) if groups else model.parameters(), lr=cfg.lr)
    loss_fn = objective(cfg.loss, cfg.loss_options)
    stages = staged(loss_fn, cfg.stage_weights) if hasattr(model, "forward_stages") else None
    before = evaluate(model, eval_data, device)
    progress.info(f"training {cfg.model} on {describe_device(device)}; held-out before: {before}")

    losses: list[float] = []
    t0 = time.time()
    for step in range(1, cfg.steps + 1):
        if progress.is_canceled():
            raise InputError("training canceled")  # nothing has been written yet
        b = sampler.batch(cfg.batch_size, cfg.crop, gen)
        if "mask" not in b:
            b["mask"] = (b["alpha"] > 0.1).float()
        b = {k: v.to(device) for k, v in b.items()}
        if stages is not None:
            loss = stages(model.forward_stages(b["cloudy"], b["sar"]), b)
        else:
            loss = loss_fn(run_model(model, b), b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        progress.update(step, cfg.steps)
        if step % cfg.log_every == 0:
            recent = sum(losses[-cfg.log_every :]) / cfg.log_every
            progress.info(f"step {step}/{cfg.steps} {cfg.loss} loss {recent:.5f} ({time.time() - t0:.0f} s)")
    seconds = time.time() - t0
    after = evaluate(model, eval_data, device)
    progress.info(f"held-out after: {after}")

    record = {
        "steps": cfg.steps,
        "loss": cfg.loss,
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
