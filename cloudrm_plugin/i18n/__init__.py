"""Translations: ``cloudrm_<locale>.qm`` files in this folder, loaded for QGIS's user-interface locale.

``cloudrm.ts`` is the skeleton with every translatable string of the plugin (regenerate it with
``python scripts/plugin.py ts``). A translator copies it to ``cloudrm_<lang>.ts`` (e.g.
``cloudrm_de.ts``), translates it with Qt Linguist, and ``scripts/plugin.py build``/``zip``
compile it into ``cloudrm_<lang>.qm`` (with Qt's ``lrelease``). Without a ``.qm`` for the
locale nothing is loaded and the English source strings are shown.
"""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtCore import QCoreApplication, QTranslator

I18N_DIR = Path(__file__).resolve().parent


def ui_locale() -> str:
    """QGIS's user-interface locale, e.g. ``de`` or ``pt_BR`` (the user's override, else the system's)."""
    from qgis.core import QgsApplication

    return QgsApplication.locale() or "en"


def install_translator(locale: str | None = None, folder: Path = I18N_DIR) -> QTranslator | None:
    """Load and install ``cloudrm_<locale>.qm`` (or ``cloudrm_<language>.qm``) if it exists.

    Returns the installed translator (keep it; pass it to :func:`remove_translator` on unload),
    or None when there is no translation for the locale.
    """
    locale = locale or ui_locale()
    for name in dict.fromkeys((f"cloudrm_{locale}", f"cloudrm_{locale.split('_')[0]}")):
        qm = folder / f"{name}.qm"
        if qm.is_file():
            translator = QTranslator()
            if translator.load(str(qm)):
                QCoreApplication.installTranslator(translator)
                return translator
    return None


def remove_translator(translator: QTranslator | None) -> None:
    if translator is not None:
        QCoreApplication.removeTranslator(translator)
