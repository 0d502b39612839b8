"""Model calls shared by training, validation and ``cloudrm evaluate``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bfloat16 on CUDA devices that support it, else float16; None = no autocast
    (``enabled`` False, or the CPU: mixed precision is a CUDA feature here)."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield


def inputs(batch: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, ...]:
    """(cloudy, sar) or (cloudy, sar, days) on ``device``: what ``model.forward`` takes."""
    out = [batch["cloudy"].to(device, non_blocking=True), batch["sar"].to(device, non_blocking=True)]
    if "days" in batch:
        out.append(batch["days"].to(device, non_blocking=True))
    return tuple(out)


class TrainStep(torch.nn.Module):
    """The model behind one ``forward`` that returns what the loss needs: the stage outputs of a
    multi-stage model (MPIR ``forward_stages``) or the single output. DistributedDataParallel
    only synchronises gradients of computations that go through a module's ``forward``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.staged = hasattr(model, "forward_stages")

    def forward(self, *args: torch.Tensor) -> Any:
        if self.staged:
            return self.model.forward_stages(*args)  # type: ignore[operator]
        return self.model(*args)


def _pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    if not ph and not pw:
        return x
    lead = x.shape[:-3]
    y = x.reshape(-1, *x.shape[-3:])
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    y = F.pad(y, (0, pw, 0, ph), mode=mode)
    return y.reshape(*lead, *y.shape[-3:])


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module, batch: Mapping[str, Any], device: torch.device, multiple: int, dtype: torch.dtype | None
) -> torch.Tensor:
    """The model's output (B, C, H, W), float32 on the CPU, for inputs of any size: they are
    reflect-padded at the bottom/right to a multiple of ``multiple`` and the output cropped back."""
    args = list(inputs(batch, device))
    h, w = args[0].shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    args[0], args[1] = _pad(args[0], ph, pw), _pad(args[1], ph, pw)
    with autocast(device, dtype):
        out = model(*args)
    return out[..., :h, :w].float().cpu()
