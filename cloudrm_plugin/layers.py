"""Layer helpers: true-colour styling, before/after styling alike, adding or replacing result layers.

A before/after comparison is only honest when both layers use the *same* stretch: the
dialog computes it once from the optical input's clear pixels (:func:`clear_pixel_ranges`,
in the worker thread) and gives it to the result and, when asked, to the input
(:func:`style_true_colour` with ``ranges``). Pixels that keep-clear left bit-identical then
render identically, and only what the model changed looks different.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qgis.core import (
    QgsContrastEnhancement,
    QgsDataProvider,
    QgsMapLayer,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterLayer,
)

Ranges = list[tuple[float, float]]
"""(min, max) per displayed channel: red, green, blue."""

CUT = (0.02, 0.98)
"""Cumulative cut of the true-colour stretch: 2–98 % of the pixels it is computed on."""

MAX_STAT_PIXELS = 1_000_000
"""Statistics are computed on at most this many pixels (a nearest-neighbour overview of the
raster), so styling a 10980² scene reads a few MB, not gigabytes."""


def style_true_colour(layer: QgsRasterLayer, rgb: Sequence[int], ranges: Ranges | None = None) -> None:
    """RGB renderer on 1-based bands ``rgb``, stretched min–max to ``ranges`` (one (lo, hi) per
    channel); without ``ranges``, a 2–98 % cumulative cut of the layer's own values per band."""
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *rgb)
    setters = (
        renderer.setRedContrastEnhancement,
        renderer.setGreenContrastEnhancement,
        renderer.setBlueContrastEnhancement,
    )
    for i, (band, setter) in enumerate(zip(rgb, setters, strict=True)):
        ce = QgsContrastEnhancement(provider.dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        if ranges is not None:
            lo, hi = ranges[i]
        else:
            lo, hi = provider.cumulativeCut(band, CUT[0], CUT[1], layer.extent(), 250000)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        setter(ce)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def renderer_ranges(layer: QgsRasterLayer) -> Ranges | None:
    """(min, max) per channel of a layer's multiband-colour renderer; None for other renderers."""
    r = layer.renderer()
    if not isinstance(r, QgsMultiBandColorRenderer):
        return None
    out = []
    for ce in (r.redContrastEnhancement(), r.greenContrastEnhancement(), r.blueContrastEnhancement()):
        if ce is None:
            return None
        out.append((ce.minimumValue(), ce.maximumValue()))
    return out


def clear_pixel_ranges(
    image: str | os.PathLike[str],
    rgb: Sequence[int],
    mask: str | os.PathLike[str] | None = None,
    cut: tuple[float, float] = CUT,
    max_pixels: int = MAX_STAT_PIXELS,
) -> Ranges:
    """The true-colour stretch of ``image``: per band of ``rgb`` (1-based), the ``cut`` percentiles
    of its clear, valid pixels.

    Clear = 0 in ``mask`` (the filled-pixels mask keep-clear writes: 0 where the input was kept
    because it is outside the grown cloud/shadow mask); without a mask every valid pixel counts.
    Valid = not the band's nodata value. Large rasters are read as a nearest-neighbour overview
    of at most ``max_pixels`` pixels. Uses GDAL only (no torch): call it in a worker thread.
    """
    import numpy as np
    from osgeo import gdal

    ds = gdal.Open(str(image))
    if ds is None:
        raise ValueError(f"GDAL cannot open {image}")
    w, h = ds.RasterXSize, ds.RasterYSize
    step = max(1.0, (w * h / max_pixels) ** 0.5)
    bw, bh = max(1, int(w / step)), max(1, int(h / step))
    keep = np.ones((bh, bw), dtype=bool)
    if mask is not None:
        mds = gdal.Open(str(mask))
        if mds is None:
            raise ValueError(f"GDAL cannot open {mask}")
        m = mds.GetRasterBand(1).ReadAsArray(0, 0, mds.RasterXSize, mds.RasterYSize, buf_xsize=bw, buf_ysize=bh)
        keep &= m == 0
    bands = []
    for b in rgb:
        band = ds.GetRasterBand(int(b))
        a = band.ReadAsArray(0, 0, w, h, buf_xsize=bw, buf_ysize=bh).astype("float64")
        nodata = band.GetNoDataValue()
        if nodata is not None:
            keep &= a != nodata
        keep &= np.isfinite(a)
        bands.append(a)
    if not keep.any():  # e.g. a fully cloudy scene: fall back to every valid pixel
        return clear_pixel_ranges(image, rgb, None, cut, max_pixels) if mask is not None else [(0.0, 1.0)] * len(rgb)
    out = []
    for a in bands:
        lo, hi = np.percentile(a[keep], [100 * cut[0], 100 * cut[1]])
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return out


class _TrueColour(QgsProcessingLayerPostProcessorInterface):
    def __init__(self, rgb: Sequence[int]) -> None:
        super().__init__()
        self.rgb = list(rgb)

    def postProcessLayer(  # noqa: N802
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer) and layer.bandCount() >= max(self.rgb):
            style_true_colour(layer, self.rgb)


# Processing keeps only a raw pointer to post-processors: hold a Python reference per output.
_KEEP: dict[str, _TrueColour] = {}


def true_colour_post_processor(output: str, bands: Sequence[str], rgb_names: Sequence[str]) -> _TrueColour:
    """A Processing layer post-processor that styles ``output`` in true colour (bands by name)."""
    _KEEP[output] = _TrueColour(rgb_band_numbers(bands, rgb_names))
    return _KEEP[output]


# --- GUI path (dialog / QgsTask) ------------------------------------------------------------

FILLED_COLOUR = (255, 0, 200, 150)
"""RGBA of 'filled by the model' pixels in the filled-pixels mask layer (semi-transparent magenta)."""


def rgb_band_numbers(bands: Sequence[str], rgb_names: Sequence[str]) -> list[int]:
    """1-based positions of ``rgb_names`` (e.g. B4, B3, B2) in ``bands``; 1, 2, 3 if any is missing."""
    bands = list(bands)
    return [bands.index(b) + 1 for b in rgb_names] if rgb_names and all(b in bands for b in rgb_names) else [1, 2, 3]


def style_filled_mask(layer: QgsRasterLayer, colour: Sequence[int] = FILLED_COLOUR) -> None:
    """Paletted renderer for a 0/1 mask: 0 fully transparent, 1 in ``colour`` (RGBA)."""
    from qgis.core import QgsPalettedRasterRenderer
    from qgis.PyQt.QtCore import QCoreApplication
    from qgis.PyQt.QtGui import QColor

    tr = QCoreApplication.translate
    classes = [
        QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), tr("cloudrm", "input kept")),
        QgsPalettedRasterRenderer.Class(1, QColor(*colour), tr("cloudrm", "filled by the model")),
    ]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two paths name the same file (after resolving links and relative parts)."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def layers_with_file(project: QgsProject, path: str | os.PathLike[str]) -> list[QgsRasterLayer]:
    """The project's raster layers that show the file ``path``."""
    return [
        lyr for lyr in project.mapLayers().values()
        if isinstance(lyr, QgsRasterLayer) and lyr.providerType() == "gdal" and same_file(lyr.source(), path)
    ]


def unique_layer_name(project: QgsProject, base: str, exclude: QgsMapLayer | None = None) -> str:
    """``base``, or ``base (2)``, ``base (3)``, … : the first name no other layer of ``project`` has."""
    taken = {lyr.name() for lyr in project.mapLayers().values() if lyr is not exclude}
    if base not in taken:
        return base
    n = 2
    while f"{base} ({n})" in taken:
        n += 1
    return f"{base} ({n})"


def add_or_replace(project: QgsProject, path: str, name: str) -> tuple[QgsRasterLayer, bool]:
    """The raster layer for ``path``: a layer already showing that file is re-pointed at the new
    file in place (same position in the layer tree, fresh GDAL handle, renamed), else a new layer
    with a name unique in the project (not yet added: the caller adds it). Returns (layer, replaced).

    Raises ValueError when QGIS cannot load the file.
    """
    for layer in layers_with_file(project, path):
        # setDataSource opens the file anew: the old handle still sees the replaced file's data
        layer.setDataSource(path, unique_layer_name(project, name, exclude=layer), "gdal",
                            QgsDataProvider.ProviderOptions())
        if not layer.isValid():
            raise ValueError(f"QGIS cannot load {path}")
        return layer, True
    layer = QgsRasterLayer(path, unique_layer_name(project, name))
    if not layer.isValid():
        raise ValueError(f"QGIS cannot load {path}")
    return layer, False


def load_result_layers(
    output: str,
    name: str,
    rgb: Sequence[int],
    mask: str | None = None,
    project: QgsProject | None = None,
    ranges: Ranges | None = None,
    above: QgsMapLayer | None = None,
) -> list[QgsRasterLayer]:
    """Show the cloud-free GeoTIFF (true colour, stretched to ``ranges`` when given) and, if
    given, its filled-pixels mask above it. Layers already showing these files are updated in
    place; new ones get unique names and go right above ``above`` (the input, so toggling the
    result compares before and after) or at the top of the layer tree. Returns [result, mask?].

    Raises ValueError if a file does not load.
    """
    project = project or QgsProject.instance()
    layer, replaced = add_or_replace(project, output, name)
    if layer.bandCount() >= max(rgb):
        style_true_colour(layer, rgb, ranges)
    layers = [layer]
    new = [] if replaced else [layer]
    if mask:
        mask_layer, mask_replaced = add_or_replace(project, mask, f"{layer.name()}: filled pixels")
        style_filled_mask(mask_layer)
        layers.append(mask_layer)
        if not mask_replaced:
            new.insert(0, mask_layer)
    if new:
        _insert_above(project, new, above)  # top-down: the mask above the result
    return layers


def _insert_above(project: QgsProject, layers: Sequence[QgsMapLayer], above: QgsMapLayer | None) -> None:
    """Add ``layers`` (top-down) to ``project``, in the layer tree directly above ``above`` when it
    is there, else at the top. Not QGIS's insertion point (above the selected layer, which may
    be under the input and hide the result)."""
    project.addMapLayers(list(layers), False)
    root = project.layerTreeRoot()
    node = root.findLayer(above.id()) if above is not None else None
    group = node.parent() if node is not None else root
    index = group.children().index(node) if node is not None else 0
    for layer in reversed(list(layers)):  # each insert at the same index pushes the previous one down
        group.insertLayer(index, layer)
