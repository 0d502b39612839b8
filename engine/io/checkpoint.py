"""Checkpoints: our own format (weights + metadata), plus the official GLF-CR release.

Our file is a plain dict that ``torch.load(..., weights_only=True)`` accepts: only str, int,
float, bool, None, lists, dicts and tensors. Keys:

- ``format`` ("cloudrm-checkpoint"), ``format_version`` (1)
- ``model`` (registry name), ``config`` (builder kwargs)
- ``bands`` ({"optical": [...], "sar": [...]}), ``normalisation`` (card block)
- ``trained_on`` (one honest sentence), ``training`` (dict: steps, data, seconds, scores...)
- ``created`` (ISO date), ``software`` ("cloudrm 0.1.0, torch ...")
- ``state_dict`` (float tensors, optionally stored as float16)

Checkpoints are never unpickled with arbitrary code: ``weights_only=True`` always.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..models import create_model, model_card, official_remap

FORMAT = "cloudrm-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A model's weights and what is known about them."""

    model: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    bands: dict[str, list[str]]
    normalisation: dict[str, Any]
    trained_on: str = "unknown"
    training: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    software: str = ""
    path: Path | None = None

    def summary(self) -> str:
        """One line for logs and dialogs."""
        return (
            f"{self.model} checkpoint {self.path.name if self.path else ''}: "
            f"{len(self.bands.get('optical', []))} optical bands "
            f"({','.join(self.bands.get('optical', []))}), trained on: {self.trained_on}"
        )


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint, half: bool = False) -> Path:
    """Write ``ckpt`` atomically (temp file + rename). ``half`` stores float weights as float16."""
    path = Path(path)
    state = {
        k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu())
        for k, v in ckpt.state_dict.items()
    }
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": ckpt.model,
        "config": dict(ckpt.config),
        "bands": {k: list(v) for k, v in ckpt.bands.items()},
        "normalisation": ckpt.normalisation,
        "trained_on": ckpt.trained_on,
        "training": ckpt.training,
        "created": ckpt.created,
        "software": ckpt.software,
        "state_dict": state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _from_official(state: dict[str, Any], model: str, path: Path) -> Checkpoint:
    remap = official_remap(model)
    if remap is None:
        raise CheckpointError(f"{path}: model {model!r} has no official checkpoint format")
    state = remap(state)
    card = model_card(model)
    config: dict[str, Any] = {}
    first = state.get("SFENet1.weight")
    if first is not None and first.shape[1] // 4 != len(card.optical_bands):
        config["optical_bands"] = int(first.shape[1] // 4)
    n_opt = config.get("optical_bands", len(card.optical_bands))
    opt_bands = list(card.optical_bands) if n_opt == len(card.optical_bands) else [f"band{i + 1}" for i in range(n_opt)]
    return Checkpoint(
        model=model,
        config=config,
        state_dict=state,
        bands={"optical": opt_bands, "sar": list(card.sar_bands)},
        normalisation=card.normalisation,
        trained_on="official release of the model's authors (no metadata in the file)",
        path=path,
    )


def read_weights_file(path: Path, what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is a CheckpointError.

    Never unpickles code: only tensors and plain containers load.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable weights-only PyTorch {what} ({type(exc).__name__}: {exc})"
        ) from exc


def load_checkpoint(path: str | os.PathLike[str], model: str | None = None) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``.

    Accepts our format, the official GLF-CR ``CR_net.pth`` (``{"network": state_dict}``,
    ``module.`` prefixes allowed) and a bare state dict; the last two need ``model``
    (default ``glf_cr``) since they carry no metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    blob = read_weights_file(path, "checkpoint")
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(blob).__name__}")
    if blob.get("format") == FORMAT:
        if int(blob.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: format version {blob['format_version']} is newer than this cloudrm")
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in blob["state_dict"].items()}
        return Checkpoint(
            model=blob["model"],
            config=dict(blob.get("config") or {}),
            state_dict=state,
            bands={k: list(v) for k, v in blob["bands"].items()},
            normalisation=blob["normalisation"],
            trained_on=blob.get("trained_on", "unknown"),
            training=dict(blob.get("training") or {}),
            created=blob.get("created", ""),
            software=blob.get("software", ""),
            path=path,
        )
    state = blob.get("network", blob)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path}: neither a cloudrm checkpoint nor a state dict (top-level keys: {', '.join(list(blob)[:8])})"
        )
    return _from_official(dict(state), model or "glf_cr", path)


def build_model(ckpt: Checkpoint) -> torch.nn.Module:
    """Instantiate the checkpoint's model and load its weights strictly; returns it in eval mode."""
    model = create_model(ckpt.model, **ckpt.config)
    own, given = model.state_dict(), ckpt.state_dict
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    reshaped = [
        f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in given and given[k].shape != own[k].shape
    ]
    if missing or unexpected or reshaped:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")

        raise CheckpointError(
            f"{ckpt.path or 'checkpoint'} does not fit model {ckpt.model!r} {ckpt.config}: "
            f"{len(missing)} missing keys ({show(missing)}), "
            f"{len(unexpected)} unexpected keys ({show(unexpected)}), "
            f"{len(reshaped)} with another shape ({show(reshaped)})"
        )
    model.load_state_dict(given, strict=True)
    return model.eval()
