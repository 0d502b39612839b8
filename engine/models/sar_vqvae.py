"""VQ-VAE for pretraining CA-MTCR's SAR encoder with Noise2Noise.

Not a cloud-removal model (no card, not registered): Enc (= CA-MTCR's SAR encoder, same
class, so the state dict keys match) → nearest codebook vector per pixel (straight-through)
→ Dec. Trained to map one speckled SAR image of a place to another (y1 → y2), so the encoder
learns speckle-free structure. Only the encoder is kept afterwards.

Our settings (docs/models/ca_mtcr.md, "SAR encoder pretraining"): codebook 512 × 128, init
U(−1/K, 1/K); decoder MBConv × 2 → ConvGN(128→64) → 3×3 conv 64→2 (reflect) → sigmoid
(246,594 params); 706,946 in total.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .ca_mtcr import ConvGN, MBConv, SAREncoder


class VQOutput(NamedTuple):
    """What one VQ-VAE forward returns (all for a (B, 2, H, W) input)."""

    recon: torch.Tensor
    """(B, 2, H, W) in (0, 1): reconstruction ŷ1 (target: the partner image y2)."""
    z_e: torch.Tensor
    """(B, 128, H, W): encoder output."""
    e: torch.Tensor
    """(B, 128, H, W): nearest codebook vector per pixel (carries gradient to the codebook)."""
    indices: torch.Tensor
    """(B, H, W) int64: codebook index per pixel."""


class SARVQVAE(nn.Module):
    """Encoder, codebook and decoder."""

    def __init__(self, sar_channels: int = 2, width: int = 128, codebook_size: int = 512) -> None:
        super().__init__()
        self.encoder = SAREncoder(sar_channels, width)
        self.codebook = nn.Embedding(codebook_size, width)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.decoder = nn.Sequential(
            MBConv(width),
            MBConv(width),
            ConvGN(width, width // 2),
            nn.Conv2d(width // 2, sar_channels, 3, padding=1, padding_mode="reflect"),
            nn.Sigmoid(),
        )

    @torch.no_grad()
    def init_codebook_from(self, z_e: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codebook rows to randomly chosen encoder vectors of ``z_e`` (B, C, H, W).

        An optional data-dependent start: with the tiny uniform init, every pixel can pick the
        same row at first (codebook collapse), and then the decoder sees no information.
        """
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        k = self.codebook.num_embeddings
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if flat.shape[0] >= k:
            pick = torch.randperm(flat.shape[0], generator=g)[:k]
        else:
            pick = torch.randint(flat.shape[0], (k,), generator=g)
        self.codebook.weight.copy_(flat[pick.to(flat.device)])

    @torch.no_grad()
    def restart_codes(self, dead: torch.Tensor, z_e: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Replace the codebook rows flagged in ``dead`` (K,) bool by random vectors of ``z_e``
        (B, C, H, W), the usual cure for codes that no pixel picks any more. Returns how many."""
        n = int(dead.sum())
        if n:
            flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            pick = torch.randint(flat.shape[0], (n,), generator=g).to(flat.device)
            self.codebook.weight[dead] = flat[pick]
        return n

    def quantise(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook row per pixel (L2): (B, C, H, W) → e (B, C, H, W), indices (B, H, W)."""
        b, c, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, c)
        book = self.codebook.weight
        # ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²; ‖z‖² is the same for every row, so it is left out.
        dist = book.pow(2).sum(dim=1)[None, :] - 2.0 * flat @ book.t()
        idx = dist.argmin(dim=1)
        e = self.codebook(idx).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return e, idx.reshape(b, h, w)

    def forward(self, y: torch.Tensor) -> VQOutput:
        """(B, 2, H, W) SAR in [0, 1] → :class:`VQOutput`."""
        z_e = self.encoder(y)
        e, idx = self.quantise(z_e)
        z_q = z_e + (e - z_e).detach()  # straight-through: decoder gradient flows into the encoder
        return VQOutput(self.decoder(z_q), z_e, e, idx)


def vqvae_loss(
    out: VQOutput, target: torch.Tensor, alpha: float = 1.0, beta: float = 0.1
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 9 with every term a mean squared error (our reading of the unsquared equation).

    L = MSE(ŷ1, y2) + α·MSE(sg[z_e], e) (codebook) + β·MSE(z_e, sg[e]) (commitment).
    Returns the loss and its three terms as floats.
    """
    rec = F.mse_loss(out.recon, target)
    book = F.mse_loss(out.e, out.z_e.detach())
    commit = F.mse_loss(out.z_e, out.e.detach())
    total = rec + alpha * book + beta * commit
    return total, {"reconstruction": rec.item(), "codebook": book.item(), "commitment": commit.item()}
