"""Configuration of an epoch-based training run on a real dataset (``cloudrm train --model --data``).

Sources, later ones winning: the model's paper settings (``configs/train/paper_<family>.yaml``),
an optional ``--config`` YAML, then command-line flags. The effective configuration is written
to ``RUN_DIR/config.yaml`` and ``--resume RUN_DIR`` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"
PAPER_FILES = {
    "glf_cr": "paper_glf_cr.yaml", "cafr": "paper_cafr.yaml", "align_cr": "paper_align_cr.yaml",
    "ca_mtcr": "paper_ca_mtcr.yaml", "mmcanet": "paper_mmcanet.yaml", "mmcanet_l": "paper_mmcanet.yaml",
    "mpir1": "paper_mmcanet.yaml", "mpir2": "paper_mmcanet.yaml", "mpir3": "paper_mmcanet.yaml",
    "mpir4": "paper_mmcanet.yaml",
}
SESSION_FIELDS = ("max_steps", "device", "workers", "threads", "amp")
"""Fields that describe one invocation, not the run: ``--resume`` does not take them from config.yaml."""


@dataclass
class RunConfig:
    """One training run. Every field can come from YAML and be overridden by a CLI flag."""

    model: str = "glf_cr"
    """Registry name of the model (``cloudrm models``)."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """Builder options on top of the model card's (e.g. ``drop_path: 0``)."""
    data: str = ""
    """Dataset folder: SEN12MS-CR (either layout), SEN12MS-CR-TS or Planet-CR; detected."""
    data_options: dict[str, Any] = field(default_factory=dict)
    """Reader options (``engine.data.datasets.DataOptions``): seasons, lc_level, val_fraction,
    csv, coverage, dates."""
    train_split: str = "train"
    val_split: str = "val"
    val_max: int = 0
    """Score at most this many validation samples (the first ones); 0 = all."""
    val_every: int = 1
    """Validate every N epochs (and after the last one)."""
    val_crop: int = -1
    """Validation window: centre crop of this size; 0 = the whole image; -1 = the training crop."""
    epochs: int = 30
    max_steps: int = 0
    """Stop after this many optimiser steps in total (0 = run all epochs); not kept by --resume."""
    crop: int = 128
    """Random training crop (pixels, a multiple of the model's size multiple)."""
    resize: int = 0
    """> 0: resize each whole image to this size first (antialiased bilinear; MMCANet's protocol)."""
    batch_size: int = 1
    """Samples per optimiser step *per process* (torchrun: global batch = processes × this)."""
    lr: float = 1e-4
    param_groups: dict[str, Any] = field(default_factory=dict)
    """Extra arguments of the model module's ``param_groups(model, lr, ...)`` (e.g. ``align_lr``)."""
    lr_milestones: list[int] = field(default_factory=list)
    """0-based epochs at which every group's learning rate is multiplied by ``lr_gamma``."""
    lr_gamma: float = 0.5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    loss: str = "l1"
    """l1 | l1_ssim | cafr | align_cr | ca_mtcr (engine/train/objectives.py)."""
    loss_options: dict[str, Any] = field(default_factory=dict)
    stage_weights: list[float] | None = None
    """Multi-stage models (MPIR): weight of each stage's loss; 1 each when None."""
    sar_encoder: str = ""
    """CA-MTCR: encoder file from ``cloudrm pretrain-sar`` loaded before training."""
    seed: int = 7
    workers: int = 0
    """DataLoader worker processes per training process."""
    amp: bool = False
    """Mixed precision on CUDA (no effect on the CPU)."""
    device: str = "auto"
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""
    log_every: int = 50
    """Steps between loss lines (TensorBoard, tqdm)."""
    skip_bad: bool = False
    """Skip (log and count) samples whose files are missing or broken instead of stopping."""
    trained_on: str = ""
    """Extra sentence appended to the checkpoint's ``trained_on``."""
    paper: str = ""
    """Where the defaults come from (filled from the paper file; informational)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "crop", "batch_size", "val_every", "log_every"):
            if int(getattr(self, name)) <= 0:
                raise InputError(f"training: {name} must be > 0, got {getattr(self, name)}")
        for name in ("max_steps", "workers", "threads", "val_max", "resize"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"training: {name} must be ≥ 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"training: lr must be > 0, got {self.lr}")
        from .objectives import NAMES

        if self.loss not in NAMES:
            raise InputError(f"training: unknown loss {self.loss!r} (known: {', '.join(NAMES)})")
        from ..data.datasets import DataOptions

        known = {f.name for f in fields(DataOptions)}
        unknown = set(self.data_options) - known
        if unknown:
            raise InputError(
                f"training: unknown data option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
            )

    def data_opts(self) -> Any:
        from ..data.datasets import DataOptions

        return DataOptions(**self.data_options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"training config not found: {path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of options")
    known = {f.name for f in fields(RunConfig)}
    unknown = set(raw) - known
    if unknown:
        raise InputError(f"{path}: unknown training option(s) {', '.join(sorted(unknown))}")
    return raw


def paper_defaults(model: str) -> dict[str, Any]:
    """The settings of ``model``'s paper (``configs/train/paper_<family>.yaml``), model name set."""
    from ..models import model_card

    model_card(model)  # unknown names fail with the list of known ones
    name = PAPER_FILES.get(model)
    raw = _read_yaml(CONFIG_DIR / name) if name else {}
    raw["model"] = model
    return raw


def build_config(
    model: str | None = None, config: str | Path | None = None, resume: str | Path | None = None, **flags: Any
) -> RunConfig:
    """Paper defaults < ``config`` file (or the run's saved config.yaml with ``resume``) < ``flags``
    (None values are ignored). ``model`` may come from the config file instead."""
    layers: list[dict[str, Any]] = []
    if resume is not None:
        saved = _read_yaml(Path(resume) / "config.yaml")
        for k in SESSION_FIELDS:
            saved.pop(k, None)
        layers.append(saved)
    if config is not None:
        layers.append(_read_yaml(Path(config)))
    name = model or next((lay["model"] for lay in reversed(layers) if "model" in lay), None)
    if not name:
        raise InputError("training: name a model (--model NAME or 'model:' in the config file)")
    merged = paper_defaults(str(name))
    for lay in layers:
        merged.update(lay)
    merged.update({k: v for k, v in flags.items() if v is not None})
    merged["model"] = str(name)
    return RunConfig(**merged)
