"""The engine's public surface: what the CLI, Processing algorithms and QgsTasks call."""

from __future__ import annotations

from typing import Any

from .inference.composite import KeepClearResult, keep_clear
from .inference.predictor import PredictResult, default_checkpoint, predict_scene
from .inference.temporal import SeriesResult, predict_series
from .models import count_parameters, list_models, model_card
from .quicklook import side_by_side

__all__ = [
    "KeepClearResult",
    "PredictResult",
    "SeriesResult",
    "default_checkpoint",
    "describe_models",
    "keep_clear",
    "predict_scene",
    "predict_series",
    "side_by_side",
    "train",
]


def describe_models() -> list[dict[str, Any]]:
    """One dict per registered model: name, parameters, expected inputs, defaults."""
    out = []
    for name in list_models():
        card = model_card(name)
        out.append(
            {
                "name": name,
                "title": card.title,
                "parameters": count_parameters(name),
                "optical_bands": list(card.optical_bands),
                "sar_bands": list(card.sar_bands),
                "size_multiple": card.size_multiple,
                "temporal": card.temporal,
                "sar_resampling": card.sar_resampling,
                "default_checkpoint": card.default_checkpoint,
                "defaults": card.defaults,
                "summary": card.summary,
            }
        )
    return out


def train(config_path: str, **overrides: Any) -> Any:
    """Train from a YAML config (see ``engine/configs/train``); returns (checkpoint, record)."""
    from .train.config import TrainConfig
    from .train.loop import train as _train

    progress = overrides.pop("progress", None)
    return _train(TrainConfig.from_yaml(config_path, **overrides), progress)
