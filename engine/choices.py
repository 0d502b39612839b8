"""Facts every front end reads: method lists and run defaults. Imports neither torch nor rasterio.

Each fact is written here once; the CLI, the Processing algorithms and the dialog read it
through :mod:`engine.api`, so a new method or another default shows up everywhere at once.
"""

from __future__ import annotations

import os
from pathlib import Path

BASELINES: tuple[str, ...] = ("least_cloudy", "mosaicing")
"""Weight-free multi-temporal methods (no SAR, no checkpoint): see :mod:`engine.baselines`."""

BASELINE_DEFAULTS: dict[str, int] = {"tile_size": 256, "overlap": 16}
"""Baseline tiling: T × 13 × 256² float64 per tile stays small; 16 px of overlap keeps the
rule-based cloud mask's 7 px context."""

MASK_METHODS: tuple[str, ...] = ("s2cloudless", "cafr_rule")
"""Cloud-mask methods of ``cloudrm:cloudmask`` and of keep-clear. Both also mark shadows.

- ``s2cloudless``: Sentinel Hub's LightGBM cloud classifier (PyPI ``s2cloudless``), plus the
  DSen2-CR cloud-shadow test of the rule-based detector.
- ``cafr_rule``: the DSen2-CR rule-based cloud score (the detector CAFR uses), plus the same
  shadow test.
"""

DEFAULT_MASK_METHOD = "s2cloudless"

DEFAULT_MASK_BUFFER_M = 60.0
"""Keep-clear grows clouds and shadows by this margin (metres) before deciding what is clear:
the bright haze rim around a cloud and the soft edge of its shadow are not clear pixels."""

DEFAULT_FEATHER_PX = 8
"""Keep-clear blends input and prediction over this many pixels inside the grown mask."""

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
"""``auto``: float32 on the CPU; on CUDA the model card's measured choice (float32 unless a
faster mixed precision was shown not to change the result)."""

OUTPUT_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
"""Every raster the engine writes is a GeoTIFF."""

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
"""``resources/`` beside ``engine/``: the repository root, or the installed plugin folder."""


def checkpoint_dir() -> Path:
    """Folder of the bundled checkpoints (``$CLOUDRM_CHECKPOINT_DIR`` overrides it)."""
    return Path(os.environ.get("CLOUDRM_CHECKPOINT_DIR") or RESOURCES / "checkpoints")
