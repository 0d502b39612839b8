"""CA-MTCR loss (docs/models/ca_mtcr.md, "Loss") with a randomly initialised VGG16 saved to a temp file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cloudrm_engine.errors import CheckpointError
from cloudrm_engine.losses.perceptual import (
    VGG16_FILE,
    PerceptualLoss,
    gram_matrix,
    load_vgg16_features,
    vgg16_cache_path,
)

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random VGG16 ``features`` weights under torchvision's key names (``features.N.*``)."""
    torch.manual_seed(0)
    feats = torchvision.models.vgg16(weights=None).features[:26]
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def loss(vgg_file: Path) -> PerceptualLoss:
    return PerceptualLoss(vgg_file)


def test_gram_normalisation() -> None:
    for c in (1, 4, 64):
        g = gram_matrix(torch.ones(2, c, 5, 7))
        assert g.shape == (2, c, c) and torch.allclose(g, torch.full_like(g, 1.0 / c))
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # C = 2, H = 1, W = 2
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4
    assert torch.allclose(gram_matrix(f), expected)


def test_taps_and_frozen(loss: PerceptualLoss) -> None:
    feats = loss.features(torch.rand(1, 13, 64, 64))
    assert [(k, v.shape[1], v.shape[2]) for k, v in feats.items()] == [
        ("relu1_1", 64, 64), ("relu2_1", 128, 32), ("relu3_1", 256, 16), ("relu4_1", 512, 8), ("relu5_1", 512, 4),
    ]
    assert all((v >= 0).all() for v in feats.values())
    assert all(not p.requires_grad for p in loss.vgg.parameters())
    loss.train()
    assert not loss.vgg.training
    assert not any(getattr(m, "inplace", False) for m in loss.vgg)


def test_loss_values(loss: PerceptualLoss) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 13, 32, 32, generator=g)
    assert loss(y, y).item() == 0.0
    small = loss(y + 0.01 * torch.randn(y.shape, generator=g), y)
    big = loss(y + 0.1 * torch.randn(y.shape, generator=g), y)
    assert 0 < small < big
    pred = (y + 0.05).clamp(0, 1)
    t = loss.terms(pred, y)
    assert torch.allclose(t["l1"], (pred - y).abs().mean())
    assert torch.allclose(loss(pred, y), 2.0 * t["l1"] + 1.0 * t["feature"] + 250.0 * t["style"])
    # only the RGB bands (B4, B3, B2 = 3, 2, 1) reach VGG: changing B8 moves only L1
    other = y.clone()
    other[:, 7] = 1 - other[:, 7]
    t2 = loss.terms(other, y)
    assert t2["feature"] == 0 and t2["style"] == 0 and t2["l1"] > 0


def test_gradient_reaches_prediction(loss: PerceptualLoss) -> None:
    y = torch.rand(1, 13, 32, 32)
    pred = (y * 0.9).requires_grad_(True)
    loss(pred, y).backward()
    assert pred.grad is not None and pred.grad[:, 1:4].abs().sum() > 0


def test_missing_and_bad_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match=f"looked at {tmp_path / 'none.pth'}"):
        load_vgg16_features(tmp_path / "none.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert vgg16_cache_path() == tmp_path / "hub" / "checkpoints" / VGG16_FILE
    with pytest.raises(CheckpointError, match=f"torchvision's cache {tmp_path / 'hub' / 'checkpoints' / VGG16_FILE}"):
        load_vgg16_features()
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="does not fit torchvision VGG16"):
        load_vgg16_features(tmp_path / "bad.pth")


def test_cache_and_features_only_files(vgg_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = torch.load(vgg_file, weights_only=True)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / VGG16_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    net = load_vgg16_features()
    assert torch.equal(net[0].weight, state["features.0.weight"])
    bare = {k[len("features."):]: v for k, v in state.items()}
    torch.save(bare, tmp_path / "bare.pth")
    assert torch.equal(load_vgg16_features(tmp_path / "bare.pth")[24].weight, state["features.24.weight"])
