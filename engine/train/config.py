"""Training configuration: a YAML file loaded into a dataclass that checks itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError


@dataclass
class TrainConfig:
    """One training run. Every field can come from YAML and be overridden on the CLI."""

    model: str = "glf_cr"
    """Registry name of the model."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """Builder kwargs on top of the model card's."""
    data: dict[str, Any] = field(default_factory=dict)
    """Data source. kind 'synthetic_clouds_on_scene' needs optical, sar, train_columns,
    eval_columns; kind 'planet_cr' needs root, train (CSV path or split folder name) and eval
    (CSV or split), optional eval_samples (default 8) and lc_level."""
    crop: int = 64
    """Square training crop in pixels (multiple of the model's size multiple)."""
    batch_size: int = 4
    steps: int = 400
    lr: float = 1e-4
    """Adam learning rate (GLF-CR paper: 1e-4). Models whose module defines
    ``param_groups(model, lr)`` (Align-CR) get their own per-part rates from it."""
    loss: str = "l1"
    """l1 | l1_ssim | cafr | align_cr (engine/train/objectives.py)."""
    loss_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the loss (e.g. ``repo_loss: true`` for cafr)."""
    stage_weights: list[float] | None = None
    """Multi-stage models (MPIR): weight of each stage's loss; 1 each when None."""
    seed: int = 7
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""
    device: str = "auto"
    log_every: int = 10
    half: bool = True
    """Store weights as float16 (halves the file; loading returns float32)."""
    out: str = "checkpoint.pt"
    trained_on: str = ""
    """Sentence written into the checkpoint metadata (what data, how long)."""

    def __post_init__(self) -> None:
        for name in ("crop", "batch_size", "steps", "log_every"):
            if int(getattr(self, name)) <= 0:
                raise InputError(f"training config: {name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"training config: lr must be > 0, got {self.lr}")
        kind = self.data.get("kind")
        need = {
            "synthetic_clouds_on_scene": ("optical", "sar", "train_columns", "eval_columns"),
            "planet_cr": ("root", "train", "eval"),
        }
        if kind not in need:
            raise InputError(f"training config: data.kind {kind!r} unknown (known: {', '.join(need)})")
        for key in need[kind]:
            if key not in self.data:
                raise InputError(f"training config: data.{key} is missing")
        from .objectives import NAMES

        if self.loss not in NAMES:
            raise InputError(f"training config: unknown loss {self.loss!r} (known: {', '.join(NAMES)})")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load ``path``; non-None ``overrides`` replace top-level fields."""
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise InputError(f"{path}: unknown training option(s) {', '.join(sorted(unknown))}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
