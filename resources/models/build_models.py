#!/usr/bin/env python3
"""Regenerate the graphical-modeler chains in this folder (run with QGIS's Python, plugin importable).

    QT_QPA_PLATFORM=offscreen .venv/bin/python resources/models/build_models.py

cloudmask_then_remove_clouds.model3: cloudrm:cloudmask (clouds and shadows) on the optical
image, then cloudrm:removeclouds (GLF-CR, bundled demo checkpoint unless one is given) on the
same image with the SAR image, keeping every pixel outside that mask (its MASK input is the
first step's output, so the mask can be inspected, or edited and fed in by hand); both results
are model outputs. Open it in the Graphical Modeler
(Processing ▸ Graphical Modeler ▸ Open Model) or run it with
``qgis_process run resources/models/cloudmask_then_remove_clouds.model3 -- optical=… sar=…``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))


def build(path: Path) -> Path:
    from qgis.core import (
        QgsApplication,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildDependency,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterEnum,
        QgsProcessingParameterFile,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.core import (
        QgsProcessingModelChildParameterSource as Source,
    )
    from qgis.PyQt.QtCore import QPointF

    m = QgsProcessingModelAlgorithm("Cloud mask, then remove clouds", "cloudrm", "cloudmask_then_remove_clouds")
    params = [
        QgsProcessingParameterRasterLayer("optical", "Cloudy Sentinel-2 L1C image (13 bands)"),
        QgsProcessingParameterRasterLayer("sar", "Sentinel-1 SAR image (VV, VH in dB)"),
        QgsProcessingParameterEnum("mask_method", "Cloud mask method", options=["s2cloudless", "cafr_rule"],
                                   defaultValue="s2cloudless", usesStaticStrings=True),
        QgsProcessingParameterFile("checkpoint", "GLF-CR checkpoint (empty = bundled demo weights)",
                                   fileFilter="PyTorch checkpoint (*.pt *.pth)", optional=True),
    ]
    for i, p in enumerate(params):
        mp = QgsProcessingModelParameter(p.name())
        mp.setPosition(QPointF(120, 80 + 90 * i))
        m.addModelParameter(p, mp)

    def child(alg_id: str, child_id: str, description: str, sources: dict, output: tuple[str, str], y: float):
        c = QgsProcessingModelChildAlgorithm(alg_id)
        c.setChildId(child_id)
        c.setDescription(description)
        c.setPosition(QPointF(420, y))
        for key, src in sources.items():
            c.addParameterSources(key, [src])
        # every other input at the algorithm's own default, as the modeler dialog would store it
        alg = QgsApplication.processingRegistry().algorithmById(alg_id)
        for pd in alg.parameterDefinitions():
            if pd.name() not in sources and not pd.isDestination() and pd.defaultValue() is not None:
                c.addParameterSources(pd.name(), [Source.fromStaticValue(pd.defaultValue())])
        name, label = output
        out = QgsProcessingModelOutput(name, label)
        out.setChildId(child_id)
        out.setChildOutputName("OUTPUT")
        out.setMandatory(True)  # always written (a temporary file when not given)
        out.setPosition(QPointF(650, y))
        c.setModelOutputs({name: out})
        return c

    mask = child("cloudrm:cloudmask", "cloudmask", "Cloud mask (inspection)", {
        "INPUT": Source.fromModelParameter("optical"),
        "METHOD": Source.fromModelParameter("mask_method"),
    }, ("mask", "Cloud mask"), 120)
    remove = child("cloudrm:removeclouds", "removeclouds", "Remove clouds (GLF-CR)", {
        "OPTICAL": Source.fromModelParameter("optical"),
        "SAR": Source.fromModelParameter("sar"),
        "MODEL": Source.fromStaticValue("glf_cr"),
        "CHECKPOINT": Source.fromModelParameter("checkpoint"),
        "DEVICE": Source.fromStaticValue("auto"),
        "KEEP_CLEAR": Source.fromStaticValue(True),
        "MASK": Source.fromChildOutput("cloudmask", "OUTPUT"),
    }, ("cloudfree", "Cloud-free image"), 300)
    remove.setDependencies([QgsProcessingModelChildDependency("cloudmask")])
    m.addChildAlgorithm(mask)
    m.addChildAlgorithm(remove)
    m.setHelpContent({
        "ALG_DESC": "Runs cloudrm's cloud and shadow mask on the optical image, then removes the clouds with "
                    "GLF-CR and the SAR image, keeping the input wherever that mask is clear (grown by the "
                    "mask buffer). Outputs both rasters on the optical grid.",
        "ALG_CREATOR": "cloudrm",
    })
    if not m.toFile(str(path)):
        raise RuntimeError(f"could not write {path}")
    return path


def main() -> None:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from cloudrm_plugin.plugin import CloudrmPlugin

    plugin = CloudrmPlugin(None)
    plugin.initProcessing()
    print(build(HERE / "cloudmask_then_remove_clouds.model3"))
    plugin.unload()


if __name__ == "__main__":
    main()
