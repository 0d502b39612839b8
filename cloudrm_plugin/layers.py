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
