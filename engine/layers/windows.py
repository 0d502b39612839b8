"""Swin-style window helpers: partition, reverse, relative positions, shifted-window masks.

Masks are built for the size actually seen at run time: the official GLF-CR stores them as
buffers frozen at the training crop, which is why it only runs on 128 px
(docs/models/glf_cr.md, "Implementation choices").

Two kinds of helpers live here. :func:`window_partition`, :func:`window_reverse` and
:func:`shifted_window_mask` are the plain definitions. :func:`to_windows`,
:func:`from_windows`, :func:`cached_shift_mask` and :func:`window_chunk` are what the models
run: the cyclic shift and the window cut become one gather with a cached index (instead of a
roll copy plus a permute copy), masks are built once per size, and on the CPU the window
attention is split into cache-sized groups of windows.
"""

from __future__ import annotations

from functools import lru_cache

import torch

CPU_CHUNK_BYTES = 4 * 2**20
"""Per-chunk budget of the n²-sized attention tensors on the CPU: a group of windows whose
logits fit in cache runs its whole bias/gate/softmax chain from there. Measured on a 2-core
EPYC (GLF-CR, 64 windows of 8×8): 1-8 MiB groups all ran the attention about 2× faster than
one pass over all windows; 4 MiB (8 windows) keeps the number of small ops low.
Accelerators get one pass (each chunk would cost kernel launches there)."""


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


# Cached tensors are built outside inference mode so that a cache filled during inference
# still serves a later training step (inference tensors cannot take part in autograd).
@lru_cache(maxsize=32)
def cached_shift_mask(
    h: int, w: int, window: int, shift: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`shifted_window_mask` in ``dtype``, built once per (size, shift, device, dtype).

    Shared between calls: treat it as read-only.
    """
    with torch.inference_mode(False), torch.no_grad():
        return shifted_window_mask(h, w, window, shift, device).to(dtype)


@lru_cache(maxsize=32)
def _window_order(
    h: int, w: int, window: int, shift: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token permutations between raster and (shifted) window order, each (h·w,) int64.

    ``gather[i]`` is the raster index of the token at window-order position i after a cyclic
    roll by −shift (what ``torch.roll`` + :func:`window_partition` produce), ``rows`` and
    ``cols`` are that index split into row and column; ``scatter`` is the inverse permutation
    (:func:`window_reverse` + roll back). Returns (gather, rows, cols, scatter).
    """
    with torch.inference_mode(False), torch.no_grad():
        raster = torch.arange(h * w).view(1, h, w, 1)
        if shift:
            raster = torch.roll(raster, (-shift, -shift), dims=(1, 2))
        gather = window_partition(raster, window).reshape(-1)
        scatter = torch.empty_like(gather)
        scatter[gather] = torch.arange(h * w)
        rows, cols = torch.div(gather, w, rounding_mode="floor"), gather % w
        return tuple(t.to(device) for t in (gather, rows, cols, scatter))  # type: ignore[return-value]


def to_windows(x: torch.Tensor, window: int, shift: int = 0) -> torch.Tensor:
    """Feature map (B, C, H, W) → window tokens (B·nW, M², C), rolled by −shift first.

    Equals ``window_partition(torch.roll(x.permute(0, 2, 3, 1), (−s, −s), (1, 2)), M)`` in
    one gather. Cheapest for a channels-last ``x`` (its token view needs no copy).
    """
    b, c, h, w = x.shape
    gather, rows, cols, _ = _window_order(h, w, window, shift, x.device)
    tokens = x.permute(0, 2, 3, 1)
    # A non-contiguous token view (e.g. of NCHW) is gathered by rows and columns in one
    # strided pass instead of being copied twice.
    out = tokens.reshape(b, h * w, c).index_select(1, gather) if tokens.is_contiguous() else tokens[:, rows, cols]
    return out.view(b * (h // window) * (w // window), window * window, c)


def from_windows(windows: torch.Tensor, window: int, h: int, w: int, shift: int = 0) -> torch.Tensor:
    """Inverse of :func:`to_windows`: (B·nW, M², C) → (B, C, H, W), channels-last in memory."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    scatter = _window_order(h, w, window, shift, windows.device)[3]
    tokens = windows.reshape(b, h * w, c).index_select(1, scatter)
    return tokens.view(b, h, w, c).permute(0, 3, 1, 2)


def window_chunk(total: int, per_image: int, bytes_per_window: int, device: torch.device) -> int:
    """How many windows to run the attention on at once (see :data:`CPU_CHUNK_BYTES`).

    Args:
        total: B·nW windows in the batch.
        per_image: nW, windows per image; a chunk smaller than nW divides it and a larger one
            is a multiple of it, so a chunk always lines up with the (nW, …) mask.
        bytes_per_window: size of one window's n²-sized attention tensors.
        device: where they run; anything but the CPU gets ``total``.
    """
    if device.type != "cpu":
        return total
    cap = max(1, CPU_CHUNK_BYTES // max(1, bytes_per_window))
    if cap >= total:
        return total
    if cap >= per_image:
        return per_image * (cap // per_image)
    return max(d for d in range(1, cap + 1) if per_image % d == 0)
