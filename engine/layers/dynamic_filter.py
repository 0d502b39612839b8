"""Per-pixel, per-channel dynamic filtering in plain torch ops.

GLF-CR (docs/models/glf_cr.md, "SLFC block") filters the SAR features with a k×k kernel that a
network predicts for every pixel and channel. The official code needs a compiled CUDA op
(FAC/KernelConv2D) that refuses to run on the CPU; this is the same arithmetic written as a
loop over the k² taps, which runs on any device and never materialises the k²-times larger
unfolded input. Each tap is one fused multiply-add into the running sum (no temporaries).

:func:`dynamic_filter_from_features` also folds in the layer that predicts the kernels
(1×1 conv + LeakyReLU in GLF-CR's DFG): on the CPU it predicts and applies the kernels a few
channels at a time, so the C·k²-channel kernel map (39 MB per 64×64 map and image) is never
held whole; the cut pieces stay in cache and no large buffer is allocated per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CPU_CHUNK_BYTES = 4 * 2**20
"""Per-chunk budget of predicted kernels on the CPU (see the module docstring). Accelerators
predict all channels in one GEMM (chunks would only add kernel launches there)."""


def _check(x: torch.Tensor, kernel_size: int) -> None:
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    if x.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W), got {tuple(x.shape)}")


def _like_input(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Give ``out`` (NCHW) the memory format of ``x`` (channels-last models stay channels-last)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


def _replicate_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, H + 2p, W + 2p), NCHW planes so every tap is a contiguous-row view."""
    return F.pad(x.contiguous(), (pad, pad, pad, pad), mode="replicate")


def _accumulate_taps(x_pad: torch.Tensor, kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Σ_t kernels[:, :, t] · (tap t of x_pad), summed in tap order 0 … k²−1.

    Args:
        x_pad: padded features (B, c, H + k − 1, W + k − 1).
        kernels: (B, c, k², H, W), any strides.

    Returns:
        (B, c, H, W), NCHW-contiguous.
    """
    h, w = kernels.shape[-2:]
    out = kernels[:, :, 0] * x_pad[:, :, :h, :w]
    for t in range(1, kernel_size * kernel_size):
        ky, kx = divmod(t, kernel_size)
        out.addcmul_(kernels[:, :, t], x_pad[:, :, ky : ky + h, kx : kx + w])
    return out


def dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Correlate every pixel of ``x`` with its own kernel (no normalisation).

    ``out[b, c, y, x] = Σ_{ky, kx} kernels[b, c·k² + ky·k + kx, y, x] · x_pad[b, c, y + ky, x + kx]``
    with ``x_pad`` the input padded by ``k // 2`` with replicated border values.

    Args:
        x: features, shape (B, C, H, W).
        kernels: per-pixel kernels, shape (B, C·k², H, W), tap order ``ky·k + kx`` per channel.
        kernel_size: k, odd.

    Returns:
        Filtered features, shape (B, C, H, W), dtype of ``x`` (promoted with the kernels').
    """
    _check(x, kernel_size)
    b, c, h, w = x.shape
    taps = kernel_size * kernel_size
    if kernels.shape != (b, c * taps, h, w):
        raise ValueError(
            f"kernels must have shape {(b, c * taps, h, w)} for features {tuple(x.shape)}, "
            f"got {tuple(kernels.shape)}"
        )
    x_pad = _replicate_pad(x, kernel_size // 2)
    out = _accumulate_taps(x_pad, kernels.unflatten(1, (c, taps)), kernel_size)
    return _like_input(out, x)


def dynamic_filter_from_features(
    x: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: int = 5,
    negative_slope: float = 0.1,
) -> torch.Tensor:
    """``dynamic_filter(x, leaky_relu(conv1x1(features, weight, bias), negative_slope), k)``.

    The 1×1 conv runs as a GEMM whose output is already in the per-channel tap layout; on
    the CPU it runs per group of channels (:data:`CPU_CHUNK_BYTES`), elsewhere in one piece.

    Args:
        x: features to filter, (B, C, H, W).
        features: input of the kernel-predicting 1×1 conv, (B, F, H, W).
        weight: that conv's weight, (C·k², F, 1, 1); bias: (C·k²,) or None.
        kernel_size: k, odd. negative_slope: of the LeakyReLU on the predicted kernels.

    Returns:
        (B, C, H, W), in ``x``'s memory format.
    """
    _check(x, kernel_size)
    b, c, h, w = x.shape
    taps = kernel_size * kernel_size
    if weight.shape[:2] != (c * taps, features.shape[1]) or features.shape[-2:] != (h, w):
        raise ValueError(
            f"a 1×1 conv of weight {tuple(weight.shape)} on {tuple(features.shape)} does not "
            f"give {kernel_size}×{kernel_size} kernels for {tuple(x.shape)}"
        )
    x_pad = _replicate_pad(x, kernel_size // 2)
    feats = features.flatten(2)  # (B, F, H·W): a view in NCHW and in channels-last
    w2 = weight.flatten(1)  # (C·k², F)
    on_cpu = x.device.type == "cpu"
    step = max(1, CPU_CHUNK_BYTES // (b * taps * h * w * x.element_size())) if on_cpu else c
    outs = []
    for c0 in range(0, c, step):
        c1 = min(c, c0 + step)
        rows = slice(c0 * taps, c1 * taps)
        # bmm, not matmul: matmul would fold B·H·W into rows and transpose the result back.
        kern = torch.bmm(w2[rows].expand(b, -1, -1), feats)  # (B, (c1−c0)·k², H·W)
        if bias is not None:
            kern = kern.add_(bias[rows, None])
        kern = F.leaky_relu_(kern, negative_slope)
        outs.append(_accumulate_taps(x_pad[:, c0:c1], kern.view(b, c1 - c0, taps, h, w), kernel_size))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return _like_input(out, x)
