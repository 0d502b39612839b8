"""Layer helpers: true-colour styling of results."""

from __future__ import annotations

from collections.abc import Sequence

from qgis.core import (
    QgsContrastEnhancement,
    QgsMapLayer,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
)


def style_true_colour(layer: QgsRasterLayer, rgb: Sequence[int]) -> None:
    """RGB renderer on 1-based bands ``rgb`` with a 2–98 % cumulative-cut stretch per band."""
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *rgb)
    setters = (
        renderer.setRedContrastEnhancement,
        renderer.setGreenContrastEnhancement,
        renderer.setBlueContrastEnhancement,
    )
    for band, setter in zip(rgb, setters, strict=True):
        ce = QgsContrastEnhancement(provider.dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        lo, hi = provider.cumulativeCut(band, 0.02, 0.98, layer.extent(), 250000)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        setter(ce)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


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
    rgb = [list(bands).index(b) + 1 for b in rgb_names] if all(b in bands for b in rgb_names) else [1, 2, 3]
    _KEEP[output] = _TrueColour(rgb)
    return _KEEP[output]


# --- GUI path (dialog / QgsTask): additions ---------------------------------------------

FILLED_COLOUR = (255, 0, 200, 150)
"""RGBA of 'filled by the model' pixels in the filled-pixels mask layer (semi-transparent magenta)."""


def rgb_band_numbers(bands: Sequence[str], rgb_names: Sequence[str]) -> list[int]:
    """1-based positions of ``rgb_names`` (e.g. B4, B3, B2) in ``bands``; 1, 2, 3 if any is missing."""
    bands = list(bands)
    return [bands.index(b) + 1 for b in rgb_names] if rgb_names and all(b in bands for b in rgb_names) else [1, 2, 3]


def style_filled_mask(layer: QgsRasterLayer, colour: Sequence[int] = FILLED_COLOUR) -> None:
    """Paletted renderer for a 0/1 mask: 0 fully transparent, 1 in ``colour`` (RGBA)."""
    from qgis.core import QgsPalettedRasterRenderer
    from qgis.PyQt.QtGui import QColor

    classes = [
        QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "input kept"),
        QgsPalettedRasterRenderer.Class(1, QColor(*colour), "filled by the model"),
    ]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()


def load_result_layers(
    output: str, name: str, rgb: Sequence[int], mask: str | None = None, project: object | None = None
) -> list[QgsRasterLayer]:
    """Add the cloud-free GeoTIFF (true colour) and, if given, its filled-pixels mask above it.

    Returns the layers added (result first); raises ValueError if a file does not load.
    """
    from qgis.core import QgsProject

    project = project or QgsProject.instance()
    layer = QgsRasterLayer(output, name)
    if not layer.isValid():
        raise ValueError(f"QGIS cannot load the result {output}")
    if layer.bandCount() >= max(rgb):
        style_true_colour(layer, rgb)
    added = [layer]
    if mask:
        mask_layer = QgsRasterLayer(mask, f"{name}: filled pixels")
        if not mask_layer.isValid():
            raise ValueError(f"QGIS cannot load the filled-pixels mask {mask}")
        style_filled_mask(mask_layer)
        added.append(mask_layer)
    project.addMapLayers(added[::-1])  # the layer tree lists a batch top-down: mask above the result
    return added
