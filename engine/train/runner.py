"""Epoch-based training on SEN12MS-CR, SEN12MS-CR-TS or Planet-CR, on one device or with torchrun.

A run folder (``--out RUN_DIR``) holds:

- ``config.yaml``: the effective configuration (paper defaults < ``--config`` < flags);
- ``last.pt``: the model after every epoch (and where a ``--max-steps`` run stops), in the
  project's checkpoint format, with ``last_state.pt`` beside it (optimiser, epoch, position in
  the epoch, random states) for ``--resume RUN_DIR``;
- ``best.pt``: the model of the epoch with the best validation PSNR (mean of per-image PSNR on
  the validation split); absent, with a warning, when the dataset has no validation samples;
- ``log.csv`` (one row per epoch), ``tensorboard/`` (event files), ``summary.json``;
- for SEN12MS-CR-TS, ``samples_val.json``: the fixed validation samples.

Several processes (``torchrun --nproc_per_node=N -m cloudrm_engine.cli train …``) use
DistributedDataParallel: NCCL on GPUs, gloo on the CPU. ``batch_size`` is per process; at every
step the global batch is the same set of samples whatever the number of processes (a shuffled
order cut into global batches, each process taking a contiguous share), and random crops and
sample choices depend on (seed, epoch, sample index) only, so N processes × batch b train like
one process × batch N·b. Rank 0 writes every file and shows the progress bar.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.common import Extent, collate
from ..data.datasets import Split, open_split
from ..errors import Canceled, InputError
from ..inference.device import describe_device, resolve_device, torch_threads
from ..io.checkpoint import Checkpoint, read_weights_file, save_checkpoint
from ..metrics import image_scores
from ..models import create_model, model_card
from ..progress import NullProgress, Progress
from .forward import TrainStep, amp_dtype, autocast, inputs, predict_batch
from .objectives import objective, staged
from .run_config import RunConfig

STATE_FORMAT = "cloudrm-train-state"
METRICS = ("psnr", "ssim", "sam", "mae", "rmse")
LOG_COLUMNS = ("epoch", "step", "lr", "train_loss", *(f"val_{m}" for m in METRICS), "seconds", "skipped")


@dataclass
class RunResult:
    """What :func:`train_run` did."""

    out: Path
    last: Path
    best: Path | None
    epochs: int
    """Epochs completed."""
    steps: int
    validation: dict[str, float] = field(default_factory=dict)
    """Scores of the last validation (empty without validation samples)."""
    best_psnr: float | None = None
    best_epoch: int | None = None
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    stopped: str = ""
    """Why the run ended before its last epoch ('max_steps'), else empty."""


class _Dist:
    """Process group of a torchrun job (world size 1 without torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device_spec: str) -> torch.device:
        """Join the process group (if any) and pick this process's device."""
        import torch.distributed as dist

        spec = (device_spec or "auto").lower()
        if self.world > 1:
            use_cuda = spec != "cpu" and torch.cuda.is_available()
            device = torch.device(f"cuda:{self.local_rank}") if use_cuda else torch.device("cpu")
            if use_cuda:
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if use_cuda else "gloo", timeout=_dt.timedelta(minutes=60))
            self.active = True
            return device
        return resolve_device(spec)

    def stop(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.active = False

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Element-wise sum over processes."""
        t = torch.tensor(list(values), dtype=torch.float64, device=device)
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (pickled), in rank order."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


def batch_order(n: int, seed: int, epoch: int, batch: int, world: int, rank: int) -> list[list[int]]:
    """This process's batches of one epoch: a shuffle of 0 … n − 1 (seeded by seed and epoch)
    cut into global batches of ``batch × world`` (an incomplete last one is dropped); process
    ``rank`` takes the ``rank``-th contiguous share of ``batch`` indices of each."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    gb = batch * world
    return [perm[k * gb + rank * batch : k * gb + (rank + 1) * batch] for k in range(n // gb)]


def lr_factor(cfg: RunConfig, epoch: int) -> float:
    """Multiplier of every group's learning rate in 0-based ``epoch``: ``lr_gamma`` to the number
    of ``lr_milestones`` ≤ epoch (a paper's step schedule)."""
    return float(cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones))


def _rng_state() -> dict[str, Any]:
    """Random states as plain types and tensors (loadable with weights_only=True)."""
    np_state: Any = np.random.get_state()
    py_state: Any = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": [str(np_state[0]), torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = s["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _Log:
    """log.csv and TensorBoard (rank 0 only; TensorBoard is skipped with a warning if missing)."""

    def __init__(self, out: Path, rows: list[dict[str, Any]], step: int, progress: Progress) -> None:
        self.path = out / "log.csv"
        self.rows = rows
        self._write()
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=step if step else None)
        except ImportError as exc:
            progress.warning(f"TensorBoard logging off: the tensorboard package is missing ({exc})")

    def _write(self) -> None:
        with self.path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(LOG_COLUMNS))
            w.writeheader()
            for r in self.rows:
                w.writerow({k: r.get(k, "") for k in LOG_COLUMNS})

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is not None and value == value:  # not NaN
            self.tb.add_scalar(tag, value, step)

    def epoch(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write()
        for k in ("train_loss", "lr", *(f"val_{m}" for m in METRICS)):
            v = row.get(k)
            if isinstance(v, float):
                self.scalar(k.replace("_", "/", 1) if k.startswith("val_") else f"train/{k}", v, row["step"])
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """One training run; :func:`train_run` is the entry point."""

    def __init__(self, cfg: RunConfig, out: Path, resume: bool, progress: Progress) -> None:
        self.cfg, self.out, self.resume, self.progress = cfg, out, resume, progress
        self.dist = _Dist()

    # -- set-up ---------------------------------------------------------------------------
    def _open(self, split: str, extent: Extent, train: bool) -> Split:
        cfg = self.cfg
        need_mask = cfg.loss in ("cafr",)

        def gather(d: dict[str, float]) -> dict[str, float]:
            merged: dict[str, float] = {}
            for part in self.dist.gather(d):
                merged.update(part)
            return merged

        return open_split(
            cfg.data, cfg.model, split, extent, train, cfg.data_opts(), cfg.seed, need_mask=need_mask,
            skip_bad=cfg.skip_bad, cache_dir=self.out, workers=cfg.workers, progress=self.progress,
            shard=(self.dist.rank, self.dist.world), gather=gather,
        )

    def _val_extent(self) -> Extent:
        cfg = self.cfg
        size = cfg.crop if cfg.val_crop < 0 else cfg.val_crop
        return Extent("center", size, cfg.resize) if size else Extent("full", 0, cfg.resize)

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        card = model_card(cfg.model)
        module = importlib.import_module(f"..models.{card.module}", __package__)
        groups_fn = getattr(module, "param_groups", None)
        if groups_fn is not None:
            params: Any = groups_fn(model, lr=cfg.lr, **cfg.param_groups)
        elif cfg.param_groups:
            raise InputError(f"model {cfg.model} has no parameter groups; remove param_groups from the config")
        else:
            params = model.parameters()
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=(float(cfg.betas[0]), float(cfg.betas[1])), eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )

    # -- the run --------------------------------------------------------------------------
    def run(self) -> RunResult:
        device = self.dist.start(self.cfg.device)
        try:
            with torch_threads(self.cfg.threads):
                return self._run(device)
        finally:
            self.dist.stop()

    def _run(self, device: torch.device) -> RunResult:
        cfg, out, dist, progress = self.cfg, self.out, self.dist, self.progress
        card = model_card(cfg.model)
        if cfg.crop % card.size_multiple:
            raise InputError(f"crop {cfg.crop} is not a multiple of {card.size_multiple} ({cfg.model})")
        if not cfg.data:
            raise InputError("training: name the dataset folder (--data DIR)")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        dtype = amp_dtype(device, cfg.amp)
        if cfg.amp and dtype is None and dist.main:
            progress.info(f"--amp: mixed precision is for CUDA devices; training in float32 on {device}")

        train = self._open(cfg.train_split, Extent("random", cfg.crop, cfg.resize), True)
        val = self._open(cfg.val_split, self._val_extent(), False)
        n_val = min(len(val.dataset), cfg.val_max) if cfg.val_max else len(val.dataset)
        if dist.main:
            progress.info(f"data: {train.describe()}; validation: {val.describe()}")
            if n_val == 0:
                progress.warning(
                    f"no validation samples in split {cfg.val_split!r} of {cfg.data}: validation is off and "
                    "no best.pt is written (last.pt is)"
                )
            if train.kind == "sen12mscr_ts" and n_val:
                recs = [val.dataset.describe(i) for i in range(n_val)]  # type: ignore[attr-defined]
                (out / "samples_val.json").write_text(json.dumps(recs, indent=1), encoding="utf-8")
        steps_per_epoch = len(train.dataset) // (cfg.batch_size * dist.world)
        if steps_per_epoch == 0:
            raise InputError(
                f"split {cfg.train_split} has {len(train.dataset)} samples, fewer than one global batch of "
                f"{cfg.batch_size} × {dist.world} process(es)"
            )

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        model = create_model(cfg.model, **cfg.model_config)
        if cfg.sar_encoder:
            from .sar_pretrain import load_sar_encoder

            load_sar_encoder(model, cfg.sar_encoder)
        model = model.to(device).train()
        opt = self._optimizer(model)
        base_lrs = [g["lr"] for g in opt.param_groups]
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        step_model: torch.nn.Module = TrainStep(model)
        if dist.active:
            # static graph: the GLF-CR family never uses its last opt_distribute conv, and the set of
            # used parameters never changes, so DDP need not search for unused ones every step
            step_model = torch.nn.parallel.DistributedDataParallel(
                step_model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
            )
        loss_fn = objective(cfg.loss, cfg.loss_options)
        stage_loss = staged(loss_fn, cfg.stage_weights) if hasattr(model, "forward_stages") else None
        torch.manual_seed(cfg.seed * 1000 + dist.rank)  # stochastic layers differ between processes

        # resume -----------------------------------------------------------------------
        st: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "best_psnr": None, "best_epoch": None,
                              "loss_sum": 0.0, "loss_n": 0, "history": [], "seconds": 0.0, "skipped": []}
        if self.resume:
            st = self._load_state(model, opt, scaler)
        log = _Log(out, list(st["history"]), st["step"], progress) if dist.main else None
        skipped: set[str] = set(st["skipped"])

        total = cfg.epochs * steps_per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        if dist.main:
            progress.info(
                f"training {cfg.model} on {describe_device(device)} × {dist.world} process(es): {cfg.epochs} epochs of "
                f"{steps_per_epoch} steps (batch {cfg.batch_size} per process), loss {cfg.loss}, lr {cfg.lr:g}"
                + (f", resuming at epoch {st['epoch'] + 1} step {st['step']}" if self.resume else "")
            )
        t0 = time.time() - float(st["seconds"])
        step = int(st["step"])
        validation: dict[str, float] = dict(st["history"][-1].get("val", {})) if st["history"] else {}
        stopped = "max_steps" if cfg.max_steps and step >= cfg.max_steps else ""
        recent: list[float] = []
        for epoch in range(int(st["epoch"]), cfg.epochs if not stopped else 0):
            factor = lr_factor(cfg, epoch)
            for g, base in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * factor
            train.dataset.set_epoch(epoch)
            first = int(st["batch"]) if epoch == st["epoch"] else 0
            loss_sum = float(st["loss_sum"]) if first else 0.0
            loss_n = int(st["loss_n"]) if first else 0
            order = batch_order(len(train.dataset), cfg.seed, epoch, cfg.batch_size, dist.world, dist.rank)
            done_in_epoch = first
            for batch in self._loader(train, order[first:], device):
                if progress.is_canceled():
                    self._save(model, opt, scaler, card, cfg, train, val, n_val, epoch, done_in_epoch, step,
                               st, loss_sum, loss_n, time.time() - t0, skipped, best=False)
                    raise Canceled(f"training canceled at step {step}; continue with --resume {out}")
                self._check_errors(batch, device)
                for s in batch["skipped"]:
                    if s not in skipped:
                        skipped.add(s)
                        progress.warning(f"skipped a bad sample: {s}")
                args = inputs(batch, device)
                b = {k: batch[k].to(device, non_blocking=True) for k in ("target", "weight", "mask")}
                with autocast(device, dtype):
                    pred = step_model(*args)
                loss = stage_loss([p.float() for p in pred], b) if stage_loss else loss_fn(pred.float(), b)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                step += 1
                done_in_epoch += 1
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise InputError(f"training loss is {value} at step {step} (epoch {epoch + 1}); lower --lr")
                loss_sum += value * len(batch["name"])
                loss_n += len(batch["name"])
                recent.append(value)
                if dist.main:
                    progress.update(step, total)
                    if step % cfg.log_every == 0:
                        mean = sum(recent) / len(recent)
                        recent = []
                        progress.info(f"epoch {epoch + 1} step {step}: {cfg.loss} loss {mean:.5f} "
                                      f"({time.time() - t0:.0f} s)")
                        assert log is not None
                        log.scalar("train/loss", mean, step)
                if cfg.max_steps and step >= cfg.max_steps:
                    stopped = "max_steps"
                    break
            if stopped:
                last = self._save(model, opt, scaler, card, cfg, train, val, n_val, epoch, done_in_epoch, step,
                                  st, loss_sum, loss_n, time.time() - t0, skipped, best=False)
                if dist.main:
                    progress.info(f"stopped after {step} steps (--max-steps) in epoch {epoch + 1}; "
                                  f"wrote {last}; continue with --resume {out}")
                break
            total_loss, total_n = dist.sum([loss_sum, loss_n], device)
            row: dict[str, Any] = {
                "epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
                "train_loss": total_loss / max(total_n, 1), "seconds": round(time.time() - t0, 1),
            }
            if n_val and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                validation = self._validate(model, val, n_val, device, dtype, card.size_multiple)
                row.update({f"val_{k}": v for k, v in validation.items()})
                row["val"] = validation
            n_skipped = len(set().union(*self.dist.gather(sorted(skipped))))
            row["skipped"] = n_skipped
            improved = bool(row.get("val")) and (st["best_psnr"] is None or validation["psnr"] > st["best_psnr"])
            if improved:
                st["best_psnr"], st["best_epoch"] = validation["psnr"], epoch + 1
            st["history"] = [*st["history"], row]
            if log is not None:
                log.epoch(row)
                msg = f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.5f}, lr {row['lr']:.3g}"
                if row.get("val"):
                    msg += (f"; validation PSNR {validation['psnr']:.2f} dB, SSIM {validation['ssim']:.4f}"
                            + (" (best)" if improved else ""))
                progress.info(msg)
            self._save(model, opt, scaler, card, cfg, train, val, n_val, epoch + 1, 0, step, st, 0.0, 0,
                       time.time() - t0, skipped, best=improved)
        if log is not None:
            log.close()
        all_skipped = sorted(set().union(*self.dist.gather(sorted(skipped))) | set(train.skipped) | set(val.skipped))
        seconds = time.time() - t0
        result = RunResult(
            out=out, last=out / "last.pt", best=(out / "best.pt") if st["best_psnr"] is not None else None,
            epochs=len(st["history"]), steps=step, validation=validation, best_psnr=st["best_psnr"],
            best_epoch=st["best_epoch"], seconds=seconds, skipped=all_skipped, stopped=stopped,
        )
        if dist.main:
            summary = {
                "model": cfg.model, "data": str(cfg.data), "dataset": train.title, "layout": train.layout,
                "train_samples": len(train.dataset), "val_samples": n_val, "epochs": result.epochs,
                "steps": step, "processes": dist.world, "seconds": round(seconds, 1),
                "steps_per_second": round(step / seconds, 4) if seconds > 0 else None,
                "best": {"epoch": result.best_epoch, "psnr": result.best_psnr}, "last_validation": validation,
                "stopped": stopped, "skipped_samples": len(all_skipped), "skipped": all_skipped[:100],
            }
            (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
            if all_skipped:
                progress.warning(f"{len(all_skipped)} bad sample(s) skipped (listed in {out / 'summary.json'})")
        return result

    # -- pieces ---------------------------------------------------------------------------
    def _loader(self, split: Split, batches: list[list[int]], device: torch.device) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        if not batches:
            return iter(())
        # an own generator: a DataLoader would otherwise draw its worker seed from the global
        # random state, and a resumed run (one more loader) would drift from an uninterrupted one
        return iter(torch.utils.data.DataLoader(
            split.dataset, batch_sampler=batches, collate_fn=collate, num_workers=cfg.workers,
            pin_memory=device.type == "cuda", persistent_workers=False,
            generator=torch.Generator().manual_seed(cfg.seed),
        ))

    def _check_errors(self, batch: dict[str, Any], device: torch.device) -> None:
        """Stop every process cleanly when one of them met a bad sample (without ``skip_bad``)."""
        errors = batch.get("errors", [])
        (flag,) = self.dist.sum([1.0 if errors else 0.0], device)
        if flag:
            if errors:
                raise InputError(errors[0])
            raise InputError("another training process met a bad sample (see its message); use --skip-bad to skip")

    @torch.no_grad()
    def _validate(
        self, model: torch.nn.Module, val: Split, n: int, device: torch.device, dtype: torch.dtype | None, multiple: int
    ) -> dict[str, float]:
        """Means of per-image scores over the first ``n`` validation samples (shared between processes)."""
        was = model.training
        model.eval()
        mine = list(range(self.dist.rank, n, self.dist.world))
        sums = [0.0] * len(METRICS)
        errors: list[str] = []
        count = 0
        for batch in self._loader(val, [[i] for i in mine], device):
            if batch.get("errors"):  # no collective per image: processes score different counts
                errors.extend(batch["errors"])
                continue
            pred = predict_batch(model, batch, device, multiple, dtype)
            s = image_scores(pred[0], batch["target"][0])
            sums = [a + s[m] for a, m in zip(sums, METRICS, strict=True)]
            count += 1
        model.train(was)
        tot = self.dist.sum([*sums, float(count), float(len(errors))], device)
        if tot[-1]:
            if errors:
                raise InputError(f"validation: {errors[0]}")
            raise InputError("validation: another training process met a bad sample (see its message)")
        count = max(int(tot[-2]), 1)
        return {m: tot[i] / count for i, m in enumerate(METRICS)}

    def _trained_on(self, train: Split, val: Split, n_val: int, epochs: int, step: int, st: dict[str, Any]) -> str:
        cfg = self.cfg
        resized = f" of images resized to {cfg.resize} px" if cfg.resize else ""
        text = (f"{train.title} ({train.layout}) split {cfg.train_split}, {len(train.dataset)} samples, "
                f"{epochs} of {cfg.epochs} epochs ({step} steps, batch {cfg.batch_size} × {self.dist.world}, "
                f"{cfg.crop} px crops{resized}, loss {cfg.loss})")
        last = st["history"][-1].get("val") if st["history"] else None
        if last:
            text += (f"; validation PSNR {last['psnr']:.2f} dB, SSIM {last['ssim']:.4f} on split {cfg.val_split} "
                     f"({n_val} samples)")
        return f"{text}. {cfg.trained_on}".strip() if cfg.trained_on else text

    def _save(
        self, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any, card: Any, cfg: RunConfig,
        train: Split, val: Split, n_val: int, epoch: int, batch: int, step: int, st: dict[str, Any],
        loss_sum: float, loss_n: int, seconds: float, skipped: set[str], best: bool,
    ) -> Path:
        """Write last.pt + last_state.pt (and best.pt); ``epoch``/``batch`` = where to continue."""
        rngs = self.dist.gather(_rng_state())
        all_skipped = sorted(set().union(*self.dist.gather(sorted(skipped))))
        last = self.out / "last.pt"
        if not self.dist.main:
            return last
        epochs_done = len(st["history"])
        last_val = st["history"][-1].get("val") if st["history"] else None
        record = {
            "dataset": train.title, "layout": train.layout, "data": str(cfg.data), "split": cfg.train_split,
            "samples": len(train.dataset), "val_split": cfg.val_split, "val_samples": n_val,
            "epochs": epochs_done, "epochs_planned": cfg.epochs, "steps": step, "loss": cfg.loss,
            "seconds": round(seconds, 1), "processes": self.dist.world, "config": cfg.to_dict(),
            "validation": dict(last_val or {}), "best": {"epoch": st["best_epoch"], "psnr": st["best_psnr"]},
            "history": [{k: v for k, v in r.items() if k != "val"} for r in st["history"]],
            "skipped_samples": len(all_skipped),
        }
        ckpt = Checkpoint(
            model=cfg.model, config=dict(cfg.model_config), state_dict=model.state_dict(),
            bands={"optical": list(card.optical_bands), "sar": list(card.sar_bands)},
            normalisation=card.normalisation, trained_on=self._trained_on(train, val, n_val, epochs_done, step, st),
            training=record, created=_dt.date.today().isoformat(),
            software=f"cloudrm {__version__}, torch {torch.__version__}",
        )
        save_checkpoint(last, ckpt, half=False)
        if best:
            save_checkpoint(self.out / "best.pt", ckpt, half=False)
        state = {
            "format": STATE_FORMAT, "step": step, "epoch": epoch, "batch": batch, "world": self.dist.world,
            "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
            "best_psnr": st["best_psnr"], "best_epoch": st["best_epoch"], "loss_sum": loss_sum, "loss_n": loss_n,
            "history": st["history"], "seconds": seconds, "skipped": all_skipped,
        }
        _atomic_torch_save(state, self.out / "last_state.pt")
        return last

    def _load_state(self, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any) -> dict[str, Any]:
        from ..io.checkpoint import load_checkpoint

        last, path = self.out / "last.pt", self.out / "last_state.pt"
        if not last.is_file() or not path.is_file():
            raise InputError(f"cannot resume {self.out}: last.pt and last_state.pt are both needed")
        st = read_weights_file(path, "training state")
        if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
            raise InputError(f"{path} is not a cloudrm training state")
        ckpt = load_checkpoint(last)
        if ckpt.model != self.cfg.model or int(ckpt.training.get("steps", -1)) != int(st["step"]):
            raise InputError(f"{last} and {path} do not belong together (model {ckpt.model}, "
                             f"steps {ckpt.training.get('steps')} vs {st['step']})")
        if int(st["world"]) != self.dist.world:
            raise InputError(f"{self.out} was trained by {st['world']} process(es); resume it with as many "
                             f"(now {self.dist.world}) for an exact continuation")
        model.load_state_dict(ckpt.state_dict, strict=True)
        opt.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"])
        _set_rng_state(st["rng"][self.dist.rank])
        return st


def train_run(
    cfg: RunConfig, out: str | os.PathLike[str], resume: bool = False, progress: Progress | None = None
) -> RunResult:
    """Train ``cfg`` into the run folder ``out`` (module docstring); ``resume`` continues the run
    saved there exactly (model, optimiser, learning-rate schedule, epoch, position and random
    states). Under torchrun every process calls this; only rank 0 writes and reports."""
    return Trainer(cfg, Path(out), resume, progress or NullProgress()).run()

