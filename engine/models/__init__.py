"""Models and their registry. Importing this package does not import torch."""

from ._registry import (
    ModelCard,
    count_parameters,
    create_model,
    list_models,
    model_card,
    official_remap,
    register_model,
)

__all__ = [
    "ModelCard",
    "count_parameters",
    "create_model",
    "list_models",
    "model_card",
    "official_remap",
    "register_model",
]
