"""CA-MTCR training loss: L1 + VGG16 feature loss + style (Gram) loss (docs/models/ca_mtcr.md, "Loss").

L = 2.0·L1 + 1.0·L_fr + 250.0·L_sr, on (B, C, H, W) tensors in [0, 1]:

- L1: mean |ŷ − y| over all bands and pixels.
- L_fr: Σ over relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of mean |Φ_l(ŷ) − Φ_l(y)| (Eq. 14).
- L_sr: Σ over relu4_1, relu5_1 of mean |G(Φ_l(ŷ)) − G(Φ_l(y))|, G = F·Fᵀ / (C·H·W) (Eq. 15;
  L1 on normalised Grams as in EdgeConnect, where λ = 250 comes from).

Φ is torchvision's VGG16 (ImageNet weights), frozen, fed the RGB bands (B4, B3, B2 =
channels 3, 2, 1 of the 13) in [0, 1] without ImageNet normalisation (our choice, as EdgeConnect). The weights
are never downloaded: pass a file, or have torchvision's cache file present.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable, Sequence
from functools import reduce
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, DependencyError
from ..io.checkpoint import read_weights_file

VGG16_FILE = "vgg16-397923af.pth"
"""torchvision's file name for the IMAGENET1K_V1 weights (in ``<torch hub dir>/checkpoints``)."""
TAPS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 18, "relu5_1": 25}
"""Indices in ``vgg16().features`` whose outputs are used (relu1_1 … relu5_1)."""
STYLE_TAPS = ("relu4_1", "relu5_1")
RGB = (3, 2, 1)  # B4, B3, B2 of the 13 S2 bands
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def gram_matrix(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C) Gram matrix F·Fᵀ / (C·H·W) per sample."""
    b, c, h, w = f.shape
    x = f.reshape(b, c, h * w)
    return x @ x.transpose(1, 2) / (c * h * w)


def vgg16_cache_path() -> Path:
    """Where torchvision would keep the ImageNet VGG16 weights (no network access here)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def load_vgg16_features(weights: str | os.PathLike[str] | None = None) -> nn.Sequential:
    """Frozen VGG16 ``features`` up to relu5_1 (26 layers), eval mode, ReLUs not in-place.

    Args:
        weights: a torchvision VGG16 state dict file (keys ``features.N.weight`` …, a full
            model's or features only as ``N.weight``). None: torchvision's cache file
            (:func:`vgg16_cache_path`); nothing is downloaded.

    Raises:
        DependencyError: torchvision is not installed.
        CheckpointError: no weights file where it looked, or it does not fit VGG16.
    """
    try:
        from torchvision.models import vgg16
    except ImportError as exc:
        raise DependencyError("the perceptual loss needs torchvision (pip install torchvision)") from exc
    path = Path(weights) if weights is not None else vgg16_cache_path()
    if not path.is_file():
        looked = f"{path}" if weights is not None else f"torchvision's cache {path}"
        raise CheckpointError(
            f"VGG16 weights not found (looked at {looked}). Download torchvision's IMAGENET1K_V1 "
            f"file {VGG16_FILE} on a connected machine and pass its path (nothing is downloaded here)."
        )
    state = read_weights_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a VGG16 state dict, found {type(state).__name__}")
    state = state.get("state_dict", state)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:  # a features-only state dict
        feats = {k: v for k, v in state.items() if k.split(".")[0].isdigit()}
    with torch.device("meta"):  # shapes only; the weights come from the file (no init cost)
        net = vgg16(weights=None).features[: TAPS["relu5_1"] + 1]
    own = net.state_dict()
    missing = [k for k in own if k not in feats]
    bad = [k for k in own if k in feats and feats[k].shape != own[k].shape]
    if missing or bad:
        raise CheckpointError(
            f"{path} does not fit torchvision VGG16: missing {missing[:3]}, shape mismatch {bad[:3]}"
        )
    net.load_state_dict({k: feats[k].float() for k in own}, assign=True)
    for m in net:
        if isinstance(m, nn.ReLU):
            m.inplace = False  # tapped outputs must not be overwritten by the next layer
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _total(parts: Iterable[torch.Tensor]) -> torch.Tensor:
    """t1 + t2 + … of a non-empty sequence of tensors (the same sums as the builtin ``sum``,
    without its leading 0, so the result is always a tensor)."""
    return reduce(operator.add, parts)


class PerceptualLoss(nn.Module):
    """λ1·L1 + λ2·L_fr + λ3·L_sr (paper Eq. 13-15); ``terms`` returns the three unweighted parts.

    Args:
        vgg_weights: VGG16 weights file, see :func:`load_vgg16_features`.
        weights: (λ1, λ2, λ3), paper (2.0, 1.0, 250.0).
        rgb: channels of the input fed to VGG (B4, B3, B2 of 13 S2 bands).
        imagenet_norm: normalise the VGG input with ImageNet mean/std (the alternative reading; off).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, vgg_weights: str | os.PathLike[str] | None = None,
        weights: Sequence[float] = (2.0, 1.0, 250.0), rgb: Sequence[int] = RGB,
        imagenet_norm: bool = False,
    ) -> None:
        super().__init__()
        self.vgg = load_vgg16_features(vgg_weights)
        self.weights = tuple(float(w) for w in weights)
        self.rgb = list(rgb)
        self.imagenet_norm = imagenet_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # frozen, always in eval mode
        return self

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, H, W) in [0, 1] → the 5 tapped activations (64/128/256/512/512 channels at
        1, ½, ¼, ⅛, 1/16 of H, W)."""
        x = x[:, self.rgb]
        if self.imagenet_norm:
            x = (x - self.mean) / self.std
        wanted = {i: name for name, i in TAPS.items()}
        out = {}
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted ``l1``, ``feature`` (Eq. 14) and ``style`` (Eq. 15) losses, scalars."""
        fp, ft = self.features(pred), self.features(target)
        feature = _total(F.l1_loss(fp[k], ft[k]) for k in TAPS)
        style = _total(F.l1_loss(gram_matrix(fp[k]), gram_matrix(ft[k])) for k in STYLE_TAPS)
        return {"l1": F.l1_loss(pred, target), "feature": feature, "style": style}

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B, C, H, W) in [0, 1] → scalar loss."""
        t = self.terms(pred, target)
        w1, w2, w3 = self.weights
        return w1 * t["l1"] + w2 * t["feature"] + w3 * t["style"]
