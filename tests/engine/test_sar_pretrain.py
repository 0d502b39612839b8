"""SAR VQ-VAE, Noise2Noise pretraining and loading the encoder into CA-MTCR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from cloudrm_engine.cli import main as cli_main
from cloudrm_engine.errors import CheckpointError, InputError
from cloudrm_engine.models import create_model
from cloudrm_engine.models.sar_vqvae import SARVQVAE, vqvae_loss
from cloudrm_engine.train.sar_pretrain import SARPretrainConfig, load_sar_encoder, pretrain_sar
from tests.conftest import S1_SAMPLE, RecordingProgress, crop_sample, make_checkpoint, write_geotiff


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 48 px crop of the real S1 sample and a noisy copy (+N(0, 1 dB)) on the same grid."""
    tmp = tmp_path_factory.mktemp("sar_pair")
    _, s1 = crop_sample(tmp, 40, 40, 48, tag="a")
    with rasterio.open(s1) as src:
        a, crs, transform = src.read(), src.crs.to_string(), src.transform
    noisy = a + np.random.default_rng(0).normal(0, 1.0, a.shape).astype(np.float32)
    return s1, write_geotiff(tmp / "b_s1.tif", noisy, crs, transform)


def _config(pair: tuple[Path, Path], out: Path, **kw: object) -> dict:
    return {"pairs": [[str(pair[0]), str(pair[1])]], "crop": 16, "batch_size": 2, "steps": 3,
            "log_every": 1, "threads": 1, "device": "cpu", "out": str(out), **kw}


def test_vqvae_shapes_and_quantisation() -> None:
    torch.manual_seed(0)
    vq = SARVQVAE()
    assert sum(p.numel() for p in vq.parameters()) == 706_946
    assert sum(p.numel() for p in vq.decoder.parameters()) == 246_594
    assert vq.codebook.weight.shape == (512, 128) and vq.codebook.weight.abs().max() <= 1 / 512
    out = vq(torch.rand(2, 2, 16, 24))
    assert out.recon.shape == (2, 2, 16, 24) and out.recon.min() > 0 and out.recon.max() < 1
    assert out.z_e.shape == out.e.shape == (2, 128, 16, 24)
    assert out.indices.shape == (2, 16, 24) and out.indices.dtype == torch.int64
    # each quantised vector is its codebook row, and the nearest one
    e = out.e.permute(0, 2, 3, 1).reshape(-1, 128)
    assert torch.equal(e, vq.codebook.weight[out.indices.reshape(-1)])
    z = out.z_e.permute(0, 2, 3, 1).reshape(-1, 128)
    # nearest up to float rounding: the codes start within ±1/512, so near-ties are common and
    # cdist's arithmetic may break them differently from the quantiser's ‖z‖² − 2z·e + ‖e‖²
    d = torch.cdist(z.double(), vq.codebook.weight.double())
    chosen = d.gather(1, out.indices.reshape(-1, 1))[:, 0]
    assert torch.all(chosen <= d.min(1).values + 1e-5)


def test_vqvae_gradients_and_loss_terms() -> None:
    torch.manual_seed(0)
    vq = SARVQVAE()
    y1, y2 = torch.rand(2, 2, 2, 16, 16)
    out = vq(y1)
    loss, terms = vqvae_loss(out, y2, alpha=1.0, beta=0.1)
    expected = terms["reconstruction"] + terms["codebook"] + 0.1 * terms["commitment"]
    assert abs(loss.item() - expected) < 1e-5
    assert abs(terms["codebook"] - terms["commitment"]) < 1e-6  # same distance, different stop-gradient
    loss.backward()
    assert vq.encoder[0][0].weight.grad.abs().sum() > 0  # straight-through reaches the first conv
    assert vq.codebook.weight.grad.abs().sum() > 0  # α term reaches the codebook
    assert vq.decoder[3].weight.grad.abs().sum() > 0


def test_codebook_data_init_and_restart() -> None:
    torch.manual_seed(0)
    vq = SARVQVAE(codebook_size=8)
    z = torch.randn(1, 128, 4, 4)
    vq.init_codebook_from(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 128)
    assert all((rows == r).all(1).any() for r in vq.codebook.weight)  # every row is a z_e vector
    assert len({tuple(r.tolist()) for r in vq.codebook.weight}) == 8  # chosen without repetition
    vq.codebook.weight.data.zero_()
    dead = torch.tensor([True, False, True, False, False, False, False, False])
    assert vq.restart_codes(dead, z) == 2
    assert (vq.codebook.weight[~dead] == 0).all()
    assert all((rows == r).all(1).any() for r in vq.codebook.weight[dead])


def test_vqvae_encoder_keys_match_ca_mtcr() -> None:
    vq, m = SARVQVAE(), create_model("ca_mtcr")
    own = m.sar_encoder.state_dict()
    assert list(vq.encoder.state_dict()) == list(own)
    m.sar_encoder.load_state_dict(vq.encoder.state_dict(), strict=True)


def test_pretrain_writes_loadable_encoder(pair: tuple[Path, Path], tmp_path: Path) -> None:
    progress = RecordingProgress()
    path = pretrain_sar(_config(pair, tmp_path / "enc.pt", codebook_init="data", restart_after=1), progress=progress)
    assert path == tmp_path / "enc.pt" and path.is_file()
    assert progress.updates == [(1, 3), (2, 3), (3, 3)]
    assert any("step 3/3" in s for s in progress.infos)
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "cloudrm-sar-encoder" and blob["training"]["steps"] == 3
    assert blob["training"]["codes_restarted"] > 0 and blob["training"]["codes_used_last_10"] > 1
    assert blob["normalisation"]["sar"]["clip"] == [[-25.0, 0.0], [-25.0, 0.0]]
    torch.manual_seed(5)
    model = create_model("ca_mtcr")
    before = model.sar_encoder[0][0].weight.clone()
    assert load_sar_encoder(model, path) is model
    for k, v in model.sar_encoder.state_dict().items():
        assert torch.equal(v, blob["state_dict"][k])
    assert not torch.equal(before, model.sar_encoder[0][0].weight)


def test_pretrain_cancel_writes_nothing(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="canceled"):
        pretrain_sar(_config(pair, tmp_path / "enc.pt"), progress=RecordingProgress(cancel_after=1))
    assert list(tmp_path.iterdir()) == []


def test_load_wrong_files_gives_clear_errors(pair: tuple[Path, Path], tmp_path: Path) -> None:
    model = create_model("ca_mtcr")
    with pytest.raises(CheckpointError, match="not found"):
        load_sar_encoder(model, tmp_path / "nope.pt")
    glf = make_checkpoint("glf_cr", tmp_path / "glf.pt")  # a whole-model checkpoint
    with pytest.raises(CheckpointError, match="not a CA-MTCR SAR encoder file"):
        load_sar_encoder(model, glf)
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_sar_encoder(model, tmp_path / "junk.pt")
    path = pretrain_sar(_config(pair, tmp_path / "enc.pt", steps=1, width=64))  # wrong width
    with pytest.raises(CheckpointError, match="does not fit CA-MTCR's SAR encoder: shape mismatch"):
        load_sar_encoder(model, path)
    blob = torch.load(path, weights_only=True)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.startswith("4.")}
    blob["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(blob, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing \d+ key\(s\).*unexpected 1 key"):
        load_sar_encoder(model, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="no SAR encoder"):
        load_sar_encoder(create_model("ca_mtcr", use_sar=False), path)


def test_config_checks(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown option"):
        SARPretrainConfig.from_source({"pairs": [["a", "b"]], "epochs": 3})
    with pytest.raises(InputError, match="codebook_init must be uniform or data"):
        SARPretrainConfig.from_source({"pairs": [["a", "b"]], "codebook_init": "kmeans"})
    with pytest.raises(InputError, match="pairs is empty"):
        SARPretrainConfig.from_source({})
    with pytest.raises(InputError, match=r"\[path_a, path_b\]"):
        SARPretrainConfig.from_source({"pairs": [["a"]]})
    with pytest.raises(InputError, match="not found"):
        pretrain_sar({"pairs": [[str(pair[0]), str(tmp_path / "missing.tif")]], "out": str(tmp_path / "x.pt")})
    with rasterio.open(pair[0]) as src:
        a = src.read()[:, :40, :40]
    other = write_geotiff(tmp_path / "small.tif", a)
    with pytest.raises(InputError, match="not on the same grid"):
        pretrain_sar({"pairs": [[str(pair[0]), str(other)]], "out": str(tmp_path / "x.pt")})


def test_cli_and_example_config(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "engine" / "configs" / "train" / "ca_mtcr_sar_pretrain.yaml"
    cfg = SARPretrainConfig.from_source(example)
    assert cfg.pairs[0][0].endswith(S1_SAMPLE.name) and cfg.speckle_looks == 4
    assert (cfg.lr, cfg.alpha, cfg.beta, cfg.codebook_size) == (2e-4, 1.0, 0.1, 512)
    raw = yaml.safe_load(example.read_text())
    raw.update(pairs=[[str(S1_SAMPLE), str(S1_SAMPLE)]], crop=16, batch_size=2)
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(raw))
    out = tmp_path / "cli_enc.pt"
    rc = cli_main(["pretrain-sar", "--config", str(small), "--steps", "2", "--out", str(out),
                   "--device", "cpu", "--threads", "1"])
    assert rc == 0 and out.is_file()
    load_sar_encoder(create_model("ca_mtcr"), out)
