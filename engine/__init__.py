"""cloudrm engine: SAR-optical cloud removal in pure Python/PyTorch. Never imports qgis.

Importable as ``cloudrm_engine`` (pip/editable install, CLI) and as ``cloudrm_plugin.engine``
(inside the installed QGIS plugin); therefore every internal import is relative. Importing
the package is cheap: torch and rasterio load only when a function needs them.
"""

__version__ = "0.1.0"
