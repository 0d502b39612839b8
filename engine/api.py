"""The engine's only public surface: what the CLI, the Processing algorithms and the dialog call.

One :class:`RunRequest` describes a cloud-removal run (inputs, model, checkpoint, device,
tiling, batch, precision, keep-clear, filled-pixels mask); :func:`run` runs it. The CLI, the
Processing algorithms (and through them the dialog) all build that request, so the same
settings give the same pixels whichever front end is used.

Importing this module imports neither torch nor rasterio: lists of models and methods, their
defaults and the request itself are plain Python, so the QGIS plugin loads (and its dialog
shows) before the heavy packages are imported. They load when a run starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import choices
from .choices import (
    BASELINE_DEFAULTS,
    BASELINES,
    DEFAULT_FEATHER_PX,
    DEFAULT_MASK_BUFFER_M,
    DEFAULT_MASK_METHOD,
    MASK_METHODS,
    OUTPUT_SUFFIXES,
    PRECISIONS,
)
from .data.bands import S2_BANDS, S2_RGB
from .errors import Canceled, CheckpointError, CloudrmError, DependencyError, InputError
from .models import ModelCard, list_models, model_card
from .progress import NullProgress, Progress

if TYPE_CHECKING:
    from .inference.composite import KeepClearResult
    from .masks import MaskResult

__all__ = [
    "BASELINES",
    "DEFAULT_FEATHER_PX",
    "DEFAULT_MASK_BUFFER_M",
    "DEFAULT_MASK_METHOD",
    "MASK_METHODS",
    "OUTPUT_SUFFIXES",
    "PRECISIONS",
    "S2_BANDS",
    "S2_RGB",
    "Canceled",
    "CheckpointError",
    "CloudrmError",
    "DependencyError",
    "InputError",
    "MethodInfo",
    "ModelCard",
    "NullProgress",
    "Progress",
    "RunRequest",
    "RunResult",
    "build_config",
    "bundled_checkpoint",
    "checkpoint_info",
    "cloud_mask",
    "describe_models",
    "devices",
    "evaluate",
    "keep_clear",
    "method_info",
    "method_names",
    "model_card",
    "predict_scene",
    "predict_series",
    "run",
    "side_by_side",
    "train",
    "train_run",
]


# ---- what can be run -----------------------------------------------------------------------


@dataclass(frozen=True)
class MethodInfo:
    """One entry of a model/method list, as the plugin and the CLI show it."""

    name: str
    title: str
    temporal: bool
    baseline: bool
    """A weight-free method (least_cloudy, mosaicing): needs neither SAR nor a checkpoint."""
    bundled_weights: bool
    """True when a checkpoint ships with cloudrm (else the user must give one)."""
    optical_bands: tuple[str, ...]
    sar_bands: tuple[str, ...]
    output_bands: tuple[str, ...]
    rgb_bands: tuple[str, ...]
    tile_size: int
    overlap: int
    size_multiple: int
    summary: str

    @property
    def needs_checkpoint(self) -> bool:
        return not self.baseline and not self.bundled_weights

    @property
    def needs_sar(self) -> bool:
        return not self.baseline


def bundled_checkpoint(name: str) -> Path | None:
    """The checkpoint file that ships with model ``name``, or None (none ships, or it is missing)."""
    if name in BASELINES:
        return None
    card = model_card(name)
    if not card.default_checkpoint:
        return None
    path = choices.checkpoint_dir() / card.default_checkpoint
    return path if path.is_file() else None


def method_names(temporal: bool | None = None) -> list[str]:
    """Names a run accepts as ``model``: single-date models (``temporal=False``), temporal
    models then the weight-free baselines (``temporal=True``), or all of them (None)."""
    if temporal is None:
        return [*list_models(temporal=False), *list_models(temporal=True), *BASELINES]
    return [*list_models(temporal=True), *BASELINES] if temporal else list_models(temporal=False)


def method_info(name: str) -> MethodInfo:
    """What :func:`method_names` lists about ``name``; InputError for an unknown name."""
    if name in BASELINES:
        return MethodInfo(
            name=name,
            title={"least_cloudy": "least cloudy date per pixel", "mosaicing": "median of the clear dates"}[name],
            temporal=True, baseline=True, bundled_weights=False,
            optical_bands=tuple(S2_BANDS), sar_bands=(), output_bands=tuple(S2_BANDS), rgb_bands=tuple(S2_RGB),
            tile_size=BASELINE_DEFAULTS["tile_size"], overlap=BASELINE_DEFAULTS["overlap"], size_multiple=1,
            summary="Weight-free composite from the other dates of the series, by the rule-based cloud mask.",
        )
    try:
        card = model_card(name)
    except CloudrmError:
        raise InputError(f"unknown model or method {name!r}; known: {', '.join(method_names())}") from None
    return MethodInfo(
        name=name, title=card.title, temporal=card.temporal, baseline=False,
        bundled_weights=bundled_checkpoint(name) is not None,
        optical_bands=card.optical_bands, sar_bands=card.sar_bands,
        output_bands=card.output_bands or card.optical_bands, rgb_bands=card.rgb_bands,
        tile_size=int(card.defaults.get("tile_size", 256)), overlap=int(card.defaults.get("overlap", 32)),
        size_multiple=card.size_multiple, summary=card.summary,
    )


def describe_models() -> list[dict[str, Any]]:
    """One dict per registered network (``cloudrm models --json``); counting parameters needs torch."""
    from .models import count_parameters

    out = []
    for name in list_models():
        card = model_card(name)
        info = method_info(name)
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
                "bundled_weights": info.bundled_weights,
                "defaults": card.defaults,
                "summary": card.summary,
            }
        )
    return out


def checkpoint_info(path: str | os.PathLike[str] | None, model: str) -> dict[str, Any]:
    """What a checkpoint holds (imports torch: call it off the GUI thread).

    ``path`` None means the model's bundled checkpoint. Returns ``model``, ``path``,
    ``bundled``, ``optical_bands``, ``sar_bands``, ``trained_on``, ``summary``.

    Raises:
        CheckpointError: unreadable, malformed, or holding another model than ``model``.
    """
    from .io.checkpoint import load_checkpoint

    bundled = path is None or str(path).strip() == ""
    if bundled:
        found = bundled_checkpoint(model)
        if found is None:
            raise CheckpointError(f"model {model!r} has no bundled checkpoint: choose a checkpoint file")
        path = found
    ckpt = load_checkpoint(Path(path), model=model)  # type: ignore[arg-type]
    if ckpt.model != model:
        raise CheckpointError(f"{Path(path).name} holds model {ckpt.model!r}, not {model!r}")  # type: ignore[arg-type]
    return {
        "model": ckpt.model,
        "path": str(path),
        "bundled": bundled,
        "optical_bands": list(ckpt.bands.get("optical", [])),
        "sar_bands": list(ckpt.bands.get("sar", [])),
        "trained_on": ckpt.trained_on,
        "summary": ckpt.summary(),
    }


def devices() -> list[tuple[str, str]]:
    """``[(value, label)]``: auto, cpu and one ``cuda:N`` per GPU torch sees (imports torch)."""
    out = [("auto", "auto (CUDA if available, else CPU)"), ("cpu", "cpu")]
    try:
        import torch

        if torch.cuda.is_available():
            out += [
                (f"cuda:{i}", f"cuda:{i} – {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())
            ]
    except Exception:
        pass
    return out


# ---- one run -------------------------------------------------------------------------------


@dataclass
class RunRequest:
    """Everything a cloud-removal run needs. Plain data: build it anywhere, run it with :func:`run`.

    ``model`` is a single-date model (glf_cr, cafr, mmcanet, …, align_cr: one optical and one
    SAR raster), a temporal model (ca_mtcr: one optical and one SAR raster per date) or a
    weight-free baseline (least_cloudy, mosaicing: optical rasters only). ``None`` or 0 for
    ``tile_size``, ``overlap`` and ``batch_size`` means the default (the model card's tiling;
    an automatic batch size).
    """

    optical: list[str]
    """Optical GeoTIFF(s): DN = reflectance × 10000; for a series any order (sorted by date)."""
    output: str
    """Output GeoTIFF (.tif/.tiff): on the optical (series: the latest date's) grid, its dtype."""
    sar: list[str] = field(default_factory=list)
    """SAR GeoTIFF(s), σ0 in dB (VV, VH): one, or one per optical raster; none for baselines."""
    model: str = "glf_cr"
    checkpoint: str | None = None
    """Weights file; None = the model's bundled checkpoint."""
    device: str = "auto"
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    precision: str = "auto"
    keep_clear: bool = True
    """Keep the input wherever it is clear (outside the grown cloud/shadow mask), bit for bit."""
    filled_mask: str | None = None
    """Optional uint8 GeoTIFF: 1 where the output took the model's value, 0 where it kept the input."""
    mask_method: str = DEFAULT_MASK_METHOD
    mask_buffer_m: float = DEFAULT_MASK_BUFFER_M
    mask: str | None = None
    """A mask raster to use instead of computing one (non-zero = replace with the model's value)."""
    feather_px: int = DEFAULT_FEATHER_PX
    dates: list[str] | None = None
    """Series only: ISO dates, one per optical raster in the given order (default: metadata, names)."""
    reducer: str = "median"
    """mosaicing: ``median`` or ``mean``."""
    per: str = "pixel"
    """least_cloudy: ``pixel`` or ``tile``."""
    optical_names: list[str | None] | None = None
    """Labels of the optical rasters for messages (QGIS layer names)."""
    sar_names: list[str | None] | None = None

    @property
    def temporal(self) -> bool:
        return self.model in method_names(temporal=True)

    def normalised(self) -> RunRequest:
        """A copy with paths as strings, 0 turned into None and the choices checked (no file I/O).

        Raises:
            InputError: an unknown model, precision, mask method, reducer, or a wrong count of inputs.
        """
        r = dataclasses.replace(
            self,
            optical=[str(p) for p in self.optical],
            sar=[str(p) for p in (self.sar or [])],
            output=str(self.output),
            checkpoint=str(self.checkpoint) if self.checkpoint else None,
            device=(self.device or "auto").strip() or "auto",
            tile_size=int(self.tile_size) if self.tile_size else None,
            overlap=int(self.overlap) if self.overlap else None,
            batch_size=int(self.batch_size) if self.batch_size else None,
            precision=(self.precision or "auto").lower(),
            filled_mask=str(self.filled_mask) if self.filled_mask else None,
            mask=str(self.mask) if self.mask else None,
            dates=[str(d) for d in self.dates] if self.dates else None,
        )
        if r.model not in method_names():
            raise InputError(f"unknown model or method {r.model!r}; known: {', '.join(method_names())}")
        if r.precision not in PRECISIONS:
            raise InputError(f"precision {r.precision!r} not known: use one of {', '.join(PRECISIONS)}")
        if r.mask_method not in MASK_METHODS:
            raise InputError(f"mask method {r.mask_method!r} not known: use one of {', '.join(MASK_METHODS)}")
        if r.mask_buffer_m < 0:
            raise InputError(f"mask buffer must be ≥ 0 m, got {r.mask_buffer_m}")
        if r.feather_px < 0:
            raise InputError(f"feather must be ≥ 0 px, got {r.feather_px}")
        for what, value in (("tile size", r.tile_size), ("overlap", r.overlap), ("batch size", r.batch_size)):
            if value is not None and value < 0:
                raise InputError(f"{what} must be ≥ 0 (0 = default), got {value}")
        if r.reducer not in ("median", "mean"):
            raise InputError(f"reducer must be 'median' or 'mean', got {r.reducer!r}")
        if r.per not in ("pixel", "tile"):
            raise InputError(f"per must be 'pixel' or 'tile', got {r.per!r}")
        if not r.optical:
            raise InputError("no optical raster given")
        if not r.output:
            raise InputError("no output file given")
        if not r.temporal and (len(r.optical) != 1 or len(r.sar) != 1):
            raise InputError(
                f"model {r.model} takes one optical and one SAR raster; got {len(r.optical)} optical "
                f"and {len(r.sar)} SAR"
            )
        return r

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    """What :func:`run` did."""

    output: Path
    model: str
    checkpoint: Path | None
    device: str
    tiles: int
    tile_size: int
    overlap: int
    batch_size: int
    precision: str
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Where the time went: ``setup`` (checks, statistics passes, model), ``loop`` (the tiles),
    within it ``read_wait`` / ``write_wait`` (the model's thread waiting for the readers / the
    writer), ``forward`` (model calls; on CUDA their launch), ``device_wait`` and ``blend_write``
    (the writer waiting for results from the device / working), then ``finish`` (closing and
    checking the file)."""
    skipped_tiles: int = 0
    """Tiles not sent to the model because keep-clear keeps every one of their pixels."""
    filled_mask: Path | None = None
    cloudy_fraction: float | None = None
    """Keep-clear: share of valid pixels inside the grown cloud/shadow mask."""
    filled_fraction: float | None = None
    """Keep-clear: share of valid pixels whose output differs from the input."""
    target: Path | None = None
    """The optical raster whose grid the output is on (series: the latest date)."""
    dates: list[str | None] = field(default_factory=list)
    date_sources: list[str] = field(default_factory=list)
    replaced_fraction: float | None = None
    """Baselines: share of the target's pixels that were cloudy and filled from other dates."""
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def run(request: RunRequest, progress: Progress | None = None) -> RunResult:
    """Run ``request``: single-date, temporal model or baseline, with keep-clear when asked.

    Raises:
        InputError, CheckpointError, DependencyError: with messages naming the rasters or files;
            nothing is written.
        Canceled: the caller canceled; no output (and no temporary file) is left.
    """
    req = request.normalised()
    with _quiet_rasterio():
        if req.temporal:
            from .inference.temporal import run_series

            return run_series(req, progress or NullProgress())
        from .inference.predictor import run_scene

        return run_scene(req, progress or NullProgress())


@contextlib.contextmanager
def _quiet_rasterio() -> Iterator[None]:
    """Rasters without georeferencing are fine for the engine (they must share one pixel grid);
    rasterio's NotGeoreferencedWarning would only print Python internals on every open."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def predict_scene(
    optical: str | os.PathLike[str],
    sar: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: str = "glf_cr",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = 1,
    amp: bool = False,
    progress: Progress | None = None,
    optical_name: str | None = None,
    sar_name: str | None = None,
    **options: Any,
) -> RunResult:
    """The model's prediction for every pixel of one scene (keep-clear off unless ``keep_clear=True``).

    A shortcut for :func:`run` with one optical and one SAR raster; ``amp`` = precision ``bf16``.
    ``options`` are further :class:`RunRequest` fields.
    """
    options.setdefault("keep_clear", False)
    req = RunRequest(
        optical=[str(optical)], sar=[str(sar)], output=str(out), model=model,
        checkpoint=str(checkpoint) if checkpoint else None, device=device, tile_size=tile_size,
        overlap=overlap, batch_size=batch_size, precision=options.pop("precision", "bf16" if amp else "auto"),
        optical_names=[optical_name], sar_names=[sar_name], **options,
    )
    return run(req, progress)


def predict_series(
    optical: Sequence[str | os.PathLike[str]],
    sar: Sequence[str | os.PathLike[str]] | None,
    out: str | os.PathLike[str],
    method: str = "ca_mtcr",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    overlap: int | None = None,
    dates: Sequence[str] | None = None,
    progress: Progress | None = None,
    reducer: str = "median",
    per: str = "pixel",
    optical_names: Sequence[str | None] | None = None,
    sar_names: Sequence[str | None] | None = None,
    **options: Any,
) -> RunResult:
    """Cloud-free image of the latest date of a series (keep-clear off unless ``keep_clear=True``).

    A shortcut for :func:`run` with a temporal model or a baseline as ``method``.
    """
    if method not in method_names(temporal=True):
        raise InputError(f"method {method!r} not known: use one of {', '.join(method_names(temporal=True))}")
    options.setdefault("keep_clear", False)
    req = RunRequest(
        optical=[str(p) for p in optical], sar=[str(p) for p in (sar or [])], output=str(out), model=method,
        checkpoint=str(checkpoint) if checkpoint else None, device=device, tile_size=tile_size, overlap=overlap,
        dates=list(dates) if dates else None, reducer=reducer, per=per,
        optical_names=list(optical_names) if optical_names else None,
        sar_names=list(sar_names) if sar_names else None, **options,
    )
    return run(req, progress)


# ---- other work ----------------------------------------------------------------------------


def cloud_mask(
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    method: str = DEFAULT_MASK_METHOD,
    progress: Progress | None = None,
    name: str | None = None,
    resolution: float | None = None,
    shadows: bool = True,
) -> MaskResult:
    """Cloud and shadow mask of a Sentinel-2 L1C scene (uint8: 0 clear, 1 cloud, 2 shadow, 255 nodata)."""
    from .masks import cloud_mask_scene

    with _quiet_rasterio():
        return cloud_mask_scene(input, out, method=method, progress=progress, name=name, resolution=resolution,
                                shadows=shadows)


def keep_clear(*args: Any, **kwargs: Any) -> KeepClearResult:
    """Composite an existing prediction into its input (see :func:`engine.inference.composite.keep_clear`)."""
    from .inference.composite import keep_clear as _keep_clear

    return _keep_clear(*args, **kwargs)


def side_by_side(*args: Any, **kwargs: Any) -> Path:
    """True-colour PNG of two rasters side by side (see :func:`engine.quicklook.side_by_side`)."""
    from .quicklook import side_by_side as _side_by_side

    return _side_by_side(*args, **kwargs)


def build_config(*args: Any, **kwargs: Any) -> Any:
    """The effective training configuration of a dataset run: the model's paper settings, a
    YAML file, then flags (see :func:`engine.train.run_config.build_config`)."""
    from .train.run_config import build_config as _build_config

    return _build_config(*args, **kwargs)


def train_run(*args: Any, **kwargs: Any) -> Any:
    """Train on a dataset (SEN12MS-CR, SEN12MS-CR-TS, Planet-CR), one process or under torchrun;
    writes the run folder (see :func:`engine.train.runner.train_run`)."""
    from .train.runner import train_run as _train_run

    return _train_run(*args, **kwargs)


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """Score a checkpoint on a dataset split the way the papers do (see :func:`engine.evaluate.evaluate`)."""
    from .evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def train(config_path: str, **overrides: Any) -> Any:
    """Train from a step-based demo YAML config (see ``engine/configs/train``); returns (checkpoint, record)."""
    from .train.config import TrainConfig
    from .train.loop import train as _train

    progress = overrides.pop("progress", None)
    return _train(TrainConfig.from_yaml(config_path, **overrides), progress)
