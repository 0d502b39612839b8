"""How much a mixed-precision forward pass changes a model's accuracy on a real scene.

A model card may make bf16 its CUDA default (``cuda_precision``) only where that is faster *and*
costs less than 0.05 dB of PSNR. This measures the second half: the held-out evaluation that
trains the bundled demo checkpoint (synthetic clouds with the scene's own cloud spectrum over
the really-clear pixels of the bundled SEN12MS-CR scene, columns 192–256, 64 px crops, clouds
drawn from seed 8) is run through the pipeline's own forward call (:func:`model_forward`) at
each precision, and the PSNR on really-clear pixels is compared. With the demo checkpoint the
fp32 figure is the one recorded in the checkpoint when it was trained. On the CPU the pipeline
never autocasts, so every precision gives the fp32 result there. ``scripts/bench`` reports it
per model on CUDA.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..data.bands import S2_BANDS
from ..models import model_card
from ..train.loop import read_scene
from ..train.synthetic import SceneSampler, score
from .predictor import model_forward

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample"
SAMPLE_S2 = SAMPLE / "ROIs1868_summer_s2_cloudy_19_p30.tif"
SAMPLE_S1 = SAMPLE / "ROIs1868_summer_s1_19_p30.tif"
EVAL_COLUMNS = (192, 256)
CROP = 64
SEED = 8  # the demo training's seed + 1, as its held-out set uses
PLANET_AS_S2 = {"Blue": "B2", "Green": "B3", "Red": "B4", "NIR": "B8"}
"""align_cr reads 4-band PlanetScope; on the S2 sample its bands stand in as the nearest S2 bands."""


def sample_eval_set(model: str, optical: str | os.PathLike[str] = SAMPLE_S2,
                    sar: str | os.PathLike[str] = SAMPLE_S1) -> dict[str, torch.Tensor]:
    """The fixed held-out set for ``model``: cloudy (N, [T,] C, 64, 64) and sar in [0, 1], target,
    weight (1 = really clear), alpha (synthetic cloud opacity) and, for temporal models, days."""
    card = model_card(model)
    reference = model if all(b in S2_BANDS for b in card.optical_bands) else "glf_cr"
    opt, s1 = read_scene(Path(optical), Path(sar), reference)  # S2 scaling for a Planet model: see PLANET_AS_S2
    want = [PLANET_AS_S2.get(b, b) for b in card.optical_bands]
    bands = None if len(want) == len(opt) else tuple(S2_BANDS.index(b) for b in want)
    sampler = SceneSampler(opt, s1, EVAL_COLUMNS, bands=bands, dates=3 if card.temporal else 1)
    return sampler.eval_set(EVAL_COLUMNS, CROP, seed=SEED)


def precision_effect(net: torch.nn.Module, model: str, device: torch.device,
                     precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, Any]:
    """PSNR (dB, really-clear pixels) of ``net`` per precision and ``delta_db`` = last − first."""
    data = sample_eval_set(model)
    inputs = [data["cloudy"], data["sar"]] + ([data["days"]] if "days" in data else [])
    on_device = tuple(t.to(device) for t in inputs)
    was_training = net.training
    net.eval()
    psnr: dict[str, float] = {}
    with torch.inference_mode():
        for precision in precisions:
            pred = model_forward(net, device, precision)(on_device).float().cpu()
            psnr[precision] = round(score(pred, data)["psnr"], 4)
    net.train(was_training)
    return {"psnr_db": psnr, "delta_db": round(psnr[precisions[-1]] - psnr[precisions[0]], 4),
            "tiles": int(data["cloudy"].shape[0]), "crop": CROP}
