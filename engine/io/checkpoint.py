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

Whatever the file holds, loading ends in a :class:`Checkpoint` or a :class:`CheckpointError`
naming the file and what is missing or wrong (never a KeyError, never torch's advice to load
with ``weights_only=False``).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, CloudrmError
from ..models import create_model, list_models, model_card, official_remap

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


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _from_official(state: dict[str, Any], model: str, path: Path) -> Checkpoint:
    remap = official_remap(model)
    if remap is None:
        raise CheckpointError(f"{path}: model {model!r} has no official checkpoint format")
    try:
        state = remap(state)
    except Exception as exc:  # keys or shapes a foreign file has and the official one has not
        raise CheckpointError(
            f"{path}: cannot read it as the official {model} weights ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    card = model_card(model)
    config: dict[str, Any] = {}
    first = state.get("SFENet1.weight")
    if first is not None and first.ndim >= 2 and first.shape[1] // 4 != len(card.optical_bands):
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


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (a tensor's repr can be huge)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sniff(path: Path) -> str | None:
    """Why ``path`` cannot be a torch.save file, judged from its first bytes; None if it may be one.

    torch.save writes a zip archive (``PK\\x03\\x04``) since torch 1.6, a pickle (``\\x80``
    and the protocol number) before.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except IsADirectoryError:
        return "it is a folder"
    except OSError as exc:
        return f"it cannot be opened ({os.strerror(exc.errno).lower() if exc.errno else _one_line(exc)})"
    if not head:
        return "it is empty (0 bytes)"
    if head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return None
    return "it is neither a zip archive nor a pickle, the two forms torch.save writes"


def _torch_reason(exc: BaseException, is_zip: bool) -> str:
    """torch.load's failure in a few words, without its advice to load with weights_only=False.

    ``is_zip``: the file starts like a zip archive (torch ≥ 1.6 format).
    """
    text = str(exc)
    m = re.search(r"GLOBAL ([\w.]+)", text)  # "Unsupported global: GLOBAL x.y", "unsupported GLOBAL x.y"
    if m:
        return (
            f"it contains objects that weights-only loading refuses ({m.group(1)}), so it was not written "
            "by cloudrm or as a plain state dict; cloudrm never runs code from a checkpoint"
        )
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if m:
        return f"its pickle data is not only tensors and plain containers ({m.group(1).strip()})"
    if "weights_only" in text or isinstance(exc, pickle.UnpicklingError):  # any other torch advice: not ours
        return f"its pickle data is not only tensors and plain containers ({type(exc).__name__})"
    if is_zip or "PytorchStreamReader" in text:
        return f"the zip archive is truncated or corrupt ({text.split('. ')[0].strip()[:200]})"
    if isinstance(exc, EOFError):
        return "it ends too early (truncated)"
    return f"{type(exc).__name__}: {_one_line(exc)}"


def read_weights_file(path: Path, what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is a CheckpointError.

    Never unpickles code: only tensors and plain containers load. The error says in one line
    why the file is not usable (a folder, empty, not a torch file, damaged, holds objects).
    """
    path = Path(path)
    reason = _sniff(path)
    if reason is not None:
        raise CheckpointError(f"{path} is not a readable weights-only PyTorch {what}: {reason}")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol before it refuses or accepts: noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable weights-only PyTorch {what}: {_torch_reason(exc, is_zip)}"
        ) from exc


_CLOUDRM_KEYS = ("format", "model", "bands", "normalisation", "state_dict")
"""Keys every cloudrm checkpoint has."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_range(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) == 2 and all(_is_number(v) for v in x)


def _check_state_dict(state: Any, path: Path, where: str) -> dict[str, torch.Tensor]:
    """``state`` as a dict of tensors, or a CheckpointError saying what it is instead."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: {where} is a {type(state).__name__}, not a dict of tensors")
    if not state:
        raise CheckpointError(f"{path}: {where} is empty (no weights)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{path}: {where} entry {k!r} is a {type(state[k]).__name__}, not a tensor "
            f"({len(bad)} such entr{'y' if len(bad) == 1 else 'ies'})"
        )
    return dict(state)


def _check_cloudrm(blob: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a cloudrm-format dict, or a CheckpointError naming what is wrong."""
    bad = f"{path} is not a valid cloudrm checkpoint"
    missing = [k for k in _CLOUDRM_KEYS if k not in blob]
    if missing:
        raise CheckpointError(
            f"{bad}: {', '.join(repr(k) for k in missing)} missing (a cloudrm checkpoint holds "
            f"{', '.join(_CLOUDRM_KEYS)}); save it again with cloudrm, or pass the model's plain weights"
        )
    if not isinstance(blob["format"], str) or blob["format"] != FORMAT:
        raise CheckpointError(f"{bad}: 'format' is {_short(blob['format'])}, expected {FORMAT!r}")
    version = blob.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{bad}: 'format_version' is {_short(version)}, not a whole number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version} is newer than this cloudrm: update cloudrm")
    name = blob["model"]
    if not isinstance(name, str):
        raise CheckpointError(f"{bad}: 'model' is a {type(name).__name__}, not a model name")
    if name not in list_models():
        raise CheckpointError(f"{bad}: unknown model {name!r} (known: {', '.join(list_models())})")
    bands = blob["bands"]
    if not (
        isinstance(bands, Mapping)
        and all(isinstance(bands.get(k), (list, tuple)) for k in ("optical", "sar"))
        and all(isinstance(b, str) for k in ("optical", "sar") for b in bands[k])
        and bands["optical"]
    ):
        raise CheckpointError(
            f"{bad}: 'bands' must be a dict with lists of band names under 'optical' and 'sar', "
            f"found {_short(bands)}"
        )
    norm = blob["normalisation"]
    opt = norm.get("optical") if isinstance(norm, Mapping) else None
    sar = norm.get("sar") if isinstance(norm, Mapping) else None
    if not (
        isinstance(opt, Mapping)
        and _is_number(opt.get("scale"))
        and opt["scale"] > 0
        and _is_range(opt.get("clip"))
        and isinstance(sar, Mapping)
        and isinstance(sar.get("clip"), (list, tuple))
        and all(_is_range(c) for c in sar["clip"])
    ):
        raise CheckpointError(
            f"{bad}: 'normalisation' must give the optical scale and clip [lo, hi] and one SAR clip "
            f"[lo, hi] per band, found {_short(norm)}"
        )
    for key in ("config", "training"):
        if blob.get(key) is not None and not isinstance(blob[key], Mapping):
            raise CheckpointError(f"{bad}: {key!r} is a {type(blob[key]).__name__}, not a dict")
    return _check_state_dict(blob["state_dict"], path, "'state_dict'")


def _looks_cloudrm(blob: Mapping[str, Any]) -> bool:
    """A dict meant as a cloudrm checkpoint (maybe damaged), not a state dict of tensors."""
    if "format" in blob:
        return True
    return any(k in blob and not isinstance(blob[k], torch.Tensor) for k in _CLOUDRM_KEYS)


def load_checkpoint(path: str | os.PathLike[str], model: str | None = None) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``.

    Accepts our format, the official GLF-CR ``CR_net.pth`` (``{"network": state_dict}``,
    ``module.`` prefixes allowed) and a bare state dict; the last two need ``model``
    (default ``glf_cr``) since they carry no metadata.

    Raises:
        CheckpointError: naming the file and what is missing or wrong: not found, a folder, not
            a PyTorch file, damaged, holding code, a cloudrm dict without (or with malformed)
            ``model``/``bands``/``normalisation``/``state_dict``, or not a state dict at all.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    blob = read_weights_file(path, "checkpoint")
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: expected a dict (a checkpoint or a state dict), found a {type(blob).__name__}")
    if "network" not in blob and _looks_cloudrm(blob):
        state = _check_cloudrm(blob, path)
        return Checkpoint(
            model=blob["model"],
            config=dict(blob.get("config") or {}),
            state_dict={k: (v.float() if v.is_floating_point() else v) for k, v in state.items()},
            bands={k: list(v) for k, v in blob["bands"].items() if isinstance(v, (list, tuple))},
            normalisation=blob["normalisation"],
            trained_on=str(blob.get("trained_on", "unknown")),
            training=dict(blob.get("training") or {}),
            created=str(blob.get("created", "")),
            software=str(blob.get("software", "")),
            path=path,
        )
    where = "'network'" if "network" in blob else "the file"
    try:
        state = _check_state_dict(blob.get("network", blob), path, where)
    except CheckpointError as exc:
        keys = ", ".join(repr(k) for k in list(blob)[:8]) or "none"
        raise CheckpointError(
            f"{exc}: neither a cloudrm checkpoint nor a state dict (top-level keys: {keys})"
        ) from None
    return _from_official(state, model or "glf_cr", path)


def build_model(ckpt: Checkpoint) -> torch.nn.Module:
    """Instantiate the checkpoint's model and load its weights strictly; returns it in eval mode."""
    try:
        model = create_model(ckpt.model, **ckpt.config)
    except CloudrmError:
        raise
    except (TypeError, ValueError) as exc:  # a config key or value the builder does not take
        raise CheckpointError(
            f"{ckpt.path or 'checkpoint'}: model {ckpt.model!r} cannot be built with the checkpoint's "
            f"config {ckpt.config} ({_one_line(exc)})"
        ) from exc
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
    try:
        model.load_state_dict(given, strict=True)
    except RuntimeError as exc:  # e.g. a tensor torch cannot copy into the parameter
        raise CheckpointError(f"{ckpt.path or 'checkpoint'}: weights do not load ({_one_line(exc)})") from exc
    return model.eval()
