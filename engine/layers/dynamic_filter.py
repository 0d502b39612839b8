"""Per-pixel, per-channel dynamic filtering in plain torch ops.

GLF-CR (spec glf_cr.md §2.3, risk R6) filters the SAR features with a k×k kernel that a
network predicts for every pixel and channel. The official code needs a compiled CUDA op
(FAC/KernelConv2D) that refuses to run on the CPU; this is the same arithmetic written as a
loop over the k² taps, which runs on any device and never materialises the k²-times larger
unfolded tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Correlate every pixel of ``x`` with its own kernel (no normalisation).

    ``out[b, c, y, x] = Σ_{ky, kx} kernels[b, c·k² + ky·k + kx, y, x] · x_pad[b, c, y + ky, x + kx]``
    with ``x_pad`` the input padded by ``k // 2`` with replicated border values.

    Args:
        x: features, shape (B, C, H, W).
        kernels: per-pixel kernels, shape (B, C·k², H, W), tap order ``ky·k + kx`` per channel.
        kernel_size: k, odd.

    Returns:
        Filtered features, shape (B, C, H, W), dtype of ``x``.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    b, c, h, w = x.shape
    taps = kernel_size * kernel_size
    if kernels.shape != (b, c * taps, h, w):
        raise ValueError(
            f"kernels must have shape {(b, c * taps, h, w)} for features {tuple(x.shape)}, "
            f"got {tuple(kernels.shape)}"
        )
    pad = kernel_size // 2
    x_pad = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    k = kernels.view(b, c, taps, h, w)
    out = x.new_zeros(x.shape)
    for ky in range(kernel_size):
        for kx in range(kernel_size):
            out = out + k[:, :, ky * kernel_size + kx] * x_pad[:, :, ky : ky + h, kx : kx + w]
    return out
