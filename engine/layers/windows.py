"""Swin-style window helpers: partition, reverse, relative positions, shifted-window masks.

Masks are built for the size actually seen at run time (spec glf_cr.md §7 R1): the official
GLF-CR stores them as buffers frozen at the training crop, which is why it only runs on 128 px.
"""

from __future__ import annotations

import torch


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Cut (B, H, W, C) into non-overlapping windows: (B·nW, window², C), row-major windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, window², C) → (B, H, W, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """Index into a (2M−1)² bias table for every token pair of an M×M window: (M², M²) int64."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)  # (2, M²)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)  # (M², M², 2)
    rel = rel + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(
    h: int, w: int, window: int, shift: int, device: torch.device | None = None
) -> torch.Tensor:
    """Additive attention mask for shifted windows on an (h, w) map: (nW, M², M²) of {0, −100}.

    After a cyclic roll by −shift, a window may hold tokens from up to four sub-regions that
    were not neighbours; pairs from different sub-regions get −100 so softmax ignores them.
    """
    labels = torch.zeros((1, h, w, 1), device=device)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in bands:
        for ws in bands:
            labels[:, hs, ws, :] = region
            region += 1
    windows = window_partition(labels, window).squeeze(-1)  # (nW, M²)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)
