"""cloudrm QGIS plugin. QGIS calls :func:`classFactory`; nothing heavy is imported here."""


def classFactory(iface):  # noqa: N802 - QGIS plugin entry point
    from .deps import extend_sys_path

    extend_sys_path()
    from .plugin import CloudrmPlugin

    return CloudrmPlugin(iface)
