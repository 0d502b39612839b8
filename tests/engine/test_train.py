"""Training pipeline: every loss, the Planet-CR data path, multi-stage models, RGB models."""

from __future__ import annotations

import pytest
import torch

from cloudrm_engine.errors import InputError
from cloudrm_engine.io.checkpoint import build_model, load_checkpoint
from cloudrm_engine.train.config import TrainConfig
from cloudrm_engine.train.loop import train
from cloudrm_engine.train.objectives import objective, staged

from ..conftest import S1_SAMPLE, S2_SAMPLE, RecordingProgress
from .test_planet_cr import _write_sample

SYNTH = {
    "kind": "synthetic_clouds_on_scene", "optical": str(S2_SAMPLE), "sar": str(S1_SAMPLE),
    "train_columns": [0, 192], "eval_columns": [192, 256],
}


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(data=SYNTH, crop=32, batch_size=1, steps=2, log_every=1, threads=1, half=False,
                out=str(tmp_path / "m.pt"), trained_on="test run")
    return TrainConfig(**{**base, **kw})


def test_objectives_ignore_untrusted_pixels_and_sum_stages():
    t = torch.rand(2, 3, 16, 16)
    p = t.clone()
    p[:, :, :8] += 0.5  # wrong only where the target is not trustworthy
    b = {"target": t, "weight": torch.ones(2, 1, 16, 16), "mask": torch.zeros(2, 1, 16, 16)}
    b["weight"][:, :, :8] = 0
    assert objective("l1")(p, b).item() == 0.0
    assert objective("l1_ssim")(p, b).item() == pytest.approx(0.0, abs=1e-6)
    b["weight"][:] = 1
    l1 = objective("l1")(p, b).item()
    assert l1 == pytest.approx(0.25, abs=1e-6)  # half the pixels off by 0.5
    assert staged(objective("l1"), [1.0, 2.0])([p, p], b).item() == pytest.approx(3 * l1, rel=1e-6)
    with pytest.raises(InputError, match="unknown loss 'l2'"):
        objective("l2")


def test_config_checks_loss_and_data(tmp_path):
    with pytest.raises(InputError, match="unknown loss 'huber'"):
        _cfg(tmp_path, loss="huber")
    with pytest.raises(InputError, match=r"data\.root is missing"):
        _cfg(tmp_path, data={"kind": "planet_cr", "train": "train", "eval": "test"})


def test_glf_cr_on_synthetic_clouds_writes_a_loadable_checkpoint(tmp_path):
    prog = RecordingProgress()
    path, record = train(_cfg(tmp_path), prog)
    ckpt = load_checkpoint(path)
    assert ckpt.model == "glf_cr" and ckpt.training["loss"] == "l1" and ckpt.training["steps"] == 2
    build_model(ckpt)
    assert set(record["held_out_after"]["model"]) == {"psnr", "mae", "mae_under_cloud"}
    assert any("l1 loss" in m for m in prog.infos)


def test_rgb_multistage_model_trains_on_its_bands_with_stage_losses(tmp_path, monkeypatch):
    from cloudrm_engine.models.mpir import MPIR

    calls = []
    orig = MPIR.forward_stages

    def spy(self, optical, sar):
        out = orig(self, optical, sar)
        calls.append((optical.shape[1], len(out)))
        return out

    monkeypatch.setattr(MPIR, "forward_stages", spy)
    path, _ = train(_cfg(tmp_path, model="mpir4", loss="l1_ssim"))
    assert calls == [(3, 2), (3, 2)]  # RGB picked from the 13-band scene; two stage outputs
    ckpt = load_checkpoint(path)
    assert ckpt.bands["optical"] == ["B4", "B3", "B2"]
    build_model(ckpt)


def test_cafr_loss_on_synthetic_clouds(tmp_path):
    _, record = train(_cfg(tmp_path, model="cafr", loss="cafr", steps=1))
    assert record["loss"] == "cafr" and record["loss_last_10"] > 0


def test_align_cr_on_planet_cr_layout(tmp_path):
    root = tmp_path / "m3r"
    rows = [_write_sample(root, patch=str(p), seed=p) for p in (1, 2)]
    (root / "train.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    data = {"kind": "planet_cr", "root": str(root), "train": "train.csv", "eval": "train", "eval_samples": 1}
    path, record = train(_cfg(tmp_path, model="align_cr", loss="align_cr", data=data))
    ckpt = load_checkpoint(path)
    assert ckpt.model == "align_cr" and ckpt.bands["optical"] == ["Blue", "Green", "Red", "NIR"]
    assert record["held_out_before"]["input"]["psnr"] > 0


def test_temporal_model_trains_on_a_synthetic_series(tmp_path):
    data = {**SYNTH, "dates": 3}
    path, record = train(_cfg(tmp_path, model="ca_mtcr", data=data, steps=1))
    ckpt = load_checkpoint(path)
    assert ckpt.model == "ca_mtcr" and len(ckpt.bands["optical"]) == 13
    build_model(ckpt)
    assert record["held_out_before"]["model"]["psnr"] > 0


def test_synthetic_series_shapes_and_days():
    import numpy as np

    from cloudrm_engine.train.loop import read_scene
    from cloudrm_engine.train.synthetic import SceneSampler

    opt, sar = read_scene(S2_SAMPLE, S1_SAMPLE, "ca_mtcr")
    s = SceneSampler(opt, sar, (0, 192), dates=4)
    b = s.batch(2, 32, torch.Generator().manual_seed(0))
    assert b["cloudy"].shape == (2, 4, 13, 32, 32) and b["sar"].shape == (2, 4, 2, 32, 32)
    assert b["days"][0].tolist() == [-36.0, -24.0, -12.0, 0.0]
    assert torch.equal(b["sar"][:, 0], b["sar"][:, 3])  # same ground, same SAR
    assert not torch.equal(b["cloudy"][:, 0], b["cloudy"][:, 3])  # clouds differ per date
    assert np.isfinite(b["cloudy"].numpy()).all()


def test_ca_mtcr_loss_needs_vgg_weights(tmp_path, monkeypatch):
    from cloudrm_engine.errors import CloudrmError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-cache"))
    with pytest.raises(CloudrmError, match="VGG16"):
        objective("ca_mtcr")


@pytest.mark.parametrize("name", ["glf_cr_demo.yaml", "ca_mtcr_synthetic.yaml", "mpir1_synthetic.yaml"])
def test_shipped_demo_configs_parse(name):
    """Step-based demo configs; dataset-run configs (align_cr_planet_cr.yaml, paper_*.yaml) are
    checked in test_train_runs.py."""
    from tests.conftest import REPO

    cfg = TrainConfig.from_yaml(REPO / "engine" / "configs" / "train" / name)
    from cloudrm_engine.models import model_card

    assert cfg.crop % model_card(cfg.model).size_multiple == 0
