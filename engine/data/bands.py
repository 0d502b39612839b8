"""Band names and lookups for the sensors the engine knows."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError

S2_BANDS: tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
)  # SEN12MS-CR file order (docs/data.md, 'Band order')
S2_RGB: tuple[str, ...] = ("B4", "B3", "B2")
S1_BANDS: tuple[str, ...] = ("VV", "VH")


def band_indices(bands: Sequence[str], wanted: Sequence[str], what: str = "raster") -> list[int]:
    """0-based positions of ``wanted`` in ``bands``; error names the missing ones."""
    missing = [b for b in wanted if b not in bands]
    if missing:
        raise InputError(f"{what} has no band(s) {', '.join(missing)} (bands: {', '.join(bands)})")
    return [list(bands).index(b) for b in wanted]
