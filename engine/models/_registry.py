"""Model registry: names → builders (registered by decorator) and model cards (YAML data).

Cards live in ``configs/models/<name>.yaml`` and are readable without torch, so callers
(the QGIS plugin) can list models and their inputs before any heavy import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import CloudrmError

CARD_DIR = Path(__file__).resolve().parent.parent / "configs" / "models"

Builder = Callable[..., Any]
Remap = Callable[[Mapping[str, Any]], dict[str, Any]]

_BUILDERS: dict[str, Builder] = {}
_REMAPS: dict[str, Remap] = {}


@dataclass(frozen=True)
class ModelCard:
    """What a model expects and how its inputs are scaled (from ``configs/models/<name>.yaml``)."""

    name: str
    module: str
    title: str
    summary: str
    docs: str
    """The model's page in the repository, e.g. ``docs/models/glf_cr.md``."""
    parameters: int
    size_multiple: int
    optical_bands: tuple[str, ...]
    sar_bands: tuple[str, ...]
    rgb_bands: tuple[str, ...]
    normalisation: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    default_checkpoint: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    sar_resampling: str = "bilinear"
    """How SAR on another grid is resampled onto the optical tile grid: the way the model was
    trained (``nearest`` for Align-CR, ``bilinear`` in dB otherwise)."""
    temporal: bool = False
    """True for time-series models: forward(optical (B,T,C,H,W), sar (B,T,2,H,W), days (B,T))."""
    output_bands: tuple[str, ...] = ()
    """Bands the model returns; empty = the optical input bands."""

    @classmethod
    def from_yaml(cls, path: Path) -> ModelCard:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(
            name=d["name"],
            module=d["module"],
            title=d["title"],
            summary=" ".join(str(d["summary"]).split()),
            docs=d["docs"],
            parameters=int(d["parameters"]),
            size_multiple=int(d["size_multiple"]),
            optical_bands=tuple(d["inputs"]["optical"]["bands"]),
            sar_bands=tuple(d["inputs"]["sar"]["bands"]),
            rgb_bands=tuple(d["inputs"]["optical"].get("rgb", ())),
            normalisation=dict(d["normalisation"]),
            config=dict(d.get("config") or {}),
            default_checkpoint=d.get("default_checkpoint"),
            defaults=dict(d.get("defaults") or {}),
            sar_resampling=str(d["inputs"]["sar"].get("resampling", "bilinear")),
            temporal=bool(d.get("temporal", False)),
            output_bands=tuple(d.get("outputs", {}).get("bands", ())),
        )


@cache
def _cards() -> dict[str, ModelCard]:
    cards = {}
    for path in sorted(CARD_DIR.glob("*.yaml")):
        card = ModelCard.from_yaml(path)
        if card.name != path.stem:
            raise CloudrmError(f"model card {path} declares name {card.name!r}; expected {path.stem!r}")
        cards[card.name] = card
    return cards


def list_models(temporal: bool | None = None) -> list[str]:
    """Names of all registered models, sorted; only (non-)temporal ones if ``temporal`` is given.

    Needs no torch.
    """
    return sorted(n for n, c in _cards().items() if temporal is None or c.temporal == temporal)


def model_card(name: str) -> ModelCard:
    """The card of model ``name``; a clear error lists the known names."""
    try:
        return _cards()[name]
    except KeyError:
        raise CloudrmError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def register_model(name: str, official_remap: Remap | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``name`` (the file stem and card name)."""

    def wrap(builder: Builder) -> Builder:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise CloudrmError(f"model {name!r} registered twice")
        _BUILDERS[name] = builder
        if official_remap is not None:
            _REMAPS[name] = official_remap
        return builder

    return wrap


def _builder(name: str) -> Builder:
    card = model_card(name)
    if name not in _BUILDERS:
        importlib.import_module(f"{__package__}.{card.module}")
    if name not in _BUILDERS:
        raise CloudrmError(f"module {card.module} did not register a builder for {name!r}")
    return _BUILDERS[name]


def create_model(name: str, **config: Any) -> Any:
    """Build model ``name``: card defaults, overridden by ``config`` (e.g. from a checkpoint)."""
    return _builder(name)(**{**model_card(name).config, **config})


def official_remap(name: str) -> Remap | None:
    """Function mapping the official repository's checkpoint keys to ours, if there is one."""
    _builder(name)
    return _REMAPS.get(name)


def count_parameters(name: str, **config: Any) -> int:
    """Trainable parameter count, built on the meta device (no memory, no init cost)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, **config)
    return sum(p.numel() for p in model.parameters())
